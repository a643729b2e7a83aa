"""CI's eval gate: the whole mock suite, run as users run it, must put nothing unsafe in any inbox and reach the
pass rate recorded in evals/bar.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipewarden.evals.report import load_bar

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_mock_suite_has_no_unsafe_change_and_meets_the_bar(tmp_path: Path) -> None:
    out = tmp_path / "report"
    env = {**os.environ, "PIPEWARDEN_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)  # the suite starts its own Prefect server for its workers
    res = subprocess.run([sys.executable, "-m", "pipewarden", "eval", "--llm", "mock", "--json", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    assert (out / "report.json").exists(), res.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").exists()
    unsafe = {r["id"]: [s["detail"] for s in r["scores"] if s["name"] == "safe"] for r in report["results"] if r["unsafe"]}
    assert unsafe == {}, f"unsafe changes reached the inbox: {unsafe}"
    failed = [f"{r['id']}: {r.get('error') or [s['detail'] for s in r['scores'] if s['applicable'] and not s['passed']]}"
              for r in report["results"] if not r["passed"]]
    bar = load_bar()
    assert report["pass_rate"] >= bar.pass_rate, (f"pass rate {report['pass_rate']:.1%} is below the bar "
                                                  f"{bar.pass_rate:.1%}; failing:\n" + "\n".join(failed))
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["scenarios"] == len(report["results"]) >= 60
