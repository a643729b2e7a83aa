"""The state store, on SQLite and on PostgreSQL (the Postgres half skips with a reason when none is reachable)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa

from pipewarden import db
from pipewarden.errors import Expired, InvalidTransition, NotApproved, UnknownNameError, UserError
from pipewarden.ids import utcnow
from pipewarden.leases import LEASE_POLICY, LeaseHeld, worker_name
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


def _gone_local_owner() -> str:
    """A lease owner naming a process on this machine that has exited (as a killed worker leaves behind)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return worker_name(child.pid)


def test_a_live_claim_is_kept_and_an_expired_one_is_taken_over_as_crashed(state_url: str) -> None:
    store = StateStore()
    ev = drift_event()
    store.append_event(ev)
    [first] = store.claim("other-host:1")  # a worker elsewhere: only its lease's expiry frees the event
    assert first.attempts == 1 and first.crashed_owner is None
    assert store.claim("w2") == []
    later = utcnow() + timedelta(seconds=LEASE_POLICY.ttl_s + 1)
    [taken] = store.claim("w2", now=later)
    assert taken.event.id == ev.id and taken.attempts == 2 and taken.crashed_owner == "other-host:1"
    row = store.event_row(ev.id)
    assert row["claimed_by"] == "w2" and row["failure"] == "crashed" and "other-host:1 died" in row["error"]
    crashed = [e for e in store.audit_entries() if e.action == "event_crashed"]
    assert [(e.actor, e.detail["owner"]) for e in crashed] == [("w2", "other-host:1")]
    assert store.verify_audit().ok


def test_the_heartbeat_keeps_a_claim(state_url: str) -> None:
    store = StateStore()
    ev = drift_event()
    store.append_event(ev)
    long_ago = utcnow() - timedelta(seconds=10 * LEASE_POLICY.ttl_s)
    store.claim("other-host:1", now=long_ago)  # its lease ran out long ago...
    assert store.renew_event_lease(ev.id, "other-host:1")  # ...but its heartbeat renews it
    assert store.claim("w2") == []
    assert not store.renew_event_lease(ev.id, "w2")  # only the owner renews


def test_a_claim_whose_owner_process_is_gone_is_taken_over_at_once(state_url: str) -> None:
    store = StateStore()
    ev = drift_event()
    store.append_event(ev)
    gone = _gone_local_owner()
    store.claim(gone)
    [taken] = store.claim("w2")  # no waiting for the lease to expire
    assert taken.crashed_owner == gone


def test_a_failed_event_backs_off_then_is_dead_lettered(state_url: str) -> None:
    store = StateStore()
    ev = drift_event()
    store.append_event(ev)
    store.claim("w1")
    retry_at = utcnow() + timedelta(seconds=30)
    assert store.fail_event(ev.id, "w1", "KeyError: 'dep_delay'", retry_at=retry_at) == "pending"
    assert store.claim("w1") == []  # backing off
    [again] = store.claim("w1", now=retry_at + timedelta(seconds=1))
    assert again.attempts == 2
    assert store.fail_event(ev.id, "someone-else", "x") == "claimed"  # not the owner: refused
    assert store.fail_event(ev.id, "w1", "KeyError: 'dep_delay'") == "dead"
    row = store.event_row(ev.id)
    assert (row["status"], row["failure"], row["error"]) == ("dead", "failed", "KeyError: 'dep_delay'")
    assert store.claim("w1", now=utcnow() + timedelta(days=1)) == []
    assert [e.action for e in store.audit_entries()] == ["event_failed", "event_dead"]


