"""One fault, one proposal, on SQLite and PostgreSQL: while a proposal is open, events with its fault signature
(dataset, kind, and the drifted schema's fingerprint or the failing check) attach to it as occurrences instead of
making new proposals; a decided proposal absorbs nothing more; approval re-runs and verifies every load it covers.

The agents are stand-ins (a graph that stores a proposal), routed in place of the real ones: what is under test is
the supervisor and the store around them, and the shared verify node with the fake pipeline runner.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from pipewarden import runtime
from pipewarden.agents import lifecycle, supervisor
from pipewarden.agents.graph import build_graph
from pipewarden.agents.lifecycle import proposal_id_for, thread_id_for
from pipewarden.agents.router import Route
from pipewarden.agents.spec import AgentSpec
from pipewarden.events import (
    CheckFailed,
    CostRegression,
    FailedCheck,
    ModelDrift,
    QualityAnomaly,
    RunFailed,
    SchemaDrift,
)
from pipewarden.fault_signature import fault_signature
from pipewarden.models import ColumnMapping, Proposal, ProposalStatus, Verdict
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.agents import fake_runner
from tests.fakes.runtimes import swap


def drift(fingerprint: str | None, load_id: str, dataset: str = "flights") -> SchemaDrift:
    return SchemaDrift(dataset=dataset, load_id=load_id, batch_path=f"/tmp/{load_id}.parquet",
                       contract_version=f"{dataset}@v1", schema_fingerprint=fingerprint)


def checks(load_id: str, *failed: tuple[str, str | None]) -> CheckFailed:
    return CheckFailed(dataset="flights", load_id=load_id, batch_path=f"/tmp/{load_id}.parquet",
                       failed=[FailedCheck(check=c, column=col, failed_rows=3) for c, col in failed],
                       failure_rate=0.3, threshold=0.05)


class _Snapshot:
    created_at = None  # a thread with no checkpoint yet
    interrupts = ()


class ProposingGraph:
    """An agent that drafts a proposal for its event and waits for a person; counts the events it ran for."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def get_state(self, config: dict) -> Any:
        return _Snapshot()

    def invoke(self, start: Any, config: dict, **kwargs: Any) -> None:
        event_id = start["event_id"]
        self.ran.append(event_id)
        StateStore().create_proposal(Proposal(
            id=proposal_id_for(event_id), event_id=event_id, agent="schema-drift", dataset="flights", title="map it",
            diagnosis="renamed", change=ColumnMapping(dataset="flights", renames={"a": "b"}),
            thread_id=thread_id_for(event_id)))


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> ProposingGraph:
    graph = ProposingGraph()
    monkeypatch.setattr(supervisor, "route", lambda ev: Route(ev.kind, "schema-drift", lambda saver: graph))
    return graph


