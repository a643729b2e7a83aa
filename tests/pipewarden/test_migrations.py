"""Alembic migrations: they produce exactly `db.metadata`, keep data through an upgrade, and two processes
migrating one database at once do not race. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pipewarden import db
from pipewarden.store import StateStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it (not even alembic_version)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    from tests.conftest import POSTGRES_URL, _postgres_reachable

    why = _postgres_reachable(POSTGRES_URL)
    if why:
        pytest.skip(why)
    name = f"pw_mig_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    db.make_engine.cache_clear()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _plain_engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def test_migrations_produce_exactly_the_metadata(empty_url: str) -> None:
    engine = db.make_engine(empty_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    assert diff == []
    assert version == db.head_revision() == "0008"


def test_a_database_at_0001_upgrades_with_its_data(empty_url: str) -> None:
    engine = _plain_engine(empty_url)
    db.upgrade(engine, "0001")
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    pid, eid = str(uuid.uuid4()), str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO events (id, kind, dataset, payload, status, attempts, created_at) "
                             "VALUES (:e, 'schema_drift', 'flights', '{}', 'proposed', 1, :t)"), {"e": eid, "t": now})
        payload = json.dumps({"id": pid, "event_id": eid, "agent": "schema-drift", "dataset": "flights", "title": "t",
                              "diagnosis": "d", "change": {"kind": "no_change", "reason": "r"}, "thread_id": "x"})
        conn.execute(sa.text("INSERT INTO proposals (id, event_id, agent, dataset, status, risk, payload, created_at, "
                             "updated_at) VALUES (:id, :e, 'schema-drift', 'flights', 'rejected', 'medium', :p, :t, :t)"),
                     {"id": pid, "e": eid, "p": payload, "t": now})
        for i, actor in enumerate(["alice", "alice"]):  # re-opened and decided again by the same person
            conn.execute(sa.text("INSERT INTO decisions (id, proposal_id, verdict, actor, reason, via, decided_at) "
                                 "VALUES (:id, :pid, 'reject', :a, 'no', 'cli', :t)"),
                         {"id": str(uuid.uuid4()), "pid": pid, "a": actor, "t": now.replace(minute=i)})
    engine.dispose()

    store = StateStore(empty_url)  # make_engine: upgrade head
    p = store.get_proposal(pid)
    assert p.status.value == "rejected" and p.expires_at is None and p.round == 0
    assert [d.actor for d in store.decisions_for(pid)] == ["alice", "alice"]
    with store.engine.connect() as conn:
        seqs = conn.execute(sa.text("SELECT seq FROM decisions ORDER BY decided_at")).scalars().all()
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    assert seqs == [1, 2] and version == "0008"


def test_a_database_made_before_migrations_is_adopted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = _plain_engine(url)
    db.upgrade(engine, "0001")
    with engine.begin() as conn:  # what create_all made before there were migrations: no alembic_version
        conn.execute(sa.text("DROP TABLE alembic_version"))
    engine.dispose()
    store = StateStore(url)
    assert store.list_proposals() == []
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0008"


def test_two_processes_migrating_at_once_both_succeed(empty_url: str) -> None:
    code = ("import sys; from pipewarden.db import make_engine; import sqlalchemy as sa; "
            "e = make_engine(sys.argv[1]); c = e.connect(); "
            "print(c.execute(sa.text('SELECT version_num FROM alembic_version')).scalar_one())")
    procs = [subprocess.Popen([sys.executable, "-c", code, empty_url], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["0008", "0008"]
    with _plain_engine(empty_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
