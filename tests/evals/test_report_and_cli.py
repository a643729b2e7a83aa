"""The verdict against the bar, the reports, the base-state copy, the mock's token count and `pipewarden eval`'s
argument errors. The whole suite runs in test_suite.py (slow)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from pipewarden.evals.mock_llm import MockLLMServer, answer, http_error
from pipewarden.evals.prereqs import READY, copy_home
from pipewarden.evals.report import Bar, build_report, render_markdown, write_reports
from pipewarden.evals.runner import LLMConfig, ScenarioResult, SuiteRun
from pipewarden.evals.scorers import Score

ROOT = Path(__file__).resolve().parents[2]
BAR = Bar(pass_rate=0.8, set_on="2026-11-21", command="pipewarden eval --llm mock --json")


def _result(i: int, *, passed: bool = True, unsafe: bool = False) -> ScenarioResult:
    scores = [Score(name="safe", passed=not unsafe, detail="x: renames to a column the contract lacks" if unsafe else "")]
    return ScenarioResult(id=f"s{i}", agent="cost" if i % 2 else "schema-drift", passed=passed and not unsafe,
                          unsafe=unsafe, scores=scores, latency_s=1.0 + i, tokens=100)


def _run(results: list[ScenarioResult]) -> SuiteRun:
    return SuiteRun(llm=LLMConfig(mode="mock"), results=results, wall_s=10, workers=1, base_s=1)


def test_the_verdict_names_unsafe_scenarios_and_the_bar(tmp_path: Path) -> None:
    report = build_report(_run([_result(0), _result(1, unsafe=True), _result(2, passed=False)]), bar=BAR, command="c")
    assert not report.ok and report.unsafe == 1
    assert "s1" in report.verdict and "unsafe" in report.verdict
    assert "33.3%" in report.verdict and "below the bar 80.0%" in report.verdict
    j, m = write_reports(report, tmp_path / "out")
    assert json.loads(j.read_text())["unsafe"] == 1
    assert "| s1 | cost |" in m.read_text() and "UNSAFE" in m.read_text()


def test_a_clean_run_at_the_bar_passes_with_per_agent_latency() -> None:
    report = build_report(_run([_result(i) for i in range(5)]), bar=BAR, command="c")
    assert report.ok and report.pass_rate == 1.0 and "meets the bar" in report.verdict
    drift = next(a for a in report.agents if a.agent == "schema-drift")
    assert drift.scenarios == 3 and drift.latency_p50_s == 3.0 and drift.latency_p95_s == 4.8
    assert "| schema-drift | 3 | 3 | 100.0% | 0 |" in render_markdown(report)


def test_one_unsafe_change_fails_even_above_the_bar() -> None:
    results = [_result(i) for i in range(20)] + [_result(20, unsafe=True)]
    report = build_report(_run(results), bar=BAR, command="c")
    assert report.pass_rate > BAR.pass_rate and not report.ok and "s20" in report.verdict


def test_copying_the_base_state_repoints_paths_inside_sqlite_stores(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    built_at = "/somewhere/.building-1234"
    (base / READY).write_text(built_at)
    con = sqlite3.connect(base / "mlflow.db")
    con.execute("create table experiments (artifact_location varchar(256), name text)")
    con.execute("insert into experiments values (?, 'flights')", (f"file://{built_at}/mlartifacts/1",))
    con.commit()
    con.close()
    dest = copy_home(base, tmp_path / "copy")
    (loc,) = sqlite3.connect(dest / "mlflow.db").execute("select artifact_location from experiments").fetchone()
    assert loc == f"file://{dest.resolve()}/mlartifacts/1"
    assert not (dest / READY).exists()


def test_the_mock_counts_requests_answers_and_tokens() -> None:
    with MockLLMServer([http_error(503, "busy"), answer({"ok": True})]) as srv:
        client = openai.OpenAI(api_key="k", base_url=srv.base_url, max_retries=0, timeout=5)
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
        out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello there"}])
    assert srv.llm.requests_seen == 2 and srv.llm.calls == 1
    assert srv.llm.total_tokens == out.usage.total_tokens > 0


def _eval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipewarden", "eval", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_eval_refuses_bad_arguments_before_doing_any_work() -> None:
    res = _eval("--llm", "gpt")
    assert res.returncode == 2 and "use mock, offline or openai" in res.stderr
    res = _eval("--scenario", "sd-adv-timeot")
    assert res.returncode == 2 and "unknown scenario 'sd-adv-timeot'" in res.stderr and "sd-adv-timeout" in res.stderr
    res = _eval("--llm", "mock", "--base-url", "http://127.0.0.1:1/v1")
    assert res.returncode == 2 and "--base-url and --model apply to --llm openai" in res.stderr


def test_the_workers_take_the_longest_scenarios_first_keeping_the_catalogue_order_within_an_agent() -> None:
    from pipewarden.evals.runner import EXPECTED_S, longest_first
    from pipewarden.evals.scenarios import load_catalogue

    catalogue = load_catalogue().scenarios
    ordered = longest_first(catalogue)
    assert sorted(s.id for s in ordered) == sorted(s.id for s in catalogue)  # none dropped, none repeated
    expected = [EXPECTED_S[s.agent] for s in ordered]
    assert expected == sorted(expected, reverse=True)
    assert ordered[0].agent == "cost" and ordered[-1].agent == "schema-drift"
    for agent in EXPECTED_S:
        assert [s.id for s in ordered if s.agent == agent] == [s.id for s in catalogue if s.agent == agent]
