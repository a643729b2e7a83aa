"""The matcher's whole answer on a fixed input is what it was before issue 10's speed-ups (b610c9d, recorded in
tests/fixtures/schema_match/flights_feb_mar_2000.json): the benchmark's pair of tables (flights February and March,
2,000 rows each, three columns renamed, one turned to text, through CSV), with MiniLM and without an embedder.
Candidates, probabilities, scores, component scores, no-match and one-to-many answers must stay identical; a change
that means to move them records the file again and says why. "Identical" is exact for every name, answer and
structure, and for a number to 1e-6 relative: MiniLM's float32 vectors round differently on CPUs with other vector
instructions (recorded on one machine, 0.8710737723902401 is 0.8710738408347632 on another), which no answer and
no threshold of the matcher is near."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipewarden.evals.flights_data import source_dir
from pipewarden.knowledge.embedder import CachedEmbedder
from pipewarden.tools.schema_match import match_files

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "schema_match" / "flights_feb_mar_2000.json"


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    ref = flights[flights["month"] == 2].head(2000)
    new = flights[flights["month"] == 3].head(2000).rename(
        columns={"dep_delay": "departureDelay", "arr_delay": "arrivalDelay", "tailnum": "tail_number"})
    new["flight"] = new["flight"].astype(str)
    folder = tmp_path_factory.mktemp("golden")
    ref.to_csv(folder / "ref.csv", index=False)
    new.to_csv(folder / "new.csv", index=False)
    return folder / "ref.csv", folder / "new.csv"


def same(got: Any, want: Any, where: str = "report") -> None:
    """`got` equals `want`: the same keys, lengths, names and answers; numbers within 1e-6 relative (see above)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9), \
            f"{where}: {got!r} != {want!r}"
    else:
        assert got == want and type(got) is type(want), f"{where}: {got!r} != {want!r}"


def test_same_tells_a_moved_answer_from_float_rounding() -> None:
    same({"score": 0.8710738408347632, "match": "tailnum"}, {"score": 0.8710737723902401, "match": "tailnum"})
    with pytest.raises(AssertionError, match="match"):
        same({"score": 0.87, "match": "flight"}, {"score": 0.87, "match": "tailnum"})
    with pytest.raises(AssertionError, match="score"):
        same({"score": 0.86, "match": "tailnum"}, {"score": 0.87, "match": "tailnum"})


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_names_and_values_answer_as_before(tables: tuple[Path, Path], golden: dict) -> None:
    report = match_files(*tables).model_dump(mode="json")
    same(report, golden["names+values"])


def test_minilm_answers_as_before_cold_and_from_the_cache(tables: tuple[Path, Path], golden: dict, minilm: object,
                                                          tmp_path: Path) -> None:
    same(match_files(*tables, embedder=minilm).model_dump(mode="json"), golden["minilm"])  # type: ignore[arg-type]
    cold = match_files(*tables, embedder=CachedEmbedder(tmp_path, load=lambda: minilm)).model_dump(mode="json")
    warm = match_files(*tables, embedder=CachedEmbedder(tmp_path, load=lambda: pytest.fail("model loaded")))
    same(cold, golden["minilm"])
    same(warm.model_dump(mode="json"), golden["minilm"])
    assert golden["minilm"]["renamed"] == {"departureDelay": "dep_delay", "arrivalDelay": "arr_delay",
                                           "tail_number": "tailnum"}
