"""The transform stage: build every SQL model as a DuckDB table, in dependency order, and record its cost.

Each model `<name>.sql` (one SELECT) runs as `CREATE OR REPLACE TABLE <name> AS <select>`. All models build in
one transaction: if one fails, none is replaced, and the error names the model file and DuckDB's message.
Every build appends a row to `model_runs` (model, load id, start, elapsed ms, rows out, rows scanned, bytes
scanned, bytes read, rows processed, CPU ms, peak memory, every table scan as JSON, the SQL's hash): the cost
detector's history. The SQL text of every hash is kept once in `model_sql`, so the cost agent can recover the
last known-good version of a model whatever changed it (a patch, an edited file, an override). Profiling numbers
come from DuckDB's own profiler (`enable_profiling = 'no_output'`, read by `tools.cost.profile_from_json`),
which adds no extra query.

The SQL of a model is its file, unless the state DB holds an active version for `sql:<model>` (an approved
SqlModelPatch), or the caller passes `overrides` (a patch on dry-run).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
from pydantic import BaseModel, Field

from pipewarden.flows.warehouse import connect
from pipewarden.ids import new_id, utcnow
from pipewarden.tools.lineage import ModelSqlError, SqlModel, load_models, model_dependencies, topological_order
from pipewarden.tools.warehouse import Warehouse, WarehouseQueryError

if TYPE_CHECKING:
    from pipewarden.tools.cost import CostProfile

RUNS_TABLE = "model_runs"

RUNS_DDL = f"""
CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    load_id VARCHAR,
    status VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    elapsed_ms DOUBLE NOT NULL,
    rows_out BIGINT,
    rows_scanned BIGINT,
    cpu_ms DOUBLE,
    peak_memory_bytes BIGINT,
    sql_hash VARCHAR NOT NULL,
    error VARCHAR
)
"""
# Columns added after the first release; `ALTER ... IF NOT EXISTS` upgrades an older warehouse in place.
RUNS_EXTRA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("bytes_scanned", "BIGINT"), ("bytes_read", "BIGINT"), ("rows_processed", "BIGINT"), ("scans", "VARCHAR"),
    ("sql_source", "VARCHAR"), ("operators", "VARCHAR"), ("joins", "VARCHAR"),
)
SQL_TABLE = "model_sql"
SQL_DDL = f"""
CREATE TABLE IF NOT EXISTS {SQL_TABLE} (
    sql_hash VARCHAR PRIMARY KEY,
    model VARCHAR NOT NULL,
    sql VARCHAR NOT NULL,
    first_seen TIMESTAMP NOT NULL
)
"""


class ModelRunError(ModelSqlError):
    """A SQL model failed in DuckDB; no model of this transform was replaced."""


class ModelRun(BaseModel):
    """One model build: how long it took and what it produced."""

    model: str
    path: str
    load_id: str | None
    started_at: datetime
    elapsed_ms: float
    rows_out: int
    rows_scanned: int | None = Field(default=None, description="Rows read from tables, from DuckDB's profiler.")
    cpu_ms: float | None = None
    peak_memory_bytes: int | None = None
    bytes_scanned: int | None = Field(default=None, description="Bytes the table scans produced (columns x rows).")
    bytes_read: int | None = Field(default=None, description="Bytes read from storage.")
    rows_processed: int | None = Field(default=None, description="Rows through every operator of the plan.")
    scans: list[dict] = Field(default_factory=list,
                              description="Per table scan: rows, bytes, columns, filters, the table's rows.")
    operators: list[str] = Field(default_factory=list, description="The plan's physical operators, top down.")
    joins: list[dict] = Field(default_factory=list, description="Per join: operator, type, condition, rows.")
    sql_source: str = Field(default="file", description="file, version (an active sql:<model> version) or override.")
    sql_hash: str


class TransformResult(BaseModel):
    """Every model built by one transform, in build order."""

    run_id: str
    load_id: str | None
    runs: list[ModelRun]
    elapsed_ms: float

    @property
    def timings_ms(self) -> dict[str, float]:
        return {r.model: r.elapsed_ms for r in self.runs}

    @property
    def rows(self) -> dict[str, int]:
        return {r.model: r.rows_out for r in self.runs}


def sql_hash(sql: str) -> str:
    """A short stable hash of a model's SQL text, to tell which version of a model a run used."""
    return hashlib.sha256(sql.strip().encode()).hexdigest()[:12]


def active_sql_overrides(names: list[str]) -> dict[str, str]:
    """The SQL of each named model's active version in the state DB (target `sql:<model>`), if any."""
    from pipewarden.settings import get_settings
    from pipewarden.store import StateStore

    settings = get_settings()
    if settings.state_url.startswith("sqlite") and not (settings.home / "state.db").exists():
        return {}
    store = StateStore(settings=settings)
    out: dict[str, str] = {}
    for name in names:
        version = store.active_version(f"sql:{name}")
        if version is not None and isinstance(version.content.get("sql"), str):
            out[name] = version.content["sql"]
    return out


def profile_fields(profile: CostProfile | None) -> dict:
    """A cost profile (DuckDB's profiler, PostgreSQL's EXPLAIN ANALYZE) as ModelRun fields; empty without one."""
    if profile is None:
        return {}
    p = profile
    return {"rows_scanned": p.rows_scanned, "cpu_ms": p.cpu_ms, "peak_memory_bytes": p.peak_memory_bytes,
            "bytes_scanned": p.bytes_scanned, "bytes_read": p.bytes_read, "rows_processed": p.rows_processed,
            "scans": [s.model_dump() for s in p.scans], "operators": list(p.operators),
            "joins": [j.model_dump() for j in p.joins]}


