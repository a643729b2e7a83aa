"""Earned autonomy, end to end through the real hook, the real decision service and the real state store (SQLite and
PostgreSQL): off by default; after N consecutive verified approvals of one fault's fix, the next proposal of that
fault is approved as pipewarden:autonomy, audited with what it relied on and handed to the worker like a person's
approval; one rejection or one rollback revokes it; two-person rules and model promotions stay with people."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipewarden.errors import ConfigError, Forbidden
from pipewarden.events import ColumnSpec, SchemaDrift
from pipewarden.fault_signature import fault_signature
from pipewarden.inbox import service
from pipewarden.inbox.render import proposal_json, proposals_table
from pipewarden.inbox.slack_blocks import proposal_message
from pipewarden.models import (
    AUTONOMY_ACTOR,
    CheckResult,
    ColumnMapping,
    DryRun,
    ModelPromotion,
    Proposal,
    ProposalStatus,
    Risk,
    Verdict,
)
from pipewarden.policies.autonomy import AutonomyRule, autonomy_gate, earned, load_autonomy_rules
from pipewarden.store import StateStore

RULE = """autonomy:
  - name: flights-mappings-earned
    says: A mapping people approved {after} times running is approved by autonomy.
    datasets: [flights]
    kinds: [column_mapping]
    auto_approve: {{after: {after}{extra}}}
"""


@pytest.fixture
def store(state_url: str) -> StateStore:
    return StateStore()


def allow(project: Path, after: int, extra: str = "") -> None:
    """Turn earned autonomy on in the project's approval policy file."""
    (project / "policies").mkdir(exist_ok=True)
    (project / "policies" / "approval.yaml").write_text(RULE.format(after=after, extra=extra), encoding="utf-8")


def occurrence(store: StateStore, *, fingerprint: str = "fp-departureDelay", risk: Risk = Risk.low,
               change: object | None = None) -> Proposal:
    """What the supervisor and an agent do for one more event of the fault: place it (one fault, one proposal),
    store the proposal, run the ProposalHook."""
    ev = SchemaDrift(dataset="flights", load_id=f"load-{uuid.uuid4().hex[:6]}", batch_path="/data/b.parquet",
                     contract_version="flights@v1", schema_fingerprint=fingerprint,
                     added=[ColumnSpec(name="departureDelay", type="integer")],
                     dropped=[ColumnSpec(name="dep_delay", type="integer")])
    store.append_event(ev)
    pid = uuid.uuid4()
    sig = fault_signature(ev)
    assert sig is not None
    placed = store.attach_occurrence(ev, sig, pid, "worker-1")
    assert placed.role == "origin"
    p = Proposal(id=pid, event_id=ev.id, agent="schema-drift", dataset="flights", title="map departureDelay",
                 diagnosis="renamed", risk=risk, thread_id=f"event-{ev.id}",
                 change=change or ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}),
                 dry_run=DryRun(before=CheckResult(passed=False, rows=10), after=CheckResult(passed=True, rows=10)))
    store.create_proposal(p, actor="agent:schema-drift")
    return service.on_proposal_created(p.id, store=store)


def approved_by_people(store: StateStore, p: Proposal, *people: str) -> Proposal:
    """People approve it; the (fake) graph applies and verifies it."""
    for name in people or ("alice",):
        out = service.decide(p.id, Verdict.approve, name, store=store)
    assert out.proposal.status == ProposalStatus.verified
    return out.proposal


def rolled_back(store: StateStore, p: Proposal) -> Proposal:
    """The graph applied it and verification failed: rolled back and re-opened, as tools.apply does."""
    store.transition(p.id, ProposalStatus.applying, "supervisor", "applying")
    store.transition(p.id, ProposalStatus.applied, "supervisor", "applied")
    store.transition(p.id, ProposalStatus.rolled_back, "supervisor", "re-run failed")
    return store.transition(p.id, ProposalStatus.pending, "supervisor", "re-opened: re-run failed")


