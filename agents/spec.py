"""An agent is a spec: what it handles, the case it gathers, how it plans, proves and proposes.

`agents.graph.build_graph(spec)` turns any `AgentSpec` into the one graph every agent runs:

    gather -> plan -> prove -> propose -> (shared tail: heed -> submit -> await_decision -> apply -> verify)

A spec holds functions and types, nothing else: no state, no store, no graph. Every function of a spec takes the
runtime (`pipewarden.runtime.Runtime`) as its last argument and reads the state store, the warehouse, the embedder,
the knowledge index (`rt.cite`), the planner and the pipeline runner from it: nothing is looked up by the agent. The builder owns the graph state
(the case, the plan and the proof as JSON, re-validated into the spec's types in each node), the node names, the
crash point, the proposal's id and thread. `agents.registry.AGENTS` lists every spec.

Public names: `AgentSpec`, `Plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from pipewarden.agents.lifecycle import Verifier
from pipewarden.models import Proposal
from pipewarden.runtime import Runtime

Case = TypeVar("Case", bound=BaseModel)
Answer = TypeVar("Answer", bound=BaseModel)
Proof = TypeVar("Proof", bound=BaseModel)


@dataclass(frozen=True, kw_only=True)
class Plan(Generic[Answer, Proof]):
    """What the planning step decided: the validated answer (None: nothing valid, the proposal needs a human),
    which planner gave it, what was tried, and the tokens spent."""

    answer: Answer | None = None
    """The answer that passed validation (and, where validation proves, the dry-run); None when none did."""
    planner: str = "offline"
    """`openai` or `offline`: who answered."""
    tried: list[str] = field(default_factory=list)
    """Every attempt that did not count and why (the proposal carries it)."""
    usage: dict[str, Any] = field(default_factory=dict)
    """Tokens and calls the planner spent (`agents.llm.Usage` as JSON)."""
    proof: Proof | None = None
    """The answer's proof when validating it meant proving it (schema drift, quality, cost): kept, so the prove
    step does not prove it a second time. None: the prove step proves the answer."""


@dataclass(frozen=True, kw_only=True)
class AgentSpec(Generic[Case, Answer, Proof]):
    """One agent, as configuration over the one graph (see the module docstring)."""

    name: str
    """The agent's name on proposals, in the router and the evals (`schema-drift`, `quality`, ...)."""
    handles: tuple[str, ...]
    """The event kinds it takes (`schema_drift`, `check_failed`, ...); `("*",)`: any event (the catch-all)."""
    case: type[Case]
    """The pydantic model of its case: everything it gathered, kept in the graph state as JSON."""
    gather: Callable[[Any, Runtime], Case]
    """(event, rt) -> Case: the evidence, read once (the event itself, the batch, the contract, citations...)."""
    propose: Callable[[Case, Plan[Answer, Proof], Proof | None, Runtime], Proposal]
    """(case, plan, proof, rt) -> the Proposal: the proven change, or "needs a human" with what was tried. The
    builder sets its id (derived from the event's id), event, agent and thread."""
    answer: type[Answer] | None = None
    """The pydantic model of a planner's answer; None for an agent that does not plan (triage)."""
    plan: Callable[[Case, Runtime], Plan[Answer, Proof]] | None = None
    """(case, rt) -> Plan: the planning step, `rt.planner()` or offline (`agents.llm.plan`), every answer validated, with the
    agent's retries and fallback. None: no planning step (then there is nothing to prove either)."""
    proof: type[Proof] | None = None
    """The pydantic model of a proof (the plan's or `prove`'s); None for an agent that proves nothing."""
    prove: Callable[[Answer, Case, Runtime], Proof] | None = None
    """(answer, case, rt) -> Proof: the dry-run of the answer on the failing data. Run by the prove step only when the
    plan did not prove its answer already, and only when there is an answer. None: the plan proves every answer
    it returns (cost: proving the candidates is how it picks one)."""
    verifier: Verifier | None = None
    """(applied proposal, event, rt) -> Verification after apply; None: re-run the batch (`lifecycle.rerun_batch`)."""
    alternatives: Callable[[Case, Plan[Answer, Proof], Runtime], list[Proposal]] | None = None
    """The `heed` hook (`agents.precedent`): its other proven proposals for the fault, in the planner's order.
    None: a change people rejected for the fault becomes "needs a human"."""
    reader_role: str = "engineer"
    """The role it reads the knowledge index as (its citations; the evals check them as this role)."""

    def __post_init__(self) -> None:
        if not self.name or not self.handles:
            raise ValueError("an agent spec needs a name and the event kinds it handles")
        if (self.plan is None) != (self.answer is None):
            raise ValueError(f"agent {self.name!r}: `plan` and `answer` go together (both or neither)")
        if self.prove is not None and self.proof is None:
            raise ValueError(f"agent {self.name!r}: `prove` needs `proof`, the model its proofs are kept as")
        if self.prove is not None and self.plan is None:
            raise ValueError(f"agent {self.name!r}: `prove` proves a planned answer, so it needs `plan`")
