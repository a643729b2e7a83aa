"""The tail every agent graph shares: heed past decisions on the fault, submit the proposal, wait for a human in
`interrupt()`, apply, verify, roll back and re-open when verification fails. `agents.graph.build_graph` wires it
after a spec's own nodes (`add_lifecycle`).

    ... agent nodes ... -> heed -> submit -> await_decision --approved--> apply -> verify --passed--> END
                                                ^    |--rejected/expired--> END              |
                                                |----------------- rollback <---failed-------|

`heed` (`agents.precedent`) cites what people decided on the same fault signature, never re-proposes a change a
person rejected for it (the agent's next alternative, else "needs a human") and prefers the change they accepted.
Every decided outcome (approved, rejected, verified, rolled back) is indexed as a decision chunk
(`knowledge.decisions.index_decision`) once the store holds it; indexing never raises, and `pipewarden knowledge
index` rebuilds the decisions from the store.

Each node is safe to run twice: `submit` is idempotent per event (a proposal's id is derived from its
event's id), `await_decision` reads the stored decision rather than trusting the resume value, `apply`
is idempotent in the apply tool, a re-run replaces its load's rows, and `verify` finishes a rollback a crash
interrupted. `verify` covers every load of the proposal's fault: its own event's and each repeat attached to it
while it was open (`StateStore.occurrences`); it is verified only when every re-run passes. The tail reads its own
event from the graph state (`event`, put there by the agent's `gather`), not from the store; only the repeats
attached later are read from the store. Every node uses the runtime the graph was built with (`add_lifecycle`): its
state store, and its pipeline runner for the re-run. On resume, LangGraph
re-runs the interrupted node from its start; after a crash, the node that was
running. `submit` stores the proposal under the running worker's lease (`configurable.worker`), so no other
worker resumes the thread while its author still runs it. Crash points (`pipewarden.faults`): `proposal_stored`,
`applied`, `rerunning`, `verifying` (and `agent_running`, in `agents.graph`, between the agent's first and second
nodes).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END
from langgraph.types import interrupt

from pipewarden import faults
from pipewarden.agents.precedent import Alternatives, make_heed
from pipewarden.events import parse_event
from pipewarden.knowledge.decisions import index_decision
from pipewarden.models import Proposal, ProposalStatus
from pipewarden.ports import proposal_created
from pipewarden.runtime import Runtime
from pipewarden.store import StateStore
from pipewarden.tools.apply import APPLIER, apply_change, mark_verified, rollback_change

log = logging.getLogger(__name__)
PROPOSAL_NS = uuid.UUID("5b0c6a4e-8f7d-4f0e-9a38-6d1f0f6b2c11")


class AgentState(TypedDict, total=False):
    event_id: str
    event: dict[str, Any]  # the event, as JSON, read once by `gather`
    proposal: dict[str, Any]  # the Proposal drafted by the agent's own nodes, as JSON
    proposal_id: str
    outcome: str  # verified | rejected | expired | ...
    verify_detail: dict[str, Any]


def proposal_id_for(event_id: str) -> uuid.UUID:
    """A proposal's id is derived from its event's id: re-running `submit` can never make a second one."""
    return uuid.uuid5(PROPOSAL_NS, str(event_id))


def thread_id_for(event_id: str) -> str:
    return f"event-{event_id}"


def proposal_for(event: Any, agent: str, **fields: Any) -> Proposal:
    """A proposal for `event` by `agent`: its id derived from the event's, its thread the event's; `fields` the rest."""
    return Proposal(id=proposal_id_for(str(event.id)), event_id=event.id, agent=agent,
                    thread_id=thread_id_for(str(event.id)), **fields)


def event_of(state: AgentState, store: StateStore) -> Any:
    """The graph's event: from the state, where `gather` put it; from the store only for a thread checkpointed
    before the state carried it."""
    data = state.get("event")
    return parse_event(data) if data else store.get_event(state["event_id"])


def worker_of(config: RunnableConfig | None) -> str | None:
    """The worker running this graph (`configurable.worker`, set by the supervisor), if any."""
    return ((config or {}).get("configurable") or {}).get("worker")


def make_submit(rt: Runtime) -> Callable[[AgentState, RunnableConfig], AgentState]:
    def submit(state: AgentState, config: RunnableConfig) -> AgentState:
        proposal = Proposal.model_validate(state["proposal"])
        # Stored under the running worker's lease: nobody else resumes this graph while its author still runs it.
        stored = rt.store().create_proposal(proposal, actor=f"agent:{proposal.agent}", lease_owner=worker_of(config))
        proposal_created(stored.id)  # policy may auto-approve; the notifier posts it (guarded: never raises)
        faults.point("proposal_stored")
        return {"proposal_id": str(stored.id)}

    return submit


def make_await_decision(rt: Runtime) -> Callable[[AgentState], AgentState]:
    def await_decision(state: AgentState) -> AgentState:
        store = rt.store()
        p = store.get_proposal(state["proposal_id"])
        if p.status in (ProposalStatus.pending, ProposalStatus.needs_human):
            interrupt({"proposal_id": str(p.id), "status": p.status.value})
            p = store.get_proposal(state["proposal_id"])  # the durable decision, not the resume value
        index_decision(p.id, state=store)  # the decision is stored: the index learns it (never raises; rebuilt by the next sync)
        return {"outcome": p.status.value}

    return await_decision


def after_decision(state: AgentState) -> str:
    if state.get("outcome") in (ProposalStatus.approved.value, ProposalStatus.applying.value,
                                ProposalStatus.applied.value):
        return "apply"
    if state.get("outcome") in (ProposalStatus.pending.value, ProposalStatus.needs_human.value):
        return "await_decision"
    return END


def make_apply(rt: Runtime) -> Callable[[AgentState], AgentState]:
    def apply(state: AgentState) -> AgentState:
        result = apply_change(state["proposal_id"], store=rt.store())  # idempotent: a re-run after a crash finds it applied
        faults.point("applied")
        return {"outcome": result.proposal.status.value}

    return apply


class Verification(NamedTuple):
    """What a verifier found after the change was applied: passed or not, the evidence, and why it failed."""

    passed: bool
    detail: dict[str, Any]
    reason: str = ""


Verifier = Callable[[Proposal, Any, Runtime], Verification]  # (the applied proposal, its event, runtime) -> Verification


def rerun_batch(proposal: Proposal, event: Any, rt: Runtime) -> Verification:
    """The default verifier: re-run the failed batch through the pipeline under the new versions; it passes when
    the run completes. Events without a batch (nothing to re-run) pass."""
    source = getattr(event, "batch_path", None)
    if source is None:
        return Verification(True, {"rerun": "not needed"})
    result = rt.pipeline_runner(proposal.dataset, source, load_id=event.load_id, rerun=True)
    faults.point("rerunning")
    detail = {"rerun_status": result.status, "load_id": result.load_id, "rows_in": result.rows_in,
              "rows_quarantined": result.rows_quarantined, "halted_at": result.halted_at,
              "flow_run_id": result.flow_run_id}
    if result.status == "completed":
        return Verification(True, detail)
    reason = f"re-run {result.status} at {result.halted_at or 'an unknown stage'}"
    if result.checks and (result.checks.schema_errors or result.checks.failed_checks):
        reason += ": " + "; ".join((result.checks.schema_errors + result.checks.failed_checks)[:3])
    return Verification(False, detail, reason)


def covered_events(store: StateStore, proposal: Proposal, own: Any = None) -> list[Any]:
    """The events a proposal covers: its own (`own`, when the caller has it; else read), then every repeat of its
    fault attached while it was open."""
    attached = [o.event_id for o in store.occurrences(proposal.id) if o.role == "attached"]
    return [own if own is not None else store.get_event(proposal.event_id), *(store.get_event(e) for e in attached)]


def verify_covered(verifier: Verifier, proposal: Proposal, events: list[Any], rt: Runtime) -> Verification:
    """Verify the change on every halted batch the proposal covers (one re-run per load), in the order they came.

    One event: the verifier's own answer. Several: passed only if every load passes; the first failure stops there
    (the change is rolled back anyway) and its reason names the load; the detail lists each load's evidence."""
    if len(events) == 1:
        return verifier(proposal, events[0], rt)
    loads: list[dict[str, Any]] = []
    for ev in events:
        found = verifier(proposal, ev, rt)
        loads.append({"event_id": str(ev.id), "load_id": ev.load_id, "passed": found.passed, **found.detail})
        if not found.passed:
            left = [e.load_id for e in events[len(loads):]]
            return Verification(False, {"covered": len(events), "loads": loads, "not_rerun": left},
                                f"load {ev.load_id}: {found.reason or 'verification failed'}")
    return Verification(True, {"covered": len(events), "loads": loads})