def test_off_by_default_people_decide_however_often_they_approved(store: StateStore) -> None:
    assert load_autonomy_rules() == ()  # the package default has no rule
    for _ in range(4):
        approved_by_people(store, occurrence(store))
    p = occurrence(store)
    assert p.status == ProposalStatus.pending and store.decisions_for(p.id) == []


def test_after_n_verified_approvals_the_next_is_approved_by_autonomy_audited_and_handed_to_the_worker(
    store: StateStore, pw_project: Path, resumer: list[str]
) -> None:
    allow(pw_project, after=2)
    first = approved_by_people(store, occurrence(store), "alice")
    second_p = occurrence(store)
    assert second_p.status == ProposalStatus.pending  # one approval is not two
    second = approved_by_people(store, second_p, "carol")
    calls_before = list(resumer)

    third = occurrence(store)
    assert third.status == ProposalStatus.approved
    assert third.auto_approved_by == AUTONOMY_ACTOR
    [d] = store.decisions_for(third.id)
    assert (d.actor, d.via, d.verdict) == (AUTONOMY_ACTOR, "autonomy", Verdict.approve)
    entry = next(e for e in store.audit_entries(str(third.id)) if e.action == "approved")
    assert entry.actor == AUTONOMY_ACTOR
    assert entry.detail["autonomy_rule"] == "flights-mappings-earned" and entry.detail["after"] == 2
    assert entry.detail["relied_on"] == [str(second.id), str(first.id)]
    assert entry.detail["relied_on_approved_by"] == [["carol"], ["alice"]]
    assert "earned autonomy" in entry.detail["reason"] and "2 consecutive verified approvals" in entry.detail["reason"]
    assert store.verify_audit().ok
    # handed to the worker exactly like a person's approval: a durable resume request, nothing run in the hook
    assert str(third.id) in store.resume_requested() and resumer == calls_before
    assert store.approved_decision(third.id) == d  # what the apply tool checks
    # shown as auto-approved: the CLI listing and its JSON, Slack
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(proposals_table([store.get_proposal(third.id)]))
    assert "auto-approved: earned autonomy" in console.export_text()
    assert proposal_json(third)["auto_approved_by"] == AUTONOMY_ACTOR
    blocks = str(proposal_message(store.get_proposal(third.id), decisions=[d], needs="", evidence="http://x/p"))
    assert "Auto-approved (earned autonomy)" in blocks and AUTONOMY_ACTOR in blocks

    # once applied and verified, autonomy's own approval neither earns nor breaks the run: the next one is approved
    service.resume_decided(third.id, store=store)
    assert store.get_proposal(third.id).status == ProposalStatus.verified
    fourth = occurrence(store)
    assert fourth.auto_approved_by == AUTONOMY_ACTOR
    relied = next(e for e in store.audit_entries(str(fourth.id)) if e.action == "approved").detail["relied_on"]
    assert relied == [str(second.id), str(first.id)]


def test_one_rejection_revokes_it_and_the_count_restarts(store: StateStore, pw_project: Path) -> None:
    for _ in range(3):
        approved_by_people(store, occurrence(store))
    rejected = occurrence(store)  # autonomy still off: people decide
    service.decide(rejected.id, Verdict.reject, "alice", "this time the column means something else", store=store)
    allow(pw_project, after=2)
    again = occurrence(store)
    assert again.status == ProposalStatus.pending  # the rejection revoked what three approvals had earned
    approved_by_people(store, again)
    one_more = occurrence(store)
    assert one_more.status == ProposalStatus.pending  # one approval since the rejection is not two
    approved_by_people(store, one_more)
    assert occurrence(store).auto_approved_by == AUTONOMY_ACTOR