@pytest.fixture
def notified(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(supervisor, "notify", lambda kind, pid: calls.append((kind, pid)) or True)
    return calls


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    swap(monkeypatch, pipeline_runner=fake_runner.run)
    fake_runner.OUTCOMES.clear()
    fake_runner.CALLS.clear()
    yield fake_runner.OUTCOMES
    get_settings.cache_clear()


# --------------------------------------------------------------------------- the signature
def test_the_signature_is_dataset_kind_and_what_failed() -> None:
    a, b = fault_signature(drift("fp-1", "l1")), fault_signature(drift("fp-1", "l2"))
    assert a is not None and a == b and a.key == b.key and a.fault == "fp-1"
    assert fault_signature(drift("fp-2", "l1")) != a
    assert fault_signature(drift("fp-1", "l1", dataset="orders")) != a
    # the same checks in another order are the same fault; another check is another
    one = fault_signature(checks("l1", ("range", "dep_delay"), ("not_null", "origin")))
    assert one == fault_signature(checks("l2", ("not_null", "origin"), ("range", "dep_delay")))
    assert one is not None and one.fault == "not_null:origin,range:dep_delay"
    assert fault_signature(checks("l1", ("range", "dep_delay"))) != one
    anomaly = fault_signature(QualityAnomaly(dataset="flights", check="duplicates", column="flight_id"))
    assert anomaly is not None and anomaly.fault == "duplicates:flight_id"
    # a cost regression: the SQL model and the measure that regressed, whatever the batch's figures
    cost = fault_signature(CostRegression(dataset="orders", load_id="l1", model="daily_revenue", metric="rows_scanned",
                                          baseline=10.0, observed=40.0, ratio=4.0))
    assert cost is not None and cost.fault == "daily_revenue:rows_scanned"
    assert cost == fault_signature(CostRegression(dataset="orders", load_id="l2", model="daily_revenue",
                                                  metric="rows_scanned", baseline=10.0, observed=90.0, ratio=9.0))
    assert cost != fault_signature(CostRegression(dataset="orders", model="daily_revenue", metric="elapsed_ms",
                                                  baseline=10.0, observed=40.0, ratio=4.0))
    # model drift: the scoring model's version and the metric
    model = fault_signature(ModelDrift(dataset="orders", model="churn@v3", metric="psi", value=0.4, threshold=0.2))
    assert model is not None and model.fault == "churn@v3:psi"
    assert model != fault_signature(ModelDrift(dataset="orders", model="churn@v4", metric="psi", value=0.4,
                                               threshold=0.2))
    # nothing names the fault: every such event gets its own proposal
    assert fault_signature(drift(None, "l1")) is None
    assert fault_signature(RunFailed(dataset="flights", stage="load", error="boom")) is None


# --------------------------------------------------------------------------- the supervisor
def test_two_batches_of_one_fingerprint_make_one_proposal_and_another_fingerprint_its_own(
        state_url: str, agent: ProposingGraph, notified: list) -> None:
    store = StateStore()
    first, second, other = drift("fp-1", "load-1"), drift("fp-1", "load-2"), drift("fp-2", "load-3")
    for ev in (first, second, other):
        store.append_event(ev)
    report = supervisor.supervise_once(worker="w1")
    pid = str(proposal_id_for(str(first.id)))
    by_event = {h.event_id: h for h in report.handled}
    assert by_event[str(second.id)].status == "attached" and by_event[str(second.id)].proposal_id == pid
    assert agent.ran == [str(first.id), str(other.id)]  # no agent ran for the repeat
    assert sorted(str(p.event_id) for p in store.list_proposals()) == sorted([str(first.id), str(other.id)])
    occ = store.occurrences(pid)
    assert [(o.event_id, o.role, o.load_id) for o in occ] == [(str(first.id), "origin", "load-1"),
                                                              (str(second.id), "attached", "load-2")]
    assert [o.load_id for o in store.occurrences(proposal_id_for(str(other.id)))] == ["load-3"]
    assert store.event_row(second.id)["status"] == "attached"
    assert notified == [("occurrence_attached", pid)]
    assert [e.action for e in store.audit_entries(pid)].count("occurrence_attached") == 1
    assert store.verify_audit().ok


def test_a_decided_proposal_absorbs_no_new_event(state_url: str, agent: ProposingGraph, notified: list) -> None:
    store = StateStore()
    first = drift("fp-1", "load-1")
    store.append_event(first)
    supervisor.supervise_once(worker="w1")
    pid = proposal_id_for(str(first.id))
    store.decide(pid, Verdict.reject, "alice", "not this mapping")
    again = drift("fp-1", "load-2")
    store.append_event(again)
    report = supervisor.supervise_once(worker="w1")
    assert [h.status for h in report.handled] == ["pending"]
    assert agent.ran == [str(first.id), str(again.id)]
    new = store.proposal_for_event(again.id)
    assert new is not None and new.id != pid
    assert [o.load_id for o in store.occurrences(pid)] == ["load-1"]
    assert [o.load_id for o in store.occurrences(new.id)] == ["load-2"]
    # and the new proposal is the open one now: the next repeat attaches to it
    third = drift("fp-1", "load-3")
    store.append_event(third)
    supervisor.supervise_once(worker="w1")
    assert [o.load_id for o in store.occurrences(new.id)] == ["load-2", "load-3"]


def test_repeats_of_an_origin_that_ends_without_a_proposal_are_handled_on_their_own(
        state_url: str, monkeypatch: pytest.MonkeyPatch, notified: list) -> None:
    store = StateStore()
    first, second = drift("fp-1", "load-1"), drift("fp-1", "load-2")
    store.append_event(first)
    store.append_event(second)

    class NoProposal(ProposingGraph):
        def invoke(self, start: Any, config: dict, **kwargs: Any) -> None:
            if start["event_id"] == str(first.id):
                self.ran.append(start["event_id"])
                return  # nothing to propose
            super().invoke(start, config, **kwargs)

    graph = NoProposal()
    monkeypatch.setattr(supervisor, "route", lambda ev: Route(ev.kind, "schema-drift", lambda saver: graph))
    # the first pass claims the origin only; the repeat is claimed while the origin's agent runs
    original = supervisor.handle_event

    def handle_with_a_repeat_meanwhile(*args: Any, **kwargs: Any) -> Any:
        if args[0] == str(first.id):
            assert [h.status for h in supervisor.supervise_once(worker="w2").handled] == ["attached"]
        return original(*args, **kwargs)

    monkeypatch.setattr(supervisor, "handle_event", handle_with_a_repeat_meanwhile)
    supervisor.supervise_once(worker="w1", limit=1)
    assert store.event_row(first.id)["status"] == "done"
    assert store.event_row(second.id)["status"] == "pending"  # released: handled on its own next
    supervisor.supervise_once(worker="w1")
    assert graph.ran == [str(first.id), str(second.id)]
    p = store.proposal_for_event(second.id)
    assert p is not None and [o.load_id for o in store.occurrences(p.id)] == ["load-2"]


def test_two_workers_on_two_events_of_one_fault_make_one_proposal(state_url: str, agent: ProposingGraph,
                                                                 notified: list) -> None:
    store = StateStore()
    events = [drift("fp-1", f"load-{i}") for i in range(2)]
    for ev in events:
        store.append_event(ev)
    start = threading.Barrier(2)
    reports: dict[str, Any] = {}

    def work(name: str) -> None:
        start.wait()
        reports[name] = supervisor.supervise_once(worker=name, limit=1)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(h.status for r in reports.values() for h in r.handled)
    assert statuses == ["attached", "pending"]
    proposals = store.list_proposals()
    assert len(proposals) == 1 and len(agent.ran) == 1
    assert sorted(o.load_id for o in store.occurrences(proposals[0].id)) == ["load-0", "load-1"]


# --------------------------------------------------------------------------- the store, raced
def test_placing_many_events_of_one_fault_at_once_opens_it_once(state_url: str) -> None:
    store = StateStore()
    events = [drift("fp-1", f"load-{i}") for i in range(6)]
    for ev in events:
        store.append_event(ev)
    sig = fault_signature(events[0])
    assert sig is not None
    start = threading.Barrier(len(events))
    placed: dict[str, Any] = {}

    def place(ev: SchemaDrift) -> None:
        start.wait()
        placed[str(ev.id)] = StateStore().attach_occurrence(ev, sig, proposal_id_for(str(ev.id)), "w")

    threads = [threading.Thread(target=place, args=(ev,)) for ev in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.role for o in placed.values()) == ["attached"] * 5 + ["origin"]
    origin = next(o for o in placed.values() if o.role == "origin")
    assert {o.proposal_id for o in placed.values()} == {origin.proposal_id}
    assert len(store.occurrences(origin.proposal_id)) == 6
    for ev in events[:2]:  # a re-claimed event gets what it got the first time, and nothing is added
        again = store.attach_occurrence(ev, sig, proposal_id_for(str(ev.id)), "w")
        assert (again.role, again.proposal_id) == (placed[str(ev.id)].role, placed[str(ev.id)].proposal_id)
    assert len(store.occurrences(origin.proposal_id)) == 6


# --------------------------------------------------------------------------- approval covers every load
def _applied_with_a_repeat(store: StateStore) -> tuple[str, list[SchemaDrift]]:
    first, second = drift("fp-1", "load-1"), drift("fp-1", "load-2")
    sig = fault_signature(first)
    assert sig is not None
    for ev in (first, second):
        store.append_event(ev)
    pid = proposal_id_for(str(first.id))
    assert store.attach_occurrence(first, sig, pid, "w").role == "origin"
    store.create_proposal(Proposal(
        id=pid, event_id=first.id, agent="schema-drift", dataset="flights", title="map it", diagnosis="renamed",
        change=ColumnMapping(dataset="flights", renames={"a": "b"}), thread_id=thread_id_for(str(first.id))))
    assert store.attach_occurrence(second, sig, pid, "w").role == "attached"
    store.decide(pid, Verdict.approve, "alice")
    for status in (ProposalStatus.applying, ProposalStatus.applied):
        store.transition(pid, status, "applier")
    return str(pid), [first, second]


def test_approval_reruns_every_load_it_covers_and_verifies_them_all(state_url: str,
                                                                    fake_pipeline: list[str]) -> None:
    store = StateStore()
    pid, events = _applied_with_a_repeat(store)
    out = lifecycle.make_verify(lifecycle.rerun_batch, runtime.current())({"proposal_id": pid})
    assert out["outcome"] == "verified"
    assert [(c["load_id"], c["source"], c["rerun"]) for c in fake_runner.CALLS] == [
        (ev.load_id, ev.batch_path, True) for ev in events]
    assert [load["load_id"] for load in out["verify_detail"]["loads"]] == ["load-1", "load-2"]
    assert store.get_proposal(pid).status == ProposalStatus.verified


def test_one_failing_load_rolls_the_change_back_and_names_the_load(state_url: str,
                                                                  fake_pipeline: list[str]) -> None:
    store = StateStore()
    pid, _ = _applied_with_a_repeat(store)
    fake_pipeline.extend(["completed", "halted"])
    out = lifecycle.make_verify(lifecycle.rerun_batch, runtime.current())({"proposal_id": pid})
    assert out["outcome"] == "rolled_back"
    p = store.get_proposal(pid)
    assert p.status == ProposalStatus.pending and "load load-2: re-run halted at validate" in p.status_reason
    assert [c["load_id"] for c in fake_runner.CALLS] == ["load-1", "load-2"]


def test_inbox_show_lists_the_loads(pw: Callable[..., Any]) -> None:
    store = StateStore()
    pid, _ = _applied_with_a_repeat(store)
    res = pw("inbox", "show", pid[:8])
    assert res.code == 0
    assert "seen in 2 batches" in res.out_text
    assert "load-1 first seen" in res.out_text and "load-2 repeat" in res.out_text
    shown = pw("inbox", "show", pid[:8], "--json")
    assert [o["load_id"] for o in json.loads(shown.out)["occurrences"]] == ["load-1", "load-2"]


def test_approving_through_the_graph_reruns_both_loads(state_url: str, monkeypatch: pytest.MonkeyPatch,
                                                       fake_pipeline: list[str], notified: list) -> None:
    """The whole path: two drifted batches, one proposal drafted by a graph with the shared tail, a stored
    approval, the worker's resume: apply, one re-run per load, verified."""

    class Case(BaseModel):
        event_id: str

    def propose(case: Case, plan: Any, proof: Any, rt: Any) -> Proposal:
        eid = case.event_id
        return Proposal(
            id=proposal_id_for(eid), event_id=eid, agent="schema-drift", dataset="flights", title="map it",
            diagnosis="renamed", change=ColumnMapping(dataset="flights", renames={"a": "b"}),
            thread_id=thread_id_for(eid))

    stand_in = AgentSpec(name="schema-drift", handles=("schema_drift",), case=Case,
                         gather=lambda ev, rt: Case(event_id=str(ev.id)), propose=propose)

    def build(saver: Any) -> Any:
        return build_graph(stand_in, saver)

    monkeypatch.setattr(supervisor, "route", lambda ev: Route(ev.kind, "schema-drift", build))
    monkeypatch.setattr(supervisor, "route_for_agent", lambda agent: Route("*", agent, build))
    store = StateStore()
    first, second = drift("fp-1", "load-1"), drift("fp-1", "load-2")
    for ev in (first, second):
        store.append_event(ev)
    supervisor.supervise_once(worker="w1")
    pid = proposal_id_for(str(first.id))
    assert [p.id for p in store.list_proposals()] == [pid]
    store.decide(pid, Verdict.approve, "alice")
    report = supervisor.supervise_once(worker="w1")
    assert [(r.proposal_id, r.status) for r in report.resumed] == [(str(pid), "verified")]
    assert [(c["load_id"], c["rerun"]) for c in fake_runner.CALLS] == [("load-1", True), ("load-2", True)]
