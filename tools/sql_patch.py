"""Downstream SQL model patches for a schema change, each proven by running old and new SQL on the batch in DuckDB.

When a raw column leaves a contract (the feed stopped sending it), every SQL model that reads it would fail.
`draft_drop_patches` finds those models with sqlglot (`tools.lineage.column_references`) and replaces each read
of the column in a SELECT list with a typed NULL (`CAST(NULL AS DOUBLE)`), splicing the original text so the
diff is the change and nothing else; the model keeps its output columns, so the models built on it need no
patch. A read in a WHERE, JOIN, GROUP BY, HAVING, QUALIFY, ORDER BY or window would change which rows the model
returns: that is refused (`PatchRefused`) and left to a human.

`prove_patches` builds every model twice in one in-memory DuckDB, old SQL in schema `old` on the batch as the
warehouse would hold it today (the dropped column present and null) and new SQL in schema `new` on the batch
without it, and compares each model: the same output columns and types, equal row counts, and equal values in
every column (`EXCEPT ALL` both ways). Reference tables come from the warehouse (read-only) or, when it cannot
be read, empty tables of the known schemas. Only the models whose lineage reaches the given raw tables (and the
patched models) are proven, with the models they read built beside them: a proof for `raw_customers` never builds
the flights models, and when no model reads the given tables the proof is empty and its notes say so ("no SQL
model reads raw_customers"). Nothing outside the in-memory database is written. `prove_drop` runs it twice: with the
column null (every value must agree) and with a probe value in it (row counts must agree, and values may differ
only in the columns lineage computes from the dropped one), so a patch that changes which rows a model returns
is caught even when the column only reaches a WHERE through a CTE.

Public names: `PatchRefused`, `ModelProof`, `PatchProof`, `patch_dropped_columns`, `draft_drop_patches`,
`prove_patches`, `prove_drop`, `sql_type`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import sqlglot
from pydantic import BaseModel, Field
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from pipewarden.errors import PipewardenError
from pipewarden.models import SqlModelPatch
from pipewarden.policies.column_types import DUCKDB_TYPES, PANDAS_DTYPES, PROBE_VALUES
from pipewarden.tools.lineage import (
    DIALECT,
    SqlModel,
    column_references,
    load_models,
    model_dependencies,
    raw_schemas,
    topological_order,
)
from pipewarden.tools.warehouse import quote_ident, scratch_duckdb

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

_ROW_SHAPING = (exp.Where, exp.Join, exp.Group, exp.Having, exp.Qualify, exp.Order, exp.Window)


class PatchRefused(PipewardenError):
    """A model reads the column in a way a typed NULL cannot stand in for (a filter, a join key, a grouping)."""


def sql_type(contract_type: str) -> str:
    """The DuckDB type of a contract type (integer -> BIGINT, ...: `policies.column_types.DUCKDB_TYPES`)."""
    return DUCKDB_TYPES.get(contract_type, "VARCHAR")


# --------------------------------------------------------------------------- drafting
def _reads(tree: exp.Expr, table: str, column: str) -> list[exp.Column]:
    """Every Column node of `tree` that reads `table.column` (through the table's alias, or unqualified when the
    scope reads that table alone)."""
    found: list[exp.Column] = []
    for scope in traverse_scope(tree):
        for col in scope.columns:
            if col.name != column:
                continue
            if col.table:
                source = scope.sources.get(col.table)
                if isinstance(source, exp.Table) and source.name == table:
                    found.append(col)
            else:
                tables = [s for s in scope.sources.values() if isinstance(s, exp.Table)]
                if len(scope.sources) == 1 and tables and tables[0].name == table:
                    found.append(col)
    return found


def _span(col: exp.Column) -> tuple[int, int]:
    start = col.this.meta["start"]
    table = col.args.get("table")
    if table is not None and "start" in table.meta:
        start = table.meta["start"]
    return start, col.this.meta["end"] + 1


def patch_dropped_columns(model: SqlModel, table: str, columns: Mapping[str, str], reason: str = "") -> SqlModelPatch:
    """The model with every read of `table.<column>` (column -> contract type) replaced by a typed NULL.

    Raises PatchRefused when a column is read where it shapes the rows (WHERE, JOIN, GROUP BY, ...), and when
    the model does not read any of the columns.
    """
    tree = sqlglot.parse_one(model.sql, read=DIALECT)
    edits: list[tuple[int, int, str]] = []
    for column, ctype in columns.items():
        for col in _reads(tree, table, column):
            shaping = col.find_ancestor(*_ROW_SHAPING)
            if shaping is not None:
                where = type(shaping).__name__.upper()
                raise PatchRefused(
                    f"SQL model {model.name!r} reads {table}.{column} in a {where} clause: a NULL would change "
                    "which rows it returns",
                    hint=f"a person must decide how {model.name} works without {column} (edit the model's SQL)",
                )
            if "start" not in col.this.meta:
                raise PatchRefused(f"cannot locate {col.sql()} in {model.path}", hint="patch the model by hand")
            null = f"CAST(NULL AS {sql_type(ctype)})"
            if isinstance(col.parent, exp.Select):  # a bare projection: keep the output column's name
                null += f" AS {exp.to_identifier(column).sql(dialect=DIALECT)}"
            edits.append((*_span(col), null))
    if not edits:
        raise PatchRefused(f"SQL model {model.name!r} reads none of {table}.{', '.join(columns)}",
                           hint="only models that read the column need a patch")
    sql = model.sql
    for start, end, text in sorted(edits, reverse=True):
        sql = sql[:start] + text + sql[end:]
    why = reason or (f"{table} no longer has " + ", ".join(columns) + "; read as typed NULL")
    return SqlModelPatch(model=model.name, sql=sql, base_sql=model.sql, reason=why)


def draft_drop_patches(
    table: str, columns: Mapping[str, str], *, models: Mapping[str, SqlModel] | None = None
) -> list[SqlModelPatch]:
    """A patch for every model that reads one of `columns` of raw `table` directly, in build order.

    Models built on a patched model keep working (its output columns stay) and get no patch. Raises
    PatchRefused when any model reads a column where it shapes the rows.
    """
    models = models if models is not None else load_models()
    refs = column_references(models=models)
    deps = model_dependencies(models=models)
    out: list[SqlModelPatch] = []
    for name in topological_order(deps, models=models):
        hit = {c: t for c, t in columns.items() if (table, c) in refs.get(name, set())}
        if hit:
            out.append(patch_dropped_columns(models[name], table, hit))
    return out


# --------------------------------------------------------------------------- proving
class ModelProof(BaseModel):
    """Old and new SQL of one model on the same batch."""

    model: str
    patched: bool
    rows_old: int | None = None
    rows_new: int | None = None
    columns_old: list[str] = Field(default_factory=list)
    columns_new: list[str] = Field(default_factory=list)
    same_schema: bool = False
    rows_equal: bool = False
    differing_columns: list[str] = Field(default_factory=list, description="Columns whose values differ.")
    allowed_differences: list[str] = Field(
        default_factory=list, description="Columns that may differ: downstream of the dropped column (lineage).")
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (self.error is None and self.same_schema and self.rows_equal
                and set(self.differing_columns) <= set(self.allowed_differences))

    def describe(self) -> str:
        head = f"{self.model} ({'patched' if self.patched else 'unchanged SQL'})"
        if self.error:
            return f"{head}: {self.error}"
        parts = [f"{self.rows_old} rows old, {self.rows_new} new",
                 "same columns and types" if self.same_schema else "DIFFERENT columns or types",
                 "values equal in every column" if not self.differing_columns
                 else "values differ in " + ", ".join(self.differing_columns)
                 + (" (downstream of the dropped column, as expected)"
                    if set(self.differing_columns) <= set(self.allowed_differences) else " (NOT expected)")]
        return f"{head}: " + "; ".join(parts)


class PatchProof(BaseModel):
    """Every model built with old and with new SQL on the batch."""

    models: list[ModelProof]
    reference_tables: str = Field(
        description="Where the reference tables came from: 'warehouse', 'empty', or 'none' (no model was built).")
    label: str = Field("", description="Which data the old SQL ran on, e.g. 'dep_delay null'.")
    tables: list[str] = Field(default_factory=list, description="The raw tables the batch stands for, e.g. "
                              "['raw_flights']: only models whose lineage reaches them are proven.")

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.models)

    def notes(self) -> list[str]:
        head = f"[{self.label}] " if self.label else ""
        if not self.models:
            return [f"{head}no SQL model reads {', '.join(self.tables) or 'the batch'}: no model to prove"]
        return [head + m.describe() for m in self.models] + [f"{head}reference tables: {self.reference_tables}"]

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"sql_models_patched": float(sum(m.patched for m in self.models))}
        for m in self.models:
            if m.rows_old is not None:
                out[f"rows_old.{m.model}"] = float(m.rows_old)
            if m.rows_new is not None:
                out[f"rows_new.{m.model}"] = float(m.rows_new)
        return out


def _reference_tables(con: duckdb.DuckDBPyConnection, skip: set[str],
                      wanted: set[str] | None = None) -> dict[str, pd.DataFrame | None]:
    """The project's other raw tables (every `raw_<dataset>` its contracts name, only those in `wanted` when
    given), read from the warehouse (any engine, read-only), or None for each when it cannot be read (the proof
    then builds on empty tables)."""
    from pipewarden.errors import ConfigError
    from pipewarden.settings import get_settings
    from pipewarden.tools.warehouse import connect

    names = [t for t in raw_schemas() if t not in skip and (wanted is None or t in wanted)]
    out: dict[str, pd.DataFrame | None] = dict.fromkeys(names)
    url = get_settings().warehouse
    if url.startswith("duckdb:///") and not get_settings().warehouse_path.exists():
        return out  # no warehouse yet: opening it would create an empty file
    try:
        with connect(url, read_only=True) as wh:
            for t in names:
                if wh.has_table(t):
                    out[t] = wh.read_frame(f"SELECT * FROM {wh.quote(t)}")
    except ConfigError:
        return dict.fromkeys(names)
    return out


def _create_raw(con: duckdb.DuckDBPyConnection, schema: str, table: str, df: pd.DataFrame | None,
                columns: Mapping[str, str]) -> None:
    if df is None:
        cols = ", ".join(f"{quote_ident(c)} {t}" for c, t in columns.items())
        con.execute(f"CREATE TABLE {schema}.{quote_ident(table)} ({cols})")
        return
    con.register("_pw_src", df)
    con.execute(f"CREATE TABLE {schema}.{quote_ident(table)} AS SELECT * FROM _pw_src")
    con.unregister("_pw_src")


def _build(con: duckdb.DuckDBPyConnection, schema: str, models: Mapping[str, SqlModel], order: list[str]) -> dict[str, str]:
    import duckdb

    errors: dict[str, str] = {}
    con.execute(f"SET search_path = '{schema}'")
    for name in order:
        if any(u in errors for u in model_dependencies(models={name: models[name]})[name]):
            errors[name] = "not built: a model it reads failed"
            continue
        try:
            con.execute(f"CREATE TABLE {schema}.{quote_ident(name)} AS {models[name].sql.strip().rstrip(';')}")
        except duckdb.Error as exc:
            errors[name] = f"failed in DuckDB: {str(exc).splitlines()[0]}"
    return errors


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[tuple[str, str]]:
    rows = con.execute(
        "select column_name, data_type from information_schema.columns where table_schema = ? and table_name = ? "
        "order by ordinal_position", [schema, table]).fetchall()
    return [(r[0], r[1]) for r in rows]


def prove_patches(
    patches: list[SqlModelPatch],
    old_tables: Mapping[str, pd.DataFrame],
    new_tables: Mapping[str, pd.DataFrame],
    *,
    models: Mapping[str, SqlModel] | None = None,
    allowed_differences: Mapping[str, set[str]] | None = None,
    label: str = "",
) -> PatchProof:
    """Build every model with its current SQL on `old_tables` and with the patches on `new_tables` (raw table name
    -> rows, e.g. {"raw_flights": batch}); compare each model's output. Other raw tables are shared reference
    tables (see the module docstring). `allowed_differences` (model -> columns) may differ in value; any other
    difference fails the proof. Side-effect free."""

    models = dict(models if models is not None else load_models())
    patched = {p.model: p.sql for p in patches}
    unknown = sorted(set(patched) - set(models))
    if unknown:
        from pipewarden.errors import UnknownNameError

        raise UnknownNameError("SQL model", unknown[0], sorted(models))
    new_models = {n: (SqlModel(name=n, path=m.path, sql=patched[n]) if n in patched else m) for n, m in models.items()}
    given = set(old_tables) | set(new_tables)
    proven, order, reads = _scope(models, new_models, given, set(patched))
    if not order:
        return PatchProof(models=[], reference_tables="none", label=label, tables=sorted(given))
    schemas = raw_schemas()
    con = scratch_duckdb(locked=False)  # the proof sandbox, never the warehouse; it sets its own time zone
    try:
        con.execute("SET TimeZone = 'UTC'")
        refs = _reference_tables(con, given, reads)
        source = "warehouse" if any(v is not None for v in refs.values()) else "empty"
        for schema, given in (("old", old_tables), ("new", new_tables)):
            con.execute(f"CREATE SCHEMA {schema}")
            for table, df in given.items():
                _create_raw(con, schema, table, df, schemas.get(table, {}))
            for table, df in refs.items():
                _create_raw(con, schema, table, df, schemas.get(table, {}))
        errors_old = _build(con, "old", models, order)
        errors_new = _build(con, "new", new_models, order)
        allowed = allowed_differences or {}
        proofs = [_compare(con, name, name in patched, errors_old.get(name), errors_new.get(name),
                           sorted(allowed.get(name, set()))) for name in order if name in proven]
    finally:
        con.close()
    return PatchProof(models=proofs, reference_tables=source, label=label, tables=sorted(given))


def _scope(models: Mapping[str, SqlModel], new_models: Mapping[str, SqlModel], tables: set[str],
           patched: set[str]) -> tuple[set[str], list[str], set[str]]:
    """Which models a proof for raw `tables` involves: the proven ones (the patched models and every model whose
    lineage, old or patched, reaches one of `tables`), the build order (the proven models and the models they
    read, so each can be built) and the tables those read."""
    old_deps, new_deps = model_dependencies(models=models), model_dependencies(models=new_models)
    deps = {n: old_deps[n] | new_deps[n] for n in models}
    proven = set(patched)
    more = True
    while more:
        grow = {m for m, ups in deps.items() if m not in proven and ups & (tables | proven)}
        more = bool(grow)
        proven |= grow
    needed, todo = set(proven), list(proven)
    while todo:
        for up in deps[todo.pop()]:
            if up in deps and up not in needed:
                needed.add(up)
                todo.append(up)
    order = [m for m in topological_order(deps, models=models) if m in needed]
    return proven, order, {t for m in needed for t in deps[m]}


def _compare(con: duckdb.DuckDBPyConnection, name: str, patched: bool, err_old: str | None,
             err_new: str | None, allowed: list[str]) -> ModelProof:
    if err_old or err_new:
        what = "; ".join(x for x in (f"old SQL {err_old}" if err_old else "", f"new SQL {err_new}" if err_new else "") if x)
        return ModelProof(model=name, patched=patched, error=what, allowed_differences=allowed)
    cols_old, cols_new = _columns(con, "old", name), _columns(con, "new", name)
    old, new = f"old.{quote_ident(name)}", f"new.{quote_ident(name)}"
    rows_old = con.execute(f"select count(*) from {old}").fetchone()[0]
    rows_new = con.execute(f"select count(*) from {new}").fetchone()[0]
    differing: list[str] = []
    whole = con.execute(
        f"select (select count(*) from (select * from {old} except all select * from {new}))"
        f" + (select count(*) from (select * from {new} except all select * from {old}))"
    ).fetchone()[0] if cols_old == cols_new else 1
    if cols_old == cols_new and whole:
        for col, _ in cols_old:
            q = quote_ident(col)
            diff = con.execute(
                f"select (select count(*) from (select {q} from {old} except all select {q} from {new}))"
                f" + (select count(*) from (select {q} from {new} except all select {q} from {old}))"
            ).fetchone()[0]
            if diff:
                differing.append(col)
        differing = differing or ["(the same values, in different rows)"]
    return ModelProof(model=name, patched=patched, rows_old=rows_old, rows_new=rows_new,
                      columns_old=[c for c, _ in cols_old], columns_new=[c for c, _ in cols_new],
                      same_schema=cols_old == cols_new, rows_equal=rows_old == rows_new, differing_columns=differing,
                      allowed_differences=allowed)


def prove_drop(
    table: str,
    dropped: Mapping[str, str],
    batch: pd.DataFrame,
    patches: list[SqlModelPatch],
    *,
    models: Mapping[str, SqlModel] | None = None,
) -> list[PatchProof]:
    """Prove drop patches on `batch` (the rows as they will land, without the dropped columns) in two runs:

    1. old SQL on the batch with each dropped column NULL (what the warehouse holds for such a load today) against
       the patched SQL: every model must agree in schema, rows and every value;
    2. old SQL on the batch with each dropped column set to a probe value against the patched SQL: the same
       schema and row counts (the patch must not change which rows a model returns), values differing only in
       the columns lineage says are computed from a dropped column.
    """
    from pipewarden.tools.lineage import column_lineage, downstream_of

    models = dict(models if models is not None else load_models())
    edges = column_lineage(models=models)
    allowed: dict[str, set[str]] = {}
    for column in dropped:
        for model, col in downstream_of(table, column, edges=edges):
            allowed.setdefault(model, set()).add(col)
    proofs = []
    for label, fill in (("null", None), ("probe value", "probe")):
        old = batch.copy()
        for column, ctype in dropped.items():
            old[column] = _probe_series(batch, ctype, None if fill is None else PROBE_VALUES.get(ctype, "X"))
        proofs.append(prove_patches(
            patches, {table: old}, {table: batch}, models=models,
            allowed_differences=allowed if fill is not None else None,
            label=", ".join(dropped) + f" as {label}"))
    return proofs


def _probe_series(batch: pd.DataFrame, ctype: str, value: object) -> pd.Series:
    import pandas as pd

    dtype = PANDAS_DTYPES.get(ctype, "object")
    if ctype == "timestamp":
        stamp = pd.Timestamp(value, tz="UTC") if value is not None else pd.NaT
        return pd.Series([stamp] * len(batch), index=batch.index, dtype=dtype)
    return pd.Series([value] * len(batch), index=batch.index, dtype=dtype)
