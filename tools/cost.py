"""Cost of SQL models in DuckDB: profile a build, diagnose why it costs what it does, draft rule-based rewrites and
prove a rewrite returns the same rows and is cheaper.

- Profiling reads DuckDB's own profiler (the JSON tree): time, rows scanned, bytes scanned (the bytes the table
  scans produced, which grows with the columns read), rows processed by every operator, and per table scan its rows,
  bytes, columns and pushed-down filters. `profile_from_json` is what the transform stage records in `model_runs`
  (`enable_profiling = 'no_output'`); `measure` times a SELECT the way transform builds it (`CREATE TABLE AS`),
  under `EXPLAIN (ANALYZE, FORMAT JSON)`, which needs no setting changed (the locked connection allows none).
- Diagnosis (`diagnose`) reads the SQL (sqlglot AST) and the plan: a lost filter (a predicate of the known-good
  version missing, or a table scan that lost its filters), a cartesian join (CROSS JOIN, a join without condition or
  without an equality, a nested-loop join in the plan), `SELECT *` over a wide table, a function on a filtered or
  joined column (non-sargable), and a repeated scan (one table scanned twice).
- `rule_rewrites` drafts rewrites for the findings it knows how to fix; `prove` runs the current SQL and a candidate
  on the current data: multiset equality (EXCEPT ALL both ways on the rounded rows, plus row counts) and cost by
  measures the machine's load cannot move (`compare_cost`: rows or bytes scanned, or fewer loop joins in the plan);
  the median of timed builds is shown as evidence and never decides. `prove_on_warehouse` does the same on a
  PostgreSQL warehouse (EXPLAIN ANALYZE of CREATE TEMP TABLE, in one transaction rolled back). Nothing here writes a
  table outside the connection's temp schema.
- Volume and plan shape for the cost detector (`flows.cost_judge`): `with_input_rows` adds each scanned table's rows
  at build time to a profile, `input_rows` sums them, `plan_changes` says how a plan's shape differs from earlier
  ones (a new loop join, a new table, a repeated scan, a lost filter).

Every SQL text a model wrote must pass `tools.sql_guard.check_select` before `prove` sees it (the agent does it),
and runs on the locked connection `open_warehouse()` returns (`tools.warehouse.locked_duckdb`: no files, no
settings).

Public names: `ScanStat`, `JoinStat`, `CostProfile`, `Measurement`, `Finding`, `Candidate`, `Proof`,
`profile_from_json`, `measure`, `diagnose`, `rule_rewrites`, `prove`, `prove_on_warehouse`, `compare_cost`,
`same_rows`, `with_input_rows`, `input_rows`, `plan_changes`, `tables_read`,
`model_history`, `sql_for_hash`, `table_widths`, `open_warehouse`, `TOOLS`.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import UserError
from pipewarden.tools.warehouse import quote_ident

if TYPE_CHECKING:
    import duckdb

DIALECT = "duckdb"
WIDE_TABLE_COLUMNS = 12
"""A table with at least this many columns is wide: `SELECT *` over it reads columns the model may not need."""
NESTED_LOOP_OPS = frozenset({"CROSS_PRODUCT", "NESTED_LOOP_JOIN", "BLOCKWISE_NL_JOIN", "PIECEWISE_MERGE_JOIN"})
LOOP_JOIN_OPS = NESTED_LOOP_OPS | {"Nested Loop"}
"""Join operators that loop over one side per row of the other (DuckDB's, and PostgreSQL's `Nested Loop`): a plan
that gains one is a plan-shape change (`plan_changes`)."""
FindingKind = Literal["lost_filter", "cartesian_join", "select_star", "non_sargable", "repeated_scan"]
FINDING_KINDS: tuple[str, ...] = ("lost_filter", "cartesian_join", "select_star", "non_sargable", "repeated_scan")


# --------------------------------------------------------------------------- profiles
class ScanStat(BaseModel):
    """One table scan in a plan: the table, rows and bytes it produced, the columns it read, its filters."""

    model_config = ConfigDict(extra="forbid")
    table: str = Field(description="Table name without catalog and schema.")
    rows_scanned: int = 0
    bytes_scanned: int = 0
    columns: list[str] = Field(default_factory=list)
    filters: list[str] = Field(default_factory=list)
    table_rows: int | None = Field(default=None, description=(
        "Rows the table held when the build ran (`with_input_rows`): the input volume cost is normalised by."))


class JoinStat(BaseModel):
    """One join operator: its physical type, join type, condition and the rows on each side and out."""

    model_config = ConfigDict(extra="forbid")
    operator: str
    join_type: str = ""
    condition: str = ""
    left_rows: int = 0
    right_rows: int = 0
    rows_out: int = 0


class CostProfile(BaseModel):
    """What DuckDB's profiler saw for one statement."""

    model_config = ConfigDict(extra="forbid")
    cpu_ms: float | None = None
    rows_scanned: int = 0
    bytes_scanned: int = Field(default=0, description="Bytes the table scans produced (grows with columns read).")
    bytes_read: int = Field(default=0, description="Bytes read from storage (0 when the data was in memory).")
    rows_processed: int = Field(default=0, description="Rows that flowed through every operator of the plan.")
    peak_memory_bytes: int | None = None
    scans: list[ScanStat] = Field(default_factory=list)
    joins: list[JoinStat] = Field(default_factory=list)
    operators: list[str] = Field(default_factory=list, description="Physical operator types, top down.")


def _extra(node: dict[str, Any]) -> dict[str, Any]:
    extra = node.get("extra_info") or {}
    return extra if isinstance(extra, dict) else {}


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [s for s in str(value).split("\n") if s.strip()]


def _walk(node: dict[str, Any]) -> Iterable[dict[str, Any]]:
    yield node
    for child in node.get("children", []) or []:
        yield from _walk(child)


