"""SQL guardrails: every piece of SQL a model writes or a person edits passes here before anything runs it.

`check_select` accepts exactly one read-only query (SELECT, or WITH ... SELECT, set operations of those) and
`check_predicate` one boolean expression over known columns. Both parse with sqlglot (DuckDB dialect), walk the
AST and return a list of readable errors: empty means safe. They never execute anything. What runs such SQL runs
it on `tools.warehouse.connect_locked` as well (no files, no settings), so a hole here is not a hole there.

It is an allow-list, not a list of bad names:

- **tables**: every table a query reads must be one of `allowed_tables` (the project's own: the warehouse's
  tables and the SQL models' names, `project_tables`) or a CTE visible where it is read (a CTE body does not
  see itself or later CTEs, so a CTE cannot launder a catalog's name). Unqualified, or qualified by the default
  schema only (`main`, `public`); never a catalog or another schema (information_schema, pg_catalog, an
  ATTACHed database), never a string literal or a quoted path (`FROM '/etc/x.json'` parses as a quoted name and
  is refused as not a project table), never a table function (`read_csv(...)`, `range(...)`, `UNNEST`,
  `duckdb_settings()`, ...). `allowed_tables=None` skips only the name check (static scoring that runs nothing).
- **functions**: sqlglot's typed functions (the standard and portable ones it knows: arithmetic, strings,
  dates, aggregates, windows) except the few that read the session or the server (`CURRENT_USER`, `VERSION`,
  `CURRENT_DATABASE`, `READ_CSV`, ...), plus `EXTRA_FUNCTIONS`, DuckDB computations sqlglot leaves untyped.
  Anything else (`current_setting`, `getvariable`, `pg_read_file`, `query_to_xml`, `json_serialize_plan`,
  `set_config`, a schema-qualified function) is refused by name.
- **statements**: one, and a query; no DDL, DML, SET, PRAGMA, ATTACH, COPY, SELECT INTO anywhere in the tree.

Hand-written on sqlglot's AST rather than with a library: no SQL firewall library speaks DuckDB and PostgreSQL
through one parser; sqlglot's scope module resolves names but does not answer "which real relations does this
read", which is the question here.

Public names: `check_select`, `check_predicate`, `require_select`, `project_tables`, `SqlGuardError`,
`EXTRA_FUNCTIONS`, `DEFAULT_SCHEMAS`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp

from pipewarden.errors import ModelRetry

if TYPE_CHECKING:
    from pipewarden.tools.warehouse import Warehouse

DIALECT = "duckdb"
DEFAULT_SCHEMAS = frozenset({"main", "public"})
"""The only schema qualifiers a table may carry: the warehouse's default schema (DuckDB `main`, PostgreSQL
`public`)."""

_FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = tuple(
    t for t in (
        getattr(exp, name, None)
        for name in ("Drop", "Delete", "Update", "Insert", "Merge", "Create", "Alter", "TruncateTable", "Attach",
                     "Detach", "Copy", "Pragma", "Set", "Install", "Load", "Export", "Command", "Use", "Transaction",
                     "Commit", "Rollback", "Into", "Describe", "Show", "Summarize")
    ) if t is not None
)
_OUTSIDE_TYPED = frozenset({
    # typed sqlglot functions that read the session, the server or files rather than the query's rows
    "READ_CSV", "READ_PARQUET", "TO_FILE", "SECRET", "CURRENT_USER", "SESSION_USER", "CURRENT_ROLE",
    "CURRENT_ROLE_TYPE", "CURRENT_AVAILABLE_ROLES", "CURRENT_SECONDARY_ROLES", "CURRENT_USER_ID",
    "CURRENT_DATABASE", "CURRENT_CATALOG", "CURRENT_SCHEMA", "CURRENT_SCHEMAS", "CURRENT_VERSION",
    "CURRENT_SESSION", "CURRENT_STATEMENT", "CURRENT_TRANSACTION", "CURRENT_CLIENT", "CURRENT_IP_ADDRESS",
    "CURRENT_ACCOUNT", "CURRENT_ACCOUNT_NAME", "CURRENT_ORGANIZATION_NAME", "CURRENT_ORGANIZATION_USER",
    "CURRENT_REGION", "CURRENT_WAREHOUSE", "VERSION",
})
EXTRA_FUNCTIONS = frozenset({
    # DuckDB computations on values that sqlglot parses as anonymous functions; none reads outside the row
    "add", "subtract", "multiply", "divide", "fdiv", "fmod", "gcd", "lcm", "even", "gamma", "lgamma", "isfinite",
    "nextafter", "signbit", "round_even", "bit_count", "bin", "unbin",
    "date_part", "datepart", "date_sub", "datesub", "now", "isoyear", "weekday", "yearweek", "century", "decade",
    "millennium", "era", "microsecond", "millisecond", "nanosecond", "epoch_us", "epoch_ns", "days_in_month",
    "make_timestamp_ms", "try_strptime", "timezone", "to_seconds", "to_minutes", "to_hours", "to_weeks",
    "to_months", "to_years", "to_milliseconds", "to_microseconds",
    "hash", "printf", "octet_length", "strlen", "ord", "prefix", "suffix", "strip_accents", "base64",
    "left_grapheme", "right_grapheme", "jaccard", "jaro_similarity", "hamming", "damerau_levenshtein",
    "mismatches", "regexp_split_to_array", "md5_number",
    "mean", "fsum", "sumkahan", "kahan_sum", "favg", "mad", "geomean", "geometric_mean", "kurtosis_pop",
    "entropy", "histogram", "product", "arbitrary", "sem", "wavg", "weighted_avg", "reservoir_quantile",
    "list_sum", "list_avg", "list_count", "list_extract", "list_element", "list_aggregate", "array_extract",
    "element_at", "cardinality", "to_json", "json_value", "json_exists", "json_array_length", "json_valid",
})


class SqlGuardError(ModelRetry):
    """SQL that the guardrails refused; the message lists every reason."""


def project_tables(wh: Warehouse, model_names: Iterable[str], *, state_url: str | None = None) -> set[str]:
    """What a guarded query may read: the warehouse's own tables and views (default schema) and the SQL models.

    `state_url`: pipewarden's state DB; when it is the warehouse's own database (one PostgreSQL database for both),
    its tables (proposals, decisions, token hashes, the audit log) are not the project's data and are left out."""
    tables = set(wh.tables()) | set(model_names)
    if state_url is not None and _same_database(wh.url, state_url):
        from pipewarden import db

        tables -= {*db.metadata.tables, "alembic_version"}
    return tables


