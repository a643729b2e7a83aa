"""Validate: hold a landed batch to its data contract, quarantine the rows that break it, accept the rest.

The steps, in order:

1. load the dataset's ACTIVE contract (an approved `contract:<dataset>` version, else its YAML file) and the
   active column mapping that fits this batch, if any (one proven on the batch's schema fingerprint; a batch in
   the contract's shape gets none: `tools.mapping.mapping_for_batch`), and apply it;
2. compare the batch's columns with the contract; on drift, emit `SchemaDrift` and halt;
3. take out the rows the active quality rules match (`tools.quality_rules`: an approved `dedupe:<dataset>`
   rule and a `quarantine:<dataset>` predicate; they are quarantined with the rule's reason and do not count as
   failures), then run the row checks on the rest (`tools.checks.run_checks`, the contract's GX suite);
4. in ONE warehouse transaction (DuckDB or any SQLAlchemy warehouse, through `tools.warehouse`): replace this
   load's rows in `quarantine` (each with its reason and the row as it arrived, as JSON) and in `raw_<dataset>`
   (accepted rows, tagged `_load_id`), and set the load's status in `meta_loads`;
5. if more rows failed than the contract allows, emit `CheckFailed` and halt: the rejected rows are
   quarantined, and no row of the batch is accepted.

A landed file of at least `settings.pushdown_min_bytes` is validated where it lies (`validate_pushdown`): the
contract's row rules run in DuckDB over the Parquet file (`tools.pushdown`), only the rejected rows come back to
Python (a chunk at a time, for their reasons and row JSON), and the same rows, reasons, statuses and events result.
A batch the guard holds in memory as it landed is validated the same way where its rows are written
(`validate_rows`): in the DuckDB warehouse's connection, over its Arrow table, in one pass; it hands back the
accepted rows as the warehouse holds them and which rows were taken out, so the quality stage and the guard read
nothing back.

Validating the same load again replaces what the last validation wrote, so re-runs never duplicate rows.
Events get ids derived from what they report (dataset, load, contract and mapping versions, the findings),
so a retried validation that finds the same fault emits the same event once.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipewarden.events import CheckFailed, SchemaDrift
from pipewarden.flows.emit import emit
from pipewarden.flows.ingest import Landed, connect, read_landed, set_load_status
from pipewarden.ids import utcnow
from pipewarden.models import CheckResult, ColumnMapping, Quarantine
from pipewarden.policies.contract import Contract, SchemaDiff, load_contract, schema_diff
from pipewarden.store import StateStore
from pipewarden.tools.checks import CheckReport, Engine, rows_as_json, run_checks
from pipewarden.tools.contracts import active_contract
from pipewarden.tools.load_profile import write_profile
from pipewarden.tools.mapping import conform_to_contract, map_frame, mapping_for_batch
from pipewarden.tools.quality_rules import active_rules, check_with_rules, rule_reasons

if TYPE_CHECKING:
    import pyarrow as pa

QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS quarantine (
    dataset VARCHAR NOT NULL,
    load_id VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    reason VARCHAR NOT NULL,
    row_json VARCHAR NOT NULL,
    quarantined_at TIMESTAMPTZ NOT NULL
)
"""
EVENT_NAMESPACE = uuid.UUID("5b0c1d2e-7f3a-4c5b-9d6e-0a1b2c3d4e5f")


@dataclass(frozen=True)
class RowVerdicts:
    """Which rows of the batch validate took out, by position (boolean masks as long as the batch): what the quality
    stage needs to judge the accepted rows without checking them again."""

    rejected: np.ndarray
    """Rows quarantined: by the contract's checks or by a quality rule."""
    ruled: np.ndarray
    """Rows a quality rule took out (a subset of `rejected`)."""


class ValidationOutcome(BaseModel):
    """What validating one landed batch did."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    dataset: str
    load_id: str
    halted: bool
    stage: Literal["validate"] = "validate"
    reason: str = ""
    check_result: CheckResult
    schema_diff: SchemaDiff = Field(default_factory=SchemaDiff)
    failure_rate: float = 0.0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    event_ids: list[str] = Field(default_factory=list)
    mapping_version: int | None = None
    contract_version: str = ""
    timings_ms: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list, description="Findings that are not failures (extra columns).")
    engine: str = Field("memory", description="Where the rows were checked: 'memory' (pandas/GX) or 'duckdb' "
                        "(pushed down over the file, `validate_pushdown`, or over the rows in memory, `validate_rows`).")
    verdicts: RowVerdicts | None = Field(None, exclude=True, repr=False,
                                         description="Which rows were taken out, when the batch was judged unmapped.")
    accepted: pd.DataFrame | None = Field(None, exclude=True, repr=False,
                                          description="`validate_rows`: the accepted rows as the warehouse holds them "
                                          "(without `_load_id`), as `SELECT *` of the load would read them.")


def raw_table(dataset: str) -> str:
    """The warehouse table that holds a dataset's accepted rows."""
    return f"raw_{dataset}"


