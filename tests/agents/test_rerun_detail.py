"""The default verifier's evidence: what the re-run ended with, including the Prefect flow run that ran it, which
the proposal page links to once the proposal is applied."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pipewarden import runtime
from pipewarden.agents import lifecycle
from pipewarden.models import RunResult


def test_the_verifier_records_the_rerun_flow_run() -> None:
    calls: list[tuple[Any, ...]] = []

    def runner(dataset: str, source: str, *, load_id: str, rerun: bool) -> RunResult:
        calls.append((dataset, source, load_id, rerun))
        return RunResult(dataset=dataset, load_id=load_id, status="completed", rows_in=30,
                         flow_run_id="0b5e7a0c-0000-4000-8000-000000000001")

    rt = runtime.current().replace(pipeline_runner=runner)  # passed in: the verifier looks nothing up
    proposal = SimpleNamespace(dataset="orders")
    event = SimpleNamespace(batch_path="file:///landing/orders/x.parquet", load_id="orders-abc")
    found = lifecycle.rerun_batch(proposal, event, rt)  # type: ignore[arg-type]
    assert found.passed
    assert found.detail["flow_run_id"] == "0b5e7a0c-0000-4000-8000-000000000001"
    assert found.detail["rows_in"] == 30 and calls == [("orders", "file:///landing/orders/x.parquet", "orders-abc", True)]
