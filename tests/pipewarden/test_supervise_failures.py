"""The worker's failure handling, on SQLite and PostgreSQL: one event's failure (any exception) never ends a pass;
a failed event is retried with backoff and, out of attempts, dead-lettered as a needs-a-human proposal that the
inbox lists with its error; a claim whose worker died is `crashed`, not `failed`. And `inbox approve`: handed to
the worker with --no-wait, and never run twice beside a worker that holds the lease.

The agents here are stand-ins (a graph that raises, or one that stores a proposal), routed in place of the real
ones: what is under test is the supervisor around them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from pipewarden.agents import supervisor
from pipewarden.agents.lifecycle import proposal_id_for, thread_id_for
from pipewarden.agents.router import Route
from pipewarden.leases import RetryPolicy, worker_name
from pipewarden.models import ColumnMapping, Proposal, ProposalStatus
from pipewarden.store import StateStore
from tests.conftest import CliResult
from tests.fakes.runtimes import swap
from tests.pipewarden.factories import drift_event, pending_proposal

NOW = RetryPolicy(max_attempts=2, backoff_s=0.0)  # retried at once, dead-lettered at the second failure


class _Snapshot:
    created_at = None  # a thread with no checkpoint yet
    interrupts = ()


class RaisingGraph:
    """An agent whose code raises (not a PipewardenError: any exception)."""

    def get_state(self, config: dict) -> Any:
        return _Snapshot()

    def invoke(self, start: Any, config: dict, **kwargs: Any) -> None:
        raise KeyError("dep_delay")


class ProposingGraph(RaisingGraph):
    """An agent that drafts a proposal for its event and waits for a person."""

    def invoke(self, start: Any, config: dict, **kwargs: Any) -> None:
        event_id = start["event_id"]
        StateStore().create_proposal(Proposal(
            id=proposal_id_for(event_id), event_id=event_id, agent="schema-drift", dataset="flights", title="map it",
            diagnosis="renamed", change=ColumnMapping(dataset="flights", renames={"a": "b"}),
            thread_id=thread_id_for(event_id)))


@pytest.fixture
def agents(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, Any]], None]:
    """Route each event (by id) to a stand-in graph."""

    def use(graphs: dict[str, Any]) -> None:
        monkeypatch.setattr(supervisor, "route", lambda ev: Route(ev.kind, "schema-drift",
                                                                  lambda saver: graphs[str(ev.id)]))

    return use


def test_one_failing_event_never_ends_the_pass(state_url: str, agents: Callable) -> None:
    store = StateStore()
    bad, good = drift_event(), drift_event()
    store.append_event(bad)
    store.append_event(good)
    agents({str(bad.id): RaisingGraph(), str(good.id): ProposingGraph()})
    report = supervisor.supervise_once(worker="w1")
    by_event = {h.event_id: h for h in report.handled}
    assert by_event[str(good.id)].status == "pending"  # handled after the failure, in the same pass
    failed = by_event[str(bad.id)]
    assert failed.failure == "failed" and failed.error == "KeyError: 'dep_delay'"
    assert failed.status.startswith("failed (attempt 1 of 3; retried after")
    row = store.event_row(bad.id)
    assert (row["status"], row["failure"], row["attempts"]) == ("pending", "failed", 1)
    assert row["next_attempt_at"] is not None
    assert supervisor.supervise_once(worker="w1").handled == []  # backing off: not claimed again yet


def test_an_event_failing_again_and_again_is_dead_lettered_for_a_person(
    state_url: str, agents: Callable, pw: Callable[..., CliResult]
) -> None:
    store = StateStore()
    ev = drift_event()
    store.append_event(ev)
    agents({str(ev.id): RaisingGraph()})
    first = supervisor.supervise_once(worker="w1", retry=NOW)
    assert first.handled[0].status.startswith("failed (attempt 1 of 2")
    second = supervisor.supervise_once(worker="w1", retry=NOW)
    [dead] = second.handled
    assert dead.status == "dead" and dead.failure == "failed" and dead.proposal_id == str(proposal_id_for(str(ev.id)))
    assert store.event_row(ev.id)["status"] == "dead"
    assert supervisor.supervise_once(worker="w1", retry=NOW).handled == []  # never claimed again
    p = store.get_proposal(dead.proposal_id)
    assert p.status == ProposalStatus.needs_human and "KeyError: 'dep_delay'" in p.title
    assert "2 attempts" in p.title and p.change.kind == "no_change"
    listed = pw("inbox", "list", "--json")
    assert listed.code == 0, listed.err
    [row] = json.loads(listed.out)
    assert row["status"] == "needs_human" and "KeyError: 'dep_delay'" in row["title"]
    actions = [e.action for e in store.audit_entries()]
    assert actions.count("event_failed") == 1 and actions.count("event_dead") == 1
    assert store.verify_audit().ok


def _gone_owner() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return worker_name(child.pid)


def test_a_claim_whose_worker_died_is_crashed_not_failed(state_url: str, agents: Callable) -> None:
    store = StateStore()
    ev = drift_event()
    store.append_event(ev)
    store.claim(_gone_owner())  # a supervisor that was killed while it ran the agent
    agents({str(ev.id): ProposingGraph()})
    [handled] = supervisor.supervise_once(worker="w2").handled
    assert handled.failure == "crashed" and handled.status == "pending" and handled.error is None
    assert store.event_row(ev.id)["status"] == "proposed"
    assert "event_crashed" in [e.action for e in store.audit_entries()]


def test_an_event_whose_workers_keep_dying_is_dead_lettered_without_running_it_again(
    state_url: str, agents: Callable
) -> None:
    store = StateStore()
    ev = drift_event()
    store.append_event(ev)
    for _ in range(NOW.max_attempts):  # every worker that took it died with it
        store.claim(_gone_owner())
    agents({str(ev.id): RaisingGraph()})  # it would raise if it ran: it must not run
    [dead] = supervisor.supervise_once(worker="w3", retry=NOW).handled
    assert dead.status == "dead" and dead.failure == "crashed" and "died" in (dead.error or "")
    row = store.event_row(ev.id)
    assert (row["status"], row["failure"]) == ("dead", "crashed")
    assert store.get_proposal(dead.proposal_id).status == ProposalStatus.needs_human  # type: ignore[arg-type]


# --------------------------------------------------------------------------- `inbox approve` and the worker
def test_inbox_approve_no_wait_hands_off_and_says_what_happens_next(
    state_url: str, pw: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore()
    p = pending_proposal(store)
    monkeypatch.setenv("PIPEWARDEN_TOKEN", store.issue_token("alice"))
    res = pw("inbox", "approve", p.short_id, "--no-wait")
    assert res.code == 0, res.err
    assert "the next `pipewarden supervise` applies it" in res.out_text
    assert store.get_proposal(p.id).status == ProposalStatus.approved
    assert store.resume_requested() == [str(p.id)]


def test_inbox_approve_while_a_worker_holds_the_lease_says_so(
    state_url: str, pw: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore()
    p = pending_proposal(store)
    store.take_proposal_lease(p.id, "worker-host:4242")
    monkeypatch.setenv("PIPEWARDEN_TOKEN", store.issue_token("alice"))
    res = pw("inbox", "approve", p.short_id)
    assert res.code == 0, res.err
    assert "the worker worker-host:4242 is applying it now" in res.out_text
    assert [e.action for e in store.audit_entries(str(p.id))] == ["proposed", "approved"]


# --------------------------------------------------------------------------- resuming decided proposals
def test_the_loop_resumes_a_decided_proposal_through_the_resumer_port_under_its_lease(
    state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipewarden.inbox import service
    from tests.inbox import fake_notifier, fake_resumer

    seen: list[Any] = []

    def resume(pid: str) -> Proposal:  # the port runs while the loop holds the proposal's lease
        seen.append(StateStore().proposal_lease(pid)["lease_owner"])
        return fake_resumer.resume(pid)

    swap(monkeypatch, resumer=resume, notifier=fake_notifier.notify)
    fake_notifier.CALLS.clear()
    store = StateStore()
    p = pending_proposal(store)  # no graph thread: only the configured Resumer can resume it
    service.hand_off(p.id, "approve", "alice", via="web")
    report = supervisor.supervise_once(worker="w1", limit=0)
    assert [(r.proposal_id, r.status) for r in report.resumed] == [(str(p.id), "verified")]
    assert seen == ["w1"]
    assert store.get_proposal(p.id).status == ProposalStatus.verified
    assert store.resume_requested() == [] and store.proposal_lease(p.id)["lease_owner"] is None
    assert ("proposal_updated", str(p.id)) in fake_notifier.CALLS  # Slack follows it past "approved"


def test_a_decided_proposal_whose_thread_has_no_checkpoint_is_a_recorded_failure_not_a_no_op(
    state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipewarden.inbox import service
    from pipewarden.wiring import resume_proposal

    swap(monkeypatch, resumer=resume_proposal)
    store = StateStore()
    p = pending_proposal(store)  # its thread was never run: no checkpoint
    service.hand_off(p.id, "approve", "alice", via="web")
    [failed] = supervisor.supervise_once(worker="w1", limit=0, retry=RetryPolicy(max_attempts=3, backoff_s=60)).resumed
    assert failed.status == "failed" and "no checkpoint" in (failed.error or "")
    assert store.get_proposal(p.id).status == ProposalStatus.approved
    lease = store.proposal_lease(p.id)
    assert lease["resume_requested_at"] is not None and lease["attempts"] == 1  # kept, retried after a backoff
    assert [e.action for e in store.audit_entries(str(p.id))][-1] == "resume_failed"


def test_the_long_running_worker_resumes_decisions_while_the_knowledge_index_is_still_syncing(
    state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from typer.testing import CliRunner

    from pipewarden.agents import router
    from pipewarden.cli import app
    from pipewarden.flows import knowledge_sync
    from pipewarden.inbox import service
    from tests.inbox import fake_resumer

    swap(monkeypatch, resumer=fake_resumer.resume)
    store = StateStore()
    p = pending_proposal(store)
    service.hand_off(p.id, "approve", "alice", via="web")
    seen: list[ProposalStatus] = []
    synced = threading.Event()

    def slow_sync() -> str:  # the sync is still running until it sees the decision applied (or gives up waiting)
        for _ in range(200):
            if StateStore().get_proposal(p.id).status == ProposalStatus.verified:
                break
            threading.Event().wait(0.05)
        seen.append(StateStore().get_proposal(p.id).status)
        synced.set()
        return "stub"

    class Stop(Exception):
        pass

    def sleep(seconds: float) -> None:  # the loop's pause: end the command once the preparation is over
        if synced.is_set():
            raise Stop
        synced.wait(0.05)

    monkeypatch.setattr(knowledge_sync, "sync_knowledge", slow_sync)
    monkeypatch.setattr(router, "warm_up", lambda: None)
    monkeypatch.setattr(time, "sleep", sleep)
    result = CliRunner().invoke(app, ["supervise", "--interval", "0", "--no-flow"])
    assert isinstance(result.exception, Stop), result.output
    assert seen == [ProposalStatus.verified]  # applied before the index was ready
    assert store.resume_requested() == []


class ProposingUnderItsOwnId(RaisingGraph):
    """An agent that stores its event's proposal under an id not derived from the event's (as a front end or a
    script that writes proposals itself may)."""

    def __init__(self, pid: str) -> None:
        self.pid = pid

    def invoke(self, start: Any, config: dict, **kwargs: Any) -> None:
        event_id = start["event_id"]
        StateStore().create_proposal(Proposal(
            id=self.pid, event_id=event_id, agent="schema-drift", dataset="flights", title="map it",
            diagnosis="renamed", change=ColumnMapping(dataset="flights", renames={"a": "b"}),
            thread_id=thread_id_for(event_id)))


def test_the_lease_follows_the_stored_proposal_even_when_its_id_is_not_derived_from_the_event(
        state_url: str, agents: Callable) -> None:
    import uuid

    store = StateStore()
    ev = drift_event()
    store.append_event(ev)
    own_id = str(uuid.uuid4())
    assert own_id != str(proposal_id_for(str(ev.id)))
    agents({str(ev.id): ProposingUnderItsOwnId(own_id)})
    first = supervisor.handle_event(str(ev.id), "schema-drift", lambda saver: ProposingUnderItsOwnId(own_id),
                                    worker="w1")
    assert first.proposal_id == own_id and first.status == "pending"
    assert store.proposal_lease(own_id)["lease_owner"] is None  # released after the run, by its stored id
    again = supervisor.handle_event(str(ev.id), "schema-drift", lambda saver: ProposingUnderItsOwnId(own_id),
                                    worker="w2")  # a second run for the same event takes that proposal's lease
    assert again.proposal_id == own_id
