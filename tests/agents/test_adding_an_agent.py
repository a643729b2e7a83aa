"""docs/adding-an-agent.md stays true: its example agent (the module's code, taken from the page as it is) is built
by the one graph builder and run on a stored event to a stored proposal, and registering it is one line."""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pipewarden import runtime
from pipewarden.agents.checkpoint import open_checkpointer
from pipewarden.agents.graph import build_graph
from pipewarden.agents.lifecycle import proposal_id_for, thread_id_for
from pipewarden.agents.registry import AGENTS
from pipewarden.agents.router import first_route, routes
from pipewarden.events import RunFailed, SchemaDrift
from pipewarden.models import ProposalStatus
from pipewarden.store import StateStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "adding-an-agent.md"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The page's first Python block, run as the module `run_failure` (the code the page tells a user to write)."""
    code = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert code is not None, "the page has lost its example module"
    module = types.ModuleType("run_failure")
    monkeypatch.setitem(sys.modules, "run_failure", module)  # pydantic resolves the models' annotations there
    exec(compile(code.group(1), str(DOC), "exec"), module.__dict__)  # noqa: S102  # our own documentation's code
    return module


def _run(spec: Any, event: RunFailed) -> None:
    StateStore().append_event(event)
    with open_checkpointer() as saver:
        build_graph(spec, saver).invoke({"event_id": str(event.id)},
                                        {"configurable": {"thread_id": thread_id_for(str(event.id))}},
                                        durability="sync")


def test_the_example_turns_a_failed_validate_stage_into_a_stored_reingest_proposal(
    example: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    get_event = StateStore.get_event
    monkeypatch.setattr(StateStore, "get_event", lambda self, eid: reads.append(str(eid)) or get_event(self, eid))
    read_before_propose: list[int] = []

    def propose(case: Any, plan: Any, proof: Any, rt: Any) -> Any:
        read_before_propose.append(len(reads))
        return example.propose(case, plan, proof, rt)

    event = RunFailed(dataset="flights", load_id="load-7", stage="validate", error="Parquet file is truncated")
    _run(dataclasses.replace(example.SPEC, propose=propose), event)
    p = StateStore().proposal_for_event(str(event.id))
    assert p is not None and p.id == proposal_id_for(str(event.id)) and p.thread_id == thread_id_for(str(event.id))
    assert p.agent == "run-failure" and p.status == ProposalStatus.pending and p.planner == "offline"
    assert p.change.kind == "reingest" and p.change.load_id == "load-7" and p.change.dataset == "flights"
    assert "truncated" in p.diagnosis
    assert read_before_propose == [1]  # the event was read once, by gather; plan and propose used the case


def test_the_example_hands_a_crashed_run_to_a_human(example: types.ModuleType) -> None:
    event = RunFailed(dataset="flights", load_id="load-8", stage="validate", error="worker lost", crashed=True)
    _run(example.SPEC, event)
    p = StateStore().proposal_for_event(str(event.id))
    assert p is not None and p.status == ProposalStatus.needs_human and p.change.kind == "no_change"
    assert "worker lost" in p.change.reason


def test_registering_the_example_is_one_line_and_takes_run_failed_from_triage(example: types.ModuleType) -> None:
    failed = RunFailed(dataset="flights", stage="validate", error="boom")
    drift = SchemaDrift(dataset="flights", batch_path="drifted.parquet", contract_version="1")
    assert first_route(failed, routes(AGENTS)).agent == "triage"  # today
    registered = (*AGENTS[:-1], example.SPEC, AGENTS[-1])  # the page's one line: before the catch-all
    assert first_route(failed, routes(registered)).agent == "run-failure"
    assert first_route(drift, routes(registered)).agent == "schema-drift"  # the others are unchanged


class _ScriptedPlanner:
    """A planner of the test's own (an LLM stand-in): hands the case to a human, whatever it is asked."""

    name = "scripted"

    def plan(self, request: Any, answer: type[Any], *, tools: Any = (), feedback: Any = None) -> Any:
        return answer(action="needs_human", reason="the scripted planner says so")


def test_the_graph_takes_its_planner_and_store_from_the_runtime_it_is_given(example: types.ModuleType) -> None:
    reads: list[str] = []

    class CountingStore(StateStore):
        def get_event(self, event_id: Any) -> Any:
            reads.append(str(event_id))
            return super().get_event(event_id)

    rt = runtime.current().replace(planner=_ScriptedPlanner, store=CountingStore)
    event = RunFailed(dataset="orders", load_id="load-9", stage="validate", error="bad bytes")
    StateStore().append_event(event)
    with open_checkpointer() as saver:
        build_graph(example.SPEC, saver, runtime=rt).invoke(
            {"event_id": str(event.id)}, {"configurable": {"thread_id": thread_id_for(str(event.id))}},
            durability="sync")
    p = StateStore().proposal_for_event(str(event.id))
    assert p is not None and p.planner == "scripted" and p.status == ProposalStatus.needs_human
    assert "the scripted planner says so" in p.change.reason  # the runtime's planner answered, not the offline one
    assert reads == [str(event.id)]  # the store it was given; the event read once, by gather (heed used the state)
