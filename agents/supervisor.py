"""The supervisor: claim pending events, run each through its agent's graph up to the human decision, and
resume graphs whose proposals have been decided.

One LangGraph thread per event (`event-<id>`), checkpointed, so a graph waiting for a person survives
restarts and is resumed from any process (the CLI, the web inbox, `supervise`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta
from uuid import UUID

from pydantic import BaseModel, Field

from pipewarden.agents.checkpoint import open_checkpointer
from pipewarden.agents.lifecycle import thread_id_for
from pipewarden.agents.router import route, route_for_agent
from pipewarden.errors import InvalidTransition, PipewardenError
from pipewarden.ids import utcnow
from pipewarden.models import Proposal, ProposalStatus
from pipewarden.store import StateStore

log = logging.getLogger(__name__)
STALE_APPLYING = timedelta(minutes=10)


class Handled(BaseModel):
    event_id: str
    kind: str
    agent: str
    proposal_id: str | None = None
    status: str
    seconds: float
    error: str | None = None


class SuperviseReport(BaseModel):
    handled: list[Handled] = Field(default_factory=list)
    resumed: list[dict] = Field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{h.kind} event {h.event_id[:8]} -> {h.agent}: proposal {(h.proposal_id or '-')[:8]} {h.status}"
               f" ({h.seconds:.1f}s)" + (f" error: {h.error}" if h.error else "") for h in self.handled]
        out += [f"resumed proposal {r['proposal_id'][:8]}: {r['status']}" for r in self.resumed]
        return out or ["nothing to do"]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def handle_event(event_id: str, agent: str, build) -> Handled:  # type: ignore[no-untyped-def]
    """Run one event's graph until it waits for a decision. Safe to call again for the same event."""
    store = StateStore()
    started = time.perf_counter()
    config = {"configurable": {"thread_id": thread_id_for(event_id)}}
    with open_checkpointer() as saver:
        graph = build(saver)
        snapshot = graph.get_state(config)
        if not snapshot.next and not snapshot.values:  # a new thread: start it
            graph.invoke({"event_id": event_id}, config)
        elif snapshot.next and not snapshot.interrupts:  # a crashed run: continue from its last checkpoint
            graph.invoke(None, config)
    proposal = store.proposal_for_event(event_id)
    return Handled(event_id=event_id, kind=store.get_event(event_id).kind, agent=agent,
                   proposal_id=str(proposal.id) if proposal else None,
                   status=proposal.status.value if proposal else "no proposal", seconds=time.perf_counter() - started)


def supervise_once(worker: str | None = None, limit: int = 20) -> SuperviseReport:
    store = StateStore()
    report = SuperviseReport()
    for event in store.claim_events(worker or worker_name(), limit=limit):
        r = route(event)
        try:
            handled = handle_event(str(event.id), r.agent, r.build)
            store.finish_event(event.id, "proposed")
        except PipewardenError as exc:
            log.error("agent %s failed on event %s: %s", r.agent, event.id, exc)
            store.finish_event(event.id, "failed", error=str(exc))
            handled = Handled(event_id=str(event.id), kind=event.kind, agent=r.agent, status="failed",
                              seconds=0.0, error=str(exc))
        report.handled.append(handled)
    for p in store.list_proposals([ProposalStatus.approved.value, ProposalStatus.applying.value]):
        if p.status == ProposalStatus.applying and utcnow() - p.updated_at.replace(tzinfo=utcnow().tzinfo) < STALE_APPLYING:
            continue  # someone is applying it right now
        try:
            ended = resume_proposal(p.id)
            report.resumed.append({"proposal_id": str(p.id), "status": ended.status.value})
        except PipewardenError as exc:
            report.resumed.append({"proposal_id": str(p.id), "status": f"failed: {exc.message}"})
    return report


def resume_proposal(proposal_id: UUID | str) -> Proposal:
    """The kernel's Resumer port: continue the graph waiting on a decided proposal; return it as it ends."""
    from langgraph.types import Command

    store = StateStore()
    p = store.get_proposal(proposal_id)
    r = route_for_agent(p.agent)
    config = {"configurable": {"thread_id": p.thread_id}}
    with open_checkpointer() as saver:
        graph = r.build(saver)
        snapshot = graph.get_state(config)
        if not snapshot.next:
            return p  # the thread has ended (verified, rejected...)
        try:
            graph.invoke(Command(resume={"proposal_id": str(p.id), "status": p.status.value}), config)
        except InvalidTransition as exc:  # another process applied it first
            log.info("resume of %s lost a race: %s", p.short_id, exc)
    return store.get_proposal(proposal_id)
