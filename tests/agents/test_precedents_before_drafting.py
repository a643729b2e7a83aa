"""The planning step hears what people decided on the same fault before it drafts (issue 9), through the real
builder, store and planners, with the scripted OpenAI-compatible server: the model's request carries the rejection
and its reason as data; an answer identical to a rejected change is refused with that reason, so the retry drafts
something else; the offline planners leave a rejected candidate out before proving it; `heed` still stops a
rejected change the planning step let through; and a fault nobody decided before is planned as it always was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipewarden.agents import quality, schema_drift
from pipewarden.agents.precedent import PRECEDENT_RULE
from pipewarden.agents.supervisor import supervise_once
from pipewarden.evals.mock_llm import MockLLMServer, answer
from pipewarden.flows import data as D
from pipewarden.inbox.service import reject
from pipewarden.models import Proposal, ProposalStatus
from pipewarden.store import StateStore
from tests.agents.conftest import drifted_event
from tests.agents.test_learning_from_decisions import NEVER_LOOSEN, _quality_proposal
from tests.agents.test_quality_agent import _llm, history_home, m3  # noqa: F401  # the quality agent's world

QUARANTINE = {"action": "quarantine", "predicate": "dep_delay < -120 OR dep_delay > 1500",
              "reason": "dep_delay out of range", "keys": [], "keep": "last", "order_by": None, "bounds": [],
              "rationale": "sensor errors", "cited_chunks": []}
FEED = "the feed renames it back tomorrow; wait for it"


def _data(text: str) -> dict[str, Any]:
    """The untrusted JSON document between the <data> tags of a request's user message."""
    return json.loads(text.split("<data>\n", 1)[1].split("\n</data>", 1)[0])


def _refused(p: Proposal, reason: str) -> str:
    return f"a person rejected this change for this fault: {reason} (proposal {p.short_id}, rejected by alice)"


def _loosening_rejected(m3: pd.DataFrame, tmp_path: Path) -> tuple[pd.DataFrame, Proposal]:  # noqa: F811
    df = D.inject_out_of_range(m3, "dep_delay", 0.02, dataset="flights")
    p1 = _quality_proposal(df, tmp_path, "first")
    assert p1.change.kind == "contract_change"  # the offline planner's first choice: loosen the bound
    reject(p1.id, "alice", reason=NEVER_LOOSEN)
    return df, p1


