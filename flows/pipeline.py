"""The pipeline as a Prefect flow: ingest -> validate -> quality -> build -> the declared ML models' stages.

After the checks, the project's SQL models are built (`pipewarden.flows.build.build_models`, when the project has
any) and their cost checked against their history (`detect_cost_regressions`). Then each ML model the project
declares for the dataset (`[ml_models.NAME]` with `dataset = ...`, `ml_models_for`) runs its stages: train the
champion if there is none yet (retraining later is a proposal, not a side effect of a batch), score the load,
record the load's labels as feedback, and judge drift and decay (`detect_model_drift`). A batch that fails its
contract or a halting quality check halts there; its event is already in the outbox.

`run_batch` is the kernel's PipelineRunner port: the apply-and-verify step re-runs a halted batch through it. A
batch guarded inside a Prefect deployment's flow run (`pipewarden.prefect.guard`) is re-run through that
deployment with the same parameters when the project's `[rerun] mode` allows (`rerun_route`); otherwise the
landed batch is checked again under the new versions.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from prefect import flow, task

from pipewarden.errors import BatchHalted, ConfigError, PipewardenError
from pipewarden.events import RunFailed
from pipewarden.models import RunResult
from pipewarden.settings import get_settings

log = logging.getLogger(__name__)
RERUN_TIMEOUT_S = 3600.0  # how long a re-run through a deployment may take before it is judged failed


def ml_models_for(dataset: str) -> list[str]:
    """The declared ML models (`[ml_models.NAME]`) that score `dataset`'s loads, in declaration order."""
    settings = get_settings()
    if not settings.has_project:
        return []
    return list(settings.project_config.ml_models_fed_by(dataset))


@task(name="ingest", cache_policy=None, persist_result=False)
def ingest_task(dataset: str, source: str, load_id: str | None, rerun: bool) -> Any:
    """Land the batch (unless it is already landed under `load_id`) and read it back from the landing zone."""
    from pipewarden.flows.ingest import ingest, is_landed, read_landed

    if load_id and (rerun or is_landed(dataset, load_id)):
        return read_landed(dataset, load_id)
    landed = ingest(dataset, source, load_id=load_id)
    return read_landed(dataset, landed.load_id)


@task(name="validate", cache_policy=None, persist_result=False)
def validate_task(landed: Any, df: Any) -> Any:
    from pipewarden.flows.validate import validate

    return validate(landed, df)


@task(name="quality", cache_policy=None, persist_result=False)
def quality_task(landed: Any, df: Any) -> Any:
    """Batch-level quality checks against earlier loads (flows/quality_checks.py); may halt before transform."""
    from pipewarden.flows.quality_checks import check_quality

    return check_quality(landed, df)


@task(name="load-unchecked", cache_policy=None, persist_result=False)
def load_unchecked_task(landed: Any, df: Any) -> int:
    """Without supervision (benchmark baseline): land every row as accepted, no checks, no events."""
    from pipewarden.flows.validate import write_unchecked

    return write_unchecked(landed, df)


def build_function() -> Any:
    """`pipewarden.flows.build.build_models` when it is installed and the project has SQL models, else None."""
    models = get_settings().models_dir
    if not models.is_dir() or not any(models.glob("*.sql")):
        return None
    try:
        from pipewarden.flows.build import build_models
    except ImportError:
        return None
    return build_models


@task(name="build", cache_policy=None, persist_result=False)
def build_task(load_id: str | None = None) -> Any:
    """Build the project's SQL models after a dataset's batch was accepted; a model that fails fails the stage."""
    report = build_function()(load_id=load_id)
    if hasattr(report, "raise_for_failure"):
        report.raise_for_failure()
    return report


@task(name="cost", cache_policy=None, persist_result=False)
def cost_task(dataset: str, load_id: str) -> list[str]:
    """The cost detector on the build this load triggered; its events go to the outbox."""
    from pipewarden.flows.detectors import detect_cost_regressions
    from pipewarden.flows.emit import emit

    events = detect_cost_regressions(load_id, dataset=dataset)
    for ev in events:
        emit(ev)
    return [str(e.id) for e in events]


@task(name="ml-model", cache_policy=None, persist_result=False)
def ml_model_task(ml_model: str, load_id: str, supervision: bool = True) -> list[str]:
    """One declared ML model on one load (`flows.ml.run_stages`): the champion trained if there is none yet, the
    load scored, its labels recorded as feedback, then (supervised) drift and decay judged, events to the outbox."""
    from pipewarden.flows.ml import run_stages

    return run_stages(load_id, ml_model, supervision=supervision).events


def _timed(timings: dict[str, float], name: str, fn: Any, *args: Any) -> Any:
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        timings[name] = round((time.perf_counter() - t0) * 1000, 1)


