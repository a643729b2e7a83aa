"""Guard one batch from a team's own code: land it, apply the fixes that fit it, check it, return what passed.

`guard_batch(data, dataset)` is the public entry point (re-exported as `pipewarden.guard_batch`, wrapped as a
Prefect task in `pipewarden.prefect.guard`). The steps, each an existing stage:

1. land the batch (`flows.ingest.ingest`): a file path, a pandas DataFrame or a pyarrow Table; a batch that cannot
   be taken as it is (over the size limit, a column named twice, nested columns the contract does not flatten, no
   rows) is refused with `tools.io.BatchRefused` (exit 2) naming its `RunFailed` event, and nothing lands;
2. validate it against the active contract (`flows.validate.validate`), under the approved column mapping proven
   on this batch's schema fingerprint, if any (`tools.mapping.mapping_for_batch`); rejected rows are quarantined
   with their reasons;
3. run the quality stage (`flows.quality_checks.check_quality`);
4. return a `GuardResult` with the accepted rows as a DataFrame, or raise `BatchHalted` (exit code 3) naming the
   dataset, the load, the event, the proposal once there is one, and the command to look at it.

Every event is in the outbox before `guard_batch` returns or raises. A run inside a Prefect flow records the flow
run and deployment on the load (`record_run_context`), so a re-run after approval can go through the same
deployment (`flows.pipeline.run_batch`). `recheck_batch` re-checks a landed batch under the current versions.

Public names: `GuardResult`, `guard_batch`, `recheck_batch`, `land_batch`, `describe_halt`, `halt_message`,
`record_run_context`, `run_context`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import BatchHalted, UserError
from pipewarden.flows.lineage_events import guard_lineage
from pipewarden.models import CheckResult
from pipewarden.store import StateStore

RUN_CONTEXT_SUFFIX = ".run.json"


class GuardResult(BaseModel):
    """What guarding one batch did. `accepted` holds the rows that passed, as the warehouse holds them."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    dataset: str
    load_id: str
    status: Literal["accepted", "halted"]
    halted_at: Literal["validate", "quality"] | None = None
    reason: str = Field("", description="Why the batch halted, in words; empty when it was accepted.")
    rows_in: int
    rows_accepted: int = 0
    rows_quarantined: int = 0
    event_ids: list[str] = Field(default_factory=list, description="Every event the batch raised, in order.")
    halt_event_id: str | None = Field(None, description="The event that halted the batch.")
    schema_fingerprint: str = ""
    checks: CheckResult | None = None
    accepted: pd.DataFrame = Field(default_factory=pd.DataFrame, exclude=True, repr=False)

    @property
    def halted(self) -> bool:
        return self.status == "halted"


# --------------------------------------------------------------------------- landing
def land_batch(dataset: str, data: Any, *, load_id: str | None = None, source: str | None = None) -> Any:
    """Land `data` (a CSV/Parquet path, a pandas DataFrame or a pyarrow Table) as one load of `dataset`; returns
    the `Landed` record. The same data lands under the same load id every time (the id derives from content);
    `source` is recorded as where the batch came from."""
    from pipewarden.flows.ingest import ingest

    if not isinstance(data, (str, Path)):
        _check_frame(data)
    return ingest(dataset, data, load_id=load_id, source_name=source)


def _check_frame(data: Any) -> None:
    import pyarrow as pa

    if not isinstance(data, (pd.DataFrame, pa.Table)):
        raise UserError(f"cannot guard a {type(data).__name__}",
                        hint="pass a CSV or Parquet file path, a pandas DataFrame or a pyarrow Table")


# --------------------------------------------------------------------------- the Prefect run a load came from
def _run_context_url(landed: Any) -> str:
    path = str(landed.uri)
    return (path[: -len(".parquet")] if path.endswith(".parquet") else path) + RUN_CONTEXT_SUFFIX


