"""Small builders for kernel objects used across test folders."""

from __future__ import annotations

from typing import Any

from pipewarden.events import ColumnSpec, SchemaDrift, TypeChange
from pipewarden.models import CheckResult, ColumnMapping, DryRun, Proposal
from pipewarden.store import StateStore


def drift_event(dataset: str = "flights", batch_path: str = "/tmp/batch.parquet") -> SchemaDrift:
    return SchemaDrift(
        dataset=dataset, load_id="flights-abc", batch_path=batch_path, contract_version=f"{dataset}@v1",
        added=[ColumnSpec(name="departureDelay", type="float", samples=[2.0, -3.0])],
        dropped=[ColumnSpec(name="dep_delay", type="float")],
        retyped=[TypeChange(column="flight", expected="integer", observed="string")],
    )


def pending_proposal(store: StateStore, title: str = "flights: map departureDelay -> dep_delay", **fields: Any) -> Proposal:
    ev = drift_event()
    store.append_event(ev)
    p = Proposal(
        event_id=ev.id, agent="schema-drift", dataset="flights", title=title, diagnosis="renamed column",
        change=ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}, casts={"flight": "integer"}),
        dry_run=DryRun(before=CheckResult(passed=False, rows=10, schema_errors=["x"]),
                       after=CheckResult(passed=True, rows=10)),
        thread_id=f"event-{ev.id}",
    )
    return store.create_proposal(p.model_copy(update=fields))
