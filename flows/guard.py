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

The rows stay in memory from landing to the answer: on a DuckDB warehouse a batch in the contract's shape is
checked where its accepted rows are written, in one pass over the rows as they landed (`flows.validate.
validate_rows`), the quality stage judges what validate accepted without checking the rows again, and the accepted
rows come back as the warehouse holds them without a read of the landed file or of `raw_<dataset>`. Any other
batch (a column mapping, a dedupe rule, a column type that pass does not take, another warehouse) is read back from
the landing zone, checked in memory (GX) and read back from the warehouse, as before; both decide alike
(`tests/flows/test_guard_paths.py`).

Every event is in the outbox before `guard_batch` returns or raises. A run inside a Prefect flow records the flow
run and deployment on the load (`record_run_context`), so a re-run after approval can go through the same
deployment (`flows.pipeline.run_batch`). `recheck_batch` re-checks a landed batch under the current versions.

Public names: `GuardResult`, `guard_batch`, `recheck_batch`, `land_batch`, `describe_halt`, `halt_message`,
`record_run_context`, `run_context`, `duckdb_frame`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import BatchHalted, UserError
from pipewarden.flows.lineage_events import guard_lineage
from pipewarden.models import CheckResult
from pipewarden.store import StateStore

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["GuardResult", "describe_halt", "duckdb_frame", "guard_batch", "halt_message", "land_batch",
           "record_run_context", "recheck_batch", "run_context"]

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
    return _land(dataset, data, load_id=load_id, source=source)[0]


def _land(dataset: str, data: Any, *, load_id: str | None, source: str | None) -> tuple[Any, pa.Table | None]:
    """`land_batch`, also handing back the rows as they landed (`flows.ingest.ingest_rows`), or None."""
    from pipewarden.flows.ingest import ingest_rows

    if not isinstance(data, (str, Path)):
        _check_frame(data)
    return ingest_rows(dataset, data, load_id=load_id, source_name=source)


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
def _check(landed: Any, df: pd.DataFrame, *, run_id: str | None, say: Any = None,
           rows: pa.Table | None = None) -> GuardResult:
    """Validate, the quality stage, the accepted rows; `say` (a progress reporter's) hears which step runs.

    `rows` is the batch as it landed (`_land`): then it is checked where its rows are written when that applies
    (`flows.validate.validate_rows`), and the quality stage and the answer reuse what validate found and accepted.
    Otherwise (or without `rows`) validate checks `df` in memory, the quality stage checks it again and the
    accepted rows are read back from the warehouse."""
    from pipewarden.flows.quality_checks import check_quality
    from pipewarden.flows.validate import validate, validate_rows

    say = say or (lambda _: None)
    say(f"validating {landed.dataset} load {landed.load_id} ({len(df):,} rows)")
    outcome = validate_rows(landed, rows, run_id=run_id) if rows is not None else None
    if outcome is None:
        outcome = validate(landed, df, run_id=run_id)
    result = GuardResult(dataset=landed.dataset, load_id=landed.load_id, status="accepted", rows_in=len(df),
                         rows_quarantined=outcome.rows_quarantined, event_ids=list(outcome.event_ids),
                         schema_fingerprint=landed.schema_fingerprint, checks=outcome.check_result)
    if outcome.halted:
        return result.model_copy(update={"status": "halted", "halted_at": "validate", "reason": outcome.reason,
                                         "halt_event_id": outcome.event_ids[0] if outcome.event_ids else None})
    say(f"quality checks on {landed.dataset} load {landed.load_id}")
    quality = check_quality(landed, df, run_id=run_id, verdicts=outcome.verdicts if outcome.accepted is not None
                            else None)
    result.event_ids += quality.event_ids
    if quality.halted:
        halting = [eid for f, eid in zip(quality.findings, quality.event_ids, strict=False) if f.halt]
        return result.model_copy(update={"status": "halted", "halted_at": "quality", "reason": quality.reason,
                                         "halt_event_id": halting[0] if halting else None})
    accepted = outcome.accepted
    if accepted is None:
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
    """`flows.warehouse.duckdb_frame` (a DuckDB query's rows as DuckDB's own `.df()` gives them), loaded on use so
    importing the guard does not load DuckDB."""
    from pipewarden.flows.warehouse import duckdb_frame as frame

    return frame(con, sql, params)


def guard_batch(data: Any, dataset: str, *, load_id: str | None = None, source: str | None = None,
                store: StateStore | None = None, run: dict[str, Any] | None = None) -> GuardResult:
    """Land `data` as one batch of `dataset`, check it, and return the accepted rows (see the module docstring).

    `source` says where the batch came from (recorded on the load); `run` is the Prefect run context
    (`pipewarden.prefect.guard` passes it). Raises `BatchHalted` (carrying the result) when the batch halts,
    UnknownNameError for a dataset without a contract, InputFileError for a file that cannot be read, and
    BatchRefused (an InputFileError) for a batch ingest refuses, once its RunFailed event is in the outbox.
    """
    from pipewarden.flows.ingest import landed_frame
    from pipewarden.progress import progress
    from pipewarden.tools.warehouse import one_connection

    # a transient spinner on stderr naming the step, only when stderr is a terminal (the guard in a flow run
    # launched from one); nothing in a worker, a test or a pipe. Every step's warehouse work goes through one
    # connection, closed before a halt is raised (each step still commits in its own transaction).
    with progress(f"guarding a batch of {dataset}") as bar, one_connection():
        bar.say(f"landing a batch of {dataset}")
        landed, rows = _land(dataset, data, load_id=load_id, source=source)
        if run:
            record_run_context(landed, run)
        df = _read(landed) if rows is None else landed_frame(rows)  # the frame a read-back would give
        with guard_lineage(landed) as lineage:  # OpenLineage START, then COMPLETE or FAIL (off unless configured)
            result = lineage.finished(_check(landed, df, run_id=(run or {}).get("flow_run_id"), say=bar.say,
                                             rows=rows))
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
