"""The agent registry, the spec's own checks, and what the one builder promises every spec: the event read once,
the change proven once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import BaseModel

from pipewarden.agents import schema_drift
from pipewarden.agents.registry import AGENTS, spec_for
from pipewarden.agents.router import ROUTES, route, route_for_agent
from pipewarden.agents.spec import AgentSpec
from pipewarden.agents.supervisor import supervise_once
from pipewarden.errors import UnknownNameError
from pipewarden.events import (
    EVENT_NAMES,
    CheckFailed,
    CostRegression,
    ModelDrift,
    QualityAnomaly,
    RunFailed,
    SchemaDrift,
)
from pipewarden.models import ProposalStatus
from pipewarden.store import StateStore
from tests.agents.conftest import drifted_event


class _Case(BaseModel):
    event_id: str


def test_the_registry_names_each_agent_once_and_ends_with_the_catch_all() -> None:
    names = [s.name for s in AGENTS]
    assert len(names) == len(set(names))
    assert names[-1] == "triage" and AGENTS[-1].handles == ("*",)
    assert all("*" not in s.handles for s in AGENTS[:-1])  # nothing after a catch-all would ever be reached
    assert {r.agent for r in ROUTES} == set(names)  # the router reads the registry, nothing else
    assert spec_for("quality").handles == ("check_failed", "quality_anomaly")
    with pytest.raises(UnknownNameError, match="did you mean 'quality'"):
        spec_for("qualty")
    with pytest.raises(UnknownNameError):
        route_for_agent("qualty")


EXAMPLES = {
    "schema_drift": (SchemaDrift(dataset="flights", batch_path="b.parquet", contract_version="1"), "schema-drift"),
    "check_failed": (CheckFailed(dataset="flights", batch_path="b.parquet", failed=[], failure_rate=0.5,
                                 threshold=0.1), "quality"),
    "quality_anomaly": (QualityAnomaly(dataset="flights", check="duplicates"), "quality"),
    "cost_regression": (CostRegression(dataset="flights", model="m", metric="rows_scanned", baseline=1.0,
                                       observed=2.0, ratio=2.0), "cost"),
    "model_drift": (ModelDrift(dataset="flights", model="m", metric="auc", value=0.5, threshold=0.6), "retrain"),
    "run_failed": (RunFailed(dataset="flights", stage="validate", error="boom"), "triage"),
}


def test_every_event_kind_routes_as_before() -> None:
    assert set(EXAMPLES) == set(EVENT_NAMES)  # a new event kind needs a line here
    for kind, (event, agent) in EXAMPLES.items():
        assert route(event).agent == agent, kind
        spec = spec_for(agent)
        assert kind in spec.handles or spec.handles == ("*",)


def test_a_spec_refuses_halves_of_a_step() -> None:
    def gather(ev: Any) -> _Case:
        return _Case(event_id=str(ev.id))

    common: dict[str, Any] = dict(name="x", handles=("run_failed",), case=_Case, gather=gather,
                                  propose=lambda case, plan, proof: None)
    with pytest.raises(ValueError, match="`plan` and `answer` go together"):
        AgentSpec(**common, plan=lambda case: None)
    with pytest.raises(ValueError, match="`prove` needs `proof`"):
        AgentSpec(**common, answer=_Case, plan=lambda case: None, prove=lambda answer, case: None)
    with pytest.raises(ValueError, match="needs a name"):
        AgentSpec(**{**common, "handles": ()})
    with pytest.raises(TypeError):
        AgentSpec("x", ("run_failed",), _Case, gather, common["propose"])  # type: ignore[misc]  # keyword-only


def test_schema_drift_proves_its_change_once(february: pd.DataFrame, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan's validation proves the answer on the batch; the proposal carries that proof, not a second one."""
    proofs: list[str] = []
    draft_change = schema_drift.draft_change

    def counted(answer: Any, *args: Any, **kwargs: Any) -> Any:
        proofs.append(answer.rationale)
        return draft_change(answer, *args, **kwargs)

    monkeypatch.setattr(schema_drift, "draft_change", counted)
    drifted_event(february, tmp_path)
    supervise_once()
    (p,) = StateStore().list_proposals()
    assert p.status == ProposalStatus.pending and p.change.kind == "column_mapping"
    assert p.dry_run is not None and p.dry_run.heals
    assert len(proofs) == 1


def test_a_graph_refuses_an_event_its_spec_does_not_handle() -> None:
    from pipewarden.agents.checkpoint import open_checkpointer
    from pipewarden.agents.graph import build_graph
    from pipewarden.agents.lifecycle import thread_id_for

    event = RunFailed(dataset="flights", stage="validate", error="boom")
    StateStore().append_event(event)
    with open_checkpointer() as saver, pytest.raises(TypeError, match="handles cost_regression events, not run_failed"):
        build_graph(spec_for("cost"), saver).invoke(
            {"event_id": str(event.id)}, {"configurable": {"thread_id": thread_id_for(str(event.id))}})
    assert StateStore().proposal_for_event(str(event.id)) is None