def test_the_model_hears_the_rejection_as_data_and_its_rejected_answer_is_refused_with_the_reason(
    m3: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    df, p1 = _loosening_rejected(m3, tmp_path)
    bounds = [b.model_dump() for b in quality._bounds_from(p1.change.model_dump(mode="json"))]
    loosen = {**QUARANTINE, "action": "contract_change", "predicate": "", "reason": "the delays are real",
              "bounds": bounds}
    with MockLLMServer([answer(loosen), answer(QUARANTINE)]) as srv:
        _llm(srv, monkeypatch)
        p2 = _quality_proposal(df, tmp_path, "second", seed=5)
        first, second = srv.chat_requests
    past = _data(first.user_text)["past_decisions"]
    assert [(r["proposal"], r["rejected_by"], r["reason"], r["change"]["kind"]) for r in past["rejected"]] == [
        (p1.short_id, "alice", NEVER_LOOSEN, "contract_change")]
    assert past["accepted"] == [] and past["rolled_back"] == []
    # the reason travels as data only; the trusted rule says what to do with it
    assert PRECEDENT_RULE in first.system_prompt and NEVER_LOOSEN not in first.system_prompt
    # the model's loosening is the rejected change: refused before any dry-run, the reason fed back, then a new answer
    assert p2.tried[0] == f"openai attempt 1: {_refused(p1, NEVER_LOOSEN)}; propose a different change"
    assert p2.tried[1] == "openai attempt 2: accepted"
    assert _refused(p1, NEVER_LOOSEN) in second.contents("user")[-1]
    assert p2.planner == "openai" and p2.change.kind == "quarantine" and p2.status == ProposalStatus.pending


def test_a_fault_nobody_decided_before_is_planned_without_precedents(
    m3: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    df = D.inject_out_of_range(m3, "dep_delay", 0.02, dataset="flights")
    with MockLLMServer([answer(QUARANTINE)]) as srv:
        _llm(srv, monkeypatch)
        p = _quality_proposal(df, tmp_path, "first")
        [request] = srv.chat_requests
    assert "past_decisions" not in _data(request.user_text) and PRECEDENT_RULE not in request.system_prompt
    assert p.planner == "openai" and p.tried == ["openai attempt 1: accepted"] and p.change.kind == "quarantine"
    assert "Past decisions on this fault" not in p.diagnosis


def test_heed_still_stops_a_rejected_change_the_planning_step_let_through(
    m3: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    df, p1 = _loosening_rejected(m3, tmp_path)
    # force the planning step to draft the rejected loosening again: no refusal, no ranking
    monkeypatch.setattr(quality, "refusal", lambda _precedents, _change: None)
    monkeypatch.setattr(quality, "rank", lambda candidates, _identity, _precedents, describe=None: (list(candidates), []))
    p2 = _quality_proposal(df, tmp_path, "second", seed=5)
    assert p2.change.kind == "quarantine" and p2.status == ProposalStatus.pending  # heed's next alternative
    assert ("The planner's first choice (flights: loosen the contract" in p2.diagnosis
            and f"was rejected for this fault on proposal {p1.short_id} by alice" in p2.diagnosis
            and "this is its next alternative" in p2.diagnosis)


def _mapping_rejected(february: pd.DataFrame, tmp_path: Path) -> tuple[Proposal, pd.DataFrame]:
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    first = drifted_event(february, tmp_path / "1")
    supervise_once()
    p1 = StateStore().proposal_for_event(first.id)
    assert p1.change.kind == "column_mapping"
    reject(p1.id, "alice", reason=FEED)
    return p1, february.sample(frac=1.0, random_state=3).reset_index(drop=True)


def test_a_rejected_mapping_from_the_model_is_refused_every_time_and_the_proposal_names_the_rejection(
    february: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p1, later = _mapping_rejected(february, tmp_path)
    ch = p1.change
    same = {"renames": [{"incoming": k, "contract_column": v} for k, v in ch.renames.items()],
            "casts": [{"column": k, "type": v} for k, v in ch.casts.items()],
            "transforms": [{"column": t.column, "kind": t.kind, "factor": t.factor, "format": t.format}
                           for t in ch.transforms],
            "drop_from_contract": [], "rationale": "the same as before", "cited_chunks": []}
    with MockLLMServer([answer(same), answer(same)]) as srv:
        _llm(srv, monkeypatch)
        second = drifted_event(later, tmp_path / "2")  # the same drifted schema, a new load
        supervise_once()
        requests = srv.chat_requests
    [rejected] = _data(requests[0].user_text)["past_decisions"]["rejected"]
    assert rejected["reason"] == FEED and rejected["change"]["renames"] == ch.renames
    p2 = StateStore().proposal_for_event(second.id)
    why = f"{_refused(p1, FEED)}; propose a different change"
    assert p2.tried == [f"openai attempt 1: {why}", f"openai attempt 2: {why}", f"offline attempt 1: {why}"]
    assert p2.status == ProposalStatus.needs_human and p1.short_id in p2.title


def test_heed_still_turns_a_rejected_mapping_the_planning_step_let_through_into_needs_a_human(
    february: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p1, later = _mapping_rejected(february, tmp_path)
    monkeypatch.setattr(schema_drift, "refusal", lambda _precedents, _change: None)
    monkeypatch.setattr(schema_drift, "rank",
                        lambda candidates, _identity, _precedents, describe=None: (list(candidates), []))
    second = drifted_event(later, tmp_path / "2")
    supervise_once()
    p2 = StateStore().proposal_for_event(second.id)
    assert p2.status == ProposalStatus.needs_human and p2.change.kind == "no_change"
    assert f"the only change found was rejected before (proposal {p1.short_id})" in p2.title  # heed's words
    assert any(f"rejected on proposal {p1.short_id} by alice: {FEED}" in t for t in p2.tried)
