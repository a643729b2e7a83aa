"""Contract checks pushed down into DuckDB: a batch file is judged where it lies, in bounded memory.

The in-memory path (`tools.checks.run_checks`) reads the whole batch into pandas; this one compiles the contract's
row rules (`policies.expectations.check_specs`) to SQL predicates with sqlglot, one per rule, TRUE when a row
breaks it, and lets an in-memory DuckDB evaluate them over the file (`read_parquet`; a CSV is first copied to a
temporary Parquet file, streamed, so every row keeps its position). Only the rows that break a rule come back to
Python, a chunk at a time, to get the same reason text and row JSON as the in-memory path; accepted rows go to the
warehouse inside DuckDB (`INSERT ... SELECT`) or, for another warehouse, in Arrow chunks.

The semantics are the in-memory engines' (and GX's): nulls pass every rule but `not null`; bounds are inclusive;
a `unique` key repeated by two or more rows rejects all of them, a key with a null is not compared; a timestamp
column that arrives as text is parsed (`TRY_CAST(... AS TIMESTAMPTZ)`, UTC) and a value that does not parse rejects
its row. `tests/tools/test_pushdown.py` holds this path to the same accepted/quarantined split and reasons as the GX
path on a batch with every rule kind.

The SQL is pipewarden's own: file paths and values enter as sqlglot literals, column names as quoted
identifiers; no user SQL runs here except an approved quarantine predicate, and only as
`tools.quality_rules.predicate_sql` rendered it after `tools.sql_guard` accepted it.

Which path a batch takes is a size threshold, `settings.pushdown_min_bytes` (`use_pushdown`). The pushdown path is
bounded in memory (DuckDB's `memory_limit`, chunks of `chunk_rows` rows), so it does not apply the in-memory
`max_batch_bytes` limit of `tools.io.check_batch_size`.

A batch already in memory (the guard's, as it landed) is opened the same way from its Arrow table (`open_table`), in
the DuckDB warehouse's own connection: the rules run in one pass where the accepted rows are written, with the same
predicates, reasons and casts as over a file.

Public names: `CompiledRule`, `PushdownReport`, `PushdownBatch`, `compile_rules`, `open_batch`, `open_table`,
`table_fits`, `use_pushdown`, `check_file_pushdown`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from pipewarden.errors import InputFileError
from pipewarden.events import FailedCheck
from pipewarden.models import CheckResult
from pipewarden.policies.column_types import LANDED_DUCKDB_TYPES
from pipewarden.policies.contract import Contract, SchemaDiff, schema_diff
from pipewarden.policies.expectations import CheckSpec, check_specs
from pipewarden.tools.io import BatchRefused, check_has_rows, check_unique_columns
from pipewarden.tools.warehouse import quote_ident as _q

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

ROW = "__pw_row"
FLAG = "__pw_f"
CHUNK_ROWS = 100_000
MEMORY_LIMIT = "1GB"
STRING_TYPES = ("VARCHAR", "STRING", "TEXT")
FLOAT_TYPES = ("DOUBLE", "FLOAT", "REAL")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class CompiledRule:
    """One row rule as a DuckDB predicate that is TRUE (never NULL) when a row breaks it."""

    kind: str
    """The check kind (`timestamp` for a text timestamp that does not parse, else a `CheckSpec` kind)."""
    column: str
    label: str
    fails: str
    """The predicate, DuckDB SQL over the source's columns (and `__pw_dup<i>` for a unique key)."""
    shows: tuple[str, ...] = ()
    """The columns whose values the row reason shows (none for `not null`)."""
    dup_table: str | None = None
    """A `unique` rule: the temporary table of repeated keys it joins."""
    columns: tuple[str, ...] = ()


