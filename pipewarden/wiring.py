"""The composition root of the runtime: `default_runtime()` wires the real implementation of every port and of
every resource the agents use (state store, warehouse, embedder, knowledge index, planner, the agent registry).

This is the one module of the kernel that names `flows/`, `agents/`, `tools/`, `policies/` and `inbox/` for the
ports (listed as a composition root in `tests/test_layering.py`). Each port is a small function that imports its
implementation when first called, so building the runtime loads none of them: `pipewarden --help` stays fast and
the web inbox loads no agent until it reads the registry's names for its agent filter (in the background).

Each runtime keeps its own embedder (`Once`): the MiniLM model loads on the first call of that runtime's
`embedder()` and is reused by it, instead of living in a module-level cache that a test or an application could
only replace by patching.

Public names: `default_runtime()`, `Once`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

from pipewarden.runtime import Runtime

if TYPE_CHECKING:
    from pydantic import BaseModel

    from pipewarden.models import Citation, Proposal, RunResult
    from pipewarden.ports import Embedder, NotifyKind, Step
    from pipewarden.store import StateStore

T = TypeVar("T")


def default_runtime() -> Runtime:
    """The real parts: the Prefect pipeline, the agents' supervisor, the approval policy, the inbox, Slack, the
    settings' state DB and warehouse, MiniLM, the knowledge index, the configured planner and the agent registry."""
    return Runtime(pipeline_runner=run_batch, resumer=resume_proposal, supervisor=supervise_once, dry_runner=redry,
                   admission=admit, proposal_hook=on_proposal_created, notifier=notify, store=state_store,
                   warehouse=warehouse, embedder=Once(minilm), knowledge=cite, planner=primary_planner,
                   agents=Once(agent_names))


class Once(Generic[T]):
    """`make()` called on the first call, its result returned from then on (thread-safe): a resource one runtime
    builds once, such as the embedder's loaded model."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._made: list[T] = []

    def __call__(self) -> T:
        if not self._made:
            with self._lock:
                if not self._made:
                    self._made.append(self._make())
        return self._made[0]


def state_store() -> StateStore:
    from pipewarden.store import StateStore

    return StateStore()


def warehouse(url: str | None = None, *, read_only: bool = False, wait_s: float = 0.0) -> AbstractContextManager[Any]:
    from pipewarden.tools.warehouse import connect

    return connect(url, read_only=read_only, wait_s=wait_s)


def minilm() -> Embedder:
    from pipewarden.knowledge.embedder import default_embedder

    return default_embedder()


def cite(query: str, *, role: str, limit: int = 4, kinds: list[str] | None = None, dataset: str | None = None,
         embedder: Embedder | None = None) -> list[Citation]:
    from pipewarden.knowledge.retrieval import cite

    return cite(query, role=role, limit=limit, kinds=kinds, dataset=dataset, embedder=embedder)


def primary_planner() -> Any:
    from pipewarden.agents.llm import primary_planner

    return primary_planner()


def agent_names() -> tuple[str, ...]:
    """The registry's names (importing every agent: about a second, so the runtime asks once, `Once`)."""
    from pipewarden.agents.registry import AGENTS

    return tuple(spec.name for spec in AGENTS)


def run_batch(dataset: str, source: str, *, load_id: str | None = None, rerun: bool = False) -> RunResult:
    from pipewarden.flows.pipeline import run_batch

    return run_batch(dataset, source, load_id=load_id, rerun=rerun)


def resume_proposal(proposal_id: UUID | str) -> Proposal:
    from pipewarden.agents.supervisor import resume_proposal

    return resume_proposal(proposal_id)


def supervise_once(*, step: Step | None = None) -> BaseModel:
    from pipewarden.agents.supervisor import supervise_once

    return supervise_once(step=step)


def redry(proposal: Proposal, change: Any) -> Any:
    from pipewarden.tools.redry import redry

    return redry(proposal, change)


def admit(proposal: Proposal) -> Proposal:
    from pipewarden.policies.approval import admit

    return admit(proposal)


def on_proposal_created(proposal_id: str) -> None:
    from pipewarden.inbox.service import on_proposal_created

    on_proposal_created(proposal_id)


def notify(kind: NotifyKind, proposal_id: str) -> None:
    """Slack, when a bot token is set; otherwise nothing to tell (and Slack's module is never imported)."""
    from pipewarden.settings import get_settings

    if get_settings().slack_bot_token is None:
        return
    from pipewarden.inbox.slack import notify

    notify(kind, proposal_id)
