"""The triage agent: events no specialised agent handles yet still reach the inbox, as "needs a human".

Nothing is dropped (invariant 2): the proposal carries the event's facts and no change to apply.
"""

from __future__ import annotations

from typing import Any

from pipewarden.agents.lifecycle import AgentState, build_agent_graph, proposal_id_for, thread_id_for
from pipewarden.models import NoChange, Proposal, ProposalStatus, Risk
from pipewarden.store import StateStore

AGENT = "triage"


def describe(state: AgentState) -> AgentState:
    ev = StateStore().get_event(state["event_id"])
    facts = ev.model_dump(mode="json", exclude={"id", "occurred"})
    lines = [f"- {k}: {v}" for k, v in facts.items() if v not in (None, [], {})]
    proposal = Proposal(
        id=proposal_id_for(state["event_id"]), event_id=ev.id, agent=AGENT, dataset=ev.dataset,
        title=f"{ev.dataset}: {ev.name} needs a human",
        diagnosis=f"No agent handles {ev.kind} events yet. What the pipeline reported:\n" + "\n".join(lines),
        change=NoChange(reason=f"no agent for {ev.kind}"), risk=Risk.medium, required_roles=["owner"],
        status=ProposalStatus.needs_human, thread_id=thread_id_for(state["event_id"]),
        tried=[f"routing: no agent is registered for {ev.kind}"],
    )
    return {"proposal": proposal.model_dump(mode="json")}


def build_graph(checkpointer: Any = None) -> Any:
    return build_agent_graph(AgentState, (("describe", describe),), checkpointer)