class PushdownReport(BaseModel):
    """What the pushed-down checks found on one batch file (the counts; the rows went to the sinks)."""

    dataset: str
    contract_version: str
    result: CheckResult
    failure_rate: float
    threshold: float
    failed: list[FailedCheck] = Field(default_factory=list)
    schema_diff: SchemaDiff = Field(default_factory=SchemaDiff)
    engine: str = "duckdb"
    rows_ruled_out: int = 0
    rows_quarantined: int = 0
    rows_accepted: int = 0
    elapsed_ms: float = 0.0

    @property
    def over_threshold(self) -> bool:
        return self.failure_rate > self.threshold


def use_pushdown(size_bytes: int, threshold: int | None = None) -> bool:
    """Whether a batch file of `size_bytes` takes the pushdown path (`settings.pushdown_min_bytes`; 0: never)."""
    from pipewarden.settings import get_settings

    limit = int(get_settings().pushdown_min_bytes) if threshold is None else threshold
    return bool(limit) and size_bytes >= limit


# --------------------------------------------------------------------------- compiling the rules
def _lit(value: Any) -> str:
    from sqlglot import exp

    if isinstance(value, str):
        return exp.Literal.string(value).sql(dialect="duckdb")
    return exp.Literal.number(value).sql(dialect="duckdb")


def _base(sql_type: str) -> str:
    return sql_type.split("(")[0].strip().upper()


def compile_rules(contract: Contract, types: dict[str, str], specs: Sequence[CheckSpec] | None = None
                  ) -> tuple[CompiledRule, ...]:
    """The contract's row rules over a source whose columns have these DuckDB `types`, in the order the in-memory
    path reasons in: unparseable text timestamps first, then every row-level spec in contract order.

    Rules on a column the source lacks, or on one whose type the contract does not accept (schema drift), are left
    out, as `run_checks` leaves them out."""
    specs = tuple(s for s in (specs if specs is not None else check_specs(contract)) if s.row_level
                  and all(c in types for c in s.columns or (s.column,)))
    cols = list(dict.fromkeys(c for s in specs for c in s.columns or (s.column,)))
    out: list[CompiledRule] = []
    for col in cols:
        if contract.column(col).type == "timestamp" and _base(types[col]) in STRING_TYPES:
            c = _q(col)
            out.append(CompiledRule(kind="timestamp", column=col, label=f"{col}: not a timestamp",
                                    fails=f"({c} IS NOT NULL AND TRY_CAST({c} AS TIMESTAMPTZ) IS NULL)", shows=(col,)))
    for i, spec in enumerate(specs):
        c = _q(spec.column)
        t = _base(types[spec.column])
        nan = f" AND NOT isnan({c})" if t in FLOAT_TYPES else ""
        dup = None
        if spec.kind == "not_null":
            fails = f"({c} IS NULL{f' OR isnan({c})' if t in FLOAT_TYPES else ''})"
        elif spec.kind == "between":
            num = c if t in FLOAT_TYPES else f"CAST({c} AS DOUBLE)"
            bounds = [f"{num} < {_lit(spec.min_value)}" if spec.min_value is not None else "",
                      f"{num} > {_lit(spec.max_value)}" if spec.max_value is not None else ""]
            fails = f"({c} IS NOT NULL{nan} AND ({' OR '.join(b for b in bounds if b) or 'FALSE'}))"
        elif spec.kind == "in_set":
            if t in STRING_TYPES:  # pandas' isin against strings: a number never equals one
                fails = f"({c} IS NOT NULL AND {c} NOT IN ({', '.join(_lit(v) for v in spec.values)}))"
            else:
                fails = f"({c} IS NOT NULL{nan})"
        elif spec.kind == "length":
            n = f"length(CAST({c} AS VARCHAR))"
            bounds = [f"{n} < {_lit(spec.min_value)}" if spec.min_value is not None else "",
                      f"{n} > {_lit(spec.max_value)}" if spec.max_value is not None else ""]
            fails = f"({c} IS NOT NULL{nan} AND ({' OR '.join(b for b in bounds if b) or 'FALSE'}))"
        else:  # unique: the rows whose key is in the table of repeated keys
            dup = f"__pw_dup{i}"
            fails = f"({dup}.__pw_hit IS NOT NULL)"
        _well_formed(fails)  # every predicate is well-formed SQL before it runs
        out.append(CompiledRule(kind=spec.kind, column=spec.column, label=spec.label, fails=fails,
                                shows=() if spec.kind == "not_null" else (spec.columns or (spec.column,)),
                                dup_table=dup, columns=spec.columns or (spec.column,)))
    return tuple(out)