def active_mapping(landed: Landed, df: pd.DataFrame, contract: Contract,
                   store: StateStore | None = None) -> tuple[ColumnMapping | None, int | None]:
    """The active column mapping that fits this landed batch (proven on its schema fingerprint; none for a batch
    in the contract's shape) and its version number, or (None, None). See `tools.mapping.mapping_for_batch`."""
    return mapping_for_batch(landed.dataset, df, contract, fingerprint=landed.schema_fingerprint, store=store)


def validate(
    landed: Landed, df: pd.DataFrame | None = None, *, run_id: str | None = None, engine: Engine | None = None,
    pushdown: bool | None = None, say: Callable[[str], None] | None = None,
) -> ValidationOutcome:
    """Validate a landed batch against its contract (see the module docstring for the steps).

    `df` is the batch as landed; when omitted it is read back from the landing zone, or, for a landed file of at
    least `settings.pushdown_min_bytes`, checked where it lies (`pushdown`; see `validate_pushdown`). `pushdown`
    True forces that path (when it applies), False never takes it. `run_id` (the Prefect flow run) is copied
    into the events; `engine` picks the in-memory row-check engine (default: GX, see tools.checks); `say` gets
    progress lines. Raises only for broken inputs (unknown dataset, unreadable landing);
    a batch that breaks its contract is an outcome with `halted=True`, not an error.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    contract = active_contract(landed.dataset)
    store = StateStore()
    if pushdown is True or (pushdown is None and df is None):
        pushed = validate_pushdown(landed, contract, store, run_id=run_id, force=pushdown is True, say=say)
        if pushed is not None:
            return pushed
    if df is None:
        df, _ = read_landed(landed.dataset, landed.load_id)
    diff = schema_diff(contract, df)
    # a batch in the contract's shape gets no mapping (`mapping_for_batch` says so from this same diff)
    mapping, mapping_version = (None, None) if diff.clean else active_mapping(landed, df, contract, store)
    if mapping is not None:
        mapped = map_frame(df, mapping, contract)
        frame, cast_failures = mapped.frame, mapped.cast_failures
        diff = schema_diff(contract, frame)
    else:
        frame, cast_failures = df, {}
    timings["schema_ms"] = _ms(t0)
    base = dict(dataset=landed.dataset, load_id=landed.load_id, mapping_version=mapping_version,
                contract_version=contract.version_tag, schema_diff=diff)

    if not diff.clean:
        _write(contract, landed, df, None, None, status="halted_schema")
        return _drift_outcome(landed, contract, diff, base, rows=len(frame), run_id=run_id, store=store,
                              timings=timings, t0=t0)

    t1 = time.perf_counter()
    rules = active_rules(landed.dataset, landed.load_id, store)
    ruled = rule_reasons(frame, rules) if rules else None
    report = check_with_rules(frame, contract, rules, cast_failures=cast_failures, engine=engine, ruled=ruled) \
        if rules else run_checks(frame, contract, cast_failures=cast_failures, engine=engine, diff=diff)
    timings["checks_ms"] = _ms(t1)
    halted = report.over_threshold
    t2 = time.perf_counter()
    accepted, quarantined = _write(contract, landed, df, frame, report,
                                   status="halted_checks" if halted else "accepted")
    timings["write_ms"] = _ms(t2)
    event_ids, reason = _halt_on_checks(landed, contract, mapping_version, report, rows=len(frame), run_id=run_id,
                                        store=store) if halted else ([], "")
    timings["total_ms"] = _ms(t0)
    rejected = report.rejected.to_numpy(dtype=bool)
    verdicts = RowVerdicts(rejected=rejected, ruled=np.zeros(len(frame), dtype=bool) if ruled is None
                           else (ruled != "").to_numpy(dtype=bool)) if mapping is None else None
    return ValidationOutcome(
        **base, halted=halted, reason=reason, check_result=report.result, failure_rate=report.failure_rate,
        rows_accepted=accepted, rows_quarantined=quarantined, event_ids=event_ids, timings_ms=timings,
        notes=diff.notes(), verdicts=verdicts,
    )


def _drift_outcome(landed: Landed, contract: Contract, diff: SchemaDiff, base: dict[str, Any], *, rows: int,
                   run_id: str | None, store: StateStore, timings: dict[str, float], t0: float,
                   engine: str = "memory") -> ValidationOutcome:
    """Emit `SchemaDrift` for a drifted batch (its rows are already taken out) and say so."""
    event = SchemaDrift(
        id=_event_id("schema_drift", landed, contract, base["mapping_version"], diff.model_dump(mode="json")),
        dataset=landed.dataset, load_id=landed.load_id, run_id=run_id, batch_path=landed.uri,
        contract_version=contract.version_tag, added=diff.added, dropped=diff.dropped, retyped=diff.retyped,
        schema_fingerprint=landed.schema_fingerprint,
    )
    emit(event, store=store)
    timings["total_ms"] = _ms(t0)
    return ValidationOutcome(
        **base, halted=True, reason="schema drift: " + "; ".join(diff.describe()),
        check_result=CheckResult(passed=False, rows=rows, schema_errors=diff.describe()),
        event_ids=[str(event.id)], timings_ms=timings, engine=engine,
    )


def _halt_on_checks(landed: Landed, contract: Contract, mapping_version: int | None, report: Any, *, rows: int,
                    run_id: str | None, store: StateStore) -> tuple[list[str], str]:
    """Emit `CheckFailed` for a batch over its failure threshold; the event ids and the reason in words."""
    reason = (f"{report.failure_rate:.1%} of {rows} rows failed the contract checks, over the "
              f"{contract.max_failure_rate:.1%} {contract.version_tag} allows")
    findings = [f.model_dump(mode="json") for f in report.failed]
    event = CheckFailed(
        id=_event_id("check_failed", landed, contract, mapping_version, findings),
        dataset=landed.dataset, load_id=landed.load_id, run_id=run_id, batch_path=landed.uri,
        failed=report.failed, failure_rate=report.failure_rate, threshold=contract.max_failure_rate,
        halted=True,
    )
    emit(event, store=store)
    return [str(event.id)], reason


# --------------------------------------------------------------------------- the pushdown path
def validate_pushdown(landed: Landed, contract: Contract, store: StateStore, *, run_id: str | None = None,
                      force: bool = False, say: Callable[[str], None] | None = None) -> ValidationOutcome | None:
    """`validate` for a batch checked where it lies: the contract's row rules run in DuckDB over the landed
    Parquet file (`tools.pushdown`), rejected rows go to `quarantine` a chunk at a time and accepted rows to
    `raw_<dataset>` by `INSERT ... SELECT` (DuckDB warehouse) or in Arrow chunks (any other), in one warehouse
    transaction; nothing but the rejected rows is read into pandas. Same outcome, events and rows as the
    in-memory path (`tests/tools/test_pushdown.py`).

    Returns None, and the caller takes the in-memory path, when this one does not apply: the file is under
    `settings.pushdown_min_bytes` (unless `force`), lies in an object store, or the batch needs what only the
    in-memory path does (an active column mapping, an active dedupe rule).
    """
    from pipewarden.tools.io import check_batch_size, is_url
    from pipewarden.tools.pushdown import open_batch, use_pushdown

    if is_url(landed.uri):
        return None
    size = check_batch_size(landed.uri, limit=0)  # the in-memory limit does not apply: this path is bounded
    if not force and not use_pushdown(size):
        return None
    rules = active_rules(landed.dataset, landed.load_id, store)
    if any(not isinstance(r.rule, Quarantine) for r in rules):
        return None
    with connect() as wh:
        return _validate_in_duckdb(
            landed, contract, store, rules, wh, lambda: open_batch(landed.uri, con=wh.duckdb if wh.is_duckdb else None),
            run_id=run_id, say=say)


def validate_rows(landed: Landed, rows: pa.Table, *, run_id: str | None = None,
                  say: Callable[[str], None] | None = None) -> ValidationOutcome | None:
    """`validate` for a batch held in memory as it landed (`flows.ingest.ingest_rows`), in the DuckDB warehouse
    where its accepted rows are written: the contract's row rules (the specs its GX suite is built from, compiled by
    `tools.pushdown`) judge the Arrow table in one pass in the warehouse's connection, rejected rows go to
    `quarantine` with their reasons and row JSON, accepted rows to `raw_<dataset>` by `INSERT ... SELECT`, in one
    transaction, as `validate_pushdown` does over a file. The outcome also hands back the accepted rows as the
    warehouse holds them (`accepted`) and which rows were taken out (`verdicts`).

    Returns None, and the caller takes the in-memory path, when this one does not apply: the warehouse is not
    DuckDB, `settings.pushdown_min_bytes` is 0 (never push down), a column is of a type `tools.pushdown.table_fits`
    does not take, or the batch needs an active column mapping or an active dedupe rule. The same outcome, rows,
    reasons and events as the in-memory path (`tests/flows/test_guard_paths.py`).
    """
    from pipewarden.settings import get_settings
    from pipewarden.tools.pushdown import open_table, table_fits

    if not int(get_settings().pushdown_min_bytes) or not table_fits(rows):
        return None
    contract = active_contract(landed.dataset)
    store = StateStore()
    rules = active_rules(landed.dataset, landed.load_id, store)
    if any(not isinstance(r.rule, Quarantine) for r in rules):
        return None
    with connect() as wh:
        if not wh.is_duckdb:
            return None
        return _validate_in_duckdb(landed, contract, store, rules, wh,
                                   lambda: open_table(rows, wh.duckdb, location=landed.uri), run_id=run_id, say=say,
                                   hand_back=True)


def _validate_in_duckdb(landed: Landed, contract: Contract, store: StateStore, rules: list[Any], wh: Any,
                        opener: Callable[[], Any], *, run_id: str | None, say: Callable[[str], None] | None,
                        hand_back: bool = False) -> ValidationOutcome | None:
    """The pushed-down validation of a batch `opener` opens (`tools.pushdown.open_batch` or `open_table`) in the
    open warehouse `wh`. None when the batch needs an active column mapping. `hand_back`: keep the accepted rows
    as the warehouse holds them and the rows' verdicts on the outcome (DuckDB warehouse only)."""
    from pipewarden.tools.pushdown import run_pushdown
    from pipewarden.tools.quality_rules import predicate_sql

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    table = raw_table(landed.dataset)
    taken: dict[str, list[np.ndarray]] = {"rejected": [], "ruled": []}
    handed: pd.DataFrame | None = None
    read_back: tuple[str, list[Any]] | None = None
    wh.execute(QUARANTINE_DDL)
    try:
        with opener() as batch:
            probe = batch.probe(contract)
            diff = schema_diff(contract, probe)
            # a batch in the contract's shape gets no mapping (`mapping_for_batch` says so from this same diff)
            mapping, mapping_version = (None, None) if diff.clean else active_mapping(landed, probe, contract, store)
            if mapping is not None:
                return None
            timings["schema_ms"] = _ms(t0)
            base = dict(dataset=landed.dataset, load_id=landed.load_id, mapping_version=mapping_version,
                        contract_version=contract.version_tag, schema_diff=diff)
            excluded = None
            if rules:
                rule = rules[0]
                excluded = (predicate_sql(rule.rule.predicate, batch.columns),  # type: ignore[union-attr]
                            f"{rule.label}: {rule.rule.reason} ({rule.rule.predicate})")  # type: ignore[union-attr]
            now = pd.Timestamp(utcnow())

            def sink(kind: str) -> Callable[[pd.DataFrame], None]:
                def write(chunk: pd.DataFrame) -> None:
                    taken[kind].append(chunk["row_number"].to_numpy(dtype=np.int64))
                    chunk.insert(0, "load_id", landed.load_id)
                    chunk.insert(0, "dataset", landed.dataset)
                    chunk["quarantined_at"] = now
                    wh.write_frame("quarantine", chunk)
                return write

            with wh.transaction():
                wh.execute("DELETE FROM quarantine WHERE dataset = ? AND load_id = ?", [landed.dataset, landed.load_id])
                exists = wh.has_table(table)
                if exists:
                    wh.execute(f"DELETE FROM {wh.quote(table)} WHERE _load_id = ?", [landed.load_id])
                if not diff.clean:
                    set_load_status(landed.dataset, landed.load_id, "halted_schema", con=wh)
                else:
                    t1 = time.perf_counter()
                    report = run_pushdown(batch, contract, excluded=excluded, on_quarantine=sink("rejected"),
                                          on_ruled=sink("ruled"), say=say, diff=diff)
                    timings["checks_ms"] = _ms(t1)
                    halted = report.over_threshold
                    t2 = time.perf_counter()
                    if halted:
                        accepted = 0
                    elif hand_back and wh.is_duckdb:
                        accepted, read_back = _write_accepted_handed_back(wh, batch, contract, landed, exists)
                    else:
                        accepted = _write_accepted(wh, batch, contract, landed)
                        write_profile(wh, landed.dataset, landed.load_id)
                    set_load_status(landed.dataset, landed.load_id, "halted_checks" if halted else "accepted",
                                    con=wh)
                    timings["write_ms"] = _ms(t2)
            rows = batch.rows
        if read_back is not None:  # the batch closed: the connection has its own time zone back, as a read-back has
            from pipewarden.flows.guard import duckdb_frame

            handed = duckdb_frame(wh.duckdb, *read_back)
    finally:
        if hand_back:
            wh.execute(f"DROP TABLE IF EXISTS temp.main.{HANDED_BACK}")
    if not diff.clean:
        return _drift_outcome(landed, contract, diff, base, rows=rows, run_id=run_id, store=store,
                              timings=timings, t0=t0, engine="duckdb")
    event_ids, reason = _halt_on_checks(landed, contract, mapping_version, report, rows=rows, run_id=run_id,
                                        store=store) if halted else ([], "")
    timings["total_ms"] = _ms(t0)
    verdicts = None
    if hand_back:
        ruled = np.zeros(rows, dtype=bool)
        ruled[np.concatenate(taken["ruled"] or [np.array([], dtype=np.int64)])] = True
        rejected = ruled.copy()
        rejected[np.concatenate(taken["rejected"] or [np.array([], dtype=np.int64)])] = True
        verdicts = RowVerdicts(rejected=rejected, ruled=ruled)
    return ValidationOutcome(
        **base, halted=halted, reason=reason, check_result=report.result, failure_rate=report.failure_rate,
        rows_accepted=accepted, rows_quarantined=report.rows_quarantined + report.rows_ruled_out,
        event_ids=event_ids, timings_ms=timings, notes=diff.notes(), engine="duckdb", verdicts=verdicts,
        accepted=handed,
    )


