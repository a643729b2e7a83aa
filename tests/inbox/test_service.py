"""The decision service: decisions are stored before the graph resumes, and resume failures lose nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from pipewarden import faults
from pipewarden.errors import Expired, Forbidden, InvalidTransition, NotApproved, UnknownNameError, UserError
from pipewarden.ids import utcnow
from pipewarden.inbox import service
from pipewarden.models import ColumnMapping, Proposal, ProposalStatus, Quarantine, Risk, Verdict
from pipewarden.ports import proposal_created
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.fakes.runtimes import swap
from tests.inbox import fake_notifier, fake_resumer
from tests.inbox.conftest import FAILING_RESUMER, GOOD_RESUMER, make_proposal
from tests.pipewarden.factories import drift_event


def test_approve_stores_the_decision_then_resumes_to_verified(store: StateStore, resumer: list[str]) -> None:
    p = make_proposal(store)
    outcome = service.approve(p.short_id, "alice", reason="looks right")
    assert outcome.decision.verdict == Verdict.approve
    assert outcome.decision.actor == "alice" and outcome.decision.via == "cli"
    assert outcome.resume == "resumed" and outcome.resume_error is None and outcome.ok
    assert outcome.proposal.status == ProposalStatus.verified
    assert resumer == [str(p.id)]
    assert fake_resumer.DECIDED_AT_CALL == [True]  # the decision was durable before the graph ran
    actions = [e.action for e in store.audit_entries(str(p.id))]
    assert actions == ["proposed", "approved", "applying", "applied", "verified"]


def test_approve_without_resume_leaves_it_approved(store: StateStore, resumer: list[str]) -> None:
    p = make_proposal(store)
    outcome = service.approve(str(p.id), "alice", resume=False)
    assert outcome.resume == "not_requested"
    assert outcome.proposal.status == ProposalStatus.approved
    assert resumer == []


def test_resume_failure_keeps_the_decision_and_can_be_retried(store: StateStore, use_resumer) -> None:
    p = make_proposal(store)
    use_resumer(FAILING_RESUMER)
    outcome = service.approve(str(p.id), "alice")
    assert outcome.resume == "failed" and not outcome.ok
    assert "checkpoint database is locked" in (outcome.resume_error or "")
    assert store.get_proposal(p.id).status == ProposalStatus.approved
    assert store.approved_decision(p.id) is not None
    last = store.audit_entries(str(p.id))[-1]
    assert last.action == "resume_failed" and "locked" in last.detail["error"]
    assert service.view(p.id).resume_error is not None
    assert store.verify_audit().ok

    use_resumer(GOOD_RESUMER)
    retried = service.resume_decided(p.short_id)
    assert retried.resume == "resumed"
    assert retried.proposal.status == ProposalStatus.verified
    assert retried.decision.id == outcome.decision.id
    assert service.view(p.id).resume_error is None


def test_resume_decided_refuses_undecided_and_finished_proposals(store: StateStore) -> None:
    p = make_proposal(store)
    with pytest.raises(NotApproved, match="no approving decision"):
        service.resume_decided(p.id)
    service.approve(p.id, "alice")
    with pytest.raises(UserError, match="verified"):
        service.resume_decided(p.id)


def test_reject_needs_a_reason_and_only_lets_the_graph_end(store: StateStore, resumer: list[str]) -> None:
    p = make_proposal(store)
    with pytest.raises(UserError, match="needs a reason"):
        service.reject(p.id, "alice", "  ")
    assert store.decisions_for(p.id) == []
    outcome = service.reject(p.id, "alice", "dep_delay_min is in hours, not minutes", via="slack")
    assert outcome.proposal.status == ProposalStatus.rejected
    assert outcome.decision.reason == "dep_delay_min is in hours, not minutes"
    assert outcome.decision.via == "slack"
    assert resumer == [str(p.id)]  # resumed so its graph ends ...
    assert store.get_proposal(p.id).status == ProposalStatus.rejected  # ... and nothing was applied


def test_second_decision_is_refused(store: StateStore) -> None:
    p = make_proposal(store)
    service.reject(p.id, "alice", "wrong column")
    before = store.audit_entries(str(p.id))
    with pytest.raises(InvalidTransition, match="already rejected"):
        service.approve(p.id, "bob")
    assert store.audit_entries(str(p.id)) == before


@pytest.mark.parametrize("actor", ["system", "Agent-schema", " supervisor "])
def test_system_identities_cannot_decide(store: StateStore, actor: str) -> None:
    p = make_proposal(store)
    with pytest.raises(NotApproved, match="system identity"):
        service.approve(p.id, actor)
    assert store.get_proposal(p.id).status == ProposalStatus.pending


def test_unknown_proposal(store: StateStore) -> None:
    make_proposal(store)
    with pytest.raises(UnknownNameError):
        service.approve("ffffffff", "alice")


def test_default_actor_from_env_then_os_user(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEWARDEN_USER", "alice")
    assert service.default_actor() == "alice"
    p = make_proposal(store)
    assert service.approve(p.id, resume=False).decision.actor == "alice"

    monkeypatch.delenv("PIPEWARDEN_USER")
    monkeypatch.setattr(service.getpass, "getuser", lambda: "osuser")
    assert service.default_actor() == "osuser"


def test_empty_actor_is_refused(store: StateStore) -> None:
    p = make_proposal(store)
    with pytest.raises(UserError, match="name is empty"):
        service.approve(p.id, "   ")


def test_queue_puts_open_proposals_first(store: StateStore) -> None:
    decided = make_proposal(store, title="decided one")
    service.approve(decided.id, "alice")
    pending = make_proposal(store, title="pending one")
    stuck = make_proposal(store, title="stuck one", status=ProposalStatus.needs_human)
    order = [p.id for p in service.queue()]
    assert order.index(decided.id) == 2 and set(order[:2]) == {pending.id, stuck.id}


# --------------------------------------------------------------------------- policies, identity, notifier
@pytest.fixture
def notified(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    swap(monkeypatch, notifier=fake_notifier.notify)
    fake_notifier.CALLS.clear()
    return fake_notifier.CALLS


def _store_proposal(store: StateStore, change, risk: Risk = Risk.low, **fields) -> Proposal:  # type: ignore[no-untyped-def]
    event = drift_event()
    store.append_event(event)
    return store.create_proposal(Proposal(
        event_id=event.id, agent="quality", dataset="flights", title="t", diagnosis="d", change=change, risk=risk,
        thread_id=f"event-{event.id}", **fields))


def test_the_two_person_rule_keeps_a_high_risk_proposal_pending_until_a_steward_approves(
    store: StateStore, resumer: list[str], notified: list[tuple[str, str]]
) -> None:
    p = _store_proposal(store, ColumnMapping(dataset="flights", renames={"a": "b"}), risk=Risk.high)
    first = service.decide(p.short_id, "approve", "alice")
    assert first.proposal.status == ProposalStatus.pending and first.resume == "not_requested"
    assert first.requirement is not None and first.requirement.missing == "needs 1 more approval from: steward"
    assert service.proposal_view(p.id).requirement.approved_by == ["alice"]  # type: ignore[union-attr]
    with pytest.raises(Forbidden, match="needs 1 more approval from: steward"):
        service.decide(p.id, "approve", "carol")
    assert resumer == []  # nothing resumes before the rule is satisfied
    second = service.decide(p.id, "approve", "bob")
    assert second.proposal.status == ProposalStatus.verified and resumer == [str(p.id)]
    assert [(d.actor, d.verdict.value) for d in store.decisions_for(p.id)] == [("alice", "approve"), ("bob", "approve")]
    approved = [e for e in store.audit_entries(str(p.id)) if e.action == "approved"]
    assert approved[0].detail["approved_by"] == ["alice", "bob"]
    assert notified == [("proposal_updated", str(p.id)), ("proposal_decided", str(p.id)),
                        ("proposal_updated", str(p.id))]


def test_policy_approves_a_small_quarantine_audited_as_policy(store: StateStore, notified: list) -> None:
    small = _store_proposal(store, Quarantine(dataset="flights", predicate="origin = 'XXX'", reason="bad origin",
                                              rows=12, batch_rows=28_834))
    ended = service.on_proposal_created(small.id)
    assert ended.status == ProposalStatus.approved
    [d] = store.decisions_for(small.id)
    assert (d.actor, d.via, d.verdict) == ("policy", "policy", Verdict.approve)
    last = store.audit_entries(str(small.id))[-1]
    assert (last.action, last.actor) == ("approved", "policy") and "small-quarantine-auto" in last.detail["reason"]
    assert store.approved_decision(small.id) == d  # the apply tool accepts it
    assert notified == [("proposal_created", str(small.id)), ("proposal_decided", str(small.id))]
    # a second run of the hook (a re-run submit) decides nothing again
    service.on_proposal_created(small.id)
    assert len(store.decisions_for(small.id)) == 1

    mapping = make_proposal(store)
    assert service.on_proposal_created(mapping.id).status == ProposalStatus.pending
    assert store.decisions_for(mapping.id) == []


def test_the_hook_port_never_breaks_the_caller_and_audits_its_failure(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = make_proposal(store)
    swap(monkeypatch, proposal_hook=fake_notifier.failing_hook)
    proposal_created(p.id)
    last = store.audit_entries(str(p.id))[-1]
    assert last.action == "proposal_hook_failed" and "unreachable" in last.detail["error"]


def test_a_failing_notifier_never_breaks_a_decision(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    swap(monkeypatch, notifier=fake_notifier.fail)
    p = make_proposal(store)
    outcome = service.decide(p.id, "approve", "alice")
    assert outcome.proposal.status == ProposalStatus.verified
    actions = [e.action for e in store.audit_entries(str(p.id))]
    assert actions.count("notify_failed") == 2 and "verified" in actions
    assert store.verify_audit().ok


def test_the_notifier_is_a_no_op_while_slack_is_not_configured(store: StateStore) -> None:
    from pipewarden.ports import notify

    p = make_proposal(store)
    before = store.audit_entries(str(p.id))
    assert get_settings().slack_bot_token is None
    assert notify("proposal_created", str(p.id))  # ran, told nobody, failed nothing
    assert store.audit_entries(str(p.id)) == before and store.slack_message_for(p.id) is None


def test_expire_stale_closes_overdue_proposals_and_ends_their_graphs(
    store: StateStore, resumer: list[str], notified: list
) -> None:
    overdue = _store_proposal(store, ColumnMapping(dataset="flights"), expires_at=utcnow() - timedelta(hours=1))
    fresh = make_proposal(store)
    [expired] = service.expire_stale()
    assert expired.id == overdue.id and expired.status == ProposalStatus.expired
    assert store.get_proposal(fresh.id).status == ProposalStatus.pending
    assert resumer == [str(overdue.id)] and notified == [("proposal_updated", str(overdue.id))]
    last = store.audit_entries(str(overdue.id))[-1]
    assert (last.action, last.actor) == ("expired", "policy")


def _snapshot(store: StateStore) -> tuple:
    proposals = [(p.id, p.status, p.round, p.updated_at) for p in store.list_proposals()]
    versions = store.list_versions("mapping:flights")
    decisions = [store.decisions_for(p[0]) for p in proposals]
    return proposals, versions, decisions, store.audit_entries()


REFUSALS = {
    "system identity": ("system", "approve", Forbidden),
    "the agent itself": ("quality", "approve", Forbidden),
    "an agent identity": ("agent:quality", "reject", Forbidden),
    "an engineer without the role": ("dave", "approve", Forbidden),
    "an owner of other datasets": ("frank", "reject", Forbidden),
    "not an approver": ("mallory", "approve", Forbidden),
    "approving twice": ("alice", "approve", Forbidden),
    "expired": ("bob", "approve", Expired),
    "already decided": ("bob", "reject", InvalidTransition),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_and_nothing_changes(state_url: str, case: str) -> None:
    store = StateStore()
    high = _store_proposal(store, ColumnMapping(dataset="flights", renames={"a": "b"}), risk=Risk.high)
    service.decide(high.id, "approve", "alice", resume=False)  # the first of two approvals
    overdue = _store_proposal(store, ColumnMapping(dataset="flights"), expires_at=utcnow() - timedelta(minutes=5))
    decided = _store_proposal(store, ColumnMapping(dataset="flights"))
    service.decide(decided.id, "reject", "carol", "wrong column", resume=False)
    target = {"expired": overdue, "already decided": decided}.get(case, high)
    actor, verdict, error = REFUSALS[case]
    before = _snapshot(store)
    with pytest.raises(error):
        service.decide(target.id, verdict, actor, reason="because", via="web")
    assert _snapshot(store) == before
    assert store.verify_audit().ok


def test_an_edit_whose_dry_run_fails_cannot_be_approved_from_any_front_end(store: StateStore,
                                                                           resumer: list[str]) -> None:
    """The edit gate lives in the service, so the CLI and Slack obey it as the web does; nothing is stored."""
    from pipewarden.models import CheckResult, DryRun

    p = make_proposal(store)
    failing = DryRun(before=CheckResult(passed=False, rows=10, schema_errors=["missing dep_delay"]),
                     after=CheckResult(passed=False, rows=10, schema_errors=["missing dep_delay"]))
    store.edit_proposal(p.id, ColumnMapping(dataset="flights", renames={"dep_delay_min": "arr_delay"}), failing,
                        "alice", via="web")
    before = (len(store.audit_entries()), store.decisions_for(p.id))
    for via in ("cli", "slack"):
        with pytest.raises(InvalidTransition, match="edited and its new dry-run does not pass"):
            service.decide(p.id, Verdict.approve, "alice", via=via)
    assert (len(store.audit_entries()), store.decisions_for(p.id)) == before
    assert store.get_proposal(p.id).status == ProposalStatus.pending and resumer == []
    rejected = service.decide(p.id, Verdict.reject, "alice", reason="the edit was wrong", resume=False)
    assert rejected.proposal.status == ProposalStatus.rejected


# --------------------------------------------------------------------------- the hand-off to the worker
def test_hand_off_stores_the_decision_as_a_durable_request_and_runs_nothing(
    store: StateStore, resumer: list[str], notified: list[tuple[str, str]]
) -> None:
    p = make_proposal(store)
    outcome = service.hand_off(p.short_id, "approve", "alice", via="web")
    assert outcome.resume == "handed_off" and outcome.proposal.status == ProposalStatus.approved
    assert resumer == []  # nothing ran in the caller's process
    assert store.resume_requested() == [str(p.id)]  # the worker finds it in the state DB
    assert notified == [("proposal_decided", str(p.id))]
    assert [e.action for e in store.audit_entries(str(p.id))] == ["proposed", "approved"]


def test_hand_off_of_a_first_of_two_approvals_requests_nothing(store: StateStore, resumer: list[str]) -> None:
    p = _store_proposal(store, ColumnMapping(dataset="flights", renames={"a": "b"}), risk=Risk.high)
    outcome = service.hand_off(p.id, "approve", "alice", via="slack")
    assert outcome.resume == "not_requested" and outcome.proposal.status == ProposalStatus.pending
    assert store.resume_requested() == []


def test_approving_while_a_worker_holds_the_lease_runs_nothing_twice(
    store: StateStore, use_resumer: Callable[[str], None]
) -> None:
    from pipewarden.wiring import resume_proposal

    use_resumer(resume_proposal)  # the real Resumer: it takes the lease first
    p = make_proposal(store)
    store.take_proposal_lease(p.id, "worker-host:4242")  # e.g. a `supervise` that drafted it is still running
    outcome = service.approve(p.id, "alice")
    assert outcome.resume == "in_progress" and outcome.worker == "worker-host:4242" and outcome.ok
    assert outcome.proposal.status == ProposalStatus.approved
    assert store.resume_requested() == []  # leased: the worker that holds it finishes it
    assert [e.action for e in store.audit_entries(str(p.id))] == ["proposed", "approved"]


def test_the_decision_stored_crash_point_fires_after_the_decision_and_before_any_resume(
    store: StateStore, resumer: list[str]
) -> None:
    class Crash(BaseException):
        pass

    def crash(step: str) -> None:
        raise Crash(step)

    p = make_proposal(store)
    faults.arm("decision_stored", crash)
    try:
        with pytest.raises(Crash):
            service.approve(p.id, "alice")
    finally:
        faults.disarm()
    assert store.get_proposal(p.id).status == ProposalStatus.approved and resumer == []
    assert store.resume_requested() == [str(p.id)]  # the next worker resumes it
