"""Prefect deployments: the pipeline on a schedule, supervise on an interval.

`pipewarden deploy` serves both from this process with `prefect.serve` (against PREFECT_API_URL when set,
else Prefect's local server). The supervise flow reaches the agents through the kernel's Supervisor port, so
flows/ does not import agents/.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel

from flows.pipeline import pipeline_flow


@flow(name="pipewarden-supervise", persist_result=False)
def supervise_flow() -> dict[str, Any]:
    """Claim pending events, run their agents, resume decided proposals."""
    from flows.knowledge_sync import sync_knowledge
    from pipewarden.ports import supervisor

    sync_knowledge()  # agents cite the index; unchanged chunks are skipped
    return supervisor()().model_dump(mode="json")


@flow(name="pipewarden-scheduled-batch", persist_result=False)
def scheduled_batch_flow(month: int = 1, dataset: str = "flights") -> dict[str, Any]:
    """The scheduled pipeline run: prepare the month's batch, then run the pipeline flow on it."""
    from flows.pipeline import prepare_month

    return pipeline_flow(dataset=dataset, source=str(prepare_month(month)))


class DeploymentSpec(BaseModel):
    flow_name: str
    name: str
    describe: str
    deployment: Any = None


def build_deployments(*, cron: str = "0 6 * * *", supervise_every: int = 60) -> list[DeploymentSpec]:
    """The two deployments, built (not yet served)."""
    pipe = scheduled_batch_flow.to_deployment(name="nightly", cron=cron, parameters={"month": 1},
                                              tags=["pipewarden"], description="Run the flights pipeline on a batch.")
    sup_name = f"every-{supervise_every}s"
    sup = supervise_flow.to_deployment(name=sup_name, interval=supervise_every, tags=["pipewarden"],
                                       description="Claim events, run agents, resume decided proposals.")
    return [
        DeploymentSpec(flow_name=scheduled_batch_flow.name, name="nightly", describe=f"cron {cron!r}", deployment=pipe),
        DeploymentSpec(flow_name=supervise_flow.name, name=sup_name, describe=f"every {supervise_every}s",
                       deployment=sup),
    ]


def serve_deployments(specs: list[DeploymentSpec]) -> None:  # pragma: no cover - blocks until Ctrl-C
    from prefect import serve

    serve(*[s.deployment for s in specs])