def _same_database(a: str, b: str) -> bool:
    if a.startswith("duckdb:") or b.startswith("duckdb:"):
        return a == b
    from sqlalchemy.engine import make_url

    try:
        ua, ub = make_url(a), make_url(b)
    except Exception:  # noqa: BLE001  # cannot tell: treat as the same, which only ever allows less
        return True
    return (ua.get_backend_name(), ua.host, ua.port, ua.database) == (ub.get_backend_name(), ub.host, ub.port,
                                                                          ub.database)


def model_names(models_dir: Path) -> set[str]:
    """The SQL models' names in `models_dir` (each `NAME.sql`), without parsing them."""
    return {p.stem for p in models_dir.glob("*.sql")} if models_dir.is_dir() else set()


def _parse(sql: str) -> tuple[list[exp.Expression | None], list[str]]:
    try:
        return sqlglot.parse(sql, read=DIALECT), []
    except sqlglot.errors.ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" at line {first.get('line')}, column {first.get('col')}" if first else ""
        return [], [f"the SQL does not parse{where}: {first.get('description', str(exc))}"]


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return str(node.sql_name()).lower()


def _function_errors(node: exp.Func) -> list[str]:
    name = _function_name(node)
    if isinstance(node, exp.Anonymous):
        if name in EXTRA_FUNCTIONS:
            return []
        return [f"function {name}() is not allowed: only standard SQL functions and DuckDB computations on values "
                "are (no settings, session, catalog, file or server functions)"]
    if name.upper() in _OUTSIDE_TYPED:
        return [f"function {name}() is not allowed: it reads the session, the server or files, not the query's rows"]
    return []


def _unsafe_nodes(tree: exp.Expression) -> list[str]:
    errors: list[str] = []
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            errors.append(f"{type(node).__name__.upper()} is not allowed: only read-only queries are")
        elif isinstance(node, exp.Func) and not isinstance(node.parent, exp.Table):  # FROM f(): _source_errors
            errors += _function_errors(node)
        elif isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
            errors.append(f"schema-qualified function {node.sql(dialect=DIALECT)} is not allowed: call functions "
                          "by their bare name")
    return list(dict.fromkeys(errors))


