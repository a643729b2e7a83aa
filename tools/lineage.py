"""Lineage of the SQL models: which tables each model reads, the order to build them in, and for every
output column the upstream table columns it is computed from.

A SQL model is one file `<name>.sql` in the models folder (`get_settings().models_dir`) holding one SELECT;
it reads raw tables (`raw_<dataset>`, one per dataset) and other models by name. Everything here is static:
the SQL is parsed with sqlglot (DuckDB dialect), qualified against the raw tables' schemas (read from the project's
data contracts only: a dataset without a contract has no known schema) and against the output columns of the
models it reads; nothing runs.

Public names: `SqlModel`, `LineageEdge`, `ModelSqlError`, `load_models`, `parse_model`, `raw_schemas`,
`model_dependencies`, `topological_order`, `model_columns`, `column_lineage`, `column_references`,
`downstream_of`, `upstream_of`, `affected_models`, and the tool `column_lineage` (`TOOLS`: `ColumnLineageInput`,
`ColumnLineageResult`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import sqlglot
from pydantic import BaseModel, ConfigDict, Field
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage as _sqlglot_lineage
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope

from pipewarden.errors import PipewardenError, UnknownNameError
from pipewarden.policies.column_types import DUCKDB_TYPES
from pipewarden.policies.contract import list_contracts, load_contract
from pipewarden.settings import get_settings

DIALECT = "duckdb"
RAW_PREFIX = "raw_"
LOAD_COLUMNS: dict[str, str] = {"_load_id": "VARCHAR"}
"""Load metadata every raw table may carry on top of its contract columns."""


class ModelSqlError(PipewardenError):
    """A SQL model file cannot be used: it does not parse, is not one SELECT, or the models form a cycle."""

    def __init__(self, model: str, path: str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"SQL model {model!r} ({path}): {problem}", hint=hint)
        self.model, self.path, self.problem = model, path, problem


class SqlModel(BaseModel):
    """One SQL model: its name (the table it builds), the file it came from and its SELECT text."""

    model_config = ConfigDict(frozen=True)
    name: str
    path: str
    sql: str


class LineageEdge(BaseModel):
    """Output column `model.column` is computed from `upstream_table.upstream_column` (a raw table or a model)."""

    model_config = ConfigDict(frozen=True)
    model: str
    column: str
    upstream_table: str
    upstream_column: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.model, self.column, self.upstream_table, self.upstream_column)


# --------------------------------------------------------------------------- loading and parsing
def load_models(models_dir: Path | str | None = None, overrides: Mapping[str, str] | None = None) -> dict[str, SqlModel]:
    """Read every `*.sql` file in `models_dir` (default: settings.models_dir), by name.

    `overrides` maps a model name to replacement SQL (an active patched version, or a patch on dry-run);
    a name that is not a file in the folder is added as a new model.
    """
    d = Path(models_dir) if models_dir is not None else get_settings().models_dir
    if not d.is_dir():
        raise ModelSqlError("*", str(d), "the models folder does not exist",
                            hint="set PIPEWARDEN_MODELS_DIR to a folder of *.sql files")
    models = {p.stem: SqlModel(name=p.stem, path=str(p), sql=p.read_text(encoding="utf-8"))
              for p in sorted(d.glob("*.sql"))}
    for name, sql in (overrides or {}).items():
        path = models[name].path if name in models else f"{d / name}.sql (override)"
        models[name] = SqlModel(name=name, path=path, sql=sql)
    return models


def parse_model(model: SqlModel) -> exp.Query:
    """Parse a model's SQL (DuckDB dialect); it must be exactly one query (SELECT, maybe WITH or UNION)."""
    try:
        statements = [s for s in sqlglot.parse(model.sql, dialect=DIALECT) if s is not None]
    except SqlglotError as exc:
        raise ModelSqlError(model.name, model.path, f"does not parse: {exc}",
                            hint="fix the SQL; check it with `duckdb -c 'EXPLAIN <sql>'`") from exc
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        kinds = ", ".join(type(s).__name__ for s in statements) or "nothing"
        raise ModelSqlError(model.name, model.path, f"must hold exactly one SELECT, found {kinds}",
                            hint="keep one SELECT per file; transform wraps it in CREATE OR REPLACE TABLE")
    return statements[0]


def raw_schemas(contracts_dir: Path | None = None) -> dict[str, dict[str, str]]:
    """Schemas of the raw tables, `raw_<dataset>` -> {column: SQL type}.

    Each dataset's contract (contracts/<dataset>.yaml) gives its columns; a dataset without a contract has no
    known schema and no entry here (write one: `pipewarden contract init NAME --from FILE`). Every raw table
    also carries `_load_id`.
    """
    out: dict[str, dict[str, str]] = {}
    d = contracts_dir or get_settings().contracts_dir
    names = list_contracts(d) if d.is_dir() else []
    for dataset in names:
        contract = load_contract(dataset, d)
        cols = {c.name: DUCKDB_TYPES[c.type] for c in contract.columns}
        out[f"{RAW_PREFIX}{dataset}"] = {**cols, **LOAD_COLUMNS}
    return out


