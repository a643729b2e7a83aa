"""The approval rules on their own: which rule decides, what a proposal still needs, who may decide it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from pipewarden.errors import Expired, Forbidden
from pipewarden.ids import utcnow
from pipewarden.models import (
    ChangeSet,
    ColumnMapping,
    ContractChange,
    Decision,
    ModelPromotion,
    NoChange,
    Proposal,
    Quarantine,
    Risk,
    Verdict,
)
from pipewarden.policies.approval import (
    RULES,
    admit,
    check_can_decide,
    decision_gate,
    fault_key,
    policy_may_approve,
    requirement,
    rule_for,
)
from pipewarden.policies.approvers import Approvers


@pytest.fixture(scope="module")
def people() -> Approvers:
    return Approvers.load()


def proposal(change: Any = None, risk: Risk = Risk.medium, dataset: str = "flights", **kw: Any) -> Proposal:
    return Proposal(event_id=uuid.uuid4(), agent="quality", dataset=dataset, title="t", diagnosis="d",
                    change=change or ColumnMapping(dataset=dataset, renames={"a": "b"}), risk=risk, thread_id="t", **kw)


def approval(p: Proposal, who: str, verdict: Verdict = Verdict.approve, round_: int = 0) -> Decision:
    return Decision(proposal_id=p.id, verdict=verdict, actor=who, reason="x", round=round_)


def quarantine(rows: int, batch_rows: int = 10_000) -> Quarantine:
    return Quarantine(dataset="flights", predicate="origin = 'XXX'", reason="bad origin", rows=rows,
                      batch_rows=batch_rows)


@pytest.mark.parametrize(("p", "rule"), [
    (proposal(NoChange(reason="nothing fits")), "needs-a-person"),
    (proposal(ModelPromotion(model_name="delay", to_version="3")), "model-promotion-two-person"),
    (proposal(ContractChange(dataset="flights", contract={}, loosens=True)), "loosening-contract-two-person"),
    (proposal(ContractChange(dataset="flights", contract={}, loosens=False)), "owner-or-steward"),
    (proposal(risk=Risk.high), "high-risk-two-person"),
    (proposal(quarantine(rows=50), risk=Risk.low), "small-quarantine-auto"),  # 0.5% of the batch
    (proposal(quarantine(rows=100), risk=Risk.low), "owner-or-steward"),  # 1%: not under the threshold
    (proposal(quarantine(rows=5), risk=Risk.high), "high-risk-two-person"),
    (proposal(ChangeSet(changes=[ColumnMapping(dataset="flights"), ModelPromotion(model_name="m", to_version="2")])),
     "model-promotion-two-person"),
    (proposal(), "owner-or-steward"),
])
def test_the_first_matching_rule_decides(p: Proposal, rule: str) -> None:
    assert rule_for(p).name == rule


def test_rules_are_an_ordered_list_ending_in_a_catch_all() -> None:
    assert RULES[-1].kinds is None and RULES[-1].risks is None and RULES[-1].when is None
    assert len({r.name for r in RULES}) == len(RULES)


def test_one_owner_or_steward_suffices_by_default(people: Approvers) -> None:
    p = proposal()
    need = requirement(p, [], people)
    assert not need.satisfied and need.missing == "needs 1 more approval from: owner or steward"
    assert set(need.eligible_people) == {"alice", "carol", "bob"}  # flights owners and the steward
    assert requirement(p, [approval(p, "bob")], people).satisfied


def test_the_two_person_rule_wants_the_owner_and_a_steward(people: Approvers) -> None:
    p = proposal(risk=Risk.high)
    assert requirement(p, [], people).missing == "needs 2 more approvals from: owner and steward"
    after_alice = requirement(p, [approval(p, "alice")], people)
    assert not after_alice.satisfied and after_alice.missing == "needs 1 more approval from: steward"
    assert after_alice.approved_by == ["alice"] and after_alice.eligible_people == ["bob"]
    with pytest.raises(Forbidden, match="needs 1 more approval from: steward"):  # a second owner cannot fill it
        check_can_decide("carol", p, Verdict.approve, people, decisions=[approval(p, "alice")])
    with pytest.raises(Forbidden, match="already approved"):
        check_can_decide("alice", p, Verdict.approve, people, decisions=[approval(p, "alice")])
    check_can_decide("bob", p, Verdict.approve, people, decisions=[approval(p, "alice")])
    assert requirement(p, [approval(p, "alice"), approval(p, "bob")], people).satisfied


def test_a_model_promotion_needs_its_ml_owner(people: Approvers) -> None:
    p = proposal(ModelPromotion(model_name="delay", to_version="3"))
    first = [approval(p, "alice")]
    assert requirement(p, first, people).missing == "needs 1 more approval from: ml_owner"
    with pytest.raises(Forbidden):
        check_can_decide("bob", p, Verdict.approve, people, decisions=first)
    assert requirement(p, [*first, approval(p, "erin")], people).satisfied


def test_approvals_of_an_earlier_round_do_not_count(people: Approvers) -> None:
    p = proposal(round=1)  # re-opened after a rollback
    assert not requirement(p, [approval(p, "alice", round_=0)], people).satisfied
    check_can_decide("alice", p, Verdict.approve, people, decisions=[approval(p, "alice", round_=0)])


@pytest.mark.parametrize(("actor", "message"), [
    ("system", "system identity"),
    ("agent:quality", "system identity"),
    ("policy", "system identity"),
    ("quality", "made proposal"),  # the agent's own name
    ("zed", "not an approver in"),
    ("dave", "needs owner or steward of flights; dave has engineer"),
    ("frank", "needs owner or steward of flights"),  # an owner, of other datasets
    ("erin", "needs owner or steward of flights"),  # an ML owner, on a mapping
])
def test_who_may_not_decide(people: Approvers, actor: str, message: str) -> None:
    for verdict in Verdict:
        with pytest.raises(Forbidden, match=message):
            check_can_decide(actor, proposal(), verdict, people)


def test_an_unknown_person_is_told_what_to_add(people: Approvers) -> None:
    with pytest.raises(Forbidden) as err:
        check_can_decide("zed", proposal(), Verdict.approve, people)
    assert "approvers.yaml" in err.value.message and "- {name: zed, roles: [owner], datasets: [flights]}" in (
        err.value.hint or "")


def test_an_expired_proposal_cannot_be_decided(people: Approvers) -> None:
    p = proposal(expires_at=utcnow() - timedelta(seconds=1))
    with pytest.raises(Expired, match="expired at"):
        check_can_decide("alice", p, Verdict.approve, people)


def test_admit_stamps_the_rules_ttl_and_keeps_a_given_expiry() -> None:
    p = proposal()
    assert admit(p).expires_at == p.created_at + timedelta(days=7)
    q = proposal(quarantine(rows=1), risk=Risk.low)
    assert admit(q).expires_at == q.created_at + timedelta(days=1)
    fixed = proposal(expires_at=utcnow())
    assert admit(fixed).expires_at == fixed.expires_at


def test_policy_approves_only_what_its_rule_allows(people: Approvers) -> None:
    small = proposal(quarantine(rows=50), risk=Risk.low)
    assert policy_may_approve(small)
    assert not policy_may_approve(small, [approval(small, "alice", Verdict.reject)])  # a person decided first
    gate = decision_gate(people)
    policy_decision = Decision(proposal_id=small.id, verdict=Verdict.approve, actor="policy", via="policy")
    assert gate(small, [], policy_decision) is True
    big = proposal(quarantine(rows=500), risk=Risk.low)
    with pytest.raises(Forbidden, match="no rule lets policy approve"):
        gate(big, [], policy_decision.model_copy(update={"proposal_id": big.id}))
    # "policy" through a front end is a system identity
    with pytest.raises(Forbidden, match="system identity"):
        gate(small, [], policy_decision.model_copy(update={"via": "web"}))
    assert requirement(small, [policy_decision], people).satisfied


def test_fault_key_groups_by_agent_dataset_and_target() -> None:
    a, b = proposal(), proposal()
    assert fault_key(a) == fault_key(b) == "quality:flights:mapping:flights"
    assert fault_key(proposal(dataset="planes")) != fault_key(a)
