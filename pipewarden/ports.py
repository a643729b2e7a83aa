"""The narrow interfaces through which lower layers reach higher ones without importing them.

The kernel, `tools/` and `inbox/` never import `flows/` or `agents/`. When a tool must re-run the pipeline, or
the inbox must resume an agent's graph after a decision, they call these ports. Each loader (`pipeline_runner()`,
`resumer()`, ...) returns the implementation held by the process's runtime (`pipewarden.runtime.current()`, wired
in `pipewarden.wiring`); tests swap it with `runtime.use(runtime.current().replace(...))`, or, for a whole
process, `PIPEWARDEN_RUNTIME=module:factory`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol, runtime_checkable
from uuid import UUID

from pydantic import BaseModel

from pipewarden import runtime
from pipewarden.models import Citation, Proposal, RunResult

log = logging.getLogger(__name__)


@runtime_checkable
class PipelineRunner(Protocol):
    def __call__(self, dataset: str, source: str, *, load_id: str | None = None, rerun: bool = False) -> RunResult:
        """Run the pipeline on one batch file; `rerun` re-runs an already landed batch under its load id."""
        ...


@runtime_checkable
class Resumer(Protocol):
    def __call__(self, proposal_id: UUID | str) -> Proposal:
        """Resume the agent graph waiting on this (decided) proposal; returns the proposal as it ends."""
        ...


@runtime_checkable
class Step(Protocol):
    def __call__(self, name: str, work: Callable[[], Any]) -> Any:
        """Run one piece of a supervise pass (an event's agent, a proposal's resume) named `name`: return what
        `work()` returns and raise what it raises (the supervise flow runs each as a Prefect task)."""
        ...


@runtime_checkable
class Supervisor(Protocol):
    def __call__(self, *, step: Step | None = None) -> BaseModel:
        """Claim pending events, run their agents up to a decision, resume decided proposals; return a report.
        `step` wraps each event's agent and each resume (default: run inline)."""
        ...


def supervisor() -> Supervisor:
    return runtime.current().supervisor


def pipeline_runner() -> PipelineRunner:
    return runtime.current().pipeline_runner


def resumer() -> Resumer:
    return runtime.current().resumer


@runtime_checkable
class Embedder(Protocol):
    """Turns short texts into unit-length vectors. Real: MiniLM (`knowledge.embedder`); fake: hashing."""

    dim: int
    name: str

    def embed(self, texts: list[str]) -> list[list[float]]:
        ...


@runtime_checkable
class EmbedderSource(Protocol):
    def __call__(self) -> Embedder:
        """The runtime's embedder (the same object on every call, so a model loads once per runtime)."""
        ...


# --------------------------------------------------------------------------- the agents' resources
@runtime_checkable
class StoreOpener(Protocol):
    def __call__(self) -> Any:
        """A `pipewarden.store.StateStore` on the settings' state DB (cheap: engines are shared per URL)."""
        ...


@runtime_checkable
class WarehouseOpener(Protocol):
    def __call__(self, url: str | None = None, *, read_only: bool = False,
                 wait_s: float = 0.0) -> AbstractContextManager[Any]:
        """The warehouse (default: the settings' URL) open for a `with` block, as a `tools.warehouse.Warehouse`;
        a lock held elsewhere is waited on up to `wait_s`, then `WarehouseUnavailable`, naming it."""
        ...


@runtime_checkable
class Knowledge(Protocol):
    def __call__(self, query: str, *, role: str, limit: int = 4, kinds: list[str] | None = None,
                 dataset: str | None = None, embedder: Embedder | None = None) -> list[Citation]:
        """The citations the knowledge index gives for `query`, read as `role` (access and freshness applied);
        none when there is no index or the search fails. Never raises."""
        ...


@runtime_checkable
class PlannerSource(Protocol):
    def __call__(self) -> Any:
        """The primary planner (`agents.llm.Planner`) for the settings of the moment, or None: offline only."""
        ...


@runtime_checkable
class AgentNames(Protocol):
    def __call__(self) -> tuple[str, ...]:
        """The registered agents' names, in routing order."""
        ...


# --------------------------------------------------------------------------- approval policy and notifications
NotifyKind = Literal["proposal_created", "proposal_decided", "proposal_updated", "occurrence_attached"]


@runtime_checkable
class Notifier(Protocol):
    def __call__(self, kind: NotifyKind, proposal_id: str) -> None:
        """Tell people about a proposal (Slack): created, decided, or its status changed. May raise; callers guard."""
        ...


@runtime_checkable
class Admission(Protocol):
    def __call__(self, proposal: Proposal) -> Proposal:
        """The approval policy's word on a new proposal before it is stored: e.g. its `expires_at` from the
        matching rule's TTL. Pure: no I/O."""
        ...


@runtime_checkable
class ProposalHook(Protocol):
    def __call__(self, proposal_id: str) -> None:
        """Run after a proposal is stored: auto-approval by policy, then the notifier."""
        ...


def notifier() -> Notifier:
    """The runtime's Notifier (by default Slack, a no-op while no Slack bot token is set)."""
    return runtime.current().notifier


def admission() -> Admission:
    return runtime.current().admission


def proposal_hook() -> ProposalHook:
    return runtime.current().proposal_hook


def notify(kind: NotifyKind, proposal_id: str) -> bool:
    """Call the Notifier; a failure is logged and audited (`notify_failed`), never raised. True if it ran."""
    try:
        notifier()(kind, str(proposal_id))
        return True
    except Exception as exc:  # a notifier must never break a decision or a graph
        _audit_failure("notify_failed", kind, str(proposal_id), exc)
        return False


def proposal_created(proposal_id: UUID | str) -> None:
    """Called by an agent right after it stored a proposal: the ProposalHook (auto-approval, notifier).

    Never raises: a failing hook is logged and audited (`proposal_hook_failed`); the proposal waits for a person.
    """
    try:
        proposal_hook()(str(proposal_id))
    except Exception as exc:  # the graph goes on to wait for a person whatever the hook did
        _audit_failure("proposal_hook_failed", "proposal_created", str(proposal_id), exc)


def _audit_failure(action: str, kind: str, proposal_id: str, exc: Exception) -> None:
    error = f"{type(exc).__name__}: {exc}"[:2000]
    log.warning("%s for proposal %s (%s): %s", action, proposal_id[:8], kind, error)
    try:
        from pipewarden.store import StateStore

        StateStore().record(action, "pipewarden", {"kind": kind, "error": error}, proposal_id=proposal_id)
    except Exception:  # the state DB itself is down: the log line above is all we can do
        log.exception("could not audit %s for proposal %s", action, proposal_id[:8])


# --------------------------------------------------------------------------- re-running a dry-run for an edit
@runtime_checkable
class DryRunner(Protocol):
    def __call__(self, proposal: Proposal, change: Any) -> Any:
        """Prove `change` (an edited version of `proposal.change`) on the proposal's failing batch, the way the
        agent proved the original, and return the new `pipewarden.models.DryRun`. Writes nothing. Raises a
        `UserError` naming the field when the edited change is invalid (unknown column, bad type, SQL that does
        not parse)."""
        ...


def dry_runner() -> DryRunner:
    return runtime.current().dry_runner