def _cte_names(query: exp.Expr) -> set[str]:
    return {cte.alias_or_name for cte in query.find_all(exp.CTE)}


def _tables_read(query: exp.Expr) -> set[str]:
    ctes = _cte_names(query)
    return {t.name for t in query.find_all(exp.Table) if t.name and t.name not in ctes}


# --------------------------------------------------------------------------- the model graph
def model_dependencies(
    models_dir: Path | str | None = None, *, models: Mapping[str, SqlModel] | None = None
) -> dict[str, set[str]]:
    """Each model's upstream tables: the raw tables and other models its SELECT reads (CTE names excluded)."""
    models = models if models is not None else load_models(models_dir)
    return {name: _tables_read(parse_model(m)) for name, m in models.items()}


def topological_order(deps: Mapping[str, Iterable[str]], *, models: Mapping[str, SqlModel] | None = None) -> list[str]:
    """The models in an order where every model comes after the models it reads; ties broken by name.

    Upstream names that are not models (raw tables) are ignored. A cycle raises ModelSqlError naming it.
    """
    model_deps = {m: {u for u in ups if u in deps and u != m} for m, ups in deps.items()}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(model_deps):
        ready = sorted(m for m, ups in model_deps.items() if m not in done and ups <= done)
        if not ready:
            stuck = sorted(m for m in model_deps if m not in done)
            path = models[stuck[0]].path if models and stuck[0] in models else f"{stuck[0]}.sql"
            raise ModelSqlError(stuck[0], path, f"models read each other in a cycle: {', '.join(stuck)}",
                                hint="a model may only read raw tables and models that do not read it back")
        order.extend(ready)
        done.update(ready)
    return order


def _qualified(model: SqlModel, schema: Mapping[str, Mapping[str, str]]) -> exp.Query:
    try:
        return qualify(parse_model(model), schema=dict(schema), dialect=DIALECT,
                       validate_qualify_columns=False, identify=False)
    except SqlglotError as exc:
        raise ModelSqlError(model.name, model.path, f"cannot resolve its columns: {exc}",
                            hint="qualify every column with its table alias; check the names exist") from exc


def _model_schemas(
    models: Mapping[str, SqlModel], schema: Mapping[str, Mapping[str, str]] | None
) -> tuple[list[str], dict[str, dict[str, str]], dict[str, exp.Query]]:
    """Build order, the schema of raw tables plus every model's outputs, and each model's qualified query."""
    full: dict[str, dict[str, str]] = {t: dict(c) for t, c in (schema if schema is not None else raw_schemas()).items()}
    order = topological_order(model_dependencies(models=models), models=models)
    qualified: dict[str, exp.Query] = {}
    for name in order:
        q = _qualified(models[name], full)
        qualified[name] = q
        full[name] = {col: "UNKNOWN" for col in q.named_selects}
    return order, full, qualified


def model_columns(
    models_dir: Path | str | None = None, *, models: Mapping[str, SqlModel] | None = None,
    schema: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, list[str]]:
    """Each model's output columns, in SELECT order (stars expanded against the known schemas)."""
    models = models if models is not None else load_models(models_dir)
    order, full, _ = _model_schemas(models, schema)
    return {name: list(full[name]) for name in order}


# --------------------------------------------------------------------------- column lineage
def column_lineage(
    models_dir: Path | str | None = None, *, models: Mapping[str, SqlModel] | None = None,
    schema: Mapping[str, Mapping[str, str]] | None = None,
) -> list[LineageEdge]:
    """Direct column lineage of every model: one edge per (output column, upstream table column) it reads.

    Upstream tables are the ones the model names (raw tables or other models); follow edges with
    `downstream_of` / `upstream_of` for the transitive picture. A column computed from no column (COUNT(*),
    a literal) has no edge. `schema` overrides the raw tables' schemas (default: `raw_schemas()`).
    """
    models = models if models is not None else load_models(models_dir)
    order, full, qualified = _model_schemas(models, schema)
    edges: set[tuple[str, str, str, str]] = set()
    for name in order:
        try:
            nodes = _sqlglot_lineage(None, qualified[name], schema=full, dialect=DIALECT)
        except SqlglotError as exc:
            raise ModelSqlError(name, models[name].path, f"cannot trace its column lineage: {exc}",
                                hint="give every output expression an alias") from exc
        assert isinstance(nodes, dict)
        for column, node in nodes.items():
            for leaf in node.walk():
                if leaf.downstream or not isinstance(leaf.source, exp.Table):
                    continue
                upstream_col = exp.to_column(leaf.name).name
                if upstream_col and upstream_col != "*":
                    edges.add((name, column, leaf.source.name, upstream_col))
    return [LineageEdge(model=m, column=c, upstream_table=t, upstream_column=u) for m, c, t, u in sorted(edges)]


