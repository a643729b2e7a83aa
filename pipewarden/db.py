"""The state DB schema (SQLAlchemy Core): outbox, proposals, decisions, versions, the audit log, personal API
tokens, Slack messages, the idempotency keys of reported events, web sessions, failed sign-ins and proposal
occurrences; and the engine that brings a database to the schema with Alembic.

`metadata` is the single source of truth for the tables; the Alembic migrations in `pipewarden/migrations/`
produce exactly it (a test compares them). `make_engine(url)` runs `upgrade head` once per URL per process,
under a lock (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: `pg_advisory_xact_lock`), so two processes starting at once
do not race. A database created before migrations existed (tables, no `alembic_version`) is adopted at 0001.

SQLite by default, any SQLAlchemy URL by `PIPEWARDEN_DATABASE_URL`. On SQLite every transaction starts with
`BEGIN IMMEDIATE`, so writers from several processes serialize instead of failing half-way; within a process,
`group_commit(engine)` lets the writes that arrive during a commit share the next one (one fsync), each in its
own savepoint.

Public names: the tables, `metadata`, `make_engine`, `upgrade`, `MIGRATIONS_DIR`, `is_postgres`, `GroupCommit`,
`group_commit`.
"""

from __future__ import annotations

import contextvars
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine

metadata = sa.MetaData()

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False, index=True),
    sa.Column("dataset", sa.String(128), nullable=False),
    sa.Column("load_id", sa.String(64)),
    sa.Column("payload", sa.JSON, nullable=False),
    # pending -> claimed -> proposed | done | dead (out of attempts) | attached (a repeat of an open proposal's fault,
    # see proposal_occurrences); a failed attempt goes back to pending
    sa.Column("status", sa.String(16), nullable=False, default="pending", index=True),
    sa.Column("claimed_by", sa.String(128)),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # The claim's lease (owner: claimed_by), renewed by the worker's heartbeat; expired: the worker crashed.
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    # A failed attempt waits until then (exponential backoff) before it is claimed again.
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    # How the last attempt ended badly: `failed` (the agent's code raised) or `crashed` (the worker died).
    sa.Column("failure", sa.String(16)),
)