def test_one_rollback_revokes_it_even_of_autonomys_own_approval(store: StateStore, pw_project: Path) -> None:
    allow(pw_project, after=2)
    approved_by_people(store, occurrence(store))
    approved_by_people(store, occurrence(store))
    auto = occurrence(store)
    assert auto.auto_approved_by == AUTONOMY_ACTOR
    reopened = rolled_back(store, auto)
    assert reopened.status == ProposalStatus.pending and reopened.round == 1
    # the re-opened proposal is not autonomy's to decide again; a person approves it and it verifies this time
    assert service.on_proposal_created(auto.id, store=store).status == ProposalStatus.pending
    with pytest.raises(Forbidden, match="decided or re-opened"):
        store.decide(auto.id, Verdict.approve, AUTONOMY_ACTOR, "x", via="autonomy", policy=autonomy_gate(
            earned_grant()))
    assert approved_by_people(store, reopened, "carol").auto_approved_by is None  # this round, a person's
    nxt = occurrence(store)
    assert nxt.status == ProposalStatus.pending and store.decisions_for(nxt.id) == []


def earned_grant():  # type: ignore[no-untyped-def]
    from pipewarden.policies.autonomy import Grant

    return Grant(rule="r", says="s", after=1, fault="f", relied_on=[], approved_by=[])


def test_an_in_flight_approval_holds_autonomy_back_until_it_is_verified(store: StateStore, pw_project: Path) -> None:
    allow(pw_project, after=1)
    approved_by_people(store, occurrence(store))
    auto = occurrence(store)
    assert auto.auto_approved_by == AUTONOMY_ACTOR  # approved, not yet applied and verified
    nxt = occurrence(store)
    assert nxt.status == ProposalStatus.pending  # not proven yet: it could still roll back


def test_a_person_deciding_first_wins_and_the_gate_refuses_a_decided_proposal(store: StateStore,
                                                                            pw_project: Path) -> None:
    approved_by_people(store, occurrence(store))
    p = occurrence(store)
    service.decide(p.id, Verdict.approve, "alice", resume=False, store=store)
    allow(pw_project, after=1)
    ended = service.on_proposal_created(p.id, store=store)  # the hook run again (a re-run submit)
    assert [d.actor for d in store.decisions_for(p.id)] == ["alice"] and ended.auto_approved_by is None


def test_a_two_person_proposal_needs_the_rule_to_say_so(store: StateStore, pw_project: Path) -> None:
    allow(pw_project, after=1)
    approved_by_people(store, occurrence(store, risk=Risk.high), "alice", "bob")  # high risk: owner and steward
    held = occurrence(store, risk=Risk.high)
    assert held.status == ProposalStatus.pending
    approved_by_people(store, held, "alice", "bob")
    allow(pw_project, after=1, extra=", two_person: true")
    assert occurrence(store, risk=Risk.high).auto_approved_by == AUTONOMY_ACTOR


def test_a_retrain_promotion_is_never_approved_by_autonomy(store: StateStore, pw_project: Path) -> None:
    (pw_project / "policies" / "approval.yaml").write_text(
        RULE.format(after=1, extra=", two_person: true").replace("[column_mapping]", "[model_promotion]"))
    with pytest.raises(ConfigError, match="model_promotion can never be approved by autonomy"):
        load_autonomy_rules()
    with pytest.raises(ValueError, match="model_promotion"):
        AutonomyRule(name="x", says="", kinds=frozenset({"model_promotion"}), after=1, two_person=True)
    promotion = ModelPromotion(model_name="delay", to_version="2", from_version="1")
    approved_by_people(store, occurrence(store, change=promotion), "erin", "alice")
    p = occurrence(store, change=promotion)
    assert p.status == ProposalStatus.pending
    anything = AutonomyRule(name="all", says="", kinds=frozenset({"column_mapping"}), after=1, two_person=True)
    assert earned(p, store.fault_history(p.id), [anything]) is None


def test_a_malformed_rule_names_the_file_and_field(pw_project: Path) -> None:
    (pw_project / "policies" / "approval.yaml").write_text("autonomy:\n  - name: x\n    kinds: [quarantine]\n"
                                                            "    auto_approve: {after: 0}\n")
    with pytest.raises(ConfigError, match=r"approval.yaml: field 'autonomy.0.auto_approve.after'"):
        load_autonomy_rules()
