"""A fake PipelineRunner port for agent tests: the re-run ends as the test says.

Install it with `tests.fakes.runtimes.swap(monkeypatch, pipeline_runner=run)`, or in a child process with
`PIPEWARDEN_RUNTIME=tests.fakes.runtimes:fake_runner`. Outcomes come from `OUTCOMES` (a queue) or,
in a subprocess, from the env var `FAKE_RUNNER_STATUS`; every call is recorded in `CALLS`.
"""

from __future__ import annotations

import os

from pipewarden.models import CheckResult, RunResult

OUTCOMES: list[str] = []
CALLS: list[dict] = []


def run(dataset: str, source: str, *, load_id: str | None = None, rerun: bool = False) -> RunResult:
    CALLS.append({"dataset": dataset, "source": source, "load_id": load_id, "rerun": rerun})
    status = OUTCOMES.pop(0) if OUTCOMES else os.environ.get("FAKE_RUNNER_STATUS", "completed")
    checks = CheckResult(passed=status == "completed", rows=100,
                         failed_checks=[] if status == "completed" else ["dep_delay: between -120 and 1500 (100 rows)"])
    return RunResult(dataset=dataset, load_id=load_id or "load-x", status=status,  # type: ignore[arg-type]
                     halted_at=None if status == "completed" else "validate", rows_in=100, checks=checks)
