"""Fixtures for the inbox tests: the fake resumer installed in the runtime, and a proposal factory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from pipewarden.events import ColumnSpec, SchemaDrift
from pipewarden.models import (
    CheckResult,
    Citation,
    ColumnMapping,
    DryRun,
    NoChange,
    Proposal,
    ProposalStatus,
    Risk,
)
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.fakes.runtimes import swap
from tests.inbox import fake_resumer

GOOD_RESUMER = fake_resumer.resume
FAILING_RESUMER = fake_resumer.fail


@pytest.fixture(autouse=True)
def resumer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Point the Resumer port at the fake; returns the list of proposal ids it was called with."""
    swap(monkeypatch, resumer=GOOD_RESUMER)
    get_settings.cache_clear()
    fake_resumer.CALLS.clear()
    fake_resumer.DECIDED_AT_CALL.clear()
    return fake_resumer.CALLS


@pytest.fixture
def use_resumer(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[..., Any]], None]:
    def switch(resumer: Callable[..., Any]) -> None:
        swap(monkeypatch, resumer=resumer)

    return switch


@pytest.fixture
def store() -> StateStore:
    return StateStore()


def make_proposal(
    store: StateStore,
    *,
    title: str = "Map renamed column dep_delay_min to dep_delay",
    diagnosis: str = "The batch renamed dep_delay to dep_delay_min; the values match dep_delay's range.",
    status: ProposalStatus = ProposalStatus.pending,
    sample: list[dict] | None = None,
    renames: dict[str, str] | None = None,
) -> Proposal:
    """Store a schema-drift event and a column-mapping proposal for it, the way an agent would."""
    event = SchemaDrift(
        dataset="flights", load_id="load-0042", batch_path="/data/flights_0042.csv", contract_version="flights@v1",
        added=[ColumnSpec(name="dep_delay_min", type="integer", samples=[3, -1, 12])],
        dropped=[ColumnSpec(name="dep_delay", type="integer")],
    )
    store.append_event(event)
    change = (
        NoChange(reason="no incoming column matches dep_delay")
        if status == ProposalStatus.needs_human
        else ColumnMapping(dataset="flights", renames=renames or {"dep_delay_min": "dep_delay"},
                           casts={"dep_delay": "integer"})
    )
    proposal = Proposal(
        event_id=event.id, agent="schema_drift", dataset="flights", title=title, diagnosis=diagnosis,
        change=change, status=status, thread_id=f"thread-{event.id}",
        dry_run=DryRun(
            before=CheckResult(passed=False, rows=120, failed_rows=120,
                               schema_errors=["contract column 'dep_delay' (integer) is missing"],
                               failed_checks=["dep_delay not null"]),
            after=CheckResult(passed=True, rows=120),
            sample=sample if sample is not None else [
                {"year": 2013, "carrier": "UA", "dep_delay": 3, "tailnum": "N14228"},
                {"year": 2013, "carrier": "AA", "dep_delay": -1, "tailnum": None},
            ],
        ),
        citations=[Citation(chunk_id="c-1", source="contracts/flights.yaml", kind="contract",
                            dataset="flights", owner="data-platform",
                            updated_at=datetime(2026, 11, 1, 9, 30, tzinfo=UTC), excerpt="dep_delay: integer")],
        risk=Risk.low, required_roles=["owner", "steward"],
    )
    return store.create_proposal(proposal)
