"""The supervisor (the worker): claim pending events, run each through its agent's graph up to the human decision,
and resume the graphs whose proposals a stored decision asks to resume.

One LangGraph thread per event (`event-<id>`), checkpointed, so a graph waiting for a person survives restarts and
is resumed from any process. Every piece of work has one owner at a time, by a lease with a heartbeat
(`pipewarden.leases`): a claimed event (the claim's lease) and a proposal's graph (the proposal's lease, taken by
whoever advances the thread past `submit`: the worker that drafts it, `resume_leased` around the Resumer port after
a decision). A worker
that dies stops renewing; the next `supervise` takes its work over at once when the process is gone (same machine)
or once the lease expired, and continues the thread from its last checkpoint. Every node of the graph is
idempotent, so nothing is applied twice.

One fault, one proposal: before its agent runs, a claimed event with a fault signature
(`pipewarden.fault_signature`) that matches an open proposal's is attached to that proposal as an occurrence and
finished `attached` (`StateStore.attach_occurrence`); approval re-runs and verifies every load it covers.

A supervise loop survives any one event's failure. An attempt that raises is `failed` (the agent's code raised); a
claim taken over from a dead worker is `crashed`. Either is retried with exponential backoff (`RetryPolicy`) and,
out of attempts, dead-lettered: the event ends `dead` and a needs-a-human proposal carrying the error shows in the
inbox.

The loop resumes decided proposals through the kernel's Resumer port (`pipewarden.ports.resumer()`, held by
the process's runtime) under the proposal's lease, and tells people when a resume ended (`proposal_updated`). The
default Resumer, `resume_proposal`, runs the agent's graph; a thread with no checkpoint is an error (`NoCheckpoint`),
recorded as a failed resume and retried with backoff, never a silent no-op that drops the request.

Public names: `supervise_once`, `resume_leased`, `resume_proposal` (the default Resumer), `NoCheckpoint`,
`handle_event`, `SuperviseReport`, `Handled`, `Resumed`, `worker_name`.
"""

from __future__ import annotations

import functools
import logging
import time
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, Literal
from uuid import UUID

from langgraph.types import Command
from pydantic import BaseModel, Field

from pipewarden import faults
from pipewarden.agents.checkpoint import open_checkpointer
from pipewarden.agents.lifecycle import proposal_id_for, thread_id_for
from pipewarden.agents.router import route, route_for_agent
from pipewarden.errors import InvalidTransition, PipewardenError
from pipewarden.fault_signature import fault_signature
from pipewarden.ids import utcnow
from pipewarden.leases import LEASE_POLICY, RETRY_POLICY, Heartbeat, LeaseHeld, LeasePolicy, RetryPolicy, worker_name
from pipewarden.models import OPEN_STATUSES, NoChange, Proposal, ProposalStatus
from pipewarden.ports import Resumer, Step, notify, proposal_created, resumer
from pipewarden.runtime import current as current_runtime
from pipewarden.store import Claim, StateStore

log = logging.getLogger(__name__)
# A decided proposal whose change is on its way (rolled back: a crash between the rollback and the re-opening).
UNFINISHED = frozenset({ProposalStatus.approved, ProposalStatus.applying, ProposalStatus.applied,
                        ProposalStatus.rolled_back})

__all__ = ["Handled", "NoCheckpoint", "Resumed", "SuperviseReport", "handle_event", "resume_leased",
           "resume_proposal", "supervise_once", "worker_name"]


class Handled(BaseModel):
    event_id: str
    kind: str
    agent: str
    proposal_id: str | None = None
    status: str
    seconds: float
    error: str | None = None
    failure: Literal["failed", "crashed"] | None = Field(
        default=None, description="failed: the agent's code raised; crashed: the worker before this one died.")


class Resumed(BaseModel):
    proposal_id: str
    status: str
    error: str | None = None


class SuperviseReport(BaseModel):
    handled: list[Handled] = Field(default_factory=list)
    resumed: list[Resumed] = Field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{h.kind} event {h.event_id[:8]} -> {h.agent}: proposal {(h.proposal_id or '-')[:8]} {h.status}"
               f" ({h.seconds:.1f}s)" + (f" error: {h.error}" if h.error else "") for h in self.handled]
        out += [f"resumed proposal {r.proposal_id[:8]}: {r.status}" + (f" error: {r.error}" if r.error else "")
                for r in self.resumed]
        return out or ["nothing to do"]