@flow(name="pipewarden-pipeline", log_prints=False, persist_result=False)
def pipeline_flow(dataset: str, source: str = "", load_id: str | None = None, rerun: bool = False,
                  supervision: bool = True) -> Any:
    """One batch through every stage. Returns a RunResult as a dict; a batch that halted or failed ends the flow
    run Failed (carrying the same dict), so Prefect never shows a halted batch as Completed."""
    out = _stages(dataset, source, load_id, rerun, supervision)
    if out["status"] == "completed":
        return out
    from prefect.states import Failed

    where = f" at {out['halted_at']}" if out.get("halted_at") else ""
    return Failed(message=f"{dataset} load {out['load_id']} {out['status']}{where}: {out.get('reason') or ''}".rstrip(": "),
                  data=out)


def _stages(dataset: str, source: str, load_id: str | None, rerun: bool, supervision: bool) -> dict[str, Any]:
    timings: dict[str, float] = {}
    df, landed = _timed(timings, "ingest", ingest_task, dataset, source, load_id, rerun)
    from pipewarden.flows.prefect_story import tell_pipeline_run

    tell_pipeline_run(dataset, landed.load_id, rerun=rerun)  # the run's name; a re-run's link to what it repairs
    result = RunResult(dataset=dataset, load_id=landed.load_id, status="completed", rows_in=len(df),
                       flow_run_id=_current_flow_run_id())
    stage = "validate"
    try:
        if supervision:
            outcome = _timed(timings, "validate", validate_task, landed, df)
            result.checks = outcome.check_result
            result.rows_quarantined = outcome.rows_quarantined
            result.events += outcome.event_ids
            if outcome.halted:
                result.status, result.halted_at, result.timings_ms = "halted", "validate", timings
                result.reason, result.halt_event = outcome.reason, (outcome.event_ids or [None])[0]
                return result.model_dump(mode="json")
            stage = "quality"
            quality = _timed(timings, "quality", quality_task, landed, df)
            result.events += quality.event_ids
            if quality.halted:
                result.status, result.halted_at, result.timings_ms = "halted", "quality", timings
                result.reason = quality.reason
                result.halt_event = next((e for f, e in zip(quality.findings, quality.event_ids, strict=False)
                                          if f.halt), None)
                return result.model_dump(mode="json")
        else:
            _timed(timings, "load", load_unchecked_task, landed, df)
        if build_function() is not None:
            stage = "build"
            _timed(timings, "build", build_task, landed.load_id)
            if supervision:
                stage = "cost"
                result.events += _timed(timings, "cost", cost_task, dataset, landed.load_id)
        for name in ml_models_for(dataset):
            stage = f"ml:{name}"
            result.events += _timed(timings, stage, ml_model_task, name, landed.load_id, supervision)
    except PipewardenError as exc:
        result.status, result.halted_at, result.reason = "failed", stage, exc.message
        if supervision:
            from pipewarden.flows.emit import emit

            ev = RunFailed(dataset=dataset, load_id=landed.load_id, stage=stage, error=exc.message)
            emit(ev)
            result.events.append(str(ev.id))
    result.timings_ms = timings
    return result.model_dump(mode="json")


def run_batch(dataset: str, source: str, *, load_id: str | None = None, rerun: bool = False,
              supervision: bool = True) -> RunResult:
    """The PipelineRunner port: run the pipeline flow on one batch and return its typed result.

    A new batch is landed first, outside orchestration, so a bad file or an unknown dataset fails at once with
    a clear error (nothing half-written) instead of as a failed flow run; the flow then reads the landed batch.
    A re-run (`rerun=True`) goes through the Prefect deployment the batch came from when `rerun_route` says so,
    else re-checks the landed batch under the current versions.
    """
    if rerun and load_id:
        route, deployment, parameters = rerun_route(dataset, load_id)
        if route == "deployment":
            return rerun_through_deployment(dataset, load_id, deployment, parameters)  # type: ignore[arg-type]
    ingest_ms = 0.0
    if not rerun:
        from pipewarden.flows.ingest import ingest

        t0 = time.perf_counter()
        load_id = ingest(dataset, source, load_id=load_id).load_id
        ingest_ms = round((time.perf_counter() - t0) * 1000, 1)
    state = pipeline_flow(dataset=dataset, source=str(source), load_id=load_id, rerun=rerun, supervision=supervision,
                          return_state=True)
    out = state.result(raise_on_failure=False)  # a halted batch's run is Failed and still carries its result
    if isinstance(out, BaseException):  # a stage raised something unexpected: as before, the caller sees it
        raise out
    result = RunResult.model_validate(out)
    if ingest_ms:
        result.timings_ms = {"land": ingest_ms, **result.timings_ms}
    return result


