"""The runtime: one object holding the implementations of the kernel's ports and the agents' resources, built in
one place (`pipewarden.wiring.default_runtime`, the composition root) and passed in.

Lower layers (the kernel, `tools/`, `inbox/`) reach `flows/` and `agents/` only through the ports in `ports.py`;
which implementation answers is decided here, not by import strings scattered through settings. The agents get
their resources from it too: the state store, the warehouse, the embedder, the knowledge index and the planner
(`agents.graph.build_graph(spec, runtime=...)` hands the runtime to every node), so a test or an embedding
application swaps one with `replace` instead of patching a module-level cache.

- `current()` is the runtime of this process: the one installed by `use(...)`, else the process default, built
  once: `PIPEWARDEN_RUNTIME=module:factory` when set (a callable returning a `Runtime`, like `uvicorn module:app`),
  else `pipewarden.wiring.default_runtime()`, the one composition root that wires the real parts.
- `use(runtime)` installs a runtime for the duration of a `with` block (tests, an application embedding
  pipewarden); `Runtime.replace(**parts)` makes a copy with some ports swapped.

Public names: `Runtime`, `current`, `use`, `load`, `ENV`.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipewarden.errors import ConfigError

if TYPE_CHECKING:
    from pipewarden.models import Citation
    from pipewarden.ports import (
        Admission,
        AgentNames,
        DryRunner,
        EmbedderSource,
        Knowledge,
        Notifier,
        PipelineRunner,
        PlannerSource,
        ProposalHook,
        Resumer,
        StoreOpener,
        Supervisor,
        WarehouseOpener,
    )

ENV = "PIPEWARDEN_RUNTIME"
"""The environment variable naming a whole process's runtime factory, `module:callable`."""

RETIRED = ("PIPEWARDEN_PIPELINE_RUNNER", "PIPEWARDEN_RESUMER", "PIPEWARDEN_SUPERVISOR", "PIPEWARDEN_DRY_RUNNER",
           "PIPEWARDEN_APPROVAL_POLICY", "PIPEWARDEN_PROPOSAL_HOOK", "PIPEWARDEN_NOTIFIER")
"""The per-port import-path variables `PIPEWARDEN_RUNTIME` replaced; a process that still sets one is refused
rather than silently running the real implementation its owner meant to swap out."""


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """The implementations of the kernel's ports, one per field. Frozen: swap parts with `replace`."""

    pipeline_runner: PipelineRunner
    """Runs the pipeline on one batch (default `flows.pipeline.run_batch`): what an applied fix re-runs."""

    resumer: Resumer
    """Resumes the agent graph waiting on a decided proposal (default `agents.supervisor.resume_proposal`)."""

    supervisor: Supervisor
    """One supervise pass: claim events, run agents, resume decided proposals (default
    `agents.supervisor.supervise_once`)."""

    dry_runner: DryRunner
    """Re-proves a person's edit of a proposal's change on its failing data (default `tools.redry.redry`)."""

    admission: Admission
    """The approval policy's word on a new proposal before it is stored, e.g. its expiry (default
    `policies.approval.admit`)."""

    proposal_hook: ProposalHook
    """Runs after a proposal is stored: auto-approval by policy, then the notifier (default
    `inbox.service.on_proposal_created`)."""

    notifier: Notifier
    """Tells people about a proposal (default: Slack's `inbox.slack.notify` when a bot token is set, else
    nothing)."""

    store: StoreOpener
    """Opens the state store for the settings of the moment (default `pipewarden.store.StateStore`)."""

    warehouse: WarehouseOpener
    """Opens the project's warehouse for a block, read or write, waiting for a lock or failing fast, with one error
    when it does not open (default `tools.warehouse.connect`)."""

    embedder: EmbedderSource
    """The text embedder the agents and the knowledge index use (default: MiniLM from the packaged wheel, loaded on
    the first call and kept by this runtime)."""

    knowledge: Knowledge
    """Cites the knowledge index for a query as a role, under access and freshness; never raises (default
    `knowledge.retrieval.cite`). Agents call `Runtime.cite`, which passes this runtime's embedder."""

    planner: PlannerSource
    """The primary planner for the settings of the moment: the OpenAI-compatible endpoint when one is configured,
    else None, and the agent's offline solver answers (default `agents.llm.primary_planner`)."""

    agents: AgentNames
    """The registered agents' names, in routing order (default: `agents.registry.AGENTS`); what the inbox offers
    as the agent filter, whatever the queue holds."""

    def cite(self, query: str, *, role: str, limit: int = 4, kinds: list[str] | None = None,
             dataset: str | None = None) -> list[Citation]:
        """`knowledge(...)` with this runtime's embedder: what an agent cites for `query`, read as `role`."""
        return self.knowledge(query, role=role, limit=limit, kinds=kinds, dataset=dataset, embedder=self.embedder())

    def replace(self, **parts: Any) -> Runtime:
        """A copy with the named ports swapped: `current().replace(resumer=fake)`. An unknown name raises
        TypeError."""
        return dataclasses.replace(self, **parts)


_lock = threading.Lock()
_installed: Runtime | None = None
_default: Runtime | None = None


def current() -> Runtime:
    """The runtime of this process: the one `use` installed, else the process default (built on first call)."""
    installed = _installed
    if installed is not None:
        return installed
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = _process_default()
    return _default


@contextmanager
def use(runtime: Runtime) -> Iterator[Runtime]:
    """Install `runtime` for every thread of the process until the block ends, then restore what was there."""
    global _installed
    if not isinstance(runtime, Runtime):
        raise TypeError(f"use() takes a Runtime, not {type(runtime).__name__}")
    with _lock:
        previous, _installed = _installed, runtime
    try:
        yield runtime
    finally:
        with _lock:
            _installed = previous


def load(spec: str) -> Runtime:
    """The Runtime named by `spec`, `module:factory` (a callable returning a Runtime, or a Runtime itself); a
    ConfigError naming `ENV` and what to set when it cannot be imported or gives no Runtime."""
    module, sep, attr = spec.partition(":")
    hint = (f"set {ENV} to 'package.module:factory', a callable returning a pipewarden.runtime.Runtime "
            f"(e.g. pipewarden.wiring.default_runtime().replace(...)), or unset it for the default")
    if not sep or not module or not attr:
        raise ConfigError(f"{ENV}={spec!r} is not 'module:callable'", hint=hint)
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {ENV}={spec!r}: {exc}", hint=hint) from exc
    try:
        built = factory() if callable(factory) else factory
    except Exception as exc:  # re-raised, chained: the factory's own traceback stays attached
        raise ConfigError(f"{ENV}={spec!r} raised {type(exc).__name__}: {exc}", hint=hint) from exc
    if not isinstance(built, Runtime):
        raise ConfigError(f"{ENV}={spec!r} gave a {type(built).__name__}, not a Runtime", hint=hint)
    return built


def _process_default() -> Runtime:
    retired = [name for name in RETIRED if os.environ.get(name)]
    if retired:
        raise ConfigError(
            f"{', '.join(retired)} {'is' if len(retired) == 1 else 'are'} no longer read",
            hint=f"unset it and set {ENV}=module:factory, a callable returning "
                 f"pipewarden.wiring.default_runtime().replace(<port>=...)")
    spec = os.environ.get(ENV, "").strip()
    if spec:
        return load(spec)
    from pipewarden.wiring import default_runtime

    return default_runtime()