def record_run_context(landed: Any, context: dict[str, Any]) -> None:
    """Store the Prefect run a load came from (flow run id, flow name, parameters, deployment id and name) next to
    the landed batch, so a re-run after approval can go through the same deployment."""
    import fsspec

    with fsspec.open(_run_context_url(landed), "w", encoding="utf-8") as fh:
        fh.write(json.dumps(context, sort_keys=True, default=str))


def run_context(dataset: str, load_id: str) -> dict[str, Any] | None:
    """The Prefect run context recorded for a load, or None when it was not guarded inside a flow run."""
    import fsspec

    from pipewarden.flows.ingest import read_landed

    _, landed = read_landed(dataset, load_id, columns=[])
    url = _run_context_url(landed)
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return None
    with fs.open(path, "r", encoding="utf-8") as fh:
        return json.loads(fh.read())  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- checking
def _check(landed: Any, df: pd.DataFrame, *, run_id: str | None, say: Any = None) -> GuardResult:
    """Validate, the quality stage, the accepted rows; `say` (a progress reporter's) hears which step runs."""
    from pipewarden.flows.quality_checks import check_quality
    from pipewarden.flows.validate import validate

    say = say or (lambda _: None)
    say(f"validating {landed.dataset} load {landed.load_id} ({len(df):,} rows)")
    outcome = validate(landed, df, run_id=run_id)
    result = GuardResult(dataset=landed.dataset, load_id=landed.load_id, status="accepted", rows_in=len(df),
                         rows_quarantined=outcome.rows_quarantined, event_ids=list(outcome.event_ids),
                         schema_fingerprint=landed.schema_fingerprint, checks=outcome.check_result)
    if outcome.halted:
        return result.model_copy(update={"status": "halted", "halted_at": "validate", "reason": outcome.reason,
                                         "halt_event_id": outcome.event_ids[0] if outcome.event_ids else None})
    say(f"quality checks on {landed.dataset} load {landed.load_id}")
    quality = check_quality(landed, df, run_id=run_id)
    result.event_ids += quality.event_ids
    if quality.halted:
        halting = [eid for f, eid in zip(quality.findings, quality.event_ids, strict=False) if f.halt]
        return result.model_copy(update={"status": "halted", "halted_at": "quality", "reason": quality.reason,
                                         "halt_event_id": halting[0] if halting else None})
    say(f"reading the accepted rows of {landed.dataset} load {landed.load_id}")
    accepted = _accepted_rows(landed.dataset, landed.load_id)
    return result.model_copy(update={"accepted": accepted, "rows_accepted": len(accepted)})


def _accepted_rows(dataset: str, load_id: str) -> pd.DataFrame:
    """The load's accepted rows as the warehouse holds them (typed to the contract), without `_load_id`."""
    from pipewarden.flows.ingest import connect
    from pipewarden.flows.validate import raw_table

    table = raw_table(dataset)
    with connect() as wh:
        if not wh.has_table(table):
            return pd.DataFrame()
        sql = f"SELECT * FROM {wh.quote(table)} WHERE _load_id = ?"
        df = duckdb_frame(wh.duckdb, sql, [load_id]) if wh.is_duckdb else wh.read_frame(sql, [load_id])
    return df.drop(columns=["_load_id"])


def duckdb_frame(con: Any, sql: str, params: list[Any]) -> pd.DataFrame:
    """A DuckDB query's rows as the frame DuckDB's own `.df()` gives (the dtypes `Warehouse.read_frame` returns),
    through Arrow: several times faster on the guard's read-back of a big batch. `.df()` makes an integer or
    boolean column that holds a null a nullable `Int64`/`boolean`, where Arrow would give floats or objects; that
    is the one difference, undone here column by column (`tests/flows/test_guard_progress.py` holds the two
    equal for every contract type, with and without nulls)."""
    import numpy as np
    import pyarrow as pa

    table = con.sql(sql, params=params).to_arrow_table()
    df = table.to_pandas()
    for name, column in zip(table.column_names, table.columns, strict=True):
        t = column.type
        if column.null_count and (pa.types.is_integer(t) or pa.types.is_boolean(t)):
            nullable = pd.BooleanDtype() if pa.types.is_boolean(t) else pd.api.types.pandas_dtype(
                np.dtype(t.to_pandas_dtype()).name.replace("uint", "UInt").replace("int", "Int"))
            df[name] = column.to_pandas(types_mapper={t: nullable}.get)
    return df