@lru_cache(maxsize=4096)
def _well_formed(sql: str) -> None:
    """Parse a predicate with sqlglot (raising on SQL that is not well-formed); each text once per process."""
    import sqlglot

    sqlglot.parse_one(sql, read="duckdb")


# --------------------------------------------------------------------------- the batch in DuckDB
class PushdownBatch:
    """A batch file opened in an in-memory DuckDB as the view `src` (every column, plus `__pw_row`: the row's
    position in the file, from 0). Use `open_batch`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, location: str, types: dict[str, str], rows: int) -> None:
        self.con, self.location, self.types, self.rows = con, location, types, rows

    @property
    def columns(self) -> list[str]:
        return list(self.types)

    def probe(self, contract: Contract | None = None, n: int = 200) -> pd.DataFrame:
        """A small frame that `policies.contract.schema_diff` judges as it would judge the whole batch: the first
        `n` non-null values of each column in file order (its samples and ISO-date probe), one value that is not a
        whole number for a float column with one (the integer-with-nulls test), nothing for an all-null column.

        Given the `contract`, a float column the contract says is a float skips the whole-number scan: integer or
        float, it meets its contract type either way, so only its first values are read."""
        import pandas as pd

        series: dict[str, pd.Series] = {}
        known = {c.name: c.type for c in contract.columns} if contract is not None else {}
        floats = [c for c, t in self.types.items() if _base(t) in FLOAT_TYPES and known.get(c) != "float"]
        fraction: dict[str, Any] = {}
        if floats:
            row = self.con.execute("SELECT " + ", ".join(
                f"arg_min({_q(c)}, {ROW}) FILTER (WHERE {_q(c)} <> floor({_q(c)}))" for c in floats
            ) + " FROM src").fetchall()[0]
            fraction = dict(zip(floats, row, strict=True))
        # the first rows in one read (file order: insertion order is preserved); a column with fewer than n
        # values there is read on its own, stopping at its n-th value
        first = self.con.sql(f"SELECT * EXCLUDE ({ROW}) FROM src LIMIT {int(n) * 5}").to_arrow_table().to_pandas()
        for c in self.types:
            head = first[c].dropna()
            if len(head) >= n:
                head = head.iloc[:n]
            else:
                head = self.con.sql(f"SELECT {_q(c)} FROM src WHERE {_q(c)} IS NOT NULL LIMIT {int(n)}"
                                    ).to_arrow_table().to_pandas()[c]
            if fraction.get(c) is not None:
                head = pd.concat([head, pd.Series([fraction[c]], dtype=head.dtype)], ignore_index=True)
            if head.empty:
                head = self.con.sql(f"SELECT {_q(c)} FROM src LIMIT 1").to_arrow_table().to_pandas()[c]
            series[c] = head.reset_index(drop=True)
        width = max((len(s) for s in series.values()), default=0)
        return pd.DataFrame({c: s.reindex(range(width)) for c, s in series.items()})

    def schema_diff(self, contract: Contract) -> SchemaDiff:
        return schema_diff(contract, self.probe(contract))


@contextmanager
def open_batch(location: str | Path, *, con: duckdb.DuckDBPyConnection | None = None,
               memory_limit: str = MEMORY_LIMIT, threads: int | None = None) -> Iterator[PushdownBatch]:
    """Open a CSV or Parquet batch file (a local path) for pushed-down checks; InputFileError for a missing or
    unreadable file. A CSV is copied to a temporary Parquet file first (streamed, in file order).

    Without `con` the batch opens in a new in-memory DuckDB (`memory_limit`, spilling to a temporary folder); with
    one (the DuckDB warehouse's own connection, so accepted rows move by `INSERT ... SELECT`) its objects are
    temporary and dropped at the end, and the connection stays open."""
    import duckdb

    path = Path(location)
    if not path.is_file():
        raise InputFileError(location, "no such file" if not path.exists() else "is not a file",
                             hint="check the path")
    tmp = Path(tempfile.mkdtemp(prefix="pipewarden-pushdown-"))
    own = con is None
    if con is None:
        from pipewarden.tools.warehouse import scratch_duckdb

        # reads the batch file, so not locked; spills to this call's temporary folder
        con = scratch_duckdb(locked=False, memory_limit=memory_limit, temp_directory=str(tmp / "spill"),
                             preserve_insertion_order=True, **({"threads": threads} if threads else {}))
    zone = None if own else _time_zone(con)
    try:
        con.execute("SET TimeZone = 'UTC'")
        suffix = path.suffix.lower()
        _check_header(path, suffix)
        try:
            if suffix == ".csv":
                staged = tmp / "batch.parquet"
                con.execute(f"COPY (SELECT * FROM read_csv({_lit(str(path))}, header = true)) TO {_lit(str(staged))} "
                            "(FORMAT parquet)")
                source = staged
            elif suffix in (".parquet", ".pq"):
                source = path
            else:
                raise InputFileError(location, f"is not a CSV or Parquet file ({suffix or 'no suffix'})",
                                     hint="pass a .csv or .parquet file")
            con.execute(f"CREATE OR REPLACE TEMP VIEW src AS SELECT * EXCLUDE (file_row_number), "
                        f"file_row_number AS {ROW} FROM read_parquet({_lit(str(source))}, file_row_number = true)")
            described = con.execute("DESCRIBE src").fetchall()
            rows = int(con.execute("SELECT count(*) FROM src").fetchall()[0][0])
        except duckdb.Error as exc:
            raise InputFileError(location, f"cannot be read: {exc}",
                                 hint="re-export it as UTF-8 CSV with a header row, or as Parquet") from None
        types = {str(r[0]): str(r[1]) for r in described if r[0] != ROW}
        nested = [c for c, t in types.items() if any(k in t.upper() for k in ("STRUCT(", "MAP(", "[]", "UNION("))]
        if nested:
            raise BatchRefused(location, "nested_columns", f"has nested columns: {', '.join(nested)}", columns=nested,
                               hint="check it below settings.pushdown_min_bytes (the in-memory reader applies the "
                                    "contract's flatten rule), or flatten them in the export")
        check_has_rows(rows, location, header=suffix == ".csv")
        yield PushdownBatch(con, str(location), types, rows)
    finally:
        if own:
            con.close()
        else:
            _drop_objects(con, zone)
        shutil.rmtree(tmp, ignore_errors=True)


def _time_zone(con: duckdb.DuckDBPyConnection) -> str:
    return str(con.execute("SELECT current_setting('TimeZone')").fetchall()[0][0])


def _drop_objects(con: duckdb.DuckDBPyConnection, zone: str | None) -> None:
    """Drop what a batch opened in a connection it does not own made there, and give the connection back its time
    zone (the batch's casts run in UTC; what the caller reads after is in the zone it had)."""
    for view in ("__pw_accepted", "src"):
        con.execute(f"DROP VIEW IF EXISTS {view}")
    for (name,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary AND "
                               "table_name LIKE '\\_\\_pw\\_%' ESCAPE '\\'").fetchall():
        con.execute(f"DROP TABLE IF EXISTS {_q(name)}")
    if zone is not None:
        con.execute(f"SET TimeZone = {_lit(zone)}")


def table_fits(table: pa.Table) -> bool:
    """Whether `open_table` takes this Arrow table: every column a plain integer, float (32 or 64 bits), boolean,
    string or timestamp, the types whose DuckDB reading the rules are tested on (a dictionary, a date, a decimal, a
    nested or an all-null column is judged in memory instead)."""
    import pyarrow as pa

    def plain(t: pa.DataType) -> bool:
        return (pa.types.is_integer(t) or pa.types.is_float32(t) or pa.types.is_float64(t) or pa.types.is_boolean(t)
                or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_timestamp(t))

    return table.num_rows > 0 and all(plain(f.type) for f in table.schema)


@contextmanager
def open_table(table: pa.Table, con: duckdb.DuckDBPyConnection, *, location: str = "<in-memory batch>"
               ) -> Iterator[PushdownBatch]:
    """Open a batch already in memory (an Arrow table whose columns `table_fits`) for pushed-down checks in `con`
    (the DuckDB warehouse's connection): the view `src` over the table, with `__pw_row` its row positions, as
    `open_batch` makes over a file. Nothing is copied; the view and every temporary object are dropped at the end
    and the connection's time zone is given back."""
    import numpy as np
    import pyarrow as pa

    if not table_fits(table):
        raise ValueError("open_table takes plain integer, float, boolean, string and timestamp columns (table_fits)")
    zone = _time_zone(con)
    source = "__pw_batch"
    con.register(source, table.append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64))))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE OR REPLACE TEMP VIEW src AS SELECT * FROM {source}")
        types = {str(r[0]): str(r[1]) for r in con.execute("DESCRIBE src").fetchall() if r[0] != ROW}
        yield PushdownBatch(con, location, types, table.num_rows)
    finally:
        _drop_objects(con, zone)
        con.unregister(source)


def _check_header(path: Path, suffix: str) -> None:
    """Refuse a header that names a column twice, as `tools.io` does (DuckDB would rename the copy)."""
    if suffix == ".csv":
        import csv

        with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
            names: list[str] = next(csv.reader(fh), [])
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            names = list(pq.read_schema(path).names)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
            raise InputFileError(path, f"is not a readable Parquet file: {exc}",
                                 hint="re-export it, or check it is not truncated") from None
    else:
        return
    check_unique_columns(names, path)


# --------------------------------------------------------------------------- running the checks
def _prepare(batch: PushdownBatch, rules: Sequence[CompiledRule], excluded: str | None) -> str:
    """Make the temporary tables of repeated keys and return the FROM clause every query reads."""
    keep = f" AND NOT COALESCE(({excluded}), FALSE)" if excluded else ""
    joins = ""
    for r in rules:
        if r.dup_table is None:
            continue
        keys = ", ".join(_q(k) for k in r.columns)
        not_null = " AND ".join(f"{_q(k)} IS NOT NULL" for k in r.columns)
        batch.con.execute(f"CREATE OR REPLACE TEMP TABLE {r.dup_table} AS SELECT {keys}, TRUE AS __pw_hit FROM src "
                          f"WHERE {not_null}{keep} GROUP BY ALL HAVING count(*) > 1")
        on = " AND ".join(f"s.{_q(k)} = {r.dup_table}.{_q(k)}" for k in r.columns)
        joins += f" LEFT JOIN {r.dup_table} ON {on}"
    return f"src AS s{joins}"