def column_references(
    models_dir: Path | str | None = None, *, models: Mapping[str, SqlModel] | None = None,
    schema: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, set[tuple[str, str]]]:
    """Every upstream (table, column) each model reads anywhere: SELECT, JOIN, WHERE, GROUP BY, QUALIFY.

    Wider than `column_lineage`: a column used only in a filter or a join key has no lineage edge, but
    renaming it still breaks the model.
    """
    models = models if models is not None else load_models(models_dir)
    order, _, qualified = _model_schemas(models, schema)
    out: dict[str, set[tuple[str, str]]] = {}
    for name in order:
        refs: set[tuple[str, str]] = set()
        for scope in traverse_scope(qualified[name]):
            for col in scope.columns:
                source = scope.sources.get(col.table)
                if isinstance(source, exp.Table) and col.name:
                    refs.add((source.name, col.name))
        out[name] = refs
    return out


def _check_table(table: str, edges: list[LineageEdge]) -> None:
    known = {e.upstream_table for e in edges} | {e.model for e in edges} | set(raw_schemas())
    if table not in known:
        err = UnknownNameError("table in the model lineage", table, sorted(known))
        if table.startswith(RAW_PREFIX):  # a raw table is known only through its dataset's contract
            dataset = table.removeprefix(RAW_PREFIX)
            contract_hint = (f"a raw table's schema comes from its dataset's contract; if {dataset!r} is a dataset "
                             f"without one, write it: pipewarden contract init {dataset} --from FILE")
            PipewardenError.__init__(err, err.message, hint="; ".join(h for h in (err.hint, contract_hint) if h))
        raise err


def downstream_of(
    table: str, column: str, models_dir: Path | str | None = None, *, edges: list[LineageEdge] | None = None
) -> list[tuple[str, str]]:
    """Every model column computed, directly or through other models, from `table.column`; sorted.

    `table` is a raw table or a model. An unknown table raises UnknownNameError; a known table's column
    that no model reads gives an empty list.
    """
    edges = edges if edges is not None else column_lineage(models_dir)
    _check_table(table, edges)
    readers: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for e in edges:
        readers.setdefault((e.upstream_table, e.upstream_column), set()).add((e.model, e.column))
    return sorted(_reachable(readers, (table, column)))


def upstream_of(
    model: str, column: str, models_dir: Path | str | None = None, *, edges: list[LineageEdge] | None = None
) -> list[tuple[str, str]]:
    """The raw table columns a model column is computed from, following models down to raw tables; sorted."""
    edges = edges if edges is not None else column_lineage(models_dir)
    _check_table(model, edges)
    sources: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for e in edges:
        sources.setdefault((e.model, e.column), set()).add((e.upstream_table, e.upstream_column))
    return sorted(n for n in _reachable(sources, (model, column)) if n not in sources)  # the raw leaves


def _reachable(graph: dict[tuple[str, str], set[tuple[str, str]]], start: tuple[str, str]) -> set[tuple[str, str]]:
    """Every node reachable from `start` (not counting it) along the graph's edges."""
    seen: set[tuple[str, str]] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def affected_models(table: str, column: str, models_dir: Path | str | None = None) -> list[str]:
    """The models that break or change if `table.column` is renamed, dropped or retyped, in build order.

    A model is affected when it reads the column anywhere (not only in its SELECT list), and so is every
    model built from an affected model.
    """
    models = load_models(models_dir)
    deps = model_dependencies(models=models)
    refs = column_references(models=models)
    hit = {m for m, cols in refs.items() if (table, column) in cols}
    changed = True
    while changed:
        more = {m for m, ups in deps.items() if m not in hit and ups & hit}
        changed = bool(more)
        hit |= more
    return [m for m in topological_order(deps, models=models) if m in hit]


# --------------------------------------------------------------------------- the tool a model may call
class ColumnLineageInput(BaseModel):
    """A raw table (or model) column whose downstream the model asks about."""

    model_config = ConfigDict(extra="forbid")
    table: str = Field(description="A raw table (raw_<dataset>, e.g. raw_orders) or a SQL model name.")
    column: str = Field(description="A column of that table.")


class ModelColumn(BaseModel):
    model_config = ConfigDict(frozen=True)
    model: str
    column: str


class ColumnLineageResult(BaseModel):
    """Which SQL models read a column, and which model columns are computed from it (through other models)."""

    table: str
    column: str
    models_reading: list[str] = Field(description="Models that read the column anywhere, and the models built on "
                                      "them, in build order: what breaks if it is dropped or renamed.")
    downstream: list[ModelColumn] = Field(description="Model columns computed from it, directly or transitively.")


def _column_lineage_tool(args: ColumnLineageInput) -> ColumnLineageResult:
    from pipewarden.errors import ModelRetry

    try:
        down = downstream_of(args.table, args.column)
    except UnknownNameError as exc:
        raise ModelRetry(exc.message, hint=exc.hint or "use a raw table raw_<dataset> (a dataset with a contract) or a SQL model name") from exc
    return ColumnLineageResult(
        table=args.table, column=args.column, models_reading=affected_models(args.table, args.column),
        downstream=[ModelColumn(model=m, column=c) for m, c in down],
    )


def _tools() -> list:
    from pipewarden.tools.registry import Tool

    return [Tool("column_lineage", "The SQL models that read a raw table column and every model column computed "
                 "from it (sqlglot column lineage over flows/models).", ColumnLineageInput, ColumnLineageResult,
                 _column_lineage_tool)]


TOOLS = _tools()
