"""Supervise as a Prefect flow: `pipewarden-supervise`, with one task run per event's agent and per resumed proposal.

`supervise_flow` brings the knowledge index up to date, then runs one supervise pass through the kernel's
Supervisor port (`pipewarden.agents.supervisor.supervise_once` by default) with a `step` that makes each event's
agent run (`schema_drift 1a2b3c4d -> schema_drift`) and each resume (`resume proposal 5e6f7a8b`) a Prefect task
run: Prefect shows each with its duration, and an agent that raised as a Failed task run, while the pass goes on
(the supervisor records the failure, retries with backoff, dead-letters) and the flow run completes. Before and
after each step the proposal lifecycle is mirrored to Prefect events (`flows.prefect_story.LifecycleMirror`).

`supervise_pass` is the same pass without a flow run (`pipewarden supervise --no-flow`): a flow run against
Prefect's ephemeral server (no PREFECT_API_URL) starts a local server first (34 s on a busy 2-core laptop); against
a running server a flow run adds about 1.6 s to a pass. `pipewarden supervise` therefore runs as a flow when
PREFECT_API_URL is set and there is work (`supervise_work.has_work`: an idle pass makes no flow run and does not
even import Prefect), else inline, unless told (`--flow`/`--no-flow`). The deployment (`flows/deploy.py`,
`pipewarden deploy`) always runs this flow.

Public names: `FLOW_NAME`, `supervise_flow`, `supervise_pass`, `prefect_step`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import flow, task
from pydantic import BaseModel

from pipewarden.leases import LeaseHeld

log = logging.getLogger(__name__)

FLOW_NAME = "pipewarden-supervise"


@dataclass(frozen=True)
class _Deferred:
    """A LeaseHeld raised by a step: not a failure (another worker owns the work), so the task completes and the
    flow raises it again for the supervisor's loop."""

    error: LeaseHeld


@task(name="agent", cache_policy=None, persist_result=False, retries=0)
def _agent_task(work: Callable[[], Any]) -> Any:
    try:
        return work()
    except LeaseHeld as exc:
        return _Deferred(error=exc)


def _mirror(mirror: Any) -> None:
    if mirror is None:
        return
    try:
        mirror.pump()
    except Exception as exc:  # the state DB or Prefect failed: the next pump catches up from the cursor
        log.warning("proposal lifecycle not mirrored to Prefect this time: %s", exc)


def prefect_step(mirror: Any = None) -> Callable[[str, Callable[[], Any]], Any]:
    """The Supervisor port's `step` inside a flow: run `work` as a task run named `name`, then mirror the lifecycle.
    Raises what `work` raised (the task run is then Failed)."""

    def step(name: str, work: Callable[[], Any]) -> Any:
        try:
            out = _agent_task.with_options(task_run_name=name)(work)
        finally:
            _mirror(mirror)
        if isinstance(out, _Deferred):
            raise out.error
        return out

    return step


def _lifecycle_mirror(enabled: bool) -> Any:
    if not enabled:
        return None
    from pipewarden.flows.prefect_story import LifecycleMirror

    return LifecycleMirror()


def supervise_pass(*, step: Callable[[str, Callable[[], Any]], Any] | None = None,
                   mirror_lifecycle: bool | None = None) -> BaseModel:
    """One supervise pass without a flow run (the knowledge index is the caller's): the Supervisor port, then the
    proposal lifecycle mirrored to Prefect when a Prefect API is configured (or `mirror_lifecycle` says so)."""
    from pipewarden.flows.prefect_story import prefect_configured
    from pipewarden.ports import supervisor

    enabled = prefect_configured() if mirror_lifecycle is None else mirror_lifecycle
    mirror = _lifecycle_mirror(enabled and _emitting())
    _mirror(mirror)
    report = supervisor()(step=step)
    _mirror(mirror)
    return report


def _emitting() -> bool:
    from pipewarden.settings import get_settings

    return get_settings().emit_prefect_events


@flow(name=FLOW_NAME, persist_result=False, log_prints=False)
def supervise_flow(sync_index: bool = True) -> dict[str, Any]:
    """Claim pending events, run their agents (a task run each), resume decided proposals (a task run each), and
    mirror the proposals' lifecycle to Prefect events. `sync_index=False` skips bringing the knowledge index up to
    date (the CLI does it first, with its own progress line)."""
    if sync_index:
        from pipewarden.flows.knowledge_sync import sync_knowledge

        sync_knowledge()  # agents cite the index; unchanged chunks are skipped
    from pipewarden.ports import supervisor

    mirror = _lifecycle_mirror(_emitting())
    _mirror(mirror)
    report = supervisor()(step=prefect_step(mirror))
    _mirror(mirror)
    return report.model_dump(mode="json")