def make_verify(verifier: Verifier, rt: Runtime) -> Callable[[AgentState], AgentState]:
    """The graph node around a verifier: mark verified, or roll back and re-open the proposal with the reason."""

    def verify(state: AgentState) -> AgentState:
        store = rt.store()
        p = store.get_proposal(state["proposal_id"])
        if p.status == ProposalStatus.verified:
            return {"outcome": "verified"}
        if p.status == ProposalStatus.rolled_back:  # a crash between the rollback and the re-opening: finish it
            store.transition(p.id, ProposalStatus.pending, APPLIER, f"re-opened: {p.status_reason}",
                             expect=ProposalStatus.rolled_back)
            return {"outcome": "rolled_back"}
        if p.status == ProposalStatus.pending:  # rolled back and re-opened before a crash: wait for a person
            return {"outcome": "rolled_back"}
        own = event_of(state, store) if str(p.event_id) == state.get("event_id") else None
        found = verify_covered(verifier, p, covered_events(store, p, own), rt)
        faults.point("verifying")
        if found.passed:
            mark_verified(p.id, found.detail, store=store)
            index_decision(p.id, state=store)
            return {"outcome": "verified", "verify_detail": found.detail}
        rollback_change(p.id, found.reason or "verification failed", store=store)
        index_decision(p.id, state=store)  # rolled back: not accepted, and the index says so
        return {"outcome": "rolled_back", "verify_detail": found.detail}

    return verify


def after_verify(state: AgentState) -> str:
    return END if state.get("outcome") == "verified" else "await_decision"


def add_lifecycle(builder: Any, last_agent_node: str, rt: Runtime, verifier: Verifier | None = None,
                  alternatives: Alternatives | None = None) -> None:
    """Wire the shared tail after the agent's last node: `heed` (past decisions on the fault, with the agent's
    `alternatives` hook), then submit and the rest, each over `rt`; `verifier` defaults to re-running the batch."""
    builder.add_node("heed", make_heed(rt, alternatives))
    builder.add_node("submit", make_submit(rt))
    builder.add_node("await_decision", make_await_decision(rt))
    builder.add_node("apply", make_apply(rt))
    builder.add_node("verify", make_verify(verifier or rerun_batch, rt))
    builder.add_edge(last_agent_node, "heed")
    builder.add_edge("heed", "submit")
    builder.add_edge("submit", "await_decision")
    builder.add_conditional_edges("await_decision", after_decision, ["apply", "await_decision", END])
    builder.add_edge("apply", "verify")
    builder.add_conditional_edges("verify", after_verify, ["await_decision", END])
