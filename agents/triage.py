"""The triage agent: events no specialised agent handles yet still reach the inbox, as "needs a human".

Nothing is dropped (invariant 2): the proposal carries the event's facts and no change to apply. It neither plans
nor proves: its graph is gather -> propose, then the shared tail.

Public names: `SPEC`, `TriageCase`, `AGENT`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from pipewarden.agents.lifecycle import proposal_for
from pipewarden.agents.spec import AgentSpec, Plan
from pipewarden.events import Event
from pipewarden.models import NoChange, Proposal, ProposalStatus, Risk
from pipewarden.runtime import Runtime

AGENT = "triage"


class TriageCase(BaseModel):
    """The event, as the pipeline reported it: all triage has to go on."""

    event: Event


def gather(event: Any, rt: Runtime) -> TriageCase:
    return TriageCase(event=event)


def propose(case: TriageCase, plan: Plan[Any, Any], proof: None, rt: Runtime) -> Proposal:
    ev = case.event
    facts = ev.model_dump(mode="json", exclude={"id", "occurred"})
    lines = [f"- {k}: {v}" for k, v in facts.items() if v not in (None, [], {})]
    return proposal_for(
        ev, AGENT, dataset=ev.dataset, title=f"{ev.dataset}: {ev.name} needs a human",
        diagnosis=f"No agent handles {ev.kind} events yet. What the pipeline reported:\n" + "\n".join(lines),
        change=NoChange(reason=f"no agent for {ev.kind}"), risk=Risk.medium, required_roles=["owner"],
        status=ProposalStatus.needs_human, tried=[f"routing: no agent is registered for {ev.kind}"],
    )


SPEC: AgentSpec[TriageCase, Any, Any] = AgentSpec(
    name=AGENT, handles=("*",), case=TriageCase, gather=gather, propose=propose,
)