# --------------------------------------------------------------------------- re-runs after approval
def rerun_route(dataset: str, load_id: str) -> tuple[Literal["deployment", "recheck"], str | None, dict[str, Any]]:
    """How to re-run a halted load: ("deployment", name, parameters) or ("recheck", None, {}).

    `[rerun] mode` in the project file: `auto` (default) re-runs through the deployment the load was guarded in
    (recorded by `pipewarden.prefect.guard`), else re-checks the landed batch; `deployment` always goes through a
    deployment (the recorded one, else `[rerun] deployment`), with a ConfigError when there is none; `recheck`
    always re-checks.
    """
    from pipewarden.flows.guard import run_context

    settings = get_settings()
    config = settings.project_config.config.rerun if settings.has_project else None
    mode = config.mode if config is not None else "auto"
    if mode == "recheck":
        return "recheck", None, {}
    ctx = run_context(dataset, load_id) or {}
    name = ctx.get("deployment_id") or (
        f"{ctx['flow_name']}/{ctx['deployment_name']}" if ctx.get("flow_name") and ctx.get("deployment_name") else None)
    if name:
        return "deployment", str(name), dict(ctx.get("parameters") or {})
    if mode == "deployment":
        if config is not None and config.deployment:
            return "deployment", config.deployment, {}
        raise ConfigError(
            f"[rerun] mode is 'deployment' but load {load_id} of {dataset} did not come from a deployment",
            hint="set [rerun] deployment = 'flow-name/deployment-name' in pipewarden.toml, or mode = 'auto'",
        )
    return "recheck", None, {}


def rerun_through_deployment(dataset: str, load_id: str, deployment: str, parameters: dict[str, Any], *,
                             timeout: float = RERUN_TIMEOUT_S) -> RunResult:
    """Re-run the team's flow through its deployment with the same parameters, and judge by the re-checked load:
    completed when the flow run completed and the load is accepted again, halted when the load halted again,
    failed otherwise (the flow run failed for another reason, or did not finish within `timeout`)."""
    from prefect.deployments import run_deployment

    from pipewarden.flows.ingest import list_loads
    from pipewarden.flows.prefect_story import link_repair_run, repair_for, repair_tags

    t0 = time.perf_counter()
    repair = repair_for(dataset, load_id)  # the proposal it verifies: tagged, and linked once the run exists
    flow_run = run_deployment(name=deployment, parameters=parameters, timeout=timeout, tags=repair_tags(repair))
    if repair is not None and getattr(flow_run, "id", None):
        link_repair_run(flow_run.id, repair)
    state = getattr(flow_run, "state", None)
    load = next((row for row in list_loads(dataset) if row["load_id"] == load_id), {})
    status = str(load.get("status", ""))
    result = RunResult(dataset=dataset, load_id=load_id, status="failed", rows_in=int(load.get("rows") or 0),
                       rows_quarantined=_quarantined(dataset, load_id),
                       timings_ms={"deployment": round((time.perf_counter() - t0) * 1000, 1)},
                       flow_run_id=str(flow_run.id) if getattr(flow_run, "id", None) else None)
    where = f"deployment {deployment} (flow run {getattr(flow_run, 'id', '?')})"
    if state is not None and state.is_completed() and status.startswith("accepted"):
        result.status = "completed"
    elif status.startswith("halted"):
        result.status, result.halted_at = "halted", "quality" if status == "halted_quality" else "validate"
        result.reason = f"the load is {status} again after the re-run through {where}"
    else:
        result.halted_at = "rerun"
        state_name = getattr(state, "name", None) or "no final state"
        result.reason = f"the re-run through {where} ended {state_name}; the load is {status or 'unknown'}"
    return result


def _current_flow_run_id() -> str | None:
    """The id of the Prefect flow run this code runs in, if any (the proposal page links a re-run to it)."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


def _quarantined(dataset: str, load_id: str) -> int:
    from pipewarden.flows.ingest import connect

    with connect() as wh:
        if not wh.has_table("quarantine"):
            return 0
        return int(wh.execute("SELECT count(*) FROM quarantine WHERE dataset = ? AND load_id = ?",
                              [dataset, load_id])[0][0])


def halted_error(result: RunResult) -> BatchHalted:
    """The `BatchHalted` error for a halted run: the dataset, the load, the event and the proposal once there is one,
    with the command to look at it."""
    from pipewarden.flows.guard import describe_halt

    message, hint = describe_halt(result.dataset, result.load_id, result.halted_at, result.reason, result.halt_event)
    return BatchHalted(message, hint=hint, result=result)