def _visible_ctes(table: exp.Table) -> set[str]:
    """The CTE names a table reference can resolve to, as SQL scopes them: the main query of a WITH sees all its
    CTEs; the body of CTE i sees CTEs 0..i-1 (and itself only under RECURSIVE)."""
    names: set[str] = set()
    child: exp.Expression = table
    node = table.parent
    came_through: exp.With | None = None
    while node is not None:
        if isinstance(node, exp.With):
            idx = next((i for i, c in enumerate(node.expressions) if c is child), len(node.expressions))
            upto = idx + 1 if node.args.get("recursive") else idx
            names |= {c.alias_or_name.lower() for c in node.expressions[:upto]}
            came_through = node
        else:
            with_ = node.args.get("with_")
            if isinstance(with_, exp.With) and with_ is not came_through:
                names |= {c.alias_or_name.lower() for c in with_.expressions}
            came_through = None if not isinstance(node, exp.CTE) else came_through
        child, node = node, node.parent
    return names


def _source_errors(tree: exp.Expression, allowed_tables: Collection[str] | None) -> list[str]:
    """What FROM and JOIN read, when it is not a named table, a subquery or VALUES: a table function."""
    errors: list[str] = []
    allowed = f" (allowed: {', '.join(sorted(allowed_tables)) or 'none'})" if allowed_tables is not None else ""
    for clause in tree.find_all(exp.From, exp.Join):
        src = clause.this
        if isinstance(src, exp.Lateral) and not isinstance(src.this, exp.Subquery):
            src = src.this  # LATERAL f(...): the function is what reads
        if isinstance(src, exp.Table) and not isinstance(src.this, exp.Identifier):
            src = src.this
        elif isinstance(src, (exp.Table, exp.Subquery, exp.Values, exp.Lateral)):
            continue
        name = _function_name(src) if isinstance(src, exp.Func) else src.sql(dialect=DIALECT)[:60]
        errors.append(f"table function {name}() is not allowed: no table functions; read the project's tables by "
                      f"name{allowed}")
    return errors


def _table_errors(tree: exp.Expression, allowed_tables: Collection[str] | None) -> list[str]:
    errors: list[str] = []
    allowed = {t.lower() for t in allowed_tables} if allowed_tables is not None else None
    listed = ", ".join(sorted(allowed_tables)) if allowed_tables else "none"
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            continue  # a table function: reported by _source_errors
        name = table.name
        if table.args.get("catalog") is not None or (
                table.args.get("db") is not None and table.db.lower() not in DEFAULT_SCHEMAS):
            errors.append(f"table {table.sql(dialect=DIALECT)} is not allowed: only the project's own tables, "
                          f"unqualified or in the default schema (allowed: {listed})")
            continue
        if allowed is None or name.lower() in allowed:
            continue
        if not table.args.get("db") and name.lower() in _visible_ctes(table):
            continue
        what = "a file path or string literal is not a table" if any(ch in name for ch in "/\\:.") else (
            "it is not one of the project's tables or models")
        errors.append(f"table {name!r} is not allowed: {what} (allowed: {listed})")
    return errors


def check_select(sql: str, *, allowed_tables: Collection[str] | None = None) -> list[str]:
    """Errors for `sql` as a model-written or edited query (empty: safe to run on a locked connection).

    `allowed_tables`: the tables the query may read (`project_tables`); CTEs visible where they are read are
    always allowed. None skips the name check only (never for SQL that runs).
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
    if not isinstance(tree, (exp.Select, exp.SetOperation)):
        errors.insert(0, f"expected a SELECT query, got {type(tree).__name__.upper()}")
    errors += _source_errors(tree, allowed_tables)
    errors += _table_errors(tree, allowed_tables)
    return list(dict.fromkeys(errors))


def require_select(sql: str, *, allowed_tables: Collection[str] | None = None) -> str:
    """`sql` unchanged when `check_select` finds nothing, else `SqlGuardError` with every reason."""
    errors = check_select(sql, allowed_tables=allowed_tables)
    if errors:
        raise SqlGuardError("unsafe SQL: " + "; ".join(errors),
                            hint="write one read-only SELECT over the project's tables and models")
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