def test_one_proposal_lease_at_a_time_and_a_gone_owner_is_taken_over(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    store.decide(p.id, Verdict.approve, "alice")
    assert store.resume_requested() == [str(p.id)]  # the stored decision asks a worker to resume it
    assert store.take_proposal_lease(p.id, "other-host:1") is None
    assert store.resume_requested() == []  # leased
    with pytest.raises(LeaseHeld, match="other-host:1"):
        store.take_proposal_lease(p.id, "w2")
    assert store.take_proposal_lease(p.id, "other-host:1") is None  # the owner again: re-entrant
    later = utcnow() + timedelta(seconds=LEASE_POLICY.ttl_s + 1)
    assert store.resume_requested(now=later) == [str(p.id)]
    assert store.take_proposal_lease(p.id, "w2", now=later) == "other-host:1"
    gone = _gone_local_owner()
    store.release_proposal_lease(p.id, "w2", finished=False, error="boom", retry_at=utcnow())
    store.take_proposal_lease(p.id, gone)
    assert store.take_proposal_lease(p.id, "w3") == gone
    store.release_proposal_lease(p.id, "w3", finished=True)
    assert store.resume_requested(now=later) == []
    assert store.proposal_lease(p.id)["lease_owner"] is None
    actions = [(e.action, e.detail.get("from")) for e in store.audit_entries(str(p.id))]
    assert actions == [("proposed", None), ("approved", None), ("lease_taken_over", "other-host:1"),
                       ("resume_failed", None), ("lease_taken_over", gone)]
    assert store.verify_audit().ok


def test_a_failed_resume_backs_off_and_is_given_up_without_a_retry_time(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    store.decide(p.id, Verdict.approve, "alice")
    store.take_proposal_lease(p.id, "w1")
    retry_at = utcnow() + timedelta(seconds=30)
    store.release_proposal_lease(p.id, "w1", finished=False, error="RuntimeError: x", retry_at=retry_at)
    assert store.resume_requested() == []
    assert store.resume_requested(now=retry_at) == [str(p.id)]
    store.take_proposal_lease(p.id, "w1")
    store.release_proposal_lease(p.id, "w1", finished=False, error="RuntimeError: x")
    assert store.resume_requested(now=utcnow() + timedelta(days=1)) == []  # given up: a person resumes it
    assert store.proposal_lease(p.id)["attempts"] == 2
    store.request_resume(p.id)
    assert store.resume_requested() == [str(p.id)] and store.proposal_lease(p.id)["attempts"] == 0


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


@pytest.mark.parametrize("ref", ["____", "%", "%%%%", "a_b_", "abc", "3f2a%", "flights: map", ""])
def test_an_id_prefix_is_hex_never_a_pattern(ref: str, state_url: str) -> None:
    store = StateStore()
    pending_proposal(store)
    with pytest.raises(UserError, match="is not a proposal id") as err:
        store.get_proposal(ref)
    assert repr(ref) in err.value.message and "inbox list" in (err.value.hint or "")


def test_an_id_prefix_resolves_case_insensitively(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    assert store.get_proposal(p.short_id.upper()).id == p.id
    assert store.get_proposal(str(p.id)[:13]).id == p.id  # a prefix across the first hyphen


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


def test_a_slack_signature_is_a_replay_only_within_its_window(state_url: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """One upsert per acknowledgement: a signature older than the window counts as new (and is remembered
    afresh), a live one is a replay; the old rows are swept every SLACK_SWEEP_S, which changes no answer."""
    from pipewarden import store as store_module

    store = StateStore()
    t = db.slack_requests

    def age(signature: str, minutes: int) -> None:
        with store.engine.begin() as conn:
            conn.execute(t.update().where(t.c.signature == signature)
                         .values(seen_at=utcnow() - timedelta(minutes=minutes)))

    assert store.seen_slack_request("v0=win", max_age_s=600) is False
    assert store.seen_slack_request("v0=win", max_age_s=600) is True
    age("v0=win", 9)
    assert store.seen_slack_request("v0=win", max_age_s=600) is True  # 9 minutes old: still within the window
    age("v0=win", 11)
    assert store.seen_slack_request("v0=win", max_age_s=600) is False  # past it: a new request again
    assert store.seen_slack_request("v0=win", max_age_s=600) is True  # ... remembered from now on

    assert store.seen_slack_request("v0=old", max_age_s=600) is False
    age("v0=old", 11)
    monkeypatch.setattr(store_module, "_SWEPT", type(store_module._SWEPT)())  # as if no sweep ran lately
    assert store.seen_slack_request("v0=new", max_age_s=600) is False
    with store.engine.connect() as conn:
        left = set(conn.execute(sa.select(t.c.signature)).scalars())
    assert left == {"v0=win", "v0=new"}  # the old row was swept; the live ones stay


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
