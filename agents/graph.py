"""The one graph builder: any `AgentSpec` becomes the graph every agent runs.

    gather -> plan -> prove -> propose -> (shared tail, `agents.lifecycle`: heed -> submit -> await_decision ...)

- gather: the event is read from the store here, once, and handed to `spec.gather`; the typed case it returns is
  kept in the graph state as JSON (`case`) and re-validated into `spec.case` by every later node, and so is the
  event (`event`, read by the shared tail's `heed` and `verify`), so no later node reads the event or the evidence
  again.
- plan (when the spec plans): `spec.plan(case, runtime)`; the answer, planner, attempts and usage are kept (`plan`), and so
  is the answer's proof when validating it meant proving it (`proof`).
- prove (when the spec has `prove`): proves the planned answer once, unless the plan proved it already (the
  `proof` in the state); nothing to prove without an answer.
- propose: `spec.propose(case, plan, proof)`; the builder stamps the proposal's id (derived from the event's id,
  `lifecycle.proposal_id_for`), its event, agent and thread, so re-running any node never makes a second one.

The runtime (`pipewarden.runtime.Runtime`: the state store, the warehouse, the embedder, the knowledge index, the
planner, the pipeline runner) is passed to `build_graph` and handed to every spec function that does I/O (`gather`,
`plan`, `prove`, `alternatives`, the verifier) and to the shared tail; no node looks a resource up by itself.
It is not part of the checkpointed state: a resumed graph runs with the runtime its builder was given.

Every node is a pure function of the state and the runtime's resources, safe to re-run after a crash. The `agent_running` crash
point sits between the first and the second node (after gather's checkpoint). Node names are the same for every
agent: `gather`, `plan`, `prove`, `propose`, then the tail's.

Public names: `build_graph`, `SpecState`, `NODES`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from langgraph.graph import START, StateGraph

from pipewarden import faults
from pipewarden.agents.lifecycle import AgentState, add_lifecycle, proposal_id_for, thread_id_for
from pipewarden.agents.spec import AgentSpec, Plan
from pipewarden.models import Proposal
from pipewarden.runtime import Runtime
from pipewarden.runtime import current as current_runtime

NODES = ("gather", "plan", "prove", "propose")
"""The agent's own nodes, in order; a spec without `plan` (or `prove`) has no such node."""


class SpecState(AgentState, total=False):
    case: dict[str, Any]  # the spec's Case, as JSON
    plan: dict[str, Any]  # the Plan without its proof: answer (JSON or None), planner, tried, usage
    proof: dict[str, Any] | None  # the planned answer's proof, as JSON (None: not proven)


def _stamp(proposal: Proposal, spec: AgentSpec[Any, Any, Any], event_id: str) -> Proposal:
    """The builder's part of every proposal: its id derived from the event's, its event, agent and thread."""
    return proposal.model_copy(update={"id": proposal_id_for(event_id), "event_id": uuid.UUID(str(event_id)),
                                       "agent": spec.name, "thread_id": thread_id_for(event_id)})


class _Reader:
    """Re-validates the JSON a node finds in the state into the spec's types."""

    def __init__(self, spec: AgentSpec[Any, Any, Any]) -> None:
        self.spec = spec

    def case(self, state: dict[str, Any]) -> Any:
        return self.spec.case.model_validate(state["case"])

    def proof(self, state: dict[str, Any]) -> Any:
        data = state.get("proof")
        return None if data is None or self.spec.proof is None else self.spec.proof.model_validate(data)

    def plan(self, state: dict[str, Any]) -> Plan[Any, Any]:
        data = state.get("plan") or {}
        answer = data.get("answer")
        return Plan(answer=self.spec.answer.model_validate(answer) if answer is not None and self.spec.answer else None,
                    planner=data.get("planner", "offline"), tried=list(data.get("tried", [])),
                    usage=dict(data.get("usage", {})), proof=self.proof(state))


def _nodes(spec: AgentSpec[Any, Any, Any], rt: Runtime) -> list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]]:
    read = _Reader(spec)

    def gather(state: dict[str, Any]) -> dict[str, Any]:
        event = rt.store().get_event(state["event_id"])
        if "*" not in spec.handles and event.kind not in spec.handles:
            raise TypeError(f"the {spec.name} agent handles {', '.join(spec.handles)} events, not {event.kind}")
        return {"case": spec.gather(event, rt).model_dump(mode="json"), "event": event.model_dump(mode="json")}

    def plan(state: dict[str, Any]) -> dict[str, Any]:
        assert spec.plan is not None
        planned = spec.plan(read.case(state), rt)
        return {"plan": {"answer": planned.answer.model_dump(mode="json") if planned.answer is not None else None,
                         "planner": planned.planner, "tried": list(planned.tried), "usage": dict(planned.usage)},
                "proof": planned.proof.model_dump(mode="json") if planned.proof is not None else None}

    def prove(state: dict[str, Any]) -> dict[str, Any]:
        assert spec.prove is not None
        planned = read.plan(state)
        if planned.answer is None or planned.proof is not None:
            return {}  # nothing to prove, or proven once already while the plan validated it
        return {"proof": spec.prove(planned.answer, read.case(state), rt).model_dump(mode="json")}

    def propose(state: dict[str, Any]) -> dict[str, Any]:
        planned = read.plan(state)
        proposal = spec.propose(read.case(state), planned, planned.proof, rt)
        return {"proposal": _stamp(proposal, spec, state["event_id"]).model_dump(mode="json")}

    nodes: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = [("gather", gather)]
    if spec.plan is not None:
        nodes.append(("plan", plan))
    if spec.prove is not None:
        nodes.append(("prove", prove))
    nodes.append(("propose", propose))
    return nodes


def _alternatives(spec: AgentSpec[Any, Any, Any], rt: Runtime) -> Callable[[dict[str, Any]], list[Proposal]] | None:
    """The spec's `alternatives` as the tail's `heed` hook: over the typed case and plan, each proposal stamped."""
    if spec.alternatives is None:
        return None
    read, hook = _Reader(spec), spec.alternatives

    def alternatives(state: dict[str, Any]) -> list[Proposal]:
        return [_stamp(p, spec, state["event_id"]) for p in hook(read.case(state), read.plan(state), rt)]

    return alternatives


def _crash_point_before(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def step(state: dict[str, Any]) -> dict[str, Any]:
        faults.point("agent_running")
        return fn(state)

    step.__name__ = getattr(fn, "__name__", "step")
    return step


def build_graph(spec: AgentSpec[Any, Any, Any], checkpointer: Any = None, *, runtime: Runtime | None = None) -> Any:
    """The spec's graph (see the module docstring), compiled with the checkpointer; its nodes use `runtime`'s
    resources (default: the process's, `pipewarden.runtime.current()`, taken now)."""
    rt = runtime if runtime is not None else current_runtime()
    builder = StateGraph(SpecState)
    previous = START
    for i, (name, fn) in enumerate(_nodes(spec, rt)):
        builder.add_node(name, _crash_point_before(fn) if i == 1 else fn)  # between the first and second nodes
        builder.add_edge(previous, name)
        previous = name
    add_lifecycle(builder, previous, rt, spec.verifier, _alternatives(spec, rt))
    return builder.compile(checkpointer=checkpointer)