def _write_accepted(wh: Any, batch: Any, contract: Contract, landed: Landed) -> int:
    """The accepted rows into `raw_<dataset>`, typed as `conform_to_contract` types them, tagged `_load_id`."""
    from pipewarden.tools.pushdown import accepted_chunks, accepted_select

    table = raw_table(landed.dataset)
    if wh.is_duckdb:
        select = accepted_select(batch, contract)
        tagged = f"SELECT *, CAST(? AS VARCHAR) AS _load_id FROM ({select})"
        if not wh.has_table(table):
            wh.execute(f"CREATE TABLE {wh.quote(table)} AS {tagged}", [landed.load_id])
        else:
            wh.execute(f"INSERT INTO {wh.quote(table)} BY NAME {tagged}", [landed.load_id])
        return int(wh.execute(f"SELECT count(*) FROM {wh.quote(table)} WHERE _load_id = ?", [landed.load_id])[0][0])
    written = 0
    for chunk in accepted_chunks(batch, contract):
        frame = conform_to_contract(chunk.to_pandas(), contract)[contract.names]
        frame["_load_id"] = landed.load_id
        written += wh.write_frame(table, frame)
    return written


HANDED_BACK = "pw_accepted_handed_back"
"""The temporary table `validate_rows` keeps the accepted rows in until it has read them (dropped after)."""