def profile_from_json(info: dict[str, Any]) -> CostProfile:
    """A `CostProfile` from DuckDB's JSON profile (`con.get_profiling_information(format="json")`, parsed)."""
    query, system, io = info.get("query", {}) or {}, info.get("system", {}) or {}, info.get("io", {}) or {}
    scans: list[ScanStat] = []
    joins: list[JoinStat] = []
    ops: list[str] = []
    processed = 0
    for root in info.get("operator", []) or info.get("children", []) or []:
        for node in _walk(root):
            kind = str(node.get("type") or node.get("operator_type") or "")
            ops.append(kind)
            processed += int(node.get("intermediate_rows") or node.get("operator_cardinality") or 0)
            extra = _extra(node)
            if kind == "TABLE_SCAN" or "Table" in extra:
                scans.append(ScanStat(
                    table=str(extra.get("Table", "?")).split(".")[-1],
                    rows_scanned=int(node.get("rows_scanned") or node.get("operator_rows_scanned") or 0),
                    bytes_scanned=int(node.get("intermediate_size_bytes") or 0),
                    columns=_as_list(extra.get("Projections")),
                    filters=_as_list(extra.get("Filters")),
                ))
            elif "JOIN" in kind or kind == "CROSS_PRODUCT":
                kids = node.get("children", []) or []
                rows = [int(k.get("intermediate_rows") or k.get("operator_cardinality") or 0) for k in kids]
                joins.append(JoinStat(operator=kind, join_type=str(extra.get("Join Type", "")),
                                      condition="; ".join(_as_list(extra.get("Conditions"))),
                                      left_rows=rows[0] if rows else 0, right_rows=rows[1] if len(rows) > 1 else 0,
                                      rows_out=int(node.get("intermediate_rows") or 0)))
    cpu = query.get("cpu_time")
    peak = system.get("peak_buffer_memory")
    scanned = query.get("total_rows_scanned")
    return CostProfile(
        cpu_ms=round(float(cpu) * 1000, 3) if cpu is not None else None,
        rows_scanned=int(scanned) if scanned is not None else sum(s.rows_scanned for s in scans),
        bytes_scanned=sum(s.bytes_scanned for s in scans),
        bytes_read=int(io.get("total_bytes_read") or 0),
        rows_processed=processed,
        peak_memory_bytes=int(peak) if peak is not None else None,
        scans=scans, joins=joins, operators=[o for o in ops if o],
    )


def with_input_rows(profile: CostProfile | None, count_rows: Any) -> CostProfile | None:
    """`profile` with each scan's `table_rows` set: `count_rows(table)` (rows the table holds now, or None when it
    cannot be counted), asked once per table. The build calls it right after a model is built, so the counts are
    the input the build read; the cost detector divides rows and bytes scanned by them."""
    if profile is None:
        return None
    counts: dict[str, int | None] = {}
    for scan in profile.scans:
        if scan.table not in counts:
            counts[scan.table] = count_rows(scan.table)
    return profile.model_copy(update={"scans": [s.model_copy(update={"table_rows": counts[s.table]})
                                                for s in profile.scans]})


def input_rows(scans: Iterable[ScanStat]) -> int | None:
    """The rows of every table a build read (each table once), or None when a scan's table was not counted."""
    counts: dict[str, int | None] = {}
    for s in scans:
        counts[s.table.lower()] = s.table_rows
    if not counts or any(v is None for v in counts.values()):
        return None
    return sum(v for v in counts.values() if v is not None)


_PLAIN_EQUALITY = re.compile(r'^\(?"?[\w.]+"?\s*(=|IS NOT DISTINCT FROM)\s*"?[\w.]+"?\)?$', re.IGNORECASE)


def _join_residuals(join: JoinStat) -> list[str]:
    """The join's conditions that are not a plain `column = column` (a function, a range, an OR)."""
    return [c.strip() for c in join.condition.split(";") if c.strip() and not _PLAIN_EQUALITY.match(c.strip())]


def plan_changes(before: Iterable[CostProfile | None], after: CostProfile) -> list[str]:
    """How `after`'s plan differs in shape from every earlier plan of the same model (load-independent): a new
    loop join, a table it did not read before, a table scanned more times, a scan that lost its filters."""
    earlier = [p for p in before if p is not None]
    if not earlier:
        return []
    out: list[str] = []
    residual = [c for j in after.joins for c in _join_residuals(j)]
    most_residual = max(sum(len(_join_residuals(j)) for j in p.joins) for p in earlier)
    if len(residual) > most_residual and any(p.joins for p in earlier):
        out.append(f"a join compares by {'; '.join(residual)}, not a plain equality of columns")
    loops = sum(1 for o in after.operators if o in LOOP_JOIN_OPS)
    was = max(sum(1 for o in p.operators if o in LOOP_JOIN_OPS) for p in earlier)
    if loops > was and any(p.operators for p in earlier):
        out.append(f"{loops - was} new nested-loop join(s) ({', '.join(sorted({o for o in after.operators if o in LOOP_JOIN_OPS}))})")
    read_before = {s.table.lower() for p in earlier for s in p.scans}
    new_tables = sorted({s.table.lower() for s in after.scans} - read_before) if all(p.scans for p in earlier) else []
    if new_tables:
        out.append(f"reads {', '.join(new_tables)}, which it did not read before")
    now = Counter(s.table.lower() for s in after.scans)
    for table, n in sorted(now.items()):
        most = max(sum(1 for s in p.scans if s.table.lower() == table) for p in earlier)
        if most and n > most:
            out.append(f"scans {table} {n} times (before: {most})")
        filtered_before = all(any(s.filters for s in p.scans if s.table.lower() == table)
                              for p in earlier if any(s.table.lower() == table for s in p.scans))
        if most and filtered_before and not any(s.filters for s in after.scans if s.table.lower() == table):
            out.append(f"the scan of {table} lost its pushed-down filters")
    return out


