"""The state DB schema (SQLAlchemy Core): outbox, proposals, decisions, versions and the audit log.

SQLite by default, any SQLAlchemy URL by `PIPEWARDEN_DATABASE_URL`. On SQLite every transaction starts with
`BEGIN IMMEDIATE`, so writers from several processes serialize instead of failing half-way.
"""

from __future__ import annotations

from functools import lru_cache

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
    # pending -> claimed -> proposed | done | failed
    sa.Column("status", sa.String(16), nullable=False, default="pending", index=True),
    sa.Column("claimed_by", sa.String(128)),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

proposals = sa.Table(
    "proposals",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("event_id", sa.String(36), sa.ForeignKey("events.id"), nullable=False, unique=True),
    sa.Column("agent", sa.String(64), nullable=False),
    sa.Column("dataset", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("risk", sa.String(8), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
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


def _sqlite_immediate(engine: Engine) -> None:
    @sa_event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    @sa_event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@lru_cache(maxsize=8)
def make_engine(url: str) -> Engine:
    """One engine per URL per process, with the schema created if missing."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _sqlite_immediate(engine)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine
