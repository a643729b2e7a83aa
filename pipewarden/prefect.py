"""`guard` and `build`: the public API as Prefect tasks, for a team's own flow.

    from pipewarden.prefect import guard

    @flow
    def orders_pipeline(path: str) -> None:
        accepted = guard(path, dataset="orders")   # a DataFrame of the rows that passed
        ...

Inside a flow run the task records the run on the load (flow run id, flow name, parameters, deployment id and
name), so a re-run after approval goes through the same deployment with the same parameters. A halted batch raises
`BatchHalted`: the task and the flow run end Failed (never Completed), with a message naming the event.

A composition root (see tests/test_layering.py): it wires the Prefect runtime into `pipewarden.flows.guard`.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from prefect import task

from pipewarden.flows.guard import guard_batch


def current_run() -> dict[str, Any] | None:
    """The Prefect flow run this code runs in (id, flow name, JSON parameters, deployment id and name), or None."""
    from prefect.runtime import deployment, flow_run

    run_id = flow_run.id
    if not run_id:
        return None
    params = {}
    for key, value in (flow_run.parameters or {}).items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue  # not JSON: a deployment could not be called with it either
        params[key] = value
    return {
        "flow_run_id": str(run_id), "flow_name": flow_run.flow_name, "parameters": params,
        "deployment_id": str(deployment.id) if deployment.id else None,
        "deployment_name": deployment.name or None,
    }


@task(name="pipewarden-guard", cache_policy=None, persist_result=False, retries=0)
def guard(data: Any, dataset: str, *, load_id: str | None = None, source: str | None = None) -> pd.DataFrame:
    """Guard one batch (a file path, a pandas DataFrame or a pyarrow Table) of `dataset`; return the accepted rows.

    Raises `BatchHalted` when the batch halts, which fails the task and the flow run.
    """
    return guard_batch(data, dataset, load_id=load_id, source=source, run=current_run()).accepted


@task(name="pipewarden-build", cache_policy=None, persist_result=False, retries=0)
def build(select: list[str] | None = None) -> dict[str, Any]:
    """Build the project's SQL models in dependency order (as `pipewarden build`); a failed model fails the task.

    Returns the build report as a dict (models in order, rows, milliseconds, status).
    """
    from pipewarden.flows.build import build_models_or_raise

    return build_models_or_raise(only=select).model_dump(mode="json")