def guard_batch(data: Any, dataset: str, *, load_id: str | None = None, source: str | None = None,
                store: StateStore | None = None, run: dict[str, Any] | None = None) -> GuardResult:
    """Land `data` as one batch of `dataset`, check it, and return the accepted rows (see the module docstring).

    `source` says where the batch came from (recorded on the load); `run` is the Prefect run context
    (`pipewarden.prefect.guard` passes it). Raises `BatchHalted` (carrying the result) when the batch halts,
    UnknownNameError for a dataset without a contract, InputFileError for a file that cannot be read, and
    BatchRefused (an InputFileError) for a batch ingest refuses, once its RunFailed event is in the outbox.
    """
    from pipewarden.progress import progress
    from pipewarden.tools.warehouse import one_connection

    # a transient spinner on stderr naming the step, only when stderr is a terminal (the guard in a flow run
    # launched from one); nothing in a worker, a test or a pipe. Every step's warehouse work goes through one
    # connection, closed before a halt is raised (each step still commits in its own transaction).
    with progress(f"guarding a batch of {dataset}") as bar, one_connection():
        bar.say(f"landing a batch of {dataset}")
        landed = land_batch(dataset, data, load_id=load_id, source=source)
        if run:
            record_run_context(landed, run)
        df = _read(landed)
        with guard_lineage(landed) as lineage:  # OpenLineage START, then COMPLETE or FAIL (off unless configured)
            result = lineage.finished(_check(landed, df, run_id=(run or {}).get("flow_run_id"), say=bar.say))
    if result.halted:
        message, hint = halt_message(result, store)
        raise BatchHalted(message, hint=hint, result=result)
    return result


def recheck_batch(dataset: str, load_id: str) -> GuardResult:
    """Check an already landed batch again under the current contract and fixes (a re-run after approval).
    Never raises for a halt: the result says it."""
    from pipewarden.flows.ingest import read_landed
    from pipewarden.tools.warehouse import one_connection

    df, landed = read_landed(dataset, load_id)
    ctx = run_context(dataset, load_id) or {}
    with guard_lineage(landed) as lineage, one_connection():
        return lineage.finished(_check(landed, df, run_id=ctx.get("flow_run_id")))


def _read(landed: Any) -> pd.DataFrame:
    from pipewarden.flows.ingest import read_landed

    df, _ = read_landed(landed.dataset, landed.load_id)
    return df


# --------------------------------------------------------------------------- the halt, in words
def describe_halt(dataset: str, load_id: str, stage: str | None, reason: str, event_id: str | None,
                  store: StateStore | None = None) -> tuple[str, str]:
    """The message and hint of a halt: `<dataset> load <id> halted at <stage>: <reason>; event <kind> <id>;
    proposal <id> (<status>)...`, and the command to look at it (the proposal once there is one, else the
    dataset's inbox)."""
    parts = [f"{dataset} load {load_id} halted at {stage or 'an unknown stage'}: {reason or 'see the event'}"]
    hint = f"look at it with `pipewarden inbox list --dataset {dataset}`"
    if event_id:
        store = store or StateStore()
        parts.append(f"event {store.get_event(event_id).kind} {event_id}")
        proposal = store.proposal_for_event(event_id)
        if proposal is not None:
            parts.append(f"proposal {proposal.short_id} ({proposal.status.value}): {proposal.title}")
            hint = f"look at it with `pipewarden inbox show {proposal.short_id}`"
        else:
            parts.append("no proposal yet (the supervisor drafts one: `pipewarden supervise --once`)")
    return "; ".join(parts), hint


def halt_message(result: GuardResult, store: StateStore | None = None) -> tuple[str, str]:
    """The message and hint `BatchHalted` carries for a halted guard result."""
    return describe_halt(result.dataset, result.load_id, result.halted_at, result.reason, result.halt_event_id, store)