def _qualified(rule: CompiledRule) -> str:
    """A rule's predicate with its columns read from `s` (the batch), so a join's key columns never shadow them."""
    return _qualify_columns(rule.fails, "__pw_hit")


@lru_cache(maxsize=4096)
def _qualify_columns(sql: str, keep: str | None = None) -> str:
    """`sql` with every unqualified column but `keep` read from `s`; each text rewritten once per process (sqlglot's
    parse is most of what compiling a contract's rules costs)."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="duckdb")
    for col in tree.find_all(exp.Column):
        if not col.table and col.name != keep:
            col.set("table", exp.to_identifier("s"))
    return tree.sql(dialect="duckdb")


def run_pushdown(
    batch: PushdownBatch,
    contract: Contract,
    *,
    excluded: tuple[str, str] | None = None,
    on_quarantine: Callable[[pd.DataFrame], None] | None = None,
    on_ruled: Callable[[pd.DataFrame], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    say: Progress | None = None,
    diff: SchemaDiff | None = None,
) -> PushdownReport:
    """Judge the batch by the contract's row rules in DuckDB and return the counts.

    `excluded` is (predicate, reason) of an approved quarantine predicate: its rows are quarantined with that
    reason, do not count as failures and are not judged by the contract (as `tools.quality_rules.check_with_rules`
    does). `on_quarantine` gets the rejected rows, a chunk at a time, as a frame with `row_number`, `reason` and
    `row_json` (the row as it arrived); `on_ruled` the same for the excluded rows. Without sinks only the counts run
    (one scan of the file). `diff` is `batch.schema_diff(contract)` when the caller has it already.
    """
    from pipewarden.tools.checks import render_reasons

    t0 = time.perf_counter()
    say = say or (lambda _: None)
    diff = batch.schema_diff(contract) if diff is None else diff
    retyped = {t.column for t in diff.retyped}
    types = {c: t for c, t in batch.types.items() if c not in retyped}
    rules = compile_rules(contract, types)
    source = _prepare(batch, rules, excluded[0] if excluded else None)
    flags = [f"COALESCE({_qualified(r)}, FALSE) AS {FLAG}{i}" for i, r in enumerate(rules)]
    excl = f"COALESCE(({_qualify_sql(excluded[0])}), FALSE)" if excluded else "FALSE"
    any_fail = " OR ".join(f"{FLAG}{i}" for i in range(len(rules))) or "FALSE"
    flagged = f"(SELECT s.*, {excl} AS __pw_ex{''.join(', ' + f for f in flags)} FROM {source})"
    say(f"checking {batch.rows:,} rows in DuckDB")
    counts = batch.con.execute(
        "SELECT count(*) FILTER (WHERE __pw_ex)" + "".join(
            f", count(*) FILTER (WHERE NOT __pw_ex AND {FLAG}{i})" for i in range(len(rules)))
        + f", count(*) FILTER (WHERE NOT __pw_ex AND ({any_fail})) FROM {flagged}").fetchall()[0]
    ruled_out, per_rule, failed_rows = int(counts[0]), [int(x) for x in counts[1:-1]], int(counts[-1])
    judged = batch.rows - ruled_out
    failed = [FailedCheck(check=r.kind, column=r.column, failed_rows=n, detail=r.label)  # type: ignore[arg-type]
              for r, n in zip(rules, per_rule, strict=True) if n]
    quarantined = 0
    if on_quarantine is not None and failed_rows:
        for chunk in _stream(batch, f"SELECT * FROM {flagged} WHERE NOT __pw_ex AND ({any_fail})",
                             chunk_rows):
            quarantined += len(chunk)
            reasons = render_reasons(chunk, [(r.kind, r.label, r.shows, chunk[f"{FLAG}{i}"].to_numpy(dtype=bool))
                                             for i, r in enumerate(rules)], contract)
            on_quarantine(_quarantine_frame(chunk, reasons, batch.columns))
            say(f"quarantined {quarantined:,} of {failed_rows:,} rejected rows")
    if on_ruled is not None and ruled_out and excluded:
        for chunk in _stream(batch, f"SELECT * FROM {flagged} WHERE __pw_ex", chunk_rows):
            import numpy as np

            on_ruled(_quarantine_frame(chunk, np.full(len(chunk), excluded[1], dtype=object), batch.columns))
    rate = failed_rows / judged if judged else 0.0
    schema_errors = diff.describe()
    result = CheckResult(
        passed=not schema_errors and rate <= contract.max_failure_rate, rows=batch.rows, failed_rows=failed_rows,
        schema_errors=schema_errors,
        failed_checks=[f"{f.detail} ({f.failed_rows} row{'s' if f.failed_rows != 1 else ''})" for f in failed],
    )
    report = PushdownReport(
        dataset=contract.dataset, contract_version=contract.version_tag, result=result, failure_rate=rate,
        threshold=contract.max_failure_rate, failed=failed, schema_diff=diff, rows_ruled_out=ruled_out,
        rows_quarantined=quarantined, elapsed_ms=(time.perf_counter() - t0) * 1000,
    )
    if ruled_out or failed_rows:
        # in row order: a scan and a filter keep it, a join of repeated keys may not
        order = f" ORDER BY s.{ROW}" if any(r.dup_table for r in rules) else ""
        accepted = (f"SELECT s.* EXCLUDE ({ROW}) FROM {source} WHERE NOT ({excl}) AND NOT "
                    f"({' OR '.join(f'COALESCE({_qualified(r)}, FALSE)' for r in rules) or 'FALSE'}){order}")
    else:  # the counts say no row breaks a rule or is ruled out: every row is accepted, no predicate to run again
        accepted = f"SELECT * EXCLUDE ({ROW}) FROM src"
    batch.con.execute(f"CREATE OR REPLACE TEMP VIEW __pw_accepted AS {accepted}")
    return report


def _qualify_sql(sql: str) -> str:
    return _qualify_columns(sql)


def _stream(batch: PushdownBatch, sql: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The rows of `sql` (which has `__pw_row`) in row order, `chunk_rows` at a time, each chunk fully fetched: the
    caller may write through the same connection between chunks (the warehouse's own, see `open_batch`). The rows
    are kept in a temporary table (DuckDB spills it past its memory limit) and paged by row number, which its
    zone maps make a skip, not a scan."""
    batch.con.execute(f"CREATE OR REPLACE TEMP TABLE __pw_page AS {sql} ORDER BY {ROW}")
    try:
        last = -1
        while True:
            page = batch.con.sql(f"SELECT * FROM __pw_page WHERE {ROW} > {last} ORDER BY {ROW} "
                                 f"LIMIT {int(chunk_rows)}").to_arrow_table()
            if not page.num_rows:
                return
            chunk = page.to_pandas()
            last = int(chunk[ROW].iloc[-1])
            yield chunk
    finally:
        batch.con.execute("DROP TABLE IF EXISTS __pw_page")


