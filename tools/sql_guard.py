"""SQL guardrails: every piece of SQL a model writes passes here before anything runs it.

`check_select` accepts exactly one read-only query (SELECT, or WITH ... SELECT, set operations of those) over the
allowed tables; `check_predicate` accepts one boolean expression over known columns. Both parse with sqlglot (DuckDB
dialect) and return a list of readable errors: empty means safe. They never execute anything.

Refused: several statements; DDL and DML anywhere in the tree (DROP, DELETE, UPDATE, INSERT, MERGE, CREATE, ALTER,
TRUNCATE, ATTACH, DETACH, COPY, PRAGMA, SET, INSTALL, LOAD, EXPORT, CALL); table functions and file readers
(read_csv, read_parquet, glob, ...); functions that reach outside the query (getenv, current_setting...); tables or
columns not in the allowed sets.

Public names: `check_select`, `check_predicate`, `SqlGuardError` (raised by `require_select`), `require_select`.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from pipewarden.errors import ModelRetry

DIALECT = "duckdb"

_FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = tuple(
    t for t in (
        getattr(exp, name, None)
        for name in ("Drop", "Delete", "Update", "Insert", "Merge", "Create", "Alter", "TruncateTable", "Attach",
                     "Detach", "Copy", "Pragma", "Set", "Install", "Load", "Export", "Command", "Use", "Transaction",
                     "Commit", "Rollback", "Into")
    ) if t is not None
)
_FORBIDDEN_FUNCTIONS = frozenset({
    "read_csv", "read_csv_auto", "read_parquet", "read_json", "read_json_auto", "read_text", "read_blob", "glob",
    "parquet_scan", "csv_scan", "sniff_csv", "getenv", "current_setting", "duckdb_settings", "duckdb_secrets",
    "query", "query_table", "sqlite_scan", "postgres_scan", "iceberg_scan", "delta_scan", "http_get",
})


class SqlGuardError(ModelRetry):
    """SQL that the guardrails refused; the message lists every reason."""


def _parse(sql: str) -> tuple[list[exp.Expression | None], list[str]]:
    try:
        return sqlglot.parse(sql, read=DIALECT), []
    except sqlglot.errors.ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" at line {first.get('line')}, column {first.get('col')}" if first else ""
        return [], [f"the SQL does not parse{where}: {first.get('description', str(exc))}"]


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return str(node.sql_name()).lower() if hasattr(node, "sql_name") else type(node).__name__.lower()


def _unsafe_nodes(tree: exp.Expression) -> list[str]:
    errors: list[str] = []
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            errors.append(f"{type(node).__name__.upper()} is not allowed: only read-only queries are")
        elif isinstance(node, exp.Func):
            name = _function_name(node)
            if name in _FORBIDDEN_FUNCTIONS:
                errors.append(f"function {name}() is not allowed: it reads outside the query's tables")
    return list(dict.fromkeys(errors))


def check_select(sql: str, *, allowed_tables: set[str] | None = None) -> list[str]:
    """Errors for `sql` as a model-written query (empty: safe to run read-only).

    `allowed_tables`: the table names the query may read (CTE names are always allowed); None allows any.
    """
    if not sql or not sql.strip():
        return ["the SQL is empty"]
    statements, errors = _parse(sql)
    if errors:
        return errors
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        return [f"expected exactly one statement, got {len(statements)}"]
    tree = statements[0]
    errors = _unsafe_nodes(tree)
    if not isinstance(tree, exp.Query):
        errors.insert(0, f"expected a SELECT query, got {type(tree).__name__.upper()}")
    if allowed_tables is not None:
        ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
        allowed = {t.lower() for t in allowed_tables} | ctes
        for table in tree.find_all(exp.Table):
            if isinstance(table.this, exp.Func):  # FROM some_function(...)
                continue  # already reported by _unsafe_nodes when forbidden
            name = table.name.lower()
            if name and name not in allowed:
                errors.append(f"table {table.name!r} is not one the query may read (allowed: "
                              f"{', '.join(sorted(allowed_tables)) or 'none'})")
    return list(dict.fromkeys(errors))


def require_select(sql: str, *, allowed_tables: set[str] | None = None) -> str:
    """`sql` unchanged when `check_select` finds nothing, else `SqlGuardError` with every reason."""
    errors = check_select(sql, allowed_tables=allowed_tables)
    if errors:
        raise SqlGuardError("unsafe SQL: " + "; ".join(errors), hint="write one read-only SELECT over the allowed tables")
    return sql


def check_predicate(expr: str, columns: set[str]) -> list[str]:
    """Errors for `expr` as a boolean row filter over `columns` (empty: safe to use in `WHERE`)."""
    if not expr or not expr.strip():
        return ["the predicate is empty"]
    try:
        tree = sqlglot.parse_one(expr, read=DIALECT, into=exp.Condition)
    except sqlglot.errors.ParseError as exc:
        return [f"the predicate does not parse: {exc.errors[0].get('description') if exc.errors else exc}"]
    errors = _unsafe_nodes(tree)
    if tree.find(exp.Select) is not None:
        errors.append("subqueries are not allowed in a predicate")
    known = {c.lower() for c in columns}
    for col in tree.find_all(exp.Column):
        if col.name.lower() not in known:
            errors.append(f"column {col.name!r} is not in the batch (known: {', '.join(sorted(columns))})")
    return list(dict.fromkeys(errors))