def last_profile(con: duckdb.DuckDBPyConnection) -> CostProfile | None:
    """The profile of the connection's last statement, or None when the profiler has nothing."""
    import duckdb

    try:
        return profile_from_json(json.loads(con.get_profiling_information(format="json")))
    except (duckdb.Error, ValueError):
        return None


class Measurement(BaseModel):
    """A SELECT built as a table `runs` times: the median wall time and the profile of the last build."""

    model_config = ConfigDict(extra="forbid")
    elapsed_ms: list[float]
    median_ms: float
    rows_out: int
    profile: CostProfile

    @property
    def rows_scanned(self) -> int:
        return self.profile.rows_scanned

    @property
    def bytes_scanned(self) -> int:
        return self.profile.bytes_scanned


def _select(sql: str) -> str:
    return sql.strip().rstrip(";").strip()


def _explain_profile(rows: list[Any]) -> CostProfile | None:
    """The profile in `EXPLAIN (ANALYZE, FORMAT JSON)`'s result (the same JSON tree as the profiler's)."""
    try:
        return profile_from_json(json.loads(rows[0][1]))
    except (IndexError, TypeError, ValueError):
        return None


def measure(con: duckdb.DuckDBPyConnection, sql: str, *, runs: int = 1, into: str | None = None) -> Measurement:
    """Build `sql` as a temp table (`into`, default a fresh name) `runs` times, the way transform builds a model;
    return the median time and the last build's profile. The temp table is left for `same_rows` to compare.

    Each build runs under `EXPLAIN (ANALYZE, FORMAT JSON)`, which executes it and returns the profiler's tree
    without changing a setting, so it works on the locked connection (`open_warehouse`) whose settings are frozen."""
    import duckdb

    table = into or f"__pw_cost_{uuid.uuid4().hex[:8]}"
    times: list[float] = []
    plan: list[Any] = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        try:
            plan = con.execute(
                f"EXPLAIN (ANALYZE, FORMAT JSON) CREATE OR REPLACE TEMP TABLE {quote_ident(table)} AS\n{_select(sql)}\n"
            ).fetchall()
        except duckdb.Error as exc:
            raise UserError(f"the SQL failed in DuckDB: {exc}", hint="fix the SQL; nothing was changed") from exc
        times.append(round((time.perf_counter() - t0) * 1000, 3))
    profile = _explain_profile(plan) or CostProfile()
    rows_out = con.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchone()
    return Measurement(elapsed_ms=times, median_ms=round(statistics.median(times), 3),
                       rows_out=int(rows_out[0]) if rows_out else 0, profile=profile)


# --------------------------------------------------------------------------- equality of results
def _rounded_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]
    ).fetchall()]


def _projection(cols: list[tuple[str, str]]) -> str:
    out = []
    for name, typ in cols:
        q = quote_ident(name)
        if typ.upper() in ("DOUBLE", "FLOAT", "REAL") or typ.upper().startswith("DECIMAL"):
            # 10 significant digits: parallel float sums may differ in the last bits between two builds
            out.append(f"CASE WHEN {q} IS NULL OR {q} = 0 OR NOT isfinite({q}::DOUBLE) THEN {q}::DOUBLE "
                       f"ELSE ROUND({q}::DOUBLE, 9 - CAST(FLOOR(LOG10(ABS({q}::DOUBLE))) AS INTEGER)) END AS {q}")
        else:
            out.append(q)
    return ", ".join(out)


class RowsCompared(BaseModel):
    """Multiset comparison of two results: rows in each, rows only in one (EXCEPT ALL both ways)."""

    model_config = ConfigDict(extra="forbid")
    same: bool
    rows_left: int
    rows_right: int
    only_left: int = 0
    only_right: int = 0
    detail: str = ""


def same_rows(con: duckdb.DuckDBPyConnection, left: str, right: str) -> RowsCompared:
    """Whether two tables hold the same multiset of rows (same column names and types, in order; floats compared to
    10 significant digits)."""
    return _same_rows(lambda q: con.execute(q).fetchone()[0], _rounded_columns(con, left),  # type: ignore[index]
                      _rounded_columns(con, right), left, right, _projection)


def _same_rows(scalar: Any, lc: list[tuple[str, str]], rc: list[tuple[str, str]], left: str, right: str,
               projection: Any) -> RowsCompared:
    """The multiset comparison on any engine: `scalar(sql)` runs a query and returns its one value; `projection`
    makes the engine's rounded column list."""
    left, right = quote_ident(left), quote_ident(right)  # double quotes: DuckDB's and PostgreSQL's alike
    n_left = int(scalar(f"SELECT COUNT(*) FROM {left}"))
    n_right = int(scalar(f"SELECT COUNT(*) FROM {right}"))
    if [c[0] for c in lc] != [c[0] for c in rc]:
        return RowsCompared(same=False, rows_left=n_left, rows_right=n_right,
                            detail=f"different columns: {[c[0] for c in lc]} vs {[c[0] for c in rc]}")
    if [c[1] for c in lc] != [c[1] for c in rc]:
        diff = [f"{a[0]}: {a[1]} vs {b[1]}" for a, b in zip(lc, rc, strict=True) if a[1] != b[1]]
        return RowsCompared(same=False, rows_left=n_left, rows_right=n_right,
                            detail="different column types: " + "; ".join(diff))
    proj_l, proj_r = projection(lc), projection(rc)
    only_l = int(scalar(f"SELECT COUNT(*) FROM (SELECT {proj_l} FROM {left} EXCEPT ALL "
                        f"SELECT {proj_r} FROM {right}) AS d"))
    only_r = int(scalar(f"SELECT COUNT(*) FROM (SELECT {proj_r} FROM {right} EXCEPT ALL "
                        f"SELECT {proj_l} FROM {left}) AS d"))
    same = only_l == 0 and only_r == 0 and n_left == n_right
    detail = "" if same else f"{only_l} rows only in the current result, {only_r} only in the rewrite"
    return RowsCompared(same=same, rows_left=n_left, rows_right=n_right, only_left=only_l, only_right=only_r,
                        detail=detail)