def _write_accepted_handed_back(wh: Any, batch: Any, contract: Contract, landed: Landed, exists: bool
                                ) -> tuple[int, tuple[str, list[Any]]]:
    """`_write_accepted` and `write_profile` on DuckDB, keeping the accepted rows: cast once into a temporary table
    and inserted from it. Returns the rows written and the query that reads them as `SELECT *` of the load reads
    them from `raw_<dataset>` (its column order and types). When the temporary table has the table's columns and
    types (always, but for a table an older version made), the query and the profile read it instead of
    `raw_<dataset>`. `exists`: whether `raw_<dataset>` exists."""
    from pipewarden.tools.pushdown import accepted_select

    table, staged = raw_table(landed.dataset), f"temp.main.{HANDED_BACK}"
    q = wh.quote(table)
    wh.execute(f"CREATE OR REPLACE TEMP TABLE {HANDED_BACK} AS {accepted_select(batch, contract)}")
    tagged = f"SELECT *, CAST(? AS VARCHAR) AS _load_id FROM {staged}"
    if not exists:
        wh.execute(f"CREATE TABLE {q} AS {tagged}", [landed.load_id])
    else:
        wh.execute(f"INSERT INTO {q} BY NAME {tagged}", [landed.load_id])
    kept = {str(r[0]): str(r[1]) for r in wh.execute(f"DESCRIBE SELECT * FROM {staged}")}
    held = [(str(r[0]), str(r[1])) for r in wh.execute(f"DESCRIBE SELECT * FROM {q}") if r[0] != "_load_id"]
    if len(held) == len(kept) and all(kept.get(n) == t for n, t in held):
        profile = write_profile(wh, landed.dataset, landed.load_id, rows=staged, columns=[n for n, _ in held])
        return profile.rows, (f"SELECT {', '.join(wh.quote(n) for n, _ in held)} FROM {staged}", [])
    write_profile(wh, landed.dataset, landed.load_id)
    return (int(wh.execute(f"SELECT count(*) FROM {q} WHERE _load_id = ?", [landed.load_id])[0][0]),
            (f"SELECT * EXCLUDE (_load_id) FROM {q} WHERE _load_id = ?", [landed.load_id]))


