"""The state store, on SQLite and on PostgreSQL (the Postgres half skips with a reason when none is reachable)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa

from pipewarden import db
from pipewarden.errors import Expired, InvalidTransition, NotApproved, UnknownNameError, UserError
from pipewarden.ids import utcnow
from pipewarden.models import ProposalStatus, Verdict
from pipewarden.store import StateStore
from pipewarden.tokens import hash_token
from tests.pipewarden.factories import drift_event, pending_proposal


def test_outbox_append_is_idempotent_and_claim_is_exclusive(state_url: str) -> None:
    store = StateStore()
    ev = drift_event()
    assert store.append_event(ev) is True
    assert store.append_event(ev) is False
    first = store.claim_events("w1")
    second = store.claim_events("w2")
    assert [e.id for e in first] == [ev.id]
    assert second == []


def test_concurrent_claims_hand_each_event_to_one_worker(state_url: str) -> None:
    store = StateStore()
    for _ in range(10):
        store.append_event(drift_event())
    got: dict[str, list] = {}

    def worker(name: str) -> None:
        got[name] = StateStore().claim_events(name, limit=100)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [e.id for evs in got.values() for e in evs]
    assert len(ids) == 10 and len(set(ids)) == 10


def test_stale_claims_are_reclaimed(state_url: str) -> None:
    store = StateStore()
    ev = drift_event()
    store.append_event(ev)
    store.claim_events("crashed-worker")
    assert store.claim_events("w2") == []
    assert [e.id for e in store.claim_events("w2", stale_after_s=0)] == [ev.id]


def test_create_proposal_is_idempotent_per_event(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    again = store.create_proposal(p.model_copy(update={"id": p.id.__class__(int=p.id.int + 1)}))
    assert again.id == p.id
    assert len(store.list_proposals()) == 1


def test_decide_records_decision_and_audits_it(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    d = store.decide(p.short_id, Verdict.approve, "alice")
    assert store.get_proposal(p.id).status == ProposalStatus.approved
    assert store.approved_decision(p.id) == d
    actions = [a.action for a in store.audit_entries(str(p.id))]
    assert actions == ["proposed", "approved"]


@pytest.mark.parametrize("actor", ["system", "agent:schema-drift", "Supervisor"])
def test_system_identities_can_never_decide(actor: str, state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    with pytest.raises(NotApproved):
        store.decide(p.id, Verdict.approve, actor)
    assert store.get_proposal(p.id).status == ProposalStatus.pending
    assert store.decisions_for(p.id) == []


def test_a_decided_proposal_cannot_be_decided_again_and_nothing_changes(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    store.decide(p.id, Verdict.reject, "alice", reason="wrong column")
    before = store.audit_entries()
    with pytest.raises(InvalidTransition):
        store.decide(p.id, Verdict.approve, "bob")
    assert store.audit_entries() == before
    assert len(store.decisions_for(p.id)) == 1


def test_two_approvers_at_once_leave_exactly_one_decision(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    errors: list[Exception] = []

    def approve(who: str) -> None:
        try:
            StateStore().decide(p.id, Verdict.approve, who)
        except InvalidTransition as exc:
            errors.append(exc)

    threads = [threading.Thread(target=approve, args=(f"person{i}",)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.decisions_for(p.id)) == 1
    assert len(errors) == 4
    assert store.verify_audit().ok


def test_reject_needs_a_reason(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    with pytest.raises(UserError, match="reason"):
        store.decide(p.id, Verdict.reject, "alice")


def test_unknown_and_ambiguous_ids_say_so(state_url: str) -> None:
    store = StateStore()
    with pytest.raises(UnknownNameError):
        store.get_proposal("ffffffff")


def test_versions_activate_once_per_proposal_and_roll_back(state_url: str) -> None:
    store = StateStore()
    p1 = pending_proposal(store)
    v1 = store.activate_new_version("mapping:flights", {"renames": {"a": "b"}}, p1.id, "supervisor")
    assert store.activate_new_version("mapping:flights", {"renames": {"x": "y"}}, p1.id, "supervisor") == v1
    p2 = pending_proposal(store)
    v2 = store.activate_new_version("mapping:flights", {"renames": {"c": "d"}}, p2.id, "supervisor")
    assert (v1.number, v2.number) == (1, 2)
    assert store.active_version("mapping:flights").number == 2
    restored = store.rollback_version("mapping:flights", p2.id, "supervisor")
    assert restored is not None and restored.number == 1
    assert store.active_version("mapping:flights").number == 1


@contextmanager
def tampering(store: StateStore) -> Iterator[sa.Connection]:
    """An attacker with DDL rights: the append-only triggers switched off for one transaction, then back on."""
    with store.engine.begin() as conn:
        if db.is_postgres(conn):
            conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
            yield conn
            conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
        else:
            conn.execute(sa.text("DROP TRIGGER audit_log_no_update"))
            conn.execute(sa.text("DROP TRIGGER audit_log_no_delete"))
            yield conn


def test_the_audit_log_refuses_update_and_delete(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    store.decide(p.id, Verdict.approve, "alice")
    before = store.audit_entries()
    for statement in (sa.update(db.audit_log).values(actor="mallory"), sa.delete(db.audit_log)):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.engine.begin() as conn:
            conn.execute(statement)
    assert store.audit_entries() == before
    assert store.verify_audit().ok


def test_audit_chain_detects_an_edited_row(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    store.decide(p.id, Verdict.approve, "alice")
    assert store.verify_audit().ok
    with tampering(store) as conn:
        conn.execute(sa.update(db.audit_log).where(db.audit_log.c.action == "approved").values(actor="mallory"))
    report = store.verify_audit()
    assert not report.ok
    assert report.first_broken_seq == store.audit_entries()[1].seq
    assert "edited" in (report.problem or "")


def test_audit_chain_detects_a_removed_row(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    store.decide(p.id, Verdict.approve, "alice")
    store.record("note", "alice", {"x": 1})
    seqs = [e.seq for e in store.audit_entries()]
    with tampering(store) as conn:
        conn.execute(sa.delete(db.audit_log).where(db.audit_log.c.seq == seqs[1]))
    report = store.verify_audit()
    assert not report.ok and report.first_broken_seq == seqs[2]


def test_tokens_are_stored_hashed_and_can_be_revoked(state_url: str) -> None:
    store = StateStore()
    token = store.issue_token("alice")
    other = store.issue_token("bob")
    assert token != other and store.approver_for_token(token) == "alice"
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(db.api_tokens.c.sha256)).scalars().all()
    assert token not in stored and hash_token(token) in stored  # only the hash is kept
    assert store.approver_for_token(token + "x") is None and store.approver_for_token("") is None
    assert store.revoke_tokens("alice") == 1
    assert store.approver_for_token(token) is None
    assert store.approver_for_token(other) == "bob"
    assert [e.action for e in store.audit_entries()] == ["token_issued", "token_issued", "tokens_revoked"]


def test_slack_messages_and_threads_by_fault(state_url: str) -> None:
    store = StateStore()
    first, second = pending_proposal(store), pending_proposal(store)
    assert store.slack_message_for(first.id) is None and store.slack_thread_for("k") is None
    store.save_slack_message(first.id, "C1", "100.1", None, "k")
    store.save_slack_message(second.id, "C1", "100.2", "100.1", "k")
    assert store.slack_thread_for("k") == ("C1", "100.1")
    store.save_slack_message(first.id, "C1", "100.1", None, "k")  # an update, not a second row
    msg = store.slack_message_for(second.id)
    assert msg is not None and (msg.channel, msg.ts, msg.thread_ts) == ("C1", "100.2", "100.1")
    assert store.seen_slack_request("v0=abc") is False
    assert store.seen_slack_request("v0=abc") is True


def test_expire_stale_moves_only_overdue_open_proposals(state_url: str) -> None:
    store = StateStore()
    fresh = pending_proposal(store)
    assert fresh.expires_at is not None and fresh.expires_at > utcnow()  # stamped by the approval rule's TTL
    overdue = pending_proposal(store, expires_at=utcnow() - timedelta(minutes=1))
    before = store.audit_entries()
    with pytest.raises(Expired, match="expired at"):
        store.decide(overdue.id, Verdict.approve, "alice")
    assert store.audit_entries() == before and store.decisions_for(overdue.id) == []
    [expired] = store.expire_stale()
    assert expired.id == overdue.id and expired.status == ProposalStatus.expired
    assert store.get_proposal(fresh.id).status == ProposalStatus.pending
    assert store.audit_entries(str(overdue.id))[-1].action == "expired"
    assert store.expire_stale() == []
    with pytest.raises(Expired, match="has expired"):
        store.decide(overdue.id, Verdict.approve, "alice")
