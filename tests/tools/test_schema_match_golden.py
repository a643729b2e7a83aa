"""The matcher's whole answer on a fixed input is what it was before issue 10's speed-ups (b610c9d, recorded in
tests/fixtures/schema_match/flights_feb_mar_2000.json): the benchmark's pair of tables (flights February and March,
2,000 rows each, three columns renamed, one turned to text, through CSV), with MiniLM and without an embedder.
Candidates, probabilities, scores, component scores, no-match and one-to-many answers must stay identical; a change
that means to move them records the file again and says why."""

from __future__ import annotations

import json
from pathlib import Path

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


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_names_and_values_answer_as_before(tables: tuple[Path, Path], golden: dict) -> None:
    report = match_files(*tables).model_dump(mode="json")
    assert report == golden["names+values"]


def test_minilm_answers_as_before_cold_and_from_the_cache(tables: tuple[Path, Path], golden: dict, minilm: object,
                                                          tmp_path: Path) -> None:
    assert match_files(*tables, embedder=minilm).model_dump(mode="json") == golden["minilm"]  # type: ignore[arg-type]
    cold = match_files(*tables, embedder=CachedEmbedder(tmp_path, load=lambda: minilm)).model_dump(mode="json")
    warm = match_files(*tables, embedder=CachedEmbedder(tmp_path, load=lambda: pytest.fail("model loaded")))
    assert cold == golden["minilm"]
    assert warm.model_dump(mode="json") == golden["minilm"]
    assert golden["minilm"]["renamed"] == {"departureDelay": "dep_delay", "arrivalDelay": "arr_delay",
                                           "tail_number": "tailnum"}
