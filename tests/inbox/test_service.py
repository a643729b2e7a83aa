"""The decision service: decisions are stored before the graph resumes, and resume failures lose nothing."""

from __future__ import annotations

import pytest

from inbox import service
from pipewarden.errors import InvalidTransition, NotApproved, UnknownNameError, UserError
from pipewarden.models import ProposalStatus, Verdict
from pipewarden.store import StateStore
from tests.inbox import fake_resumer
from tests.inbox.conftest import FAILING_RESUMER, GOOD_RESUMER, make_proposal


def test_approve_stores_the_decision_then_resumes_to_verified(store: StateStore, resumer: list[str]) -> None:
    p = make_proposal(store)
    outcome = service.approve(p.short_id, "ana", reason="looks right")
    assert outcome.decision.verdict == Verdict.approve
    assert outcome.decision.actor == "ana" and outcome.decision.via == "cli"
    assert outcome.resume == "resumed" and outcome.resume_error is None and outcome.ok
    assert outcome.proposal.status == ProposalStatus.verified
    assert resumer == [str(p.id)]
    assert fake_resumer.DECIDED_AT_CALL == [True]  # the decision was durable before the graph ran
    actions = [e.action for e in store.audit_entries(str(p.id))]
    assert actions == ["proposed", "approved", "applying", "applied", "verified"]


def test_approve_without_resume_leaves_it_approved(store: StateStore, resumer: list[str]) -> None:
    p = make_proposal(store)
    outcome = service.approve(str(p.id), "ana", resume=False)
    assert outcome.resume == "not_requested"
    assert outcome.proposal.status == ProposalStatus.approved
    assert resumer == []


def test_resume_failure_keeps_the_decision_and_can_be_retried(store: StateStore, use_resumer) -> None:
    p = make_proposal(store)
    use_resumer(FAILING_RESUMER)
    outcome = service.approve(str(p.id), "ana")
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
    service.approve(p.id, "ana")
    with pytest.raises(UserError, match="verified"):
        service.resume_decided(p.id)


def test_reject_needs_a_reason_and_only_lets_the_graph_end(store: StateStore, resumer: list[str]) -> None:
    p = make_proposal(store)
    with pytest.raises(UserError, match="needs a reason"):
        service.reject(p.id, "ana", "  ")
    assert store.decisions_for(p.id) == []
    outcome = service.reject(p.id, "ana", "dep_delay_min is in hours, not minutes", via="slack")
    assert outcome.proposal.status == ProposalStatus.rejected
    assert outcome.decision.reason == "dep_delay_min is in hours, not minutes"
    assert outcome.decision.via == "slack"
    assert resumer == [str(p.id)]  # resumed so its graph ends ...
    assert store.get_proposal(p.id).status == ProposalStatus.rejected  # ... and nothing was applied


def test_second_decision_is_refused(store: StateStore) -> None:
    p = make_proposal(store)
    service.reject(p.id, "ana", "wrong column")
    before = store.audit_entries(str(p.id))
    with pytest.raises(InvalidTransition, match="already rejected"):
        service.approve(p.id, "bo")
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
        service.approve("ffffffff", "ana")


def test_default_actor_from_env_then_os_user(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEWARDEN_USER", "ana")
    assert service.default_actor() == "ana"
    p = make_proposal(store)
    assert service.approve(p.id, resume=False).decision.actor == "ana"

    monkeypatch.delenv("PIPEWARDEN_USER")
    monkeypatch.setattr(service.getpass, "getuser", lambda: "osuser")
    assert service.default_actor() == "osuser"


def test_empty_actor_is_refused(store: StateStore) -> None:
    p = make_proposal(store)
    with pytest.raises(UserError, match="name is empty"):
        service.approve(p.id, "   ")


def test_queue_puts_open_proposals_first(store: StateStore) -> None:
    decided = make_proposal(store, title="decided one")
    service.approve(decided.id, "ana")
    pending = make_proposal(store, title="pending one")
    stuck = make_proposal(store, title="stuck one", status=ProposalStatus.needs_human)
    order = [p.id for p in service.queue()]
    assert order.index(decided.id) == 2 and set(order[:2]) == {pending.id, stuck.id}