# --------------------------------------------------------------------------- comparing cost
class CostVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cheaper: bool
    basis: str = Field(description="rows_scanned, bytes_scanned or plan_operators: what proved it, or 'none'.")
    ratio: float = Field(description="After over before on the basis metric (rows scanned when nothing proved it).")
    reason: str


def _ratio(after: float, before: float) -> float:
    return round(after / before, 4) if before > 0 else (1.0 if after == 0 else float("inf"))


def _loop_joins(m: Measurement) -> int:
    return sum(1 for o in m.profile.operators if o in LOOP_JOIN_OPS)


def _residual_conditions(m: Measurement) -> int:
    return sum(len(_join_residuals(j)) for j in m.profile.joins)


def compare_cost(before: Measurement, after: Measurement, *, min_saving: float = 0.2,
                 max_time_growth: float = 0.25) -> CostVerdict:
    """Whether `after` is cheaper than `before` by measures the machine's load cannot move: at least `min_saving`
    fewer rows scanned (bytes no more), or fewer bytes scanned (rows no more), or no more scanned with fewer
    nested-loop joins in the plan (a pairwise comparison replaced by a hash join) or fewer join conditions that are
    not a plain equality (a function of both sides replaced by a key). Median time is evidence only: it
    is quoted in the reason, with a note when it grew more than `max_time_growth`, and never decides."""
    limit = 1.0 - min_saving
    t = _ratio(after.median_ms, before.median_ms)
    r = _ratio(after.rows_scanned, before.rows_scanned)
    b = _ratio(after.bytes_scanned, before.bytes_scanned)
    time_note = (f"; median build {before.median_ms:.1f} -> {after.median_ms:.1f} ms over {len(after.elapsed_ms)} "
                 f"runs (evidence only{', slower on this machine' if t > 1.0 + max_time_growth else ''})")
    if r <= limit and b <= 1.0:
        return CostVerdict(cheaper=True, basis="rows_scanned", ratio=r,
                           reason=f"scans {before.rows_scanned} -> {after.rows_scanned} rows ({(1 - r):.0%} fewer)"
                                  + time_note)
    if b <= limit and r <= 1.0:
        return CostVerdict(cheaper=True, basis="bytes_scanned", ratio=b,
                           reason=f"scans {before.bytes_scanned} -> {after.bytes_scanned} bytes ({(1 - b):.0%} fewer)"
                                  + time_note)
    loops_before, loops_after = _loop_joins(before), _loop_joins(after)
    if loops_after < loops_before and r <= 1.0 and b <= 1.0:
        return CostVerdict(cheaper=True, basis="plan_operators", ratio=_ratio(loops_after, loops_before),
                           reason=f"nested-loop joins {loops_before} -> {loops_after} with no more rows or bytes "
                                  "scanned" + time_note)
    res_before, res_after = _residual_conditions(before), _residual_conditions(after)
    if loops_after <= loops_before and res_after < res_before and r <= 1.0 and b <= 1.0:
        return CostVerdict(cheaper=True, basis="plan_operators", ratio=_ratio(res_after, res_before),
                           reason=f"join conditions that are not a plain equality {res_before} -> {res_after} (the "
                                  "join matches on its keys instead of testing every candidate pair) with no more "
                                  "rows or bytes scanned" + time_note)
    return CostVerdict(cheaper=False, basis="none", ratio=r,
                       reason=f"not {min_saving:.0%} cheaper: rows scanned x{r:.2f}, bytes x{b:.2f}, nested-loop "
                              f"joins {loops_before} -> {loops_after}" + time_note)


class Proof(BaseModel):
    """A candidate rewrite against the current SQL on the current data."""

    model_config = ConfigDict(extra="forbid")
    same: RowsCompared
    before: Measurement
    after: Measurement
    verdict: CostVerdict

    @property
    def proven(self) -> bool:
        return self.same.same and self.verdict.cheaper

    def failure(self) -> str:
        if not self.same.same:
            return "does not return the same rows as the current model: " + self.same.detail + (
                f" ({self.same.rows_left} vs {self.same.rows_right} rows)")
        return self.verdict.reason


def prove(con: duckdb.DuckDBPyConnection, current_sql: str, candidate_sql: str, *, runs: int = 5,
          min_saving: float = 0.2, max_time_growth: float = 0.25, before: Measurement | None = None) -> Proof:
    """Build the current SQL and the candidate on the current data; compare their rows and their cost.

    `before` reuses a measurement of the current SQL (its temp table must be `__pw_cost_current`). The timed builds
    alternate between the two sides so a slower moment of the machine hurts both alike.
    """
    cur, cand = "__pw_cost_current", "__pw_cost_candidate"
    if before is None:
        before = measure(con, current_sql, runs=1, into=cur)
    first = measure(con, candidate_sql, runs=1, into=cand)
    same = same_rows(con, cur, cand)
    if not same.same:
        return Proof(same=same, before=before, after=first,
                     verdict=CostVerdict(cheaper=False, basis="none", ratio=1.0, reason="not compared: rows differ"))
    b_times, a_times = list(before.elapsed_ms), list(first.elapsed_ms)
    b_last, a_last = before, first
    for _ in range(max(0, runs - len(b_times))):
        b_last = measure(con, current_sql, runs=1, into="__pw_cost_timing")
        b_times += b_last.elapsed_ms
    for _ in range(max(0, runs - len(a_times))):
        a_last = measure(con, candidate_sql, runs=1, into="__pw_cost_timing")
        a_times += a_last.elapsed_ms
    before = Measurement(elapsed_ms=b_times, median_ms=round(statistics.median(b_times), 3),
                         rows_out=before.rows_out, profile=before.profile)
    after = Measurement(elapsed_ms=a_times, median_ms=round(statistics.median(a_times), 3),
                        rows_out=first.rows_out, profile=first.profile)
    con.execute('DROP TABLE IF EXISTS "__pw_cost_timing"')
    return Proof(same=same, before=before, after=after,
                 verdict=compare_cost(before, after, min_saving=min_saving, max_time_growth=max_time_growth))