proposals = sa.Table(
    "proposals",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("event_id", sa.String(36), sa.ForeignKey("events.id"), nullable=False, unique=True),
    # The inbox filters by agent, dataset, risk and status and pages newest first: each has an index.
    sa.Column("agent", sa.String(64), nullable=False, index=True),
    sa.Column("dataset", sa.String(128), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("risk", sa.String(8), nullable=False, index=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # When the approval rule's TTL runs out (NULL: never); `inbox expire` closes open proposals past it.
    sa.Column("expires_at", sa.DateTime(timezone=True), index=True),
    # Who resumes its graph now, and until when (renewed by a heartbeat); one owner at a time.
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    # Set when a stored decision (or an expiry) asks a worker to resume the graph; cleared when it has.
    sa.Column("resume_requested_at", sa.DateTime(timezone=True), index=True),
    # Failed resumes so far, and when the next may start (exponential backoff).
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("proposal_id", sa.String(36), sa.ForeignKey("proposals.id"), nullable=False, index=True),
    sa.Column("verdict", sa.String(8), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("via", sa.String(16), nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    # The proposal's round (re-openings) and the decision's place in it: two writers that both read "no decision
    # yet" both write seq 1, and this unique index lets only one of them commit (the last line of defence).
    sa.Column("round", sa.Integer, nullable=False, server_default="0"),
    sa.Column("seq", sa.Integer, nullable=False, server_default="1"),
    sa.Index("uq_decision_seq", "proposal_id", "round", "seq", unique=True),
)

versions = sa.Table(
    "versions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("target", sa.String(128), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("content", sa.JSON, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=False),
    sa.Column("proposal_id", sa.String(36)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("target", "number", name="uq_version_number"),
    # One version per proposal and target: concurrent applies of one proposal cannot make two.
    sa.Index("uq_version_proposal", "target", "proposal_id", unique=True),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("proposal_id", sa.String(36), index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    # UNIQUE prev_hash keeps the chain linear: two writers racing on the same tip cannot both append.
    sa.Column("prev_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
)

audit_anchor = sa.Table(
    "audit_anchor",
    metadata,
    # The audit chain's head, kept apart from the chain and signed with a key in the home (never in this DB):
    # moved in the same transaction as every append; `audit verify` checks the chain still ends where it says.
    # `alarm` is set (and kept) by an append that found the chain's tip elsewhere. See pipewarden/audit.py.
    sa.Column("chain", sa.String(16), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("entries", sa.Integer, nullable=False),
    sa.Column("since_seq", sa.Integer, nullable=False),
    sa.Column("alarm", sa.Text),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("mac", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("approver", sa.String(128), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),  # only the hash of a token is kept
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)

slack_messages = sa.Table(
    "slack_messages",
    metadata,
    sa.Column("proposal_id", sa.String(36), sa.ForeignKey("proposals.id"), primary_key=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("ts", sa.String(32), nullable=False),
    sa.Column("thread_ts", sa.String(32)),
    sa.Column("fault_key", sa.String(256), nullable=False, index=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

slack_requests = sa.Table(
    "slack_requests",
    metadata,
    # Signatures of Slack requests already handled, so a replayed request is refused in every process.
    sa.Column("signature", sa.String(128), primary_key=True),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    # An event reported from outside a flow (POST /api/events, `pipewarden emit`) with an idempotency key: the same
    # reporter sending the same key again gets this event back instead of a second one. Keys are per reporter.
    sa.Column("reporter", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("event_id", sa.String(36), sa.ForeignKey("events.id"), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

web_sessions = sa.Table(
    "web_sessions",
    metadata,
    # A signed-in browser: the cookie carries a random key, this row its sha256. Believed only while not ended,
    # not expired, and its token not revoked (checked on every request: sign-out and revocation act at once).
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("approver", sa.String(128), nullable=False, index=True),
    sa.Column("token_id", sa.String(36), sa.ForeignKey("api_tokens.id"), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
)

sign_in_failures = sa.Table(
    "sign_in_failures",
    metadata,
    # Failed sign-ins per client address or account (`address:...`, `account:...`) in the current window, and
    # until when further attempts are refused (429 with Retry-After).
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("blocked_until", sa.DateTime(timezone=True)),
)

proposal_occurrences = sa.Table(
    "proposal_occurrences",
    metadata,
    # Every event that belongs to a fault's proposal (one fault, one proposal). The fault's first event (`origin`)
    # holds the signature in `open_signature` while its proposal is open: the unique index lets one event be the
    # origin of an open fault, so two workers never make two proposals for it. Repeats are `attached`.
    sa.Column("event_id", sa.String(36), sa.ForeignKey("events.id"), primary_key=True),
    sa.Column("proposal_id", sa.String(36), nullable=False, index=True),  # the origin's (maybe not stored yet)
    sa.Column("role", sa.String(8), nullable=False),  # origin | attached
    sa.Column("signature", sa.String(64), nullable=False, index=True),  # FaultSignature.key
    sa.Column("open_signature", sa.String(64)),  # = signature on an open fault's origin; NULL once decided
    sa.Column("label", sa.Text, nullable=False),  # FaultSignature.label, for people
    sa.Column("load_id", sa.String(64)),
    sa.Column("attached_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("uq_occurrence_open", "open_signature", unique=True),
)

# Connections kept per engine and opened beyond them under load. SQLite connections are free to keep; on PostgreSQL
# only SQLAlchemy's default 5 stay open (many processes share the server's max_connections), bursts up to 40.
SQLITE_POOL = {"pool_size": 20, "max_overflow": 20}
SERVER_POOL = {"pool_size": 5, "max_overflow": 35}
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 7_420_113  # pg_advisory_xact_lock key: one migrator at a time per database


def is_postgres(engine_or_conn: Engine | sa.Connection) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


def _sqlite_immediate(engine: Engine) -> None:
    @sa_event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        # WAL with synchronous=FULL: every commit is fsynced before it returns. NORMAL would skip that fsync and
        # survive a crash of any process, but a power loss or OS crash could then lose commits already acknowledged
        # (a decision a person was told is stored); a crash after the answer must lose nothing, so FULL it is,
        # whatever it costs per commit (an fsync, about 13 ms on this machine's disk).
        dbapi_conn.execute("PRAGMA synchronous=FULL")
        # Switching a new file to WAL needs a moment of exclusive access, and SQLite may answer "locked" at once
        # rather than wait when another process is creating the same database: try again briefly.
        for attempt in range(50):
            try:
                dbapi_conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.1)

    # Writers in one process queue on this lock before BEGIN IMMEDIATE, in arrival order, instead of all asking
    # SQLite at once and sleeping in its busy handler (1, 2, 5, 10... ms backoffs: under 50 concurrent requests that
    # made most of a decision's latency). Other processes still meet SQLite's own lock and busy_timeout. Reentrant,
    # so a nested write in the same thread meets SQLite's lock (and its clear timeout), not a silent deadlock.
    writers = threading.RLock()

    @sa_event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        # Readers (StateStore._read sets `pw_read`) take a plain deferred BEGIN: under WAL they see a snapshot and
        # never wait behind a writer. Everything else takes the write lock up front.
        if conn.get_execution_options().get("pw_read"):
            conn.exec_driver_sql("BEGIN")
            return
        writers.acquire()
        conn.info["pw_writer"] = conn.info.get("pw_writer", 0) + 1
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _end(conn)
            raise

    @sa_event.listens_for(engine, "commit")
    @sa_event.listens_for(engine, "rollback")
    def _end(conn):  # type: ignore[no-untyped-def]
        if conn.info.get("pw_writer"):
            conn.info["pw_writer"] -= 1
            writers.release()


def _alembic_config(connection: sa.Connection | None = None):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision` with Alembic, in one transaction, under a lock."""
    from alembic import command

    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE (see _sqlite_immediate) serializes migrators
        if is_postgres(conn):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        tables = set(sa.inspect(conn).get_table_names())
        if revision == "head" and "alembic_version" in tables:
            current = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
            if current == head_revision():
                return
        cfg = _alembic_config(conn)
        if "proposals" in tables and "alembic_version" not in tables:
            command.stamp(cfg, "0001")  # made by create_all before migrations existed: that schema is 0001
        command.upgrade(cfg, revision)


@lru_cache(maxsize=8)
def make_engine(url: str) -> Engine:
    """One engine per URL per process, with the database upgraded to the latest migration."""
    # A server answers from up to 40 worker threads (Starlette's pool): with SQLAlchemy's default 5 (+10) pooled
    # connections most of them queued for a connection, not for the database.
    if url.startswith("sqlite"):
        in_memory = url in ("sqlite://", "sqlite:///:memory:")  # one connection per thread: no pool to size
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                                  **({} if in_memory else SQLITE_POOL))
        _sqlite_immediate(engine)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True, **SERVER_POOL)
    upgrade(engine)
    return engine


# --------------------------------------------------------------------------- group commit (SQLite files)
class _Job:
    """One write waiting for a group commit: its function, the caller's context, and then its outcome."""

    __slots__ = ("fn", "context", "wake", "lead", "value", "error")

    def __init__(self, fn: Callable[[sa.Connection], Any]) -> None:
        self.fn = fn
        self.context = contextvars.copy_context()  # settings overridden in the caller hold inside its write too
        self.wake = threading.Event()
        self.lead = False
        self.value: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """Writes that arrive while a commit is under way share the next transaction, and its one fsync.

    On SQLite every commit is fsynced (synchronous=FULL) while the database's single write lock is held, so one
    transaction per write capped a server at one write per fsync (2.5 to 4.5 ms on issue 10's machine) whatever
    its CPU. Here the first writer leads: it takes every write queued so far, runs each in its own SAVEPOINT of one
    BEGIN IMMEDIATE transaction (a write that raises is rolled back to its savepoint alone and its caller gets the
    exception), commits once, and wakes the others; writes queued meanwhile are led by the first of them. No
    caller returns before the commit that holds its write has returned: stored durably before acknowledged, as
    before. Each write runs in its caller's context (`contextvars`) but on the leader's thread, so a write that
    starts another write inside itself is run on its own, as before grouping (see `_WITHIN`).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._busy = False

    def run(self, fn: Callable[[sa.Connection], Any]) -> Any:
        """Run `fn(conn)` in a transaction shared with concurrent writes; its result once that has committed."""
        if getattr(_WITHIN, "active", False):  # a write inside a write: its own transaction, as without grouping
            with self.engine.begin() as conn:
                return fn(conn)
        job = _Job(fn)
        with self._lock:
            self._queue.append(job)
            lead = not self._busy
            self._busy = True
        if not lead:
            job.wake.wait()
        if lead or job.lead:
            self._lead()
        if job.error is not None:
            raise job.error
        return job.value

    def _lead(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            self._commit(batch)
        finally:
            with self._lock:
                if self._queue:  # the next batch is led by the first write that waited for this one
                    self._queue[0].lead = True
                    self._queue[0].wake.set()
                else:
                    self._busy = False
            for job in batch:
                job.wake.set()

    def _commit(self, batch: list[_Job]) -> None:
        _WITHIN.active = True
        try:
            with self.engine.begin() as conn:
                for job in batch:
                    savepoint = conn.begin_nested()
                    try:
                        job.value = job.context.run(job.fn, conn)
                    except BaseException as exc:  # this write's failure is its caller's, not the batch's
                        savepoint.rollback()
                        job.error = exc
                    else:
                        savepoint.commit()
        except BaseException as exc:  # BEGIN or COMMIT failed: nothing of the batch is stored
            for job in batch:
                if job.error is None:
                    job.value, job.error = None, exc
        finally:
            _WITHIN.active = False


_WITHIN = threading.local()  # set on the thread running a group's transaction
# Per engine, per process (a forked child starts its own): the group commit of a SQLite file's engine.
_GROUPS: weakref.WeakKeyDictionary[Engine, tuple[int, GroupCommit]] = weakref.WeakKeyDictionary()
_GROUPS_LOCK = threading.Lock()


def group_commit(engine: Engine) -> GroupCommit | None:
    """The engine's GroupCommit when it is a SQLite file; None otherwise (PostgreSQL commits concurrent
    transactions itself; an in-memory SQLite database is one per thread)."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    with _GROUPS_LOCK:
        found = _GROUPS.get(engine)
        if found is None or found[0] != os.getpid():
            found = (os.getpid(), GroupCommit(engine))
            _GROUPS[engine] = found
        return found[1]
