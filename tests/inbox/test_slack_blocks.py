"""The Block Kit builders: what a person reads in Slack for a proposal, before and after it is decided."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipewarden.errors import UserError
from pipewarden.ids import new_id
from pipewarden.inbox import slack_blocks as sb
from pipewarden.models import (
    ChangeSet,
    CheckResult,
    ColumnMapping,
    ContractChange,
    Decision,
    DryRun,
    ModelPromotion,
    NoChange,
    Proposal,
    ProposalStatus,
    Quarantine,
    Risk,
    SqlModelPatch,
    Verdict,
)

URL = "https://inbox.example/proposals/x"


def proposal(**kw: Any) -> Proposal:
    base: dict[str, Any] = dict(
        event_id=new_id(), agent="schema_drift", dataset="flights", thread_id="t",
        title="Map departureDelay to dep_delay", diagnosis="The batch renamed dep_delay to departureDelay.",
        change=ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}, casts={"flight": "integer"}),
        dry_run=DryRun(before=CheckResult(passed=False, rows=120, failed_rows=120,
                                          schema_errors=["contract column 'dep_delay' (integer) is missing"]),
                       after=CheckResult(passed=True, rows=120)),
        risk=Risk.low,
    )
    base.update(kw)
    return Proposal(**base)


def by_id(msg: sb.ProposalMessage) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in msg.blocks}


def all_text(msg: sb.ProposalMessage) -> str:
    return json.dumps(msg.blocks, ensure_ascii=False)


def test_a_new_proposal_shows_its_facts_change_dry_run_approvers_link_and_buttons() -> None:
    p = proposal()
    msg = sb.proposal_message(p, decisions=[], needs="needs 1 more approval from: owner or steward (alice, bob)",
                              evidence=URL, fault_key="schema_drift:flights:mapping:flights")
    blocks = by_id(msg)
    assert blocks["title"]["text"]["text"] == p.title
    facts = [f["text"] for f in blocks["facts"]["fields"]]
    assert "*Agent*\nschema_drift" in facts and "*Dataset*\n`flights`" in facts
    assert any(f.startswith("*Risk*") and "low" in f for f in facts)
    assert "*Who must approve*\nneeds 1 more approval from: owner or steward (alice, bob)" in facts
    assert f"*Proposal*\n<{URL}|{p.short_id}>" in facts
    change = blocks["change"]["text"]["text"]
    assert "`departureDelay` → `dep_delay`" in change and "cast `flight` to integer" in change
    dry = blocks["dry_run"]["text"]["text"]
    assert "Before: :x: failed — 120 rows, 120 failed" in dry
    assert "contract column 'dep_delay' (integer) is missing" in dry
    assert "After: :white_check_mark: passed — 120 rows" in dry and "heals the failing batch" in dry
    buttons = blocks["decide"]["elements"]
    assert [(b["action_id"], b["value"], b["style"]) for b in buttons] == [
        ("approve", str(p.id), "primary"), ("reject", str(p.id), "danger")]
    assert URL in blocks["evidence"]["elements"][0]["text"]
    assert p.short_id in msg.text and p.title in msg.text


def test_text_from_data_cannot_form_links_or_mentions() -> None:
    evil = "<!channel> see <https://evil.example|the fix> & approve"
    msg = sb.proposal_message(proposal(title=evil, diagnosis=evil), decisions=[], needs="x", evidence=URL)
    diagnosis = by_id(msg)["diagnosis"]["text"]["text"]
    assert "<!channel>" not in diagnosis and "&lt;!channel&gt;" in diagnosis and "&amp; approve" in diagnosis
    assert "<!channel>" not in msg.text
    assert by_id(msg)["title"]["text"]["type"] == "plain_text"  # plain text: Slack shows it verbatim


def test_a_decided_proposal_shows_who_decided_and_the_outcome_and_no_buttons() -> None:
    p = proposal(status=ProposalStatus.verified, status_reason="the re-run passed the contract")
    d = Decision(proposal_id=p.id, verdict=Verdict.approve, actor="alice", via="slack")
    msg = sb.proposal_message(p, decisions=[d], needs="decided", evidence=URL)
    blocks = by_id(msg)
    assert "decide" not in blocks
    assert "Approved by *alice* via slack" in blocks["decisions"]["text"]["text"]
    assert "Applied and verified*: the re-run passed the contract" in blocks["outcome"]["text"]["text"]
    assert "applied and verified" in msg.text


def test_a_rejection_shows_its_reason() -> None:
    p = proposal(status=ProposalStatus.rejected, status_reason="wrong column")
    d = Decision(proposal_id=p.id, verdict=Verdict.reject, actor="bob", via="slack", reason="wrong <column>")
    text = by_id(sb.proposal_message(p, decisions=[d], needs="decided", evidence=URL))["decisions"]["text"]["text"]
    assert ":x: Rejected by *bob* via slack" in text and "wrong &lt;column&gt;" in text


def test_a_proposal_without_a_valid_change_offers_only_reject() -> None:
    p = proposal(status=ProposalStatus.needs_human, change=NoChange(reason="no column matches dep_delay"),
                 dry_run=None)
    blocks = by_id(sb.proposal_message(p, decisions=[], needs="x", evidence=URL))
    assert [b["action_id"] for b in blocks["decide"]["elements"]] == ["reject"]
    assert "*No change*: no column matches dep_delay" in blocks["change"]["text"]["text"]
    assert "No dry run" in blocks["dry_run"]["text"]["text"]


def test_a_high_risk_approval_asks_for_confirmation() -> None:
    blocks = by_id(sb.proposal_message(proposal(risk=Risk.high), decisions=[], needs="x", evidence=URL))
    approve = blocks["decide"]["elements"][0]
    assert approve["confirm"]["title"]["text"] == "Approve a high-risk change?"


def test_repeat_messages_say_so() -> None:
    msg = sb.proposal_message(proposal(), decisions=[], needs="x", evidence=URL, repeat=True)
    assert msg.text.startswith("Again: ") and by_id(msg)["title"]["text"]["text"].startswith("Again: ")


@pytest.mark.parametrize(("change", "expected"), [
    (SqlModelPatch(model="stg_flights", sql="select 1 as a\nfrom x", base_sql="select 1", reason="cast"),
     "*SQL model patch* `stg_flights` (2 lines, was 1)"),
    (Quarantine(dataset="flights", predicate="dep_delay > 3000", reason="impossible delays", rows=12,
                batch_rows=28834), "where `dep_delay &gt; 3000` (12 of 28,834 rows, 0.04%)"),
    (ContractChange(dataset="flights", contract={}, summary="allow nulls", loosens=True), "*loosens the contract*"),
    (ModelPromotion(model_name="delay", from_version="3", to_version="4"), "version 3 → 4"),
    (ChangeSet(changes=[ColumnMapping(dataset="flights", renames={"a": "b"}),
                        SqlModelPatch(model="m", sql="select 2")]), "*2 changes, applied together*"),
])
def test_every_change_kind_is_summarized(change: Any, expected: str) -> None:
    assert expected in sb.change_summary(change)


def test_long_text_is_clipped_to_slacks_limits_instead_of_failing() -> None:
    p = proposal(title="t" * 400, diagnosis="d" * 5000,
                 change=SqlModelPatch(model="m", sql="select 1\n" * 2000))
    msg = sb.proposal_message(p, decisions=[], needs="n" * 3000, evidence=URL)
    blocks = by_id(msg)
    assert len(blocks["title"]["text"]["text"]) == sb.HEADER_MAX
    assert len(blocks["diagnosis"]["text"]["text"]) <= sb.SECTION_MAX
    assert blocks["diagnosis"]["text"]["text"].endswith("…")


def test_the_reject_modal_round_trips_its_proposal_channel_and_reason() -> None:
    p = proposal()
    view = sb.reject_modal(p, channel="C0FLIGHTS")
    assert view["callback_id"] == sb.REJECT_CALLBACK and view["type"] == "modal"
    view["state"] = {"values": {sb.REASON_BLOCK: {sb.REASON_INPUT: {"type": "plain_text_input",
                                                                   "value": "  minutes, not seconds "}}}}
    sub = sb.read_reject_modal(view)
    assert (sub.proposal_id, sub.channel, sub.reason) == (str(p.id), "C0FLIGHTS", "minutes, not seconds")


def test_a_malformed_modal_submission_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="malformed reject modal submission"):
        sb.read_reject_modal({"private_metadata": "{}", "state": {"values": {}}})


def test_a_proposal_reopened_by_a_rollback_gets_its_buttons_back_and_keeps_its_history() -> None:
    p = proposal(status=ProposalStatus.pending, status_reason="re-run halted at validate")
    earlier = Decision(proposal_id=p.id, verdict=Verdict.approve, actor="alice", via="slack")
    blocks = by_id(sb.proposal_message(p, decisions=[earlier], needs="needs 1 more approval from: owner",
                                       evidence=URL))
    assert [b["action_id"] for b in blocks["decide"]["elements"]] == ["approve", "reject"]
    assert "Approved by *alice*" in blocks["decisions"]["text"]["text"] and "outcome" not in blocks
