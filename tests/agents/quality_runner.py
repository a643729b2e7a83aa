"""A PipelineRunner for the quality agent's tests: the real validate and quality stages on a landed batch, without
Prefect and without the stages after them (transform, features, model), which the quality fixes do not touch.

Install it with `tests.fakes.runtimes.swap(monkeypatch, pipeline_runner=run)`, or in a child process with
`PIPEWARDEN_RUNTIME=tests.fakes.runtimes:quality_runner`."""

from __future__ import annotations

from pipewarden.models import RunResult


def run(dataset: str, source: str, *, load_id: str | None = None, rerun: bool = False) -> RunResult:
    from pipewarden.flows.ingest import ingest, read_landed
    from pipewarden.flows.quality_checks import check_quality
    from pipewarden.flows.validate import validate

    if not rerun or load_id is None:
        load_id = ingest(dataset, source, load_id=load_id).load_id
    df, landed = read_landed(dataset, load_id)
    v = validate(landed, df, engine="pandas")
    result = RunResult(dataset=dataset, load_id=load_id, status="completed", rows_in=len(df), checks=v.check_result,
                       rows_quarantined=v.rows_quarantined, events=list(v.event_ids))
    if v.halted:
        result.status, result.halted_at = "halted", "validate"
        return result
    q = check_quality(landed, df)
    result.events += q.event_ids
    if q.halted:
        result.status, result.halted_at = "halted", "quality"
    return result