# --------------------------------------------------------------------------- PostgreSQL
_PG_FLOATS = ("double precision", "real", "numeric")


def _pg_projection(cols: list[tuple[str, str]]) -> str:
    out = []
    for name, typ in cols:
        q = quote_ident(name, "postgres")
        if typ.split("(")[0] in _PG_FLOATS:  # 10 significant digits, as on DuckDB
            out.append(f"CASE WHEN {q} IS NULL OR {q} = 0 OR {q}::float8 IN ('NaN', 'Infinity', '-Infinity') "
                       f"THEN {q}::float8 ELSE ROUND({q}::numeric, 9 - FLOOR(LOG(ABS({q}::numeric)))::int)::float8 "
                       f"END AS {q}")
        else:
            out.append(q)
    return ", ".join(out)


def _pg_columns(conn: Any, table: str) -> list[tuple[str, str]]:
    import sqlalchemy as sa

    return [(r[0], r[1]) for r in conn.execute(sa.text(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"), {"t": quote_ident(table, "postgres")}).fetchall()]


def _pg_measure(conn: Any, sql: str, into: str, runs: int) -> Measurement:
    """`measure` on PostgreSQL: EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON) of CREATE TEMP TABLE AS."""
    import sqlalchemy as sa

    from pipewarden.tools.warehouse import postgres_profile

    times: list[float] = []
    rows_out, profile = 0, CostProfile()
    for _ in range(max(1, runs)):
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {quote_ident(into, 'postgres')}"))
        t0 = time.perf_counter()
        try:
            with conn.begin_nested():
                plan = conn.execute(sa.text(f'EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON) CREATE TEMP TABLE '
                                            f"{quote_ident(into, 'postgres')} AS\n{_select(sql)}")).scalar()
        except sa.exc.DBAPIError as exc:
            raise UserError(f"the SQL failed in PostgreSQL: {exc.orig}", hint="fix the SQL; nothing was changed") \
                from exc
        times.append(round((time.perf_counter() - t0) * 1000, 3))
        rows_out, profile = postgres_profile(plan)
    return Measurement(elapsed_ms=times, median_ms=round(statistics.median(times), 3), rows_out=rows_out,
                       profile=profile)


def prove_on_warehouse(wh: Any, current_sql: str, candidate_sql: str, *, runs: int = 5, min_saving: float = 0.2,
                       max_time_growth: float = 0.25) -> Proof:
    """`prove` on the project's warehouse (`tools.warehouse.Warehouse`): DuckDB through `prove`; PostgreSQL in one
    transaction that is rolled back, so its temp tables vanish and nothing else can be left behind. The SQL is in
    the warehouse's own dialect."""
    if wh.is_duckdb:
        return prove(wh.duckdb, current_sql, candidate_sql, runs=runs, min_saving=min_saving,
                     max_time_growth=max_time_growth)
    import sqlalchemy as sa

    cur, cand = "__pw_cost_current", "__pw_cost_candidate"
    with wh.engine.connect() as conn:
        tx = conn.begin()
        try:
            before = _pg_measure(conn, current_sql, cur, 1)
            after = _pg_measure(conn, candidate_sql, cand, 1)
            same = _same_rows(lambda q: conn.execute(sa.text(q)).scalar(), _pg_columns(conn, cur),
                              _pg_columns(conn, cand), cur, cand, _pg_projection)
            if not same.same:
                return Proof(same=same, before=before, after=after, verdict=CostVerdict(
                    cheaper=False, basis="none", ratio=1.0, reason="not compared: rows differ"))
            if runs > 1:
                b_more = _pg_measure(conn, current_sql, "__pw_cost_timing", runs - 1)
                a_more = _pg_measure(conn, candidate_sql, "__pw_cost_timing", runs - 1)
                b_times, a_times = before.elapsed_ms + b_more.elapsed_ms, after.elapsed_ms + a_more.elapsed_ms
                before = before.model_copy(update={"elapsed_ms": b_times,
                                                   "median_ms": round(statistics.median(b_times), 3)})
                after = after.model_copy(update={"elapsed_ms": a_times,
                                                 "median_ms": round(statistics.median(a_times), 3)})
        finally:
            tx.rollback()
    return Proof(same=same, before=before, after=after,
                 verdict=compare_cost(before, after, min_saving=min_saving, max_time_growth=max_time_growth))


# --------------------------------------------------------------------------- diagnosis
class Finding(BaseModel):
    """One reason a model costs more than it should, with where it was seen (the SQL, the plan, or both)."""

    model_config = ConfigDict(extra="forbid")
    kind: FindingKind
    seen_in: Literal["sql", "plan", "both"]
    table: str | None = None
    detail: str

    def line(self) -> str:
        return f"{self.kind} ({self.seen_in}): {self.detail}"


def _parse(sql: str) -> Any:
    import sqlglot

    try:
        return sqlglot.parse_one(_select(sql), read=DIALECT)
    except sqlglot.errors.ParseError as exc:
        raise UserError(f"the SQL does not parse: {exc.errors[0].get('description') if exc.errors else exc}",
                        hint="write one SELECT in DuckDB's dialect") from exc


def _cte_names(tree: Any) -> set[str]:
    from sqlglot import exp

    return {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}


def tables_read(sql: str) -> set[str]:
    """The base tables a SELECT reads (CTE names excluded)."""
    from sqlglot import exp

    tree = _parse(sql)
    ctes = _cte_names(tree)
    return {t.name.lower() for t in tree.find_all(exp.Table) if t.name and t.name.lower() not in ctes}


def _conjuncts(cond: Any) -> list[Any]:
    from sqlglot import exp

    if cond is None:
        return []
    cond = cond.unnest() if hasattr(cond, "unnest") else cond
    if isinstance(cond, exp.And):
        return _conjuncts(cond.left) + _conjuncts(cond.right)
    return [cond]


def _predicates(tree: Any) -> list[tuple[str, Any]]:
    """Every predicate conjunct of WHERE, HAVING, QUALIFY and JOIN ... ON, with where it sits."""
    from sqlglot import exp

    out: list[tuple[str, Any]] = []
    for clause in (exp.Where, exp.Having, exp.Qualify):
        for node in tree.find_all(clause):
            out += [(clause.__name__.lower(), c) for c in _conjuncts(node.this)]
    for join in tree.find_all(exp.Join):
        out += [("on", c) for c in _conjuncts(join.args.get("on"))]
    return out


def _normal(node: Any) -> str:
    """A predicate's text with table qualifiers dropped, so `t.x > 1` and `x > 1` compare equal."""
    from sqlglot import exp

    copy = node.copy()
    for col in copy.find_all(exp.Column):
        col.set("table", None)
    return copy.sql(dialect=DIALECT).lower()


def _is_equi(cond: Any) -> bool:
    from sqlglot import exp

    return any(isinstance(c, exp.EQ | exp.NullSafeEQ) and c.left.find(exp.Column) is not None
               and c.right.find(exp.Column) is not None for c in _conjuncts(cond))


_COMPARISONS = ("EQ", "NEQ", "GT", "GTE", "LT", "LTE", "Between", "In", "Like", "ILike")


def _wrapped_column(side: Any) -> Any:
    """The column inside `side` when `side` is a function or arithmetic over a column (not a bare column)."""
    from sqlglot import exp

    if isinstance(side, exp.Column | exp.Literal) or side is None:
        return None
    if isinstance(side, exp.Func | exp.Binary | exp.Cast | exp.Paren | exp.Neg) and side.find(exp.Column) is not None:
        return side.find(exp.Column)
    return None


def _non_sargable(tree: Any) -> list[tuple[str, Any]]:
    from sqlglot import exp

    found = []
    kinds = tuple(getattr(exp, k) for k in _COMPARISONS)
    for where, cond in _predicates(tree):
        for comp in [cond, *cond.find_all(*kinds)]:
            if not isinstance(comp, kinds):
                continue
            sides = [comp.this, comp.args.get("expression")]
            if any(_wrapped_column(s) is not None for s in sides if s is not None):
                found.append((where, comp))
                break
    return found


def _stars(tree: Any) -> list[tuple[Any, list[str]]]:
    """Each SELECT whose projection has `*` (or `t.*`), with the tables and CTEs it reads."""
    from sqlglot import exp

    out = []
    for select in tree.find_all(exp.Select):
        if any(isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
               for e in select.expressions):
            froms = [t.name.lower() for t in select.find_all(exp.Table)
                     if t.find_ancestor(exp.Select) is select]
            out.append((select, froms))
    return out


def diagnose(sql: str, profile: CostProfile | None = None, *, known_good_sql: str | None = None,
             baseline_scans: list[ScanStat] | None = None, table_widths: dict[str, int] | None = None,
             wide_columns: int = WIDE_TABLE_COLUMNS) -> list[Finding]:
    """Why `sql` (built with `profile`) costs what it does, as findings ordered plan-confirmed first.

    `known_good_sql` and `baseline_scans` (the scans of a build before the regression) find lost filters;
    `table_widths` (table -> column count) decides which tables are wide for `SELECT *`.
    """
    from sqlglot import exp

    tree = _parse(sql)
    ctes = _cte_names(tree)
    widths = {k.lower(): v for k, v in (table_widths or {}).items()}
    findings: list[Finding] = []
    scans = profile.scans if profile else []

    # repeated scan: the plan reads one table more than once
    counts = Counter(s.table.lower() for s in scans)
    sql_counts = Counter(t.name.lower() for t in tree.find_all(exp.Table) if t.name.lower() not in ctes)
    for table, n in sorted(counts.items()):
        if n > 1:
            rows = [s.rows_scanned for s in scans if s.table.lower() == table]
            findings.append(Finding(kind="repeated_scan", seen_in="both" if sql_counts.get(table, 0) > 1 else "plan",
                                    table=table, detail=f"{table} is scanned {n} times ({' + '.join(map(str, rows))} "
                                                        f"rows) where one pass would do"))
    for table, n in sorted(sql_counts.items()):
        if n > 1 and counts.get(table, 0) <= 1 and not scans:
            findings.append(Finding(kind="repeated_scan", seen_in="sql", table=table,
                                    detail=f"{table} is read {n} times in the SQL"))

    # cartesian join: CROSS JOIN, a join without a condition, or a condition without an equality
    nl_joins = [j for j in (profile.joins if profile else []) if j.operator in NESTED_LOOP_OPS]
    sql_cartesian = []
    for join in tree.find_all(exp.Join):
        kind = (join.args.get("kind") or "").upper()
        table = join.this.alias_or_name if join.this is not None else "?"
        if isinstance(join.this, exp.Unnest) or join.args.get("using"):
            continue
        on = join.args.get("on")
        if kind == "CROSS" or on is None:
            sql_cartesian.append(f"CROSS JOIN {table}" if kind == "CROSS" else f"join to {table} without a condition")
        elif not _is_equi(on):
            sql_cartesian.append(f"join to {table} ON {on.sql(dialect=DIALECT)} has no plain equality")
    for j in nl_joins:
        pairs = j.left_rows * j.right_rows
        findings.append(Finding(
            kind="cartesian_join", seen_in="both" if sql_cartesian else "plan",
            detail=f"{j.operator} ({j.join_type or 'inner'}) compares every pair: {j.left_rows} x {j.right_rows} = "
                   f"{pairs} row pairs" + (f"; condition {j.condition}" if j.condition else "")
                   + (f"; SQL: {'; '.join(sql_cartesian)}" if sql_cartesian else "")))
    if sql_cartesian and not nl_joins:
        note = "; DuckDB planned a hash join, so it costs nothing here" if profile else ""
        findings.append(Finding(kind="cartesian_join", seen_in="sql", detail="; ".join(sql_cartesian) + note))

    # SELECT * over a wide table
    for _select_node, froms in _stars(tree):
        for table in froms:
            if table in ctes:
                continue
            scan = next((s for s in scans if s.table.lower() == table), None)
            width = widths.get(table) or (len(scan.columns) if scan else 0)
            if width >= wide_columns:
                read = f"; the plan reads {len(scan.columns)} columns, {scan.bytes_scanned} bytes" if scan else ""
                findings.append(Finding(kind="select_star", seen_in="both" if scan else "sql", table=table,
                                        detail=f"SELECT * over {table} ({width} columns){read}"))

    # a function on a filtered or joined column
    for where, comp in _non_sargable(tree):
        findings.append(Finding(
            kind="non_sargable", seen_in="both" if (nl_joins or "FILTER" in (profile.operators if profile else []))
            else "sql",
            detail=f"{where.upper()} {comp.sql(dialect=DIALECT)} wraps a column in a function, so DuckDB cannot push "
                   "it into the scan or use it as a join key"))

    # lost filter: a predicate of the known-good version is gone, or a scan lost its filters
    if known_good_sql:
        current = {_normal(c) for _, c in _predicates(tree)}
        for where, cond in _predicates(_parse(known_good_sql)):
            text = _normal(cond)
            if text not in current and not any(text in c for c in current):  # inside an OR or a function: changed
                findings.append(Finding(kind="lost_filter", seen_in="sql",
                                        detail=f"{where.upper()} {cond.sql(dialect=DIALECT)} of the known-good "
                                               "version is missing"))
    for base in baseline_scans or []:
        now = [s for s in scans if s.table.lower() == base.table.lower()]
        if base.filters and now and not any(s.filters for s in now):
            findings.append(Finding(kind="lost_filter", seen_in="plan", table=base.table,
                                    detail=f"the scan of {base.table} lost its filters {base.filters}: "
                                           f"{base.rows_scanned} -> {max(s.rows_scanned for s in now)} rows"))
    order = {"both": 0, "plan": 1, "sql": 2}
    return sorted(findings, key=lambda f: order[f.seen_in])


# --------------------------------------------------------------------------- rule-based rewrites
class Candidate(BaseModel):
    """A rewrite to prove: where it came from (`known_good`, `rule:<name>`, `llm`), its SQL and why."""

    model_config = ConfigDict(extra="forbid")
    source: str
    sql: str
    reason: str


def _null_safe(tree: Any) -> bool:
    """`a = b OR (a IS NULL AND b IS NULL)` -> `a IS NOT DISTINCT FROM b`."""
    from sqlglot import exp

    changed = False
    for node in list(tree.find_all(exp.Or)):
        eq, other = node.left.unnest(), node.right.unnest()
        if not isinstance(eq, exp.EQ):
            eq, other = other, eq
        if not isinstance(eq, exp.EQ) or not isinstance(other, exp.And):
            continue
        nulls = {_normal(c.this) for c in _conjuncts(other) if isinstance(c, exp.Is) and isinstance(c.expression, exp.Null)}
        if nulls == {_normal(eq.left), _normal(eq.right)}:
            node.replace(exp.NullSafeEQ(this=eq.left.copy(), expression=eq.right.copy()))
            changed = True
    return changed


def _cross_to_inner(tree: Any) -> bool:
    """`FROM a CROSS JOIN b WHERE a.k = b.k AND ...` -> `FROM a JOIN b ON a.k = b.k WHERE ...`."""
    from sqlglot import exp

    changed = False
    for select in tree.find_all(exp.Select):
        where = select.args.get("where")
        for join in select.args.get("joins") or []:
            if join.args.get("on") is not None or join.args.get("using") or isinstance(join.this, exp.Unnest):
                continue
            alias = join.this.alias_or_name.lower()
            if where is None:
                continue
            keys = [c for c in _conjuncts(where.this) if isinstance(c, exp.EQ | exp.NullSafeEQ)
                    and {x.table.lower() for x in c.find_all(exp.Column)} - {""} >= {alias}
                    and len({x.table.lower() for x in c.find_all(exp.Column)}) > 1]
            if not keys:
                continue
            rest = [c for c in _conjuncts(where.this) if c not in keys]
            join.set("kind", None)
            join.set("on", exp.and_(*[k.copy() for k in keys]))
            select.set("where", exp.Where(this=exp.and_(*[r.copy() for r in rest])) if rest else None)
            where = select.args.get("where")
            changed = True
    return changed


def _distinct_star(tree: Any) -> bool:
    """`(SELECT DISTINCT * FROM t) AS s` -> `t AS s` (only the proof can say the rows are the same)."""
    from sqlglot import exp

    changed = False
    for sub in list(tree.find_all(exp.Subquery)):
        inner = sub.this
        if not isinstance(inner, exp.Select) or not inner.args.get("distinct") or inner.args.get("where") \
                or inner.args.get("joins") or inner.args.get("group"):
            continue
        if not (len(inner.expressions) == 1 and isinstance(inner.expressions[0], exp.Star)):
            continue
        source = inner.args.get("from") or inner.args.get("from_")
        if source is None or not isinstance(source.this, exp.Table):
            continue
        table = source.this.copy()
        table.set("alias", exp.TableAlias(this=exp.to_identifier(sub.alias_or_name)))
        sub.replace(table)
        changed = True
    return changed


_RULES = (
    ("null_safe_join", _null_safe, "an OR of equality and both-null is IS NOT DISTINCT FROM, which hash-joins"),
    ("cross_join_to_inner", _cross_to_inner, "a CROSS JOIN filtered on an equality is an inner join on it"),
    ("distinct_star_to_table", _distinct_star, "DISTINCT over every column of a table reads every column"),
)


def rule_rewrites(sql: str) -> list[Candidate]:
    """Rewrites of `sql` by each rule that changes it (every rule applied alone, then all that apply together)."""
    out: list[Candidate] = []
    applied: list[str] = []
    for name, rule, why in _RULES:
        tree = _parse(sql)
        if rule(tree):
            out.append(Candidate(source=f"rule:{name}", sql=tree.sql(dialect=DIALECT, pretty=True), reason=why))
            applied.append(name)
    if len(applied) > 1:
        tree = _parse(sql)
        for _name, rule, _why in _RULES:
            rule(tree)
        out.append(Candidate(source="rule:" + "+".join(applied), sql=tree.sql(dialect=DIALECT, pretty=True),
                             reason="every rule that applies, together"))
    return out


# --------------------------------------------------------------------------- run history
def open_warehouse(read_only: Literal[True] = True) -> Any:
    """The warehouse file as a raw DuckDB connection (the caller closes it): the locked read-only connection of
    `tools.warehouse.locked_duckdb` (no files, no settings), so the candidate SQL a model wrote cannot reach outside
    the warehouse whatever it says. Reading is all the cost tools do (a writable mode nothing used is gone). No
    warehouse yet or a file another process holds: `WarehouseUnavailable`; a warehouse on a server: ConfigError."""
    from pipewarden.settings import get_settings
    from pipewarden.tools.warehouse import locked_duckdb

    return locked_duckdb(get_settings().warehouse_path)


class ModelBuild(BaseModel):
    """One recorded build of a model, from `model_runs`."""

    model_config = ConfigDict(extra="forbid")
    run_id: str
    load_id: str | None
    started_at: str
    elapsed_ms: float
    rows_out: int | None
    rows_scanned: int | None
    bytes_scanned: int | None
    sql_hash: str
    scans: list[ScanStat] = Field(default_factory=list)


def model_history(con: Any, model: str, limit: int = 50) -> list[ModelBuild]:
    """The model's successful builds, oldest first (at most the last `limit`)."""
    has_scans = bool(con.execute("SELECT COUNT(*) FROM duckdb_columns() WHERE table_name = 'model_runs' "
                                 "AND column_name = 'scans'").fetchone()[0])
    rows = con.execute(
        "SELECT run_id, load_id, CAST(started_at AS VARCHAR), elapsed_ms, rows_out, rows_scanned, "
        + ("bytes_scanned, scans, " if has_scans else "NULL, NULL, ")
        + "sql_hash FROM model_runs WHERE model = ? AND status = 'ok' ORDER BY started_at DESC LIMIT ?",
        [model, limit]).fetchall()
    out = []
    for r in reversed(rows):
        scans = [ScanStat.model_validate(s) for s in json.loads(r[7])] if r[7] else []
        out.append(ModelBuild(run_id=r[0], load_id=r[1], started_at=r[2], elapsed_ms=float(r[3]), rows_out=r[4],
                              rows_scanned=r[5], bytes_scanned=r[6], sql_hash=r[8], scans=scans))
    return out


def sql_for_hash(con: Any, sql_hash: str) -> str | None:
    """The SQL text a build with this hash ran (`model_sql`, written by transform), if it was kept."""
    if not con.execute("SELECT COUNT(*) FROM duckdb_tables() WHERE table_name = 'model_sql'").fetchone()[0]:
        return None
    row = con.execute("SELECT sql FROM model_sql WHERE sql_hash = ?", [sql_hash]).fetchone()
    return str(row[0]) if row else None


def table_widths(con: Any) -> dict[str, int]:
    return {r[0].lower(): int(r[1]) for r in con.execute(
        "SELECT table_name, COUNT(*) FROM duckdb_columns() WHERE NOT internal GROUP BY table_name").fetchall()}


# --------------------------------------------------------------------------- tools a model may call
class ProfileInput(BaseModel):
    """Build a read-only SELECT over the warehouse once and report what DuckDB's profiler saw."""

    model_config = ConfigDict(extra="forbid")
    sql: str = Field(description="One read-only SELECT over the tables listed in the evidence.")


class ProfileOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    elapsed_ms: float
    rows_out: int
    rows_scanned: int
    bytes_scanned: int
    scans: list[ScanStat]
    joins: list[JoinStat]
    findings: list[str]


def _profile_tool(args: ProfileInput) -> ProfileOutput:
    from pipewarden.settings import get_settings
    from pipewarden.tools.sql_guard import model_names, require_select
    from pipewarden.tools.warehouse import Warehouse

    require_select(args.sql)  # refuse what no table list makes safe before opening anything
    con = open_warehouse(read_only=True)
    try:
        tables = set(Warehouse.over_duckdb(con).tables()) | model_names(get_settings().models_dir)
        require_select(args.sql, allowed_tables=tables)
        m = measure(con, args.sql, runs=1)
        findings = diagnose(args.sql, m.profile, table_widths=table_widths(con))
    finally:
        con.close()
    return ProfileOutput(elapsed_ms=m.median_ms, rows_out=m.rows_out, rows_scanned=m.rows_scanned,
                         bytes_scanned=m.bytes_scanned, scans=m.profile.scans, joins=m.profile.joins,
                         findings=[f.line() for f in findings])


def _tools() -> list[Any]:
    from pipewarden.tools.registry import Tool

    return [Tool(name="profile_sql", description=(
        "Build one read-only SELECT over the warehouse as a temp table and return DuckDB's profile: time, rows "
        "out, rows and bytes scanned per table, joins, and cost findings."),
        input=ProfileInput, output=ProfileOutput, fn=_profile_tool)]


TOOLS = _tools()