def _advance(graph: Any, config: dict, *, start: dict | None = None, decided: dict | None = None,
             unfinished: bool = True) -> None:
    """Run a thread on from where it stands, whatever stopped it.

    A thread with no checkpoint starts with `start` (if given). A thread waiting in `interrupt()` is resumed with
    `decided` (the stored decision), if given. Any other thread stopped between two checkpoints (a process died
    there) continues from its last one, when `unfinished` says it may: LangGraph re-runs the node that was running
    (every node is idempotent), and a thread that has ended does nothing. Checkpoints are written synchronously,
    before the next step starts, so a crash loses at most the step it happened in.
    """
    snapshot = graph.get_state(config)
    if snapshot.created_at is None:
        if start is not None:
            graph.invoke(start, config, durability="sync")
    elif snapshot.interrupts:
        if decided is not None:
            graph.invoke(Command(resume=decided), config, durability="sync")
    elif unfinished:
        graph.invoke(None, config, durability="sync")


def handle_event(event_id: str, agent: str, build, *, worker: str | None = None,  # type: ignore[no-untyped-def]
                 lease: LeasePolicy = LEASE_POLICY) -> Handled:
    """Run one event's graph until it waits for a decision (or ends). Safe to call again for the same event.

    The caller holds the event's claim; its lease and, once the proposal exists, the proposal's are renewed by a
    heartbeat while the graph runs. If the proposal exists already (a crashed run is being continued), its lease is
    taken first: LeaseHeld when a live worker is resuming it (then there is nothing to do here).
    """
    store = current_runtime().store()
    owner = worker or worker_name()
    started = time.perf_counter()

    def proposal_id() -> str | None:
        """The event's proposal's own id, once it exists: most are derived from the event's id (`proposal_id_for`),
        but a dead-letter or triage proposal need not be, so the lease always follows the stored one."""
        p = store.proposal_for_event(event_id)
        return str(p.id) if p is not None else None

    if (pid := proposal_id()) is not None:
        store.take_proposal_lease(pid, owner, lease=lease)

    def beat() -> bool:
        ok = store.renew_event_lease(event_id, owner, lease=lease)
        if (pid := proposal_id()) is not None:
            store.renew_proposal_lease(pid, owner, lease=lease)
        return ok

    config = {"configurable": {"thread_id": thread_id_for(event_id), "worker": owner}}
    try:
        with Heartbeat(beat, lease, what=f"event {event_id[:8]}"), open_checkpointer() as saver:
            _advance(build(saver), config, start={"event_id": event_id})
    finally:
        if (pid := proposal_id()) is not None:
            store.release_proposal_lease(pid, owner, finished=None)
    proposal = store.proposal_for_event(event_id)
    return Handled(event_id=event_id, kind=store.get_event(event_id).kind, agent=agent,
                   proposal_id=str(proposal.id) if proposal else None,
                   status=proposal.status.value if proposal else "no proposal", seconds=time.perf_counter() - started)


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, PipewardenError) else f"{type(exc).__name__}: {exc}"


def _short(text: str, limit: int = 120) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _dead_letter(store: StateStore, claim: Claim, agent: str, error: str) -> Proposal:
    """Out of attempts: a needs-a-human proposal for the event, carrying the error, in every inbox."""
    ev = claim.event
    how = "its worker died" if claim.crashed_owner else "the agent failed"
    proposal = Proposal(
        id=proposal_id_for(str(ev.id)), event_id=ev.id, agent=agent, dataset=ev.dataset,
        title=f"{ev.dataset}: the {agent} agent gave up on a {ev.kind} event after {claim.attempts} attempts: "
              f"{_short(error)}",
        diagnosis=f"{how} on every attempt; the last error: {error}",
        change=NoChange(reason=f"dead letter after {claim.attempts} attempts: {error}"),
        status=ProposalStatus.needs_human, status_reason=error[:500], thread_id=thread_id_for(str(ev.id)),
        tried=[f"attempt {claim.attempts}: {error}"],
    )
    stored = store.create_proposal(proposal, actor="supervisor")
    if stored.id == proposal.id:
        proposal_created(stored.id)
    return stored


def _event_failed(store: StateStore, claim: Claim, agent: str, owner: str, exc: BaseException | None,
                  retry: RetryPolicy, started: float) -> Handled:
    """Record a failed (or crashed) attempt: back off and retry, or dead-letter it."""
    ev = claim.event
    failure: Literal["failed", "crashed"] = "failed" if exc is not None else "crashed"
    error = _describe(exc) if exc is not None else store.event_row(ev.id)["error"] or "the worker died"
    handled = Handled(event_id=str(ev.id), kind=ev.kind, agent=agent, status="failed", failure=failure,
                      seconds=time.perf_counter() - started, error=error)
    if retry.exhausted(claim.attempts):
        if store.fail_event(ev.id, owner, error, failure=failure) == "dead":
            p = _dead_letter(store, claim, agent, error)
            handled.status, handled.proposal_id = "dead", str(p.id)
        return handled
    retry_at = utcnow() + timedelta(seconds=retry.delay_s(claim.attempts))
    store.fail_event(ev.id, owner, error, failure=failure, retry_at=retry_at)
    handled.status = f"failed (attempt {claim.attempts} of {retry.max_attempts}; retried after {retry_at:%H:%M:%S})"
    return handled


