"""Group commit on a SQLite file: writes that arrive during a commit share the next one, each still all or nothing,
and none returns before the commit that holds it."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from pipewarden import db
from pipewarden.store import StateStore

WRITERS = 6


def _commits(engine: sa.Engine) -> list[int]:
    seen: list[int] = []
    sa.event.listen(engine, "commit", lambda conn: seen.append(1))
    return seen


def _wait_for_queue(group: db.GroupCommit, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(group._queue) < n:  # the writers are queued behind the held commit (a condition, not a timing)
        assert time.monotonic() < deadline, "the writers never queued"
        time.sleep(0.01)


def test_writes_queued_during_a_commit_share_the_next_one() -> None:
    store = StateStore()
    group = db.group_commit(store.engine)
    assert group is not None
    commits = _commits(store.engine)
    release, holding = threading.Event(), threading.Event()

    def held(conn: sa.Connection) -> str:
        holding.set()
        release.wait(30)
        store._audit(conn, None, "held", "tester", {})
        return "first"

    results: dict[str, object] = {}
    first = threading.Thread(target=lambda: results.setdefault("first", group.run(held)))
    first.start()
    assert holding.wait(30)
    others = [threading.Thread(target=store.record, args=(f"w{i}", "tester", {})) for i in range(WRITERS)]
    for t in others:
        t.start()
    _wait_for_queue(group, WRITERS)
    release.set()
    for t in [first, *others]:
        t.join(30)
    assert results["first"] == "first"
    assert len(commits) == 2  # the held write's commit, then one for all six queued behind it
    report = store.verify_audit()
    assert report.ok and report.entries == 1 + WRITERS, report.problem


def test_a_failing_write_is_rolled_back_alone_and_raised_to_its_caller() -> None:
    store = StateStore()
    group = db.group_commit(store.engine)
    assert group is not None
    release, holding = threading.Event(), threading.Event()

    def held(conn: sa.Connection) -> None:
        holding.set()
        release.wait(30)

    def fails(conn: sa.Connection) -> None:
        store._audit(conn, None, "doomed", "tester", {})
        raise ValueError("refused after writing")

    errors: list[BaseException] = []

    def call_failing() -> None:
        try:
            group.run(fails)
        except ValueError as exc:
            errors.append(exc)

    first = threading.Thread(target=group.run, args=(held,))
    first.start()
    assert holding.wait(30)
    threads = [threading.Thread(target=store.record, args=("before", "tester", {})),
               threading.Thread(target=call_failing),
               threading.Thread(target=store.record, args=("after", "tester", {}))]
    for t in threads:
        t.start()
        _wait_for_queue(group, threads.index(t) + 1)  # queued in this order, all in the one next batch
    release.set()
    for t in [first, *threads]:
        t.join(30)
    assert [str(e) for e in errors] == ["refused after writing"]
    with store.engine.connect() as conn:
        actions = list(conn.execute(sa.select(db.audit_log.c.action).order_by(db.audit_log.c.seq)).scalars())
    assert actions == ["before", "after"]  # the doomed entry is gone, its neighbours in the same commit stay
    assert store.verify_audit().ok


def test_no_group_commit_for_postgresql_or_an_in_memory_database() -> None:
    memory = sa.create_engine("sqlite://")
    assert db.group_commit(memory) is None
    pg = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connected
    assert db.group_commit(pg) is None
