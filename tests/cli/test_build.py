"""`pipewarden build` as a user runs it: the report on stdout (or as JSON), failures on stderr, the exit code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pipewarden.settings import get_settings
from pipewarden.tools.warehouse import connect
from tests.cli.conftest import CliResult
from tests.flows.test_build import EVENTS, MODELS, make_project


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pw_home: Path) -> Path:
    root = make_project(tmp_path / "tiny", MODELS)
    monkeypatch.setenv("PIPEWARDEN_PROJECT", str(root))
    get_settings.cache_clear()
    with connect() as wh:
        wh.write_frame("raw_events", EVENTS)
    return root


def test_build_json_reports_the_models_in_order(tiny: Path, pw: Callable[..., CliResult]) -> None:
    res = pw("build", "--json")
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert [(m["model"], m["status"], m["rows_out"]) for m in report["models"]] == [
        ("z_base", "ok", 4), ("m_mid", "ok", 3), ("a_top", "ok", 1)]
    assert report["ok"] is True and report["dialect"] == "duckdb"


def test_build_select_prints_a_summary(tiny: Path, pw: Callable[..., CliResult]) -> None:
    res = pw("build", "--select", "z_base")
    assert res.code == 0, res.err
    assert "z_base: 4 rows" in res.out_text and "built 1 of 1 model(s)" in res.out_text
    assert pw("build", "--select", "m_mid,a_top").code == 0


def test_a_failing_model_exits_1_naming_its_file_and_the_database_error(tiny: Path,
                                                                     pw: Callable[..., CliResult]) -> None:
    (tiny / "models" / "m_mid.sql").write_text("SELECT month, SUM(missing_col) AS total FROM z_base GROUP BY 1\n")
    res = pw("build")
    assert res.code == 1
    assert "failed: m_mid" in res.err_text and "m_mid.sql" in res.err_text and "missing_col" in res.err_text
    assert "skipped: a_top" in res.err_text
    assert "Traceback" not in res.err


def test_a_cycle_and_an_unknown_model_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       pw: Callable[..., CliResult]) -> None:
    root = make_project(tmp_path / "loop", {"p_loop": "SELECT x FROM q_loop", "q_loop": "SELECT x FROM p_loop"})
    monkeypatch.setenv("PIPEWARDEN_PROJECT", str(root))
    get_settings.cache_clear()
    res = pw("build")
    assert res.code == 1 and "cycle: p_loop, q_loop" in res.err_text and "Traceback" not in res.err
    unknown = pw("build", "--select", "p_lop")
    assert unknown.code == 2 and "did you mean 'p_loop'" in unknown.err_text