def write_unchecked(landed: Landed, df: pd.DataFrame | None = None) -> int:
    """The unsupervised baseline (benchmarks, `supervision=False`): every row of the batch is accepted into
    `raw_<dataset>` with no mapping, no checks, no quarantine and no events. Returns the rows written.

    Columns are still conformed to the contract's types, so the tables downstream see the same schema; a
    column the contract does not know is dropped, and a missing one makes the insert fail, as it would
    in a pipeline nobody supervises.
    """
    contract = load_contract(landed.dataset)
    if df is None:
        df, _ = read_landed(landed.dataset, landed.load_id)
    accepted = conform_to_contract(df, contract)[[c for c in contract.names if c in df.columns]]
    accepted["_load_id"] = landed.load_id
    table = raw_table(landed.dataset)
    with connect() as wh, wh.transaction():
        wh.write_frame(table, accepted, delete_where={"_load_id": landed.load_id})
        set_load_status(landed.dataset, landed.load_id, "accepted_unchecked", con=wh)
    return len(accepted)


# --------------------------------------------------------------------------- warehouse writes
def _write(contract: Contract, landed: Landed, original: pd.DataFrame, frame: pd.DataFrame | None,
           report: CheckReport | None, *, status: str) -> tuple[int, int]:
    """Replace this load's quarantine and raw rows and set its status, in one transaction.

    With no report (schema drift) the load's earlier rows are removed and nothing is added. Returns
    (rows accepted, rows quarantined).
    """
    table = raw_table(landed.dataset)
    quarantine = accepted = None
    if report is not None and frame is not None:
        rejected = report.rejected.to_numpy()
        positions = rejected.nonzero()[0]
        if len(positions):
            quarantine = pd.DataFrame({
                "dataset": landed.dataset,
                "load_id": landed.load_id,
                "row_number": positions.astype("int64"),
                "reason": report.row_reasons.to_numpy()[positions].astype(object),
                "row_json": rows_as_json(original.iloc[positions]),
                "quarantined_at": pd.Timestamp(utcnow()),
            })
        if status == "accepted":
            accepted = conform_to_contract(frame.loc[~rejected], contract)[contract.names]
            accepted["_load_id"] = landed.load_id
    with connect() as wh:
        wh.execute(QUARANTINE_DDL)
        with wh.transaction():
            wh.execute("DELETE FROM quarantine WHERE dataset = ? AND load_id = ?", [landed.dataset, landed.load_id])
            if wh.has_table(table):
                wh.execute(f"DELETE FROM {wh.quote(table)} WHERE _load_id = ?", [landed.load_id])
            if quarantine is not None:
                wh.write_frame("quarantine", quarantine)
            if accepted is not None:
                wh.write_frame(table, accepted)
                write_profile(wh, landed.dataset, landed.load_id)  # what the quality history reads of this load
            set_load_status(landed.dataset, landed.load_id, status, con=wh)
    return (0 if accepted is None else len(accepted)), (0 if quarantine is None else len(quarantine))


def _event_id(kind: str, landed: Landed, contract: Contract, mapping_version: int | None, findings: object) -> uuid.UUID:
    """A stable id for the same finding on the same load under the same contract and mapping versions."""
    digest = hashlib.sha256(json.dumps(findings, sort_keys=True, default=str).encode()).hexdigest()
    key = f"{kind}|{landed.dataset}|{landed.load_id}|{contract.version_tag}|{mapping_version}|{digest}"
    return uuid.uuid5(EVENT_NAMESPACE, key)


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)
