"""`audit verify` notices what a hash chain alone cannot (issue 11): the newest entries removed, a proposal reset
with its decisions deleted, an anchor forged or rolled back. On SQLite and PostgreSQL (`state_url`)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from pipewarden import db
from pipewarden.audit import KEY_FILE, WITNESS_FILE, audit_key, key_id, reconcile
from pipewarden.models import ProposalStatus, Verdict
from pipewarden.store import StateStore
from tests.pipewarden.factories import pending_proposal


@contextmanager
def behind_the_store(store: StateStore) -> Iterator[sa.Connection]:
    """Someone with write access to the state DB (and DDL rights): the audit log's append-only triggers are off
    for one transaction."""
    with store.engine.begin() as conn:
        if db.is_postgres(conn):
            conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
            yield conn
            conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
        else:
            conn.execute(sa.text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            conn.execute(sa.text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
            yield conn


def history(store: StateStore) -> tuple[str, str]:
    """Two proposals: one approved by alice (then applying), one pending; returns their ids."""
    first = pending_proposal(store)
    store.decide(first.id, Verdict.approve, "alice")
    store.transition(first.id, ProposalStatus.applying, "supervisor")
    second = pending_proposal(store, title="flights: second")
    return str(first.id), str(second.id)


def seqs(store: StateStore) -> list[int]:
    return [e.seq for e in store.audit_entries()]


def test_an_untouched_log_verifies_and_the_anchor_names_its_last_entry(state_url: str) -> None:
    store = StateStore()
    history(store)
    report = store.verify_audit()
    assert report.ok, report.problems
    assert report.anchored_seq == seqs(store)[-1] and report.entries == len(seqs(store))
    assert report.problems == [] and report.notes == []


@pytest.mark.parametrize("n", [1, 3])
def test_deleting_the_newest_entries_fails_naming_what_is_missing(state_url: str, n: int) -> None:
    store = StateStore()
    history(store)
    all_seqs = seqs(store)
    assert store.verify_audit().ok  # the chain without the tail still links: only the anchor can tell
    with behind_the_store(store) as conn:
        conn.execute(sa.delete(db.audit_log).where(db.audit_log.c.seq.in_(all_seqs[-n:])))
    report = store.verify_audit()
    assert not report.ok
    plural = "entry is" if n == 1 else "entries are"
    assert (f"the newest {n} {plural} missing: the anchor says the log ends at entry {all_seqs[-1]}"
            in report.problems[0]), report.problems
    assert f"it ends at entry {all_seqs[-n - 1]} with {len(all_seqs) - n}" in report.problems[0]
    assert report.first_broken_seq == all_seqs[-1]


def test_an_append_after_a_truncation_does_not_launder_it(state_url: str) -> None:
    store = StateStore()
    history(store)
    last = seqs(store)[-1]
    with behind_the_store(store) as conn:
        conn.execute(sa.delete(db.audit_log).where(db.audit_log.c.seq == last))
    store.record("event_claimed", "supervisor", {"note": "a legitimate append after the tampering"})
    report = store.verify_audit()
    assert not report.ok
    assert any("an append found the chain's tip at" in p and f"the anchor ended at entry {last}" in p
               for p in report.problems), report.problems


def test_resetting_a_proposal_and_deleting_its_decisions_fails(state_url: str) -> None:
    store = StateStore()
    first, _ = history(store)
    with behind_the_store(store) as conn:
        conn.execute(sa.delete(db.decisions).where(db.decisions.c.proposal_id == first))
        conn.execute(sa.update(db.proposals).where(db.proposals.c.id == first).values(status="pending"))
    report = store.verify_audit()
    assert not report.ok
    assert any(f"proposal {first[:8]} is pending, but its audit trail ends at applying" in p
               for p in report.problems), report.problems
    assert any(f"proposal {first[:8]}'s decision by alice" in p and "missing from the decisions table" in p
               for p in report.problems), report.problems


def test_resetting_a_proposal_and_removing_its_newest_entries_fails(state_url: str) -> None:
    """The careful version: the status, the decisions and the entries that recorded them, all from the end."""
    store = StateStore()
    first = pending_proposal(store)
    store.decide(first.id, Verdict.approve, "alice")
    tail = [e.seq for e in store.audit_entries(str(first.id)) if e.action != "proposed"]
    with behind_the_store(store) as conn:
        conn.execute(sa.delete(db.decisions).where(db.decisions.c.proposal_id == str(first.id)))
        conn.execute(sa.update(db.proposals).where(db.proposals.c.id == str(first.id)).values(status="pending"))
        conn.execute(sa.delete(db.audit_log).where(db.audit_log.c.seq.in_(tail)))
    report = store.verify_audit()
    assert not report.ok and "the newest 1 entry is missing" in report.problems[0], report.problems


def test_a_decision_slipped_in_behind_the_store_is_named(state_url: str) -> None:
    store = StateStore()
    _, second = history(store)
    with store.engine.begin() as conn:
        conn.execute(db.decisions.insert().values(
            id="00000000-0000-0000-0000-00000000d0d0", proposal_id=second, verdict="approve", actor="mallory",
            reason="", via="cli", decided_at=sa.func.now(), round=0, seq=1))
    report = store.verify_audit()
    assert not report.ok
    assert report.problems == [f"proposal {second[:8]} has a decision by mallory (00000000) that no audit entry "
                               "records: it was written behind the store"]


def test_an_anchor_edited_without_the_key_fails(state_url: str) -> None:
    store = StateStore()
    history(store)
    all_seqs = seqs(store)
    with behind_the_store(store) as conn:
        prev = conn.execute(sa.select(db.audit_log.c.hash).where(db.audit_log.c.seq == all_seqs[-2])).scalar_one()
        conn.execute(sa.delete(db.audit_log).where(db.audit_log.c.seq == all_seqs[-1]))
        conn.execute(sa.update(db.audit_anchor).values(seq=all_seqs[-2], hash=prev,
                                                       entries=db.audit_anchor.c.entries - 1))
    report = store.verify_audit()
    assert not report.ok
    assert "the anchor's signature does not verify" in report.problems[0], report.problems


def test_a_rollback_to_an_older_copy_is_caught_by_a_home_that_verified_since(state_url: str) -> None:
    """Anchor and chain put back as they were (an old copy): consistent, signed, but older than this home's
    witness of the last verify."""
    store = StateStore()
    pending_proposal(store)
    with store.engine.connect() as conn:
        old_anchor = dict(conn.execute(sa.select(db.audit_anchor)).mappings().one())
    old_tip = seqs(store)[-1]
    store.record("event_claimed", "supervisor", {"n": 1})
    assert store.verify_audit().ok  # the witness moves to the newest entry
    witness = json.loads((store.home / WITNESS_FILE).read_text())
    assert witness["seq"] == seqs(store)[-1]
    with behind_the_store(store) as conn:
        conn.execute(sa.delete(db.audit_log).where(db.audit_log.c.seq > old_tip))
        conn.execute(sa.update(db.audit_anchor).values(**old_anchor))
    report = store.verify_audit()
    assert not report.ok
    assert report.problems == [f"this home verified the log up to entry {witness['seq']} "
                               f"({witness['hash'][:12]}...), which is no longer in it: the log was rolled back or "
                               "rewritten since"]


def test_a_missing_anchor_over_a_non_empty_log_fails_until_the_next_append(state_url: str) -> None:
    store = StateStore()
    history(store)
    with store.engine.begin() as conn:
        conn.execute(sa.delete(db.audit_anchor))
    report = store.verify_audit()
    assert not report.ok and "but no anchor" in report.problems[0]
    store.record("event_claimed", "supervisor", {})  # an upgraded log is anchored by its next append
    report = store.verify_audit()
    assert report.ok, report.problems
    assert report.notes and "were written before the log was anchored" in report.notes[0]


def test_the_key_lives_in_the_home_not_in_the_state_db(state_url: str) -> None:
    store = StateStore()
    pending_proposal(store)
    path = store.home / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = audit_key(store.home)
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(db.audit_anchor)).mappings().one()
    assert row["key_id"] == key_id(key) and key.decode() not in json.dumps({k: str(v) for k, v in row.items()})
    path.write_text("f" * 64 + "\n")  # another key: this home can no longer vouch for the anchor
    report = StateStore().verify_audit()
    assert not report.ok and "does not verify with this home's audit key" in report.problems[0]


def test_reconcile_on_plain_rows() -> None:
    """The state-vs-chain rule alone, without a database."""
    from datetime import UTC, datetime

    from pipewarden.audit import AuditEntry

    def entry(seq: int, pid: str, action: str, **detail: object) -> AuditEntry:
        return AuditEntry(seq=seq, at=datetime(2026, 1, 1, tzinfo=UTC), proposal_id=pid, action=action,
                          actor="alice", detail=dict(detail), prev_hash="p", hash=f"h{seq}")

    entries = [entry(1, "a" * 36, "proposed", status="pending"),
               entry(2, "a" * 36, "approved", decision_id="d1"), entry(3, "b" * 36, "proposed", status="pending")]
    assert reconcile(entries, {"a" * 36: "approved", "b" * 36: "pending"}, {"a" * 36: [("d1", "alice")]}) == []
    problems = reconcile(entries, {"a" * 36: "approved"}, {"a" * 36: [("d1", "alice")]})
    assert problems == ["proposal bbbbbbbb has audit entries (the last: entry 3) but no row: it was deleted"]


def test_audit_verify_prints_every_problem_and_exits_5(state_url: str, pw) -> None:  # type: ignore[no-untyped-def]
    store = StateStore()
    first, _ = history(store)
    assert pw("audit", "verify").code == 0
    last = seqs(store)[-1]
    with behind_the_store(store) as conn:
        conn.execute(sa.delete(db.audit_log).where(db.audit_log.c.seq == last))
        conn.execute(sa.delete(db.decisions).where(db.decisions.c.proposal_id == first))
    res = pw("audit", "verify")
    assert res.code == 5
    assert f"the audit log does not verify: broken at entry {last}" in res.out_text
    assert "- the newest 1 entry is missing" in res.out_text
    assert f"- proposal {first[:8]}'s decision by alice" in res.out_text
    assert "has no 'proposed' audit entry" in res.out_text  # the second proposal's only entry was the last
    assert f"- this home verified the log up to entry {last}" in res.out_text  # the witness of the first verify
    report = json.loads(pw("audit", "verify", "--json").out)
    assert report["ok"] is False and len(report["problems"]) == 4 and report["anchored_seq"] == last


def test_processes_making_the_key_at_once_agree_on_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    home = tmp_path / "fresh-home"
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: audit_key(home), range(32)))
    assert len(keys) == 1 and [p.name for p in home.iterdir()] == [KEY_FILE]