def _attach_repeat(store: StateStore, claim: Claim, agent: str, owner: str, started: float) -> Handled | None:
    """One fault, one proposal: a claimed event whose fault signature matches an open proposal's (pending or
    needing a human, or still being drafted) is attached to it as an occurrence, finished `attached`, and the
    proposal's Slack thread is told; None when the event is the first of its fault (its agent runs)."""
    sig = fault_signature(claim.event)
    if sig is None:
        return None
    placed = store.attach_occurrence(claim.event, sig, proposal_id_for(str(claim.event.id)), owner)
    if placed.role == "origin":
        return None
    notify("occurrence_attached", placed.proposal_id)  # guarded: never raises
    return Handled(event_id=str(claim.event.id), kind=claim.event.kind, agent=agent, proposal_id=placed.proposal_id,
                   status="attached", seconds=time.perf_counter() - started)


def _inline(name: str, work: Any) -> Any:
    return work()


def supervise_once(worker: str | None = None, limit: int = 20, *, retry: RetryPolicy = RETRY_POLICY,
                   lease: LeasePolicy = LEASE_POLICY, step: Step | None = None) -> SuperviseReport:
    """One pass of the worker: claim and handle events, then resume the proposals whose decisions wait for it.

    Never raises for one event's or one proposal's failure: each is recorded (retried with backoff, dead-lettered
    when out of attempts) and the pass goes on. `step(name, work)` runs each event's agent and each resume (the
    supervise flow, `flows/supervise.py`, makes each a Prefect task); by default they run inline.
    """
    run = step or _inline
    store = current_runtime().store()
    owner = worker or worker_name()
    report = SuperviseReport()
    for claim in store.claim(owner, limit=limit, lease=lease):
        started = time.perf_counter()
        r = route(claim.event)
        faults.point("claimed")
        if claim.crashed_owner is not None and retry.exhausted(claim.attempts - 1):
            # The workers before this one died on it every time: do not let it take this one down too.
            report.handled.append(_event_failed(store, claim, r.agent, owner, None, retry, started))
            continue
        try:
            attached = _attach_repeat(store, claim, r.agent, owner, started)
            if attached is not None:  # a repeat of a fault whose proposal is open: no agent runs for it
                report.handled.append(attached)
                continue
            handled = run(f"{claim.event.kind} {str(claim.event.id)[:8]} -> {r.agent}", functools.partial(
                handle_event, str(claim.event.id), r.agent, r.build, worker=owner, lease=lease))
        except LeaseHeld as exc:  # a live worker resumes its proposal: the event's part is done
            log.info("event %s: %s", claim.event.id, exc.message)
            store.finish_event(claim.event.id, "proposed")
            continue
        except Exception as exc:  # any failure of one event's agent must not end the loop
            log.exception("agent %s failed on event %s", r.agent, claim.event.id)
            report.handled.append(_event_failed(store, claim, r.agent, owner, exc, retry, started))
            continue
        store.finish_event(claim.event.id, "proposed" if handled.proposal_id else "done")
        if handled.proposal_id is None:  # no proposal after all: its fault's repeats are handled on their own
            store.release_fault(claim.event.id)
        if claim.crashed_owner is not None:
            handled.failure = "crashed"
        report.handled.append(handled)
    resume = resumer()
    for pid in store.resume_requested():
        try:
            ended = run(f"resume proposal {pid[:8]}", functools.partial(
                resume_leased, pid, resume, worker=owner, lease=lease, retry=retry))
        except LeaseHeld:
            continue  # another worker took it between the query and the lease
        except Exception as exc:  # recorded by resume_leased (backoff or given up); the pass goes on
            report.resumed.append(Resumed(proposal_id=pid, status="failed", error=_describe(exc)))
            continue
        notify("proposal_updated", pid)  # guarded: never raises; Slack follows the proposal past "approved"
        report.resumed.append(Resumed(proposal_id=pid, status=ended.status.value))
    return report


