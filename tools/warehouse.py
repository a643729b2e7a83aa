"""The warehouse, whatever it runs on: one object over a DuckDB file (the `duckdb` module) or any SQLAlchemy URL
(PostgreSQL through psycopg, ...), opened by `settings.warehouse` for reading or writing.

`connect(url=None, *, read_only=False)` yields a `Warehouse` with the few operations the stages need: `quote`,
`has_table`, `columns`, `write_frame`, `read_frame`, `execute`, `transaction` (the block's statements commit
together or not at all, on every engine), `create_table_as` (materialise a SELECT and say what it cost),
`transpile` (SQL from another dialect into the warehouse's). A locked DuckDB file or an unreachable server
raises `WarehouseUnavailable` (a ConfigError) naming the URL without its password and what to do.

Nothing is held open between calls to `connect`: DuckDB lets one process write a file at a time, so a stage opens
it, works and closes it. The one exception is `one_connection()`: inside its block (in this thread), every
`connect` to the same URL gets the block's open warehouse instead of opening its own (read-only requests included:
DuckDB cannot open a file twice in one process with different settings anyway), and it is closed when the block
ends. The guard checks one batch in such a block: opening and closing a DuckDB file costs 10 to 25 ms, eight times
per guard before.

`connect_locked(url=None, *, timeout_s=LOCKED_TIMEOUT_S)` is for SQL a model wrote or a person edited (dry-runs,
rewrite proofs): a connection that cannot reach files or settings whatever the SQL says. DuckDB: the file opened
read-only with `enable_external_access=false` and `lock_configuration=true` in the connect-time config (no file,
URL, ATTACH, COPY, INSTALL; no SET can undo it); `locked_duckdb(path)` is the same as a raw DuckDB connection.
PostgreSQL: every transaction READ ONLY (`default_transaction_read_only`, and SQLAlchemy's `postgresql_readonly`)
with a `statement_timeout` (DuckDB: the block's statements are interrupted once it has run `timeout_s`); what PostgreSQL still lets a role read (catalogs, `pg_read_file` for a superuser) is
refused by `tools.sql_guard` before the SQL gets here, so give the warehouse URL a role without superuser rights.
Other engines are refused: there is no locked mode to rely on.

Every opening of the user's warehouse goes through this module: `connect` (reading or writing; `wait_s` waits
that long for a DuckDB file another process holds, else it fails at once), `one_connection`, `connect_locked` and
`locked_duckdb`; whatever fails, the error is `WarehouseUnavailable` with the URL and what to do. Identifiers are
quoted by one function, `quote_ident` (sqlglot's quoting for the dialect), and `duckdb_has_table` is the one
table-exists check on a raw DuckDB connection (`Warehouse.has_table` uses it).

`scratch_duckdb(*, locked, **config)` is the one other way to get a DuckDB connection: a new in-memory database that
is never the user's warehouse (a SQL patch's proof sandbox, quarantine predicates over a registered frame, the
pushdown engine that spills to a temporary folder). It lives here so the locked settings (`LOCKED_CONFIG`: no files,
URLs or settings) are written once, for it and for `locked_duckdb`; it opens no file, so it needs no lock, no wait
and no `WarehouseUnavailable`.

Public names: `Warehouse`, `WarehouseUnavailable`, `WarehouseQueryError`, `TableBuild`, `connect`,
`one_connection`, `connect_locked`, `locked_duckdb`, `scratch_duckdb`, `LOCKED_CONFIG`, `LOCKED_TIMEOUT_S`,
`LOCK_POLL_S`, `quote_ident`, `safe_url`, `duckdb_has_table`, `postgres_profile`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipewarden.errors import ConfigError, PipewardenError
from pipewarden.settings import get_settings

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import sqlalchemy as sa

    from pipewarden.tools.cost import CostProfile

DUCKDB_PREFIX = "duckdb:///"
PG_BLOCK_BYTES = 8192
"""PostgreSQL's page size: EXPLAIN's buffer counts are in pages."""
LOCKED_TIMEOUT_S = 60.0
"""A locked connection's time limit: per statement on PostgreSQL (`statement_timeout`); for the whole block on
DuckDB, which has no statement timeout (statements still running after it are interrupted)."""
LOCK_POLL_S = 0.25
"""How often `connect(..., wait_s=...)` tries a DuckDB file another process holds again."""
LOCKED_CONFIG: Mapping[str, Any] = {"enable_external_access": False, "lock_configuration": True}
"""DuckDB's connect-time settings for SQL nobody vetted: no file, URL, ATTACH, COPY or INSTALL, and no SET, RESET
or PRAGMA can undo that (`locked_duckdb`, `scratch_duckdb(locked=True)`)."""
_FRAME = "_pw_frame"


class WarehouseUnavailable(ConfigError):
    """The warehouse cannot be opened: the DuckDB file is locked by another process, or the server is unreachable."""


class WarehouseQueryError(PipewardenError):
    """A statement failed in the warehouse; `db_message` is the database's own message, the cause its exception."""

    def __init__(self, message: str, *, db_message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.db_message = db_message


@dataclass(frozen=True)
class TableBuild:
    """A SELECT materialised as a table: the rows it wrote, the wall time, and the engine's cost profile if any."""

    rows_out: int
    elapsed_ms: float
    profile: CostProfile | None


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    if url.startswith(DUCKDB_PREFIX):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL: show only what follows the credentials
        return url.split("@")[-1]


@lru_cache(maxsize=4096)
def quote_ident(name: str, dialect: str = "duckdb", *, always: bool = True) -> str:
    """A table or column name as an identifier of `dialect` (a sqlglot dialect: duckdb, postgres, ...), quoted by
    sqlglot: `"a""b"` on DuckDB and PostgreSQL, `a"b` in backticks on MySQL. `always=False` leaves it bare when
    bare reads the same (a lowercase identifier that is no keyword), for SQL a person reads. An unknown dialect
    quotes as standard SQL does (double quotes)."""
    from sqlglot import exp

    bare = not always and name.isidentifier() and name.lower() == name
    ident = exp.to_identifier(name, quoted=not bare)
    try:
        return ident.sql(dialect=dialect)
    except ValueError:  # not a dialect sqlglot knows
        return ident.sql()


def duckdb_has_table(con: Any, name: str) -> bool:
    """Whether a DuckDB connection sees a table of this name (any schema)."""
    return bool(con.execute("SELECT COUNT(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


def _sqlglot_dialect(url: str) -> str:
    if url.startswith("duckdb:"):
        return "duckdb"
    from sqlalchemy.engine import make_url

    backend = make_url(url).get_backend_name()
    return {"postgresql": "postgres", "mssql": "tsql"}.get(backend, backend)


class Warehouse:
    """An open warehouse. Use `connect()`; `Warehouse.over_duckdb(con)` wraps a DuckDB connection you already hold."""

    def __init__(self, url: str, *, read_only: bool, duckdb_con: duckdb.DuckDBPyConnection | None = None,
                 engine: sa.Engine | None = None) -> None:
        self.url = url
        self.read_only = read_only
        self.dialect = _sqlglot_dialect(url)
        """The sqlglot dialect of the warehouse: duckdb, postgres, ..."""
        self._con = duckdb_con
        self._engine = engine
        self._tx: sa.Connection | None = None
        """The SQLAlchemy connection of the open `transaction()` block, if any."""
        self._in_tx = False

    @classmethod
    def over_duckdb(cls, con: duckdb.DuckDBPyConnection, url: str = "duckdb:///:memory:") -> Warehouse:
        """A Warehouse over an open DuckDB connection (its transactions stay the caller's)."""
        return cls(url, read_only=False, duckdb_con=con)

    # ------------------------------------------------------------------ identity
    @property
    def is_duckdb(self) -> bool:
        return self._con is not None

    @property
    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """The raw DuckDB connection (DuckDB warehouses only)."""
        if self._con is None:
            raise ConfigError(f"the warehouse {safe_url(self.url)} is not a DuckDB file",
                              hint="this step runs on DuckDB only; use a duckdb:/// warehouse URL")
        return self._con

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (server warehouses only)."""
        if self._engine is None:
            raise ConfigError(f"the warehouse {safe_url(self.url)} is a DuckDB file, not a SQLAlchemy engine")
        return self._engine

    def quote(self, identifier: str) -> str:
        """A table or column name quoted for this warehouse's dialect (`quote_ident`)."""
        return quote_ident(identifier, self.dialect)

    def transpile(self, sql: str, read: str = "duckdb") -> str:
        """SQL written in dialect `read`, in the warehouse's dialect (unchanged when they are the same)."""
        if read == self.dialect:
            return sql
        import sqlglot

        return ";\n".join(sqlglot.transpile(sql, read=read, write=self.dialect))

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def transaction(self) -> Iterator[Warehouse]:
        """Run the block's statements (`execute`, `write_frame`, ...) in one transaction: COMMIT when the block ends
        normally, ROLLBACK (and re-raise) when it raises. Inside an open block, joins it."""
        if self._in_tx:
            yield self
            return
        if self._con is not None:
            self._con.begin()
            self._in_tx = True
            try:
                yield self
            except BaseException:
                self._in_tx = False
                self._con.rollback()
                raise
            self._in_tx = False
            self._con.commit()
            return
        with self.engine.begin() as conn:
            self._tx, self._in_tx = conn, True
            try:
                yield self
            finally:
                self._tx, self._in_tx = None, False

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """The open transaction's connection, else a new one in its own transaction (server warehouses)."""
        if self._tx is not None:
            yield self._tx
            return
        with self.engine.begin() as conn:
            yield conn

    # ------------------------------------------------------------------ reading
    def has_table(self, name: str) -> bool:
        if self._con is not None:
            return duckdb_has_table(self._con, name)
        import sqlalchemy as sa

        with self._begin() as conn:
            return sa.inspect(conn).has_table(name)

    def tables(self) -> list[str]:
        """The tables and views of the default schema (DuckDB `main`, the server's default), temporary ones left
        out: what the project's own SQL may read."""
        if self._con is not None:
            return [r[0] for r in self._con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND schema_name = 'main' UNION "
                "SELECT view_name FROM duckdb_views() WHERE NOT temporary AND NOT internal AND schema_name = 'main' "
                "ORDER BY 1").fetchall()]
        import sqlalchemy as sa

        with self._begin() as conn:
            inspector = sa.inspect(conn)
            return sorted({*inspector.get_table_names(), *inspector.get_view_names()})

    def columns(self, table: str) -> list[str]:
        """The table's column names in order (empty when there is no such table)."""
        if self._con is not None:
            return [r[0] for r in self._con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]
            ).fetchall()]
        import sqlalchemy as sa

        with self._begin() as conn:
            inspector = sa.inspect(conn)
            return [c["name"] for c in inspector.get_columns(table)] if inspector.has_table(table) else []

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement (`?` placeholders for `params`) in its own transaction (or the open `transaction()`
        block's); the rows it returns, if any."""
        if self._con is not None:
            cur = self._con.execute(sql, list(params) if params is not None else None)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        with self._begin() as conn:
            res = _run(conn, sql, params)
            return [tuple(r) for r in res.fetchall()] if res.returns_rows else []

    def read_frame(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """A query's rows as a DataFrame (`?` placeholders for `params`)."""
        import pandas as pd

        if self._con is not None:
            return self._con.execute(sql, list(params) if params is not None else None).df()
        with self._begin() as conn:
            res = _run(conn, sql, params)
            return pd.DataFrame(res.fetchall(), columns=list(res.keys()))

    # ------------------------------------------------------------------ writing
    def write_frame(self, table: str, df: pd.DataFrame, *, delete_where: Mapping[str, Any] | None = None,
                    replace: bool = False) -> int:
        """Append `df`'s rows to `table` (made from the frame's columns when missing) in one transaction (or the
        open `transaction()` block's); return the rows written.

        `delete_where` ({column: value}, all equal) first deletes the matching rows, so re-writing one load id
        replaces its rows instead of duplicating them. `replace=True` replaces the whole table.
        """
        q = self.quote(table)
        where = " AND ".join(f"{self.quote(c)} = ?" for c in (delete_where or {}))
        values = list((delete_where or {}).values())
        if self._con is not None:
            con = self._con
            con.register(_FRAME, df)
            try:
                with self.transaction():
                    if replace or not duckdb_has_table(con, table):
                        con.execute(f"CREATE OR REPLACE TABLE {q} AS SELECT * FROM {_FRAME}")
                    else:
                        if where:
                            con.execute(f"DELETE FROM {q} WHERE {where}", values)
                        con.execute(f"INSERT INTO {q} BY NAME SELECT * FROM {_FRAME}")
            finally:
                con.unregister(_FRAME)
            return len(df)
        import sqlalchemy as sa

        with self._begin() as conn:
            exists = sa.inspect(conn).has_table(table)
            if exists and where and not replace:
                text, binds = _named_params(f"DELETE FROM {q} WHERE {where}", values)
                conn.execute(sa.text(text), binds)
            df.to_sql(table, conn, if_exists="replace" if replace else "append", index=False, chunksize=10_000)
        return len(df)

    def create_table_as(self, table: str, select: str, *, profile: bool = True) -> TableBuild:
        """Materialise `select` (in the warehouse's dialect) as `table`, replacing it atomically: a failure leaves
        the old table. DuckDB: CREATE OR REPLACE TABLE AS, cost from its profiler. PostgreSQL: DROP + CREATE TABLE
        AS in one transaction, cost from EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON) of the CREATE itself (it
        runs once). Other engines: DROP + CREATE, rows counted, no profile. A failure raises WarehouseQueryError."""
        q = self.quote(table)
        select = select.strip().rstrip(";").strip()
        t0 = time.perf_counter()
        if self._con is not None:
            return self._duckdb_create(q, select, profile, t0)
        import sqlalchemy as sa

        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q}")
                if self.dialect == "postgres" and profile:
                    plan = conn.exec_driver_sql(
                        f"EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON) CREATE TABLE {q} AS\n{select}").scalar()
                    elapsed = round((time.perf_counter() - t0) * 1000, 3)
                    rows, prof = postgres_profile(plan)
                    return TableBuild(rows_out=rows, elapsed_ms=elapsed, profile=prof)
                res = conn.exec_driver_sql(f"CREATE TABLE {q} AS\n{select}")
                rows = res.rowcount if res.rowcount is not None and res.rowcount >= 0 else None
                if rows is None:
                    rows = int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {q}").scalar() or 0)
        except sa.exc.DBAPIError as exc:
            msg = str(exc.orig).strip() if exc.orig is not None else str(exc)
            raise WarehouseQueryError(f"failed in {self.dialect}: {msg}", db_message=msg) from exc
        return TableBuild(rows_out=int(rows), elapsed_ms=round((time.perf_counter() - t0) * 1000, 3), profile=None)

    def _duckdb_create(self, q: str, select: str, profile: bool, t0: float) -> TableBuild:
        import duckdb

        con = self.duckdb
        if profile:
            con.execute("SET profiling_coverage = 'ALL'")
            con.execute("SET enable_profiling = 'no_output'")
        try:
            rows = con.execute(f"CREATE OR REPLACE TABLE {q} AS\n{select}\n").fetchall()
            elapsed = round((time.perf_counter() - t0) * 1000, 3)
            prof = None
            if profile:
                from pipewarden.tools.cost import last_profile

                prof = last_profile(con)
        except duckdb.Error as exc:
            raise WarehouseQueryError(f"failed in DuckDB: {exc}", db_message=str(exc)) from exc
        finally:
            if profile:  # fails only in a transaction the error aborted; the caller rolls that back
                with suppress(duckdb.Error):
                    con.execute("PRAGMA disable_profiling")
        return TableBuild(rows_out=int(rows[0][0]) if rows else 0, elapsed_ms=elapsed, profile=prof)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
        if self._engine is not None:
            self._engine.dispose()


def _run(conn: sa.Connection, sql: str, params: Sequence[Any] | None) -> sa.CursorResult[Any]:
    """One statement on a SQLAlchemy connection, with `?` placeholders bound to `params`."""
    if params is None:
        return conn.exec_driver_sql(sql)
    import sqlalchemy as sa

    text, binds = _named_params(sql, params)
    return conn.execute(sa.text(text), binds)


def _named_params(sql: str, params: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`?` placeholders outside quotes as SQLAlchemy `:p0, :p1, ...` binds (the driver's paramstyle follows)."""
    out: list[str] = []
    quote: str | None = None
    n = 0
    for ch in sql:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            out.append(f":p{n}")
            n += 1
            continue
        out.append(ch)
    if n != len(params):
        raise ValueError(f"{n} placeholders for {len(params)} parameters")
    return "".join(out), {f"p{i}": v for i, v in enumerate(params)}


def _open_duckdb(url: str, read_only: bool, wait_s: float = 0.0) -> Warehouse:
    import duckdb

    target = url.removeprefix(DUCKDB_PREFIX)
    if target != ":memory:":
        path = Path(target)
        if read_only and not path.exists():
            raise WarehouseUnavailable(f"the warehouse {url} does not exist yet",
                                       hint="run the pipeline on a batch (pipewarden run) or `pipewarden build` first")
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = _now() + wait_s
    while True:
        try:
            con = duckdb.connect(target, read_only=read_only)
            break
        except duckdb.Error as exc:
            locked = "lock" in str(exc).lower()
            if locked and _now() < deadline:  # another process writes it for a few seconds: try again
                _pause(LOCK_POLL_S)
                continue
            raise _duckdb_unavailable(url, exc, locked, wait_s) from exc
    return Warehouse(url, read_only=read_only, duckdb_con=con)


def _now() -> float:
    """The clock the lock wait reads (a test replaces it, with `_pause`, to wait without waiting)."""
    return time.monotonic()


def _pause(seconds: float) -> None:
    """Wait before trying a held DuckDB file again (the hook where a test lets the other process go)."""
    time.sleep(seconds)


def _duckdb_unavailable(url: str, exc: Exception, locked: bool, wait_s: float) -> WarehouseUnavailable:
    waited = f" (waited {wait_s:g} s)" if locked and wait_s > 0 else ""
    return WarehouseUnavailable(
        f"the warehouse {url} is {'locked by another process' if locked else 'cannot be opened'}{waited}: {exc}",
        hint="wait for the other pipewarden command or pipeline stage using it to finish (or close the program "
        "holding it open), then run this again" if locked else
        "check the file is a DuckDB database you may write, or point PIPEWARDEN_WAREHOUSE_URL elsewhere",
    )


def locked_duckdb(path: str | Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB file opened read-only that cannot reach files or settings: `enable_external_access=false` (no file,
    URL, ATTACH, COPY or INSTALL) and `lock_configuration=true`, both in the connect-time config, so no SET, RESET
    or PRAGMA in the SQL it runs can undo either. DuckDB refuses to open a file already open in this process with
    another configuration, so the lock cannot be shared with an unlocked connection either. A missing or locked
    file raises WarehouseUnavailable. (`tools.cost.measure` profiles through EXPLAIN ANALYZE: no setting needed.)"""
    import duckdb

    target = str(path)
    if target != ":memory:" and not Path(target).exists():
        raise WarehouseUnavailable(f"the warehouse {DUCKDB_PREFIX}{target} does not exist yet",
                                   hint="run the pipeline on a batch (pipewarden run) or `pipewarden build` first")
    try:
        return duckdb.connect(target, read_only=target != ":memory:", config=dict(LOCKED_CONFIG))
    except duckdb.Error as exc:
        raise WarehouseUnavailable(
            f"the warehouse {DUCKDB_PREFIX}{target} cannot be opened read-only and locked: {exc}",
            hint="a pipeline run or another command may hold it open; try again when it has finished") from exc


def scratch_duckdb(*, locked: bool, **config: Any) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB that is never the user's warehouse (see the module docstring); the caller closes it.

    `locked=True` adds `LOCKED_CONFIG` (no files, URLs or settings): for SQL over frames registered into it.
    `locked=False` for work that must read a file or set its own session (the pushdown engine reads the batch file;
    a SQL patch's proof sets its time zone). `config` is DuckDB's connect-time config (`memory_limit`, ...)."""
    import duckdb

    return duckdb.connect(":memory:", config={**(LOCKED_CONFIG if locked else {}), **config})


@contextmanager
def _duckdb_deadline(con: duckdb.DuckDBPyConnection, seconds: float) -> Iterator[None]:
    """DuckDB has no statement timeout: once the block has run `seconds`, interrupt whatever it runs (checked every
    50 ms until the block ends), so a runaway query fails with DuckDB's INTERRUPT error instead of running on."""
    import threading

    done = threading.Event()

    def watch() -> None:
        if done.wait(seconds):
            return
        while not done.wait(0.05):
            con.interrupt()

    watcher = threading.Thread(target=watch, name="pw-duckdb-deadline", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


@contextmanager
def connect_locked(url: str | None = None, *, timeout_s: float = LOCKED_TIMEOUT_S) -> Iterator[Warehouse]:
    """Open the warehouse (default: `settings.warehouse`) for SQL a model wrote or a person edited: read-only, no
    files, no settings (see the module docstring); DuckDB or PostgreSQL only."""
    url = url or get_settings().warehouse
    if url.startswith(DUCKDB_PREFIX):
        wh = Warehouse(url, read_only=True, duckdb_con=locked_duckdb(url.removeprefix(DUCKDB_PREFIX)))
        try:
            with _duckdb_deadline(wh.duckdb, timeout_s):
                yield wh
        finally:
            wh.close()  # after the watcher has stopped: it never interrupts a closed connection
        return
    from sqlalchemy.engine import make_url

    if make_url(url).get_backend_name() != "postgresql":
        raise WarehouseUnavailable(
            f"the warehouse {safe_url(url)} has no locked read-only mode pipewarden knows, so edited or "
            "model-written SQL cannot run on it", hint="dry-runs run on a DuckDB or PostgreSQL warehouse")
    wh = _open_sqlalchemy(url, True, statement_timeout_s=timeout_s)
    try:
        yield wh
    finally:
        wh.close()


def _open_sqlalchemy(url: str, read_only: bool, *, statement_timeout_s: float | None = None) -> Warehouse:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.drivername == "postgresql":  # the bare name means psycopg2; this project ships psycopg (3)
        u = u.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {"connect_timeout": 5} if u.get_backend_name() == "postgresql" else {}
    if statement_timeout_s is not None and u.get_backend_name() == "postgresql":
        # server-side defaults for every session of this engine: read-only transactions, a time limit
        connect_args["options"] = (f"-c default_transaction_read_only=on "
                                   f"-c statement_timeout={int(statement_timeout_s * 1000)}")
    where = safe_url(url)
    try:
        engine = sa.create_engine(u, connect_args=connect_args, pool_pre_ping=True)
        if read_only and u.get_backend_name() == "postgresql":
            engine = engine.execution_options(postgresql_readonly=True)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except (sa.exc.NoSuchModuleError, ModuleNotFoundError) as exc:
        raise WarehouseUnavailable(f"no database driver for the warehouse {where}: {exc}",
                                   hint="install the driver its URL names (PostgreSQL: postgresql+psycopg://)") from exc
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise WarehouseUnavailable(
            f"cannot reach the warehouse {where}: {reason}",
            hint="start the database server or fix the URL (PIPEWARDEN_WAREHOUSE_URL, or [warehouse] url in "
            "pipewarden.toml), then run this again",
        ) from exc
    return Warehouse(url, read_only=read_only, engine=engine)


_SHARED: ContextVar[Warehouse | None] = ContextVar("pipewarden_one_connection", default=None)


@contextmanager
def connect(url: str | None = None, *, read_only: bool = False, wait_s: float = 0.0) -> Iterator[Warehouse]:
    """Open the warehouse (default: `settings.warehouse`) for the block, and close it after; inside a
    `one_connection()` block on the same URL, that block's open warehouse (left open).

    A DuckDB file another process holds is tried again every `LOCK_POLL_S` for up to `wait_s` seconds (default: fail
    at once); a server gets its own connect timeout. Either way a warehouse that does not open raises
    `WarehouseUnavailable`, naming it (without its password) and what to do."""
    url = url or get_settings().warehouse
    shared = _SHARED.get()
    if shared is not None and shared.url == url:
        yield shared
        return
    wh = _open_duckdb(url, read_only, wait_s) if url.startswith(DUCKDB_PREFIX) else _open_sqlalchemy(url, read_only)
    try:
        yield wh
    finally:
        wh.close()


@contextmanager
def one_connection(url: str | None = None) -> Iterator[Warehouse]:
    """Open the warehouse (default: `settings.warehouse`) once for the block: every `connect` to it inside the
    block, in this thread, reuses this connection, and it is closed when the block ends. Transactions are still
    each `transaction()` block's own (a statement outside one commits at once), so what is durable is unchanged.
    Nested, it joins the outer block."""
    url = url or get_settings().warehouse
    shared = _SHARED.get()
    if shared is not None and shared.url == url:
        yield shared
        return
    with connect(url) as wh:
        token = _SHARED.set(wh)
        try:
            yield wh
        finally:
            _SHARED.reset(token)


# --------------------------------------------------------------------------- PostgreSQL plans
def _pg_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []) or []:
        yield from _pg_nodes(child)


def postgres_profile(plan: Any) -> tuple[int, CostProfile]:
    """Rows out and a CostProfile from PostgreSQL's `EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON)` output.

    rows scanned: rows each scan read (returned + removed by its filter, times loops); bytes scanned: rows times the
    planner's row width for each scan; bytes read: shared buffers hit and read, in pages of 8 KiB; CPU: the
    execution time.
    """
    import json

    from pipewarden.tools.cost import CostProfile, JoinStat, ScanStat

    doc = json.loads(plan) if isinstance(plan, str) else plan
    top = doc[0] if isinstance(doc, list) else doc
    root = top.get("Plan", {})
    scans: list[ScanStat] = []
    joins: list[JoinStat] = []
    ops: list[str] = []
    processed = 0
    for node in _pg_nodes(root):
        kind = str(node.get("Node Type", ""))
        loops = int(node.get("Actual Loops") or 1)
        rows = int(node.get("Actual Rows") or 0) * loops
        ops.append(kind)
        processed += rows
        if "Relation Name" in node:
            read = rows + int(node.get("Rows Removed by Filter") or 0) * loops
            scans.append(ScanStat(
                table=str(node["Relation Name"]), rows_scanned=read,
                bytes_scanned=rows * int(node.get("Plan Width") or 0),
                columns=[str(c).split(".")[-1] for c in node.get("Output", []) or []],
                filters=[str(node[k]) for k in ("Filter", "Index Cond") if node.get(k)],
            ))
        elif "Join" in kind or kind == "Nested Loop":
            kids = node.get("Plans", []) or []
            side = [int(k.get("Actual Rows") or 0) * int(k.get("Actual Loops") or 1) for k in kids]
            joins.append(JoinStat(operator=kind, join_type=str(node.get("Join Type", "")),
                                  condition=str(node.get("Hash Cond") or node.get("Merge Cond")
                                                or node.get("Join Filter") or ""),
                                  left_rows=side[0] if side else 0, right_rows=side[1] if len(side) > 1 else 0,
                                  rows_out=rows))
    pages = int(root.get("Shared Hit Blocks") or 0) + int(root.get("Shared Read Blocks") or 0)
    exec_ms = top.get("Execution Time")
    rows_out = int(root.get("Actual Rows") or 0) * int(root.get("Actual Loops") or 1)
    return rows_out, CostProfile(
        cpu_ms=round(float(exec_ms), 3) if exec_ms is not None else None,
        rows_scanned=sum(s.rows_scanned for s in scans), bytes_scanned=sum(s.bytes_scanned for s in scans),
        bytes_read=pages * PG_BLOCK_BYTES, rows_processed=processed, scans=scans, joins=joins, operators=ops,
    )