def _quarantine_frame(chunk: pd.DataFrame, reasons: Any, columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    from pipewarden.tools.checks import rows_as_json

    return pd.DataFrame({"row_number": chunk[ROW].astype("int64").to_numpy(), "reason": reasons,
                         "row_json": rows_as_json(chunk[columns])})


def accepted_chunks(batch: PushdownBatch, contract: Contract, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
    """The rows the last `run_pushdown` accepted, contract columns in contract order, in Arrow chunks."""
    cols = ", ".join(_q(c) for c in contract.names if c in batch.types)
    yield from batch.con.sql(f"SELECT {cols} FROM __pw_accepted").to_arrow_reader(chunk_rows)


def accepted_select(batch: PushdownBatch, contract: Contract) -> str:
    """A SELECT over the accepted rows with each contract column cast to its warehouse type (as
    `tools.mapping.conform_to_contract` casts them), for an `INSERT ... SELECT` in the same DuckDB."""
    def cast(name: str, to: str) -> str:
        same = _base(batch.types.get(name, "")) == to.upper()  # already the warehouse type: no cast to run
        return _q(name) if same else f"TRY_CAST({_q(name)} AS {to}) AS {_q(name)}"

    return "SELECT " + ", ".join(cast(c.name, LANDED_DUCKDB_TYPES[c.type]) for c in contract.columns) + " FROM __pw_accepted"


def check_file_pushdown(path: str | Path, contract: Contract, *, say: Progress | None = None) -> PushdownReport:
    """The counts `pipewarden check` reports, computed in DuckDB over the file (no rows are read into pandas)."""
    with open_batch(path) as batch:
        return run_pushdown(batch, contract, say=say)
