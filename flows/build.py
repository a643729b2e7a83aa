"""`pipewarden build`: run a project's SQL models in its warehouse (DuckDB or PostgreSQL), in dependency order.

Each `<name>.sql` in the models folder (`settings.models_dir`) holds one SELECT, written in the project's models
dialect (`settings.models_dialect`); sqlglot transpiles it to the warehouse's dialect and it is materialised as the
table `<name>` (DuckDB: CREATE OR REPLACE TABLE AS; PostgreSQL: DROP + CREATE TABLE AS in one transaction, so a
failure keeps the old table). The order comes from the models' sqlglot lineage (`tools.lineage`): a model that
reads another runs after it, and a cycle is a ModelSqlError naming the models before anything runs.

Unlike `transform` (the pipeline's stage: all models in one DuckDB transaction), each model commits on its own: a
failing model is reported with its file and the database's message, every model that reads it (directly or not)
is skipped, and the independent ones still build. Every attempted model appends a row to `model_runs` (the schema
`transform` writes and the cost agent reads: rows out, elapsed ms, and rows/bytes scanned from DuckDB's profiler or
PostgreSQL's EXPLAIN ANALYZE), and its SQL text to `model_sql`.

Public names: `build_models`, `build_models_or_raise`, `build_task` (the latter as a Prefect task, for a user's own
flow: a failed model fails the task), `BuildReport`, `BuiltModel`, `build_order`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, computed_field

from pipewarden.errors import UnknownNameError
from pipewarden.flows.lineage_events import build_lineage
from pipewarden.flows.transform import (
    ModelRun,
    ModelRunError,
    active_sql_overrides,
    ensure_run_tables,
    profile_fields,
    record_run,
    sql_hash,
    with_table_rows,
)
from pipewarden.ids import new_id, utcnow
from pipewarden.settings import get_settings
from pipewarden.tools.lineage import ModelSqlError, SqlModel, load_models, model_dependencies, topological_order
from pipewarden.tools.warehouse import Warehouse, WarehouseQueryError, connect, safe_url

if TYPE_CHECKING:
    from prefect import Task

LINEAGE_DIALECT = "duckdb"
"""The dialect `tools.lineage` parses; models in another dialect are transpiled to it to find their inputs."""

Status = Literal["ok", "failed", "skipped"]


class BuiltModel(BaseModel):
    """One model of a build: what happened to it and what it cost."""

    model: str
    path: str = Field(description="The model's SQL file.")
    status: Status = Field(description="ok; failed (see error); skipped because a model it reads did not build.")
    upstream: list[str] = Field(default_factory=list, description="The models of this project it reads.")
    rows_out: int | None = None
    elapsed_ms: float | None = None
    rows_scanned: int | None = None
    bytes_scanned: int | None = None
    error: str | None = Field(default=None, description="The database's message, or which upstream model failed.")


class BuildReport(BaseModel):
    """Every selected model, in build order, and where they were built."""

    run_id: str
    warehouse: str = Field(description="The warehouse URL, password masked.")
    dialect: str = Field(description="The warehouse's SQL dialect the models were transpiled to.")
    models_dialect: str
    models_dir: str
    models: list[BuiltModel]
    elapsed_ms: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return all(m.status == "ok" for m in self.models)

    @property
    def failed(self) -> list[BuiltModel]:
        return [m for m in self.models if m.status == "failed"]

    def raise_for_failure(self) -> None:
        """Raise ModelRunError for the first failed model (naming its file and the database's message)."""
        for m in self.failed:
            skipped = [s.model for s in self.models if s.status == "skipped"]
            raise ModelRunError(m.model, m.path, m.error or "failed",
                                hint="fix the model's SQL and build again"
                                + (f"; not built: {', '.join(skipped)}" if skipped else ""))


def _models_in(models: Mapping[str, SqlModel], dialect: str) -> dict[str, SqlModel]:
    """The models as DuckDB-dialect SQL for the lineage parser (unchanged when already DuckDB)."""
    if dialect == LINEAGE_DIALECT:
        return dict(models)
    import sqlglot
    from sqlglot.errors import SqlglotError

    out: dict[str, SqlModel] = {}
    for name, m in models.items():
        try:
            sql = ";\n".join(sqlglot.transpile(m.sql, read=dialect, write=LINEAGE_DIALECT))
        except SqlglotError as exc:
            raise ModelSqlError(name, m.path, f"does not parse as {dialect} SQL: {exc}",
                                hint="fix the SQL, or set [models] dialect in pipewarden.toml") from exc
        out[name] = m.model_copy(update={"sql": sql})
    return out


def build_order(models: Mapping[str, SqlModel], dialect: str = LINEAGE_DIALECT) -> tuple[list[str], dict[str, set[str]]]:
    """The models in build order and, for each, the other models it reads. A cycle raises ModelSqlError."""
    parsed = _models_in(models, dialect)
    deps = model_dependencies(models=parsed)
    order = topological_order(deps, models=models)
    return order, {name: {u for u in ups if u in models and u != name} for name, ups in deps.items()}


def _select(only: Iterable[str] | None, models: Mapping[str, SqlModel]) -> set[str]:
    if only is None:
        return set(models)
    chosen = set(only)
    for name in sorted(chosen):
        if name not in models:
            raise UnknownNameError("SQL model", name, sorted(models))
    return chosen


def build_models(
    models_dir: Path | str | None = None,
    *,
    warehouse: str | None = None,
    only: Iterable[str] | None = None,
    load_id: str | None = None,
    progress: Callable[[BuiltModel], None] | None = None,
    use_active_versions: bool = True,
) -> BuildReport:
    """Build the SQL models of `models_dir` (default: settings.models_dir) in `warehouse` (a SQLAlchemy URL; default:
    settings.warehouse), in dependency order; record each one's cost in `model_runs`; return the report.

    `only` builds just those models (the models they read must already exist); an unknown name raises
    UnknownNameError. A model that fails does not raise: it is reported (`status='failed'`, the database's message),
    and the models reading it are skipped; check `report.ok` or call `report.raise_for_failure()`. A models folder
    that does not parse, or models that read each other in a cycle, raise ModelSqlError before anything is built.
    `progress` is called with each model's result as it finishes. An approved SQL patch (`sql:<model>` version in
    the state DB) replaces its model's file unless `use_active_versions=False`.
    """
    settings = get_settings()
    folder = Path(models_dir) if models_dir is not None else settings.models_dir
    dialect = settings.models_dialect
    models = load_models(folder)
    active = active_sql_overrides(list(models)) if use_active_versions and models else {}
    if active:
        models = load_models(folder, overrides=active)
    chosen = _select(only, models)
    order, deps = build_order(models, dialect)
    run_id = str(new_id())
    results: list[BuiltModel] = []
    t_all = time.perf_counter()
    lineage = build_lineage(models, dialect, warehouse or settings.warehouse)  # OpenLineage, off unless configured
    with connect(warehouse) as wh:
        if wh.is_duckdb:
            wh.execute("SET TimeZone = 'UTC'")
        ensure_run_tables(wh)
        not_built: set[str] = set()
        for name in (n for n in order if n in chosen):
            upstream = sorted(deps[name])
            blocked = [u for u in upstream if u in not_built]
            if blocked:
                result = BuiltModel(model=name, path=models[name].path, status="skipped", upstream=upstream,
                                    error=f"not built: it reads {', '.join(blocked)}, which did not build")
            else:
                lineage.model_started(name)
                result = _build_one(wh, models[name], dialect, upstream, run_id, load_id,
                                    "version" if name in active else "file")
            lineage.model_finished(result)
            if result.status != "ok":
                not_built.add(name)
            results.append(result)
            if progress is not None:
                progress(result)
    lineage.finished()
    return BuildReport(run_id=run_id, warehouse=safe_url(wh.url), dialect=wh.dialect, models_dialect=dialect,
                       models_dir=str(folder), models=results,
                       elapsed_ms=round((time.perf_counter() - t_all) * 1000, 3))


def _build_one(wh: Warehouse, model: SqlModel, dialect: str, upstream: list[str], run_id: str,
               load_id: str | None, source: str) -> BuiltModel:
    """Transpile, materialise and record one model; a failure is returned (and recorded), not raised."""
    from sqlglot.errors import SqlglotError

    started = utcnow()
    t0 = time.perf_counter()
    run = ModelRun(model=model.name, path=model.path, load_id=load_id, started_at=started, elapsed_ms=0.0,
                   rows_out=0, sql_hash=sql_hash(model.sql), sql_source=source)
    try:
        built = wh.create_table_as(model.name, wh.transpile(model.sql, read=dialect))
    except (WarehouseQueryError, SqlglotError) as exc:
        error = exc.message if isinstance(exc, WarehouseQueryError) else f"cannot transpile to {wh.dialect}: {exc}"
        run = run.model_copy(update={"elapsed_ms": round((time.perf_counter() - t0) * 1000, 3)})
        record_run(wh, run_id, run, "failed", error, model.sql)
        return BuiltModel(model=model.name, path=model.path, status="failed", upstream=upstream,
                          elapsed_ms=run.elapsed_ms, error=error)
    run = run.model_copy(update={"elapsed_ms": built.elapsed_ms, "rows_out": built.rows_out,
                                 **profile_fields(with_table_rows(wh, built.profile))})
    record_run(wh, run_id, run, "ok", None, model.sql)
    return BuiltModel(model=model.name, path=model.path, status="ok", upstream=upstream, rows_out=built.rows_out,
                      elapsed_ms=built.elapsed_ms, rows_scanned=run.rows_scanned, bytes_scanned=run.bytes_scanned)


def build_models_or_raise(models_dir: Path | str | None = None, **kwargs: Any) -> BuildReport:
    """`build_models`, raising ModelRunError for the first failed model once the build is done (what a task wants:
    a failed model fails the task, and Prefect shows it)."""
    report = build_models(models_dir, **kwargs)
    report.raise_for_failure()
    return report


_TASK: Task | None = None


def __getattr__(name: str) -> Any:
    """`build_task`: `build_models_or_raise` as a Prefect task (a failed model fails the task), made on first use so
    `pipewarden build` never loads Prefect."""
    global _TASK
    if name == "build_task":
        if _TASK is None:
            from prefect import task

            _TASK = task(name="pipewarden-build", task_run_name="build models")(build_models_or_raise)
        return _TASK
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
