"""The supervise deployment: `pipewarden-supervise`, run by Prefect when pipewarden reports a fault.

`build_supervise_deployment()` makes a Prefect 3 RunnerDeployment of `supervise_flow` (`flows/supervise.py`: a task
run per event's agent and per resumed proposal) with a deployment trigger
on pipewarden's fault events (the dotted names in `pipewarden.events.EVENT_NAMES`, as `flows/emit.py` mirrors
them, on the resources `pipewarden.dataset.*`), plus an optional interval as a safety net for events that were
written to the outbox but never reached Prefect. At most one supervise run works at a time; a burst of events
queues runs rather than racing them.

`pipewarden deploy` serves it from this process with `prefect.serve`, against PREFECT_API_URL when set (a running
`prefect server start` or Prefect Cloud), else Prefect's local default. The trigger fires only for events sent to
the same server: point the pipeline and `pipewarden deploy` at one PREFECT_API_URL.

A team's own pipelines are their own deployments; pipewarden deploys only its supervisor. The supervise flow
reaches the agents through the kernel's Supervisor port, so flows/ does not import agents/.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import UserError
from pipewarden.events import EVENT_NAMES
from pipewarden.flows.supervise import FLOW_NAME, supervise_flow

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.events import DeploymentEventTrigger

DEFAULT_NAME = "on-events"
DEFAULT_EVERY_S = 300
FAULT_EVENTS: frozenset[str] = frozenset(EVENT_NAMES.values())
"""The Prefect event names the trigger expects: every pipewarden fault event, and nothing else."""
RESOURCE_MATCH = "pipewarden.dataset.*"
_BAD_NAME_CHARS = "/%&<>"


class TriggerPlan(BaseModel):
    """One deployment trigger, as it would be stored (as a Prefect automation)."""

    model_config = ConfigDict(frozen=True)
    name: str
    """The automation's name."""
    events: list[str]
    """Event names that fire it (sorted)."""
    match: dict[str, Any]
    """Labels the event's resource must have."""


class DeploymentPlan(BaseModel):
    """What `pipewarden deploy` serves, read back from the built deployment (nothing here touches Prefect's API)."""

    model_config = ConfigDict(frozen=True)
    flow_name: str
    name: str
    triggers: list[TriggerPlan]
    every_s: int | None = Field(description="Seconds between safety-net runs; None when there is no interval.")
    concurrency_limit: int | None
    api_url: str | None = Field(description="PREFECT_API_URL it would be served against; None: the local default.")

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def supervise_trigger(name: str) -> DeploymentEventTrigger:
    """Run the deployment once for each pipewarden fault event on a dataset."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"{FLOW_NAME}/{name}: on pipewarden events",
        description="A pipewarden fault event was emitted: claim it and run its agent.",
        expect=set(FAULT_EVENTS),
        match={"prefect.resource.id": RESOURCE_MATCH},
        threshold=1,
        within=timedelta(0),
    )


def build_supervise_deployment(*, name: str = DEFAULT_NAME, every: int = DEFAULT_EVERY_S) -> RunnerDeployment:
    """The supervise deployment, built but not registered: event trigger, interval `every` seconds (0: none)."""
    if not name.strip() or any(c in name for c in _BAD_NAME_CHARS):
        raise UserError(f"--name {name!r} is not a usable deployment name",
                        hint=f"use a non-empty name without any of {' '.join(_BAD_NAME_CHARS)}, e.g. {DEFAULT_NAME!r}")
    if every < 0:
        raise UserError(f"--every {every} is negative",
                        hint="give the seconds between safety-net runs, or 0 for no interval (events only)")
    from prefect.deployments.runner import EntrypointType

    return supervise_flow.to_deployment(
        name=name,
        entrypoint_type=EntrypointType.MODULE_PATH,  # served runs import it wherever pipewarden is installed
        interval=every or None,
        triggers=[supervise_trigger(name)],
        concurrency_limit=1,
        tags=["pipewarden"],
        description="Claim pipewarden's events, run their agents, resume decided proposals. Triggered by "
                    f"pipewarden's fault events; {f'every {every}s as a safety net' if every else 'no interval'}.",
    )


def describe(deployment: RunnerDeployment) -> DeploymentPlan:
    """What `deployment` would serve: its triggers, its interval and the Prefect API it would talk to."""
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.settings import PREFECT_API_URL

    intervals = [s.schedule.interval for s in deployment.schedules or [] if isinstance(s.schedule, IntervalSchedule)]
    limit = deployment.concurrency_limit
    return DeploymentPlan(
        flow_name=deployment.flow_name,
        name=deployment.name,
        triggers=[TriggerPlan(name=t.name or "", events=sorted(t.expect), match=t.match.model_dump(mode="json"))
                  for t in deployment.triggers],
        every_s=int(intervals[0].total_seconds()) if intervals else None,
        concurrency_limit=limit if isinstance(limit, int) or limit is None else limit.limit,
        api_url=PREFECT_API_URL.value() or None,
    )


def serve_deployment(deployment: RunnerDeployment) -> None:  # pragma: no cover - blocks until Ctrl-C
    from prefect import serve

    serve(deployment)
