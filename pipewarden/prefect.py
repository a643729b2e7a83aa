"""`guard`, `build` and the ML stages (`train`, `score`, `check_model`): the public API as Prefect tasks, for a
team's own flow.

    from pipewarden.prefect import build, check_model, guard, score, train

    @flow
    def orders_pipeline(path: str) -> None:
        accepted = guard(path, dataset="orders")   # a DataFrame of the rows that passed
        build()                                    # the project's SQL models (the features table among them)
        train("churn")                             # the champion of [ml_models.churn], if there is none yet
        load_id = accepted.attrs["load_id"]
        score("churn", load_id=load_id)            # predictions, and the load's labels as feedback
        check_model("churn", load_id=load_id)      # drift and decay: model-drift events for the retrain agent

The accepted rows carry their load id in `DataFrame.attrs["load_id"]`. A model-drift event does not fail the flow
run (the batch is fine; the model is what changed): it goes to the outbox, where the retrain agent takes it.

Inside a flow run the task records the run on the load (flow run id, flow name, parameters, deployment id and
name), so a re-run after approval goes through the same deployment with the same parameters. A halted batch raises
`BatchHalted`: the task and the flow run end Failed (never Completed), with a message naming the event. The guard
also renames the flow run after the dataset and load (`orders: load 3f2a9c1b0d4e`; `guard(..., name_run=False)`
keeps the flow's own name) and attaches a markdown artifact: the rows, and for a halt the event and its proposal,
or the command to see it until there is one (`pipewarden.flows.prefect_story`).

A composition root (see tests/test_layering.py): it wires the Prefect runtime into `pipewarden.flows.guard`.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from prefect import task

from pipewarden.errors import BatchHalted
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
    deployment_id = _deployment_id()
    return {
        "flow_run_id": str(run_id), "flow_name": flow_run.flow_name, "parameters": params,
        "deployment_id": deployment_id,
        "deployment_name": (deployment.name or None) if deployment_id else None,
    }


def _deployment_id() -> str | None:
    """The deployment of the flow run this code runs in, from the run's own context when it is at hand.

    `prefect.runtime.deployment.id` looks for the id on the context object itself, where Prefect 3.8 never puts it,
    so outside a deployment it reads the flow run from the API, twice per guard (0.12 s of the guard's 0.9 s on
    the orders benchmark); the flow run in the context carries the same `deployment_id`. A mocked
    `PREFECT__RUNTIME__DEPLOYMENT__ID`, or a task whose flow context is not in this thread, still asks Prefect."""
    import os

    from prefect.context import FlowRunContext
    from prefect.runtime import deployment

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or "PREFECT__RUNTIME__DEPLOYMENT__ID" in os.environ:
        found = deployment.id
    else:
        found = ctx.flow_run.deployment_id
    return str(found) if found else None


@task(name="pipewarden-guard", cache_policy=None, persist_result=False, retries=0)
def guard(data: Any, dataset: str, *, load_id: str | None = None, source: str | None = None,
          name_run: bool = True) -> pd.DataFrame:
    """Guard one batch (a file path, a pandas DataFrame or a pyarrow Table) of `dataset`; return the accepted rows.

    Raises `BatchHalted` when the batch halts, which fails the task and the flow run. Inside a flow run the run is
    renamed after the dataset and load (`orders: load 3f2a9c1b0d4e`; `name_run=False` keeps your name) and gets a
    markdown artifact: the rows, and for a halt the event and its proposal or the command to see it.
    """
    run = current_run()
    try:
        result = guard_batch(data, dataset, load_id=load_id, source=source, run=run)
    except BatchHalted as halt:
        if run is not None and halt.result is not None:
            _tell_prefect(halt.result, name_run, message=halt.message, hint=halt.hint or "")
        raise
    if run is not None:
        _tell_prefect(result, name_run)
    accepted = result.accepted
    accepted.attrs["load_id"] = result.load_id
    return accepted


def _tell_prefect(result: Any, name_run: bool, *, message: str = "", hint: str = "") -> None:
    """Name the flow run after the load and attach the guard's artifact (best effort: never changes the verdict)."""
    from pipewarden.flows.prefect_story import guard_artifact, name_current_run

    if name_run:
        name_current_run(result.dataset, result.load_id)
    guard_artifact(result, message=message, hint=hint)


@task(name="pipewarden-build", cache_policy=None, persist_result=False, retries=0)
def build(select: list[str] | None = None) -> dict[str, Any]:
    """Build the project's SQL models in dependency order (as `pipewarden build`); a failed model fails the task.

    Returns the build report as a dict (models in order, rows, milliseconds, status).
    """
    from pipewarden.flows.build import build_models_or_raise

    return build_models_or_raise(only=select).model_dump(mode="json")


@task(name="pipewarden-train", cache_policy=None, persist_result=False, retries=0)
def train(ml_model: str | None = None, *, retrain: bool = False) -> dict[str, Any] | None:
    """Train the declared ML model's champion (`[ml_models.NAME]`; default: the only one) when none holds the alias
    yet; with `retrain=True`, train a new champion regardless. Returns the training result as a dict, or None when
    the champion was already there."""
    from pipewarden.flows.ml import ensure_champion
    from pipewarden.flows.train import train as train_model

    if retrain:
        return train_model(ml_model).model_dump(mode="json")
    return ensure_champion(ml_model)


@task(name="pipewarden-score", cache_policy=None, persist_result=False, retries=0)
def score(ml_model: str | None = None, *, load_id: str | None = None) -> dict[str, Any]:
    """Score one load (default: the latest accepted load of the model's dataset) with the declared model's champion,
    and record the load's labels as feedback. Returns {"load_id", "scored", "feedback"}."""
    from pipewarden.flows.ml import latest_load, score_load

    load_id = load_id or latest_load(ml_model)
    scored, feedback = score_load(load_id, ml_model)
    return {"load_id": load_id, "scored": scored, "feedback": feedback}


@task(name="pipewarden-check-model", cache_policy=None, persist_result=False, retries=0)
def check_model(ml_model: str | None = None, *, load_id: str | None = None) -> list[str]:
    """Judge the declared model's drift and decay on a scored load (default: the latest accepted one); send the
    model-drift events to the outbox (the retrain agent answers them). Returns the event ids."""
    from pipewarden.flows.ml import check_model as check
    from pipewarden.flows.ml import latest_load

    return check(load_id or latest_load(ml_model), ml_model)