# The proposal whose lease this context holds (set by `resume_leased` around the Resumer port), so the default
# Resumer, `resume_proposal`, runs under that lease instead of taking (and releasing) it a second time.
_HELD: ContextVar[tuple[str, str] | None] = ContextVar("pipewarden_held_proposal_lease", default=None)


class NoCheckpoint(PipewardenError):
    """A decided proposal's graph thread has no checkpoint: there is no graph to resume (its thread was never
    started here, or the checkpoint database was replaced). Recorded as a failed resume, never a silent no-op."""


def resume_leased(proposal_id: UUID | str, resume: Resumer, *, worker: str | None = None,
                  lease: LeasePolicy = LEASE_POLICY, retry: RetryPolicy = RETRY_POLICY) -> Proposal:
    """Resume a decided proposal through the Resumer port `resume`, under the proposal's lease; return it as it
    ends.

    Raises LeaseHeld when a live worker is resuming it already (nothing is done twice). A failure releases the
    lease with a retry time (backoff), or gives the resume up when out of attempts (`resume_failed` is audited),
    and is raised to the caller.
    """
    store = current_runtime().store()
    owner = worker or worker_name()
    pid = store.resolve_id(proposal_id)
    taken_at = utcnow()
    store.take_proposal_lease(pid, owner, lease=lease, now=taken_at)
    token = _HELD.set((pid, owner))
    try:
        with Heartbeat(lambda: store.renew_proposal_lease(pid, owner, lease=lease), lease,
                       what=f"proposal {pid[:8]}"):
            resume(pid)
    except Exception as exc:
        attempts = store.proposal_lease(pid)["attempts"] + 1
        retry_at = None if retry.exhausted(attempts) else utcnow() + timedelta(seconds=retry.delay_s(attempts))
        store.release_proposal_lease(pid, owner, finished=False, error=_describe(exc), retry_at=retry_at)
        raise
    finally:
        _HELD.reset(token)
    store.release_proposal_lease(pid, owner, finished=True, requested_before=taken_at)
    return store.get_proposal(pid)


def resume_proposal(proposal_id: UUID | str, *, worker: str | None = None, lease: LeasePolicy = LEASE_POLICY,
                    retry: RetryPolicy = RETRY_POLICY) -> Proposal:
    """The kernel's default Resumer port: continue the graph of a decided proposal; return it as it ends.

    Runs under the proposal's lease: the one its caller holds (`resume_leased`, the supervise loop), or one it takes
    itself (LeaseHeld when a live worker is resuming it already: nothing is done twice). Where the thread stopped
    decides what runs: waiting at the decision, it is resumed with the stored decision; stopped between two
    checkpoints (a crash while applying, re-running or verifying), it continues from the last one, and the re-run
    node starts again from its beginning (each node is idempotent). A thread with no checkpoint raises NoCheckpoint.
    A failure releases a lease taken here with a retry time (backoff), or gives the resume up when out of attempts,
    and is raised to the caller.
    """
    held = _HELD.get()
    pid = current_runtime().store().resolve_id(proposal_id)
    if held is not None and held[0] == pid:
        return _advance_proposal(pid, held[1])
    owner = worker or worker_name()
    return resume_leased(pid, functools.partial(_advance_proposal, owner=owner), worker=owner, lease=lease,
                         retry=retry)


def _advance_proposal(proposal_id: str, owner: str) -> Proposal:
    """Run a decided proposal's graph on from its last checkpoint (the caller holds the proposal's lease)."""
    store = current_runtime().store()
    p = store.get_proposal(proposal_id)
    with open_checkpointer() as saver:
        graph = route_for_agent(p.agent).build(saver)
        config = {"configurable": {"thread_id": p.thread_id, "worker": owner}}
        if graph.get_state(config).created_at is None:
            raise NoCheckpoint(
                f"proposal {p.short_id} ({p.status.value}) has no checkpoint for its graph thread {p.thread_id!r}: "
                "there is no graph to resume, so its change was not applied",
                hint="checkpoints live beside the state database (PIPEWARDEN_HOME, or PostgreSQL): run the worker "
                     "with the home its agent ran with; or reject the proposal and report the fault again")
        decided = None if p.status in OPEN_STATUSES else {"proposal_id": str(p.id), "status": p.status.value}
        try:  # a thread that died between checkpoints goes on only while its change is on its way
            _advance(graph, config, decided=decided, unfinished=p.status in UNFINISHED)
        except InvalidTransition as exc:  # a writer outside any lease moved it first (e.g. an old worker)
            log.info("resume of %s lost a race: %s", p.short_id, exc)
    return store.get_proposal(p.id)