def with_table_rows(wh: Warehouse, profile: CostProfile | None) -> CostProfile | None:
    """The profile with each scanned table's row count (`tools.cost.with_input_rows`): the cost detector compares
    cost per input row, so a busier batch is not a regression."""
    from pipewarden.tools.cost import with_input_rows

    def count(table: str) -> int | None:
        if not wh.has_table(table):  # checked first: a failed statement would abort transform's transaction
            return None
        try:
            rows = wh.execute(f"SELECT COUNT(*) FROM {wh.quote(table)}")
        except (WarehouseQueryError, duckdb.Error):
            return None
        return int(rows[0][0]) if rows else None

    return with_input_rows(profile, count)


def ensure_run_tables(wh: Warehouse) -> None:
    """Create (or upgrade) `model_runs` and `model_sql` in the warehouse, in its own dialect."""
    wh.execute(wh.transpile(RUNS_DDL))
    for name, typ in RUNS_EXTRA_COLUMNS:
        wh.execute(wh.transpile(f"ALTER TABLE {RUNS_TABLE} ADD COLUMN IF NOT EXISTS {name} {typ}"))
    wh.execute(wh.transpile(SQL_DDL))


def record_run(wh: Warehouse, run_id: str, run: ModelRun, status: str, error: str | None,
               sql: str | None = None) -> None:
    """Append one build to `model_runs` (and its SQL text to `model_sql`, once per hash)."""
    wh.execute(
        f"INSERT INTO {RUNS_TABLE} (run_id, model, load_id, status, started_at, elapsed_ms, rows_out, rows_scanned, "
        "cpu_ms, peak_memory_bytes, sql_hash, error, bytes_scanned, bytes_read, rows_processed, scans, sql_source, "
        "operators, joins) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, run.model, run.load_id, status, run.started_at.replace(tzinfo=None), run.elapsed_ms, run.rows_out,
         run.rows_scanned, run.cpu_ms, run.peak_memory_bytes, run.sql_hash, error, run.bytes_scanned, run.bytes_read,
         run.rows_processed, json.dumps(run.scans) if run.scans else None, run.sql_source,
         json.dumps(run.operators) if run.operators else None, json.dumps(run.joins) if run.joins else None],
    )
    if sql is not None:
        wh.execute(f"INSERT INTO {SQL_TABLE} VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                   [run.sql_hash, run.model, sql, run.started_at.replace(tzinfo=None)])


def transform(
    load_id: str | None = None,
    *,
    models_dir: Path | str | None = None,
    overrides: Mapping[str, str] | None = None,
    use_active_versions: bool = True,
) -> TransformResult:
    """Build every SQL model in dependency order as a table in the warehouse; return per-model cost.

    `load_id` is the batch that triggered the build (recorded in `model_runs`; the models read every
    accepted row). `overrides` maps model names to SQL that replaces their file (and any active version).
    Raises ModelRunError (naming the model file and DuckDB's message) if a model fails; then no model
    table is replaced, and the failed build is still recorded in `model_runs` with status 'failed'.
    """
    models = load_models(models_dir)
    active = active_sql_overrides(list(models)) if use_active_versions else {}
    if active or overrides:
        models = load_models(models_dir, overrides={**active, **(overrides or {})})
    sources = {name: "override" if name in (overrides or {}) else "version" if name in active else "file"
               for name in models}
    order = topological_order(model_dependencies(models=models), models=models)
    run_id = str(new_id())
    runs: list[ModelRun] = []
    t_all = time.perf_counter()
    with connect() as con:
        wh = Warehouse.over_duckdb(con)
        ensure_run_tables(wh)
        con.execute("SET TimeZone = 'UTC'")
        con.execute("BEGIN TRANSACTION")
        try:
            for name in order:
                runs.append(_build(wh, models[name], load_id, sources[name]))
        except ModelRunError as exc:
            con.execute("ROLLBACK")
            failed = ModelRun(model=exc.model, path=exc.path, load_id=load_id, started_at=utcnow(), elapsed_ms=0.0,
                              rows_out=0, sql_hash=sql_hash(models[exc.model].sql), sql_source=sources[exc.model])
            record_run(wh, run_id, failed, "failed", exc.problem, models[exc.model].sql)
            raise
        con.execute("COMMIT")
        for run in runs:
            record_run(wh, run_id, run, "ok", None, models[run.model].sql)
    return TransformResult(run_id=run_id, load_id=load_id, runs=runs,
                           elapsed_ms=round((time.perf_counter() - t_all) * 1000, 3))


def _build(wh: Warehouse, model: SqlModel, load_id: str | None, source: str = "file") -> ModelRun:
    started = utcnow()
    try:
        built = wh.create_table_as(model.name, model.sql)
    except WarehouseQueryError as exc:
        hint = "fix the model's SQL (or roll back its last patch); no model table was replaced"
        if isinstance(exc.__cause__, duckdb.CatalogException) and "raw_" in exc.db_message:
            hint = "a raw table is missing: ingest a batch (and the reference tables) before transform"
        raise ModelRunError(model.name, model.path, exc.message, hint=hint) from exc
    return ModelRun(model=model.name, path=model.path, load_id=load_id, started_at=started,
                    elapsed_ms=built.elapsed_ms, rows_out=built.rows_out, sql_hash=sql_hash(model.sql),
                    sql_source=source, **profile_fields(with_table_rows(wh, built.profile)))
