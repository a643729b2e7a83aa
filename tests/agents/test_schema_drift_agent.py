"""The schema-drift agent through the supervisor: real validation, matcher, MiniLM, checkpoints and store;
only the pipeline re-run is the fake runner (the end-to-end test runs the real one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipewarden.agents.checkpoint import open_checkpointer
from pipewarden.agents.router import route_for_agent
from pipewarden.agents.supervisor import resume_proposal, supervise_once
from pipewarden.errors import InvalidTransition, NotApproved
from pipewarden.evals.mock_llm import MockLLMServer, answer
from pipewarden.events import RunFailed
from pipewarden.inbox.service import approve, reject
from pipewarden.models import ProposalStatus, Verdict
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from pipewarden.tools.apply import apply_change
from tests.agents import fake_runner
from tests.agents.conftest import drifted_event

ROOT = Path(__file__).resolve().parents[2]


def _only_proposal():
    (p,) = StateStore().list_proposals()
    return p


def test_drift_becomes_one_pending_mapping_proposal_with_evidence(february: pd.DataFrame, tmp_path: Path) -> None:
    event = drifted_event(february, tmp_path)
    report = supervise_once()
    assert [h.status for h in report.handled] == ["pending"]
    p = _only_proposal()
    assert p.event_id == event.id and p.agent == "schema-drift"
    assert p.change.kind == "column_mapping"
    assert p.change.renames == {"departureDelay": "dep_delay"}
    assert p.change.casts == {"flight": "integer"}
    assert p.dry_run is not None and not p.dry_run.before.passed and p.dry_run.after.passed
    assert any("departureDelay" in e for e in p.dry_run.before.schema_errors)
    assert p.dry_run.sample and "dep_delay" in p.dry_run.sample[0]
    assert p.planner == "offline"
    assert StateStore().list_events()[0]["status"] == "proposed"


def test_supervising_twice_and_after_a_crash_makes_one_proposal(february: pd.DataFrame, tmp_path: Path) -> None:
    event = drifted_event(february, tmp_path)
    supervise_once()
    assert supervise_once().handled == []  # already claimed and proposed
    StateStore().finish_event(event.id, "pending")  # as if the worker crashed before marking it
    again = supervise_once()
    assert [h.proposal_id for h in again.handled] == [str(_only_proposal().id)]
    assert len(StateStore().list_proposals()) == 1
    assert [a.action for a in StateStore().audit_entries()].count("proposed") == 1


def test_the_apply_tool_refuses_without_an_approved_decision(february: pd.DataFrame, tmp_path: Path) -> None:
    drifted_event(february, tmp_path)
    supervise_once()
    p = _only_proposal()
    with pytest.raises(NotApproved, match="inbox approve"):
        apply_change(p.id)
    assert StateStore().active_version(p.change.target) is None
    assert StateStore().get_proposal(p.id).status == ProposalStatus.pending


def test_approval_applies_a_new_version_reruns_and_verifies(february: pd.DataFrame, tmp_path: Path) -> None:
    drifted_event(february, tmp_path)
    supervise_once()
    p = _only_proposal()
    outcome = approve(p.short_id, "alice")
    assert outcome.proposal.status == ProposalStatus.verified
    version = StateStore().active_version(p.change.target)
    assert version is not None and version.number == 1 and version.content["renames"] == {"departureDelay": "dep_delay"}
    assert fake_runner.CALLS[-1]["rerun"] is True
    actions = [a.action for a in StateStore().audit_entries(str(p.id))]
    assert actions == ["proposed", "approved", "applying", "version_activated", "applied", "verified"]
    assert StateStore().verify_audit().ok
    # the thread has ended: resuming again changes nothing
    assert resume_proposal(p.id).status == ProposalStatus.verified
    assert len(StateStore().list_versions(p.change.target)) == 1


def test_failed_verification_rolls_back_and_reopens_then_a_second_approval_verifies(
    february: pd.DataFrame, tmp_path: Path, fake_pipeline: list[str]
) -> None:
    drifted_event(february, tmp_path)
    supervise_once()
    p = _only_proposal()
    fake_pipeline.append("halted")
    outcome = approve(p.id, "alice")
    assert outcome.proposal.status == ProposalStatus.pending
    assert "re-opened" in outcome.proposal.status_reason and "dep_delay" in outcome.proposal.status_reason
    assert StateStore().active_version(p.change.target) is None  # rolled back: nothing was active before
    with open_checkpointer() as saver:
        snapshot = route_for_agent("schema-drift").build(saver).get_state(
            {"configurable": {"thread_id": p.thread_id}})
    assert snapshot.next == ("await_decision",) and len(snapshot.interrupts) == 1
    fake_pipeline.append("completed")
    assert approve(p.id, "bob").proposal.status == ProposalStatus.verified
    active = StateStore().active_version(p.change.target)
    assert active is not None and active.number == 1  # the same change, re-activated
    assert len(StateStore().list_versions(p.change.target)) == 1


def test_reject_ends_the_thread_and_applies_nothing(february: pd.DataFrame, tmp_path: Path) -> None:
    drifted_event(february, tmp_path)
    supervise_once()
    p = _only_proposal()
    reject(p.id, "alice", "departureDelay is in seconds upstream")
    with open_checkpointer() as saver:
        snapshot = route_for_agent("schema-drift").build(saver).get_state(
            {"configurable": {"thread_id": p.thread_id}})
    assert snapshot.next == ()
    assert StateStore().get_proposal(p.id).status == ProposalStatus.rejected
    assert fake_runner.CALLS == [] and StateStore().list_versions(p.change.target) == []


def test_a_graph_waiting_in_one_process_is_resumed_from_another(february: pd.DataFrame, tmp_path: Path) -> None:
    drifted_event(february, tmp_path)
    supervise_once()
    p = _only_proposal()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAKE_RUNNER_STATUS": "completed",
           "PIPEWARDEN_RUNTIME": "tests.fakes.runtimes:fake_runner",
           "PIPEWARDEN_TOKEN": StateStore().issue_token("carol")}  # the CLI decides as the person it proves
    res = subprocess.run([sys.executable, "-m", "pipewarden", "inbox", "approve", p.short_id, "--as", "carol"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert res.returncode == 0, res.stderr
    assert "verified" in res.stdout
    assert StateStore().get_proposal(p.id).status == ProposalStatus.verified


def test_an_unrecognisable_column_becomes_a_high_risk_contract_change_with_patched_models(
    february: pd.DataFrame, tmp_path: Path
) -> None:
    garbled = february.copy()
    garbled["dep_delay"] = ["%08x" % (i * 2654435761 % 2**32) for i in range(len(garbled))]
    drifted_event(garbled, tmp_path, renames={"dep_delay": "qq_zx"}, to_string=[])
    supervise_once()
    p = _only_proposal()
    assert p.status == ProposalStatus.pending and p.risk == "high"
    assert [c.kind for c in p.change.changes] == ["contract_change", "sql_model_patch"]
    assert p.change.changes[0].loosens and "dep_delay" not in [c["name"] for c in p.change.changes[0].contract["columns"]]
    assert p.change.changes[1].model == "stg_flights"
    assert p.dry_run.heals and any("qq_zx" in line for line in p.dry_run.before.schema_errors)


def test_a_retyped_column_that_does_not_convert_reaches_the_inbox_as_needs_a_human(
    february: pd.DataFrame, tmp_path: Path
) -> None:
    coded = february.copy()
    coded["flight"] = "UA" + coded["flight"].astype(str)
    drifted_event(coded, tmp_path, renames={}, to_string=[])
    supervise_once()
    p = _only_proposal()
    assert p.status == ProposalStatus.needs_human
    assert p.change.kind == "no_change" and "does not heal" in p.change.reason
    assert p.tried, "the proposal says what was tried"
    with pytest.raises(InvalidTransition, match="no valid change"):
        StateStore().decide(p.id, Verdict.approve, "alice")


def test_events_without_an_agent_reach_the_inbox_through_triage() -> None:
    StateStore().append_event(RunFailed(dataset="flights", stage="transform", error="route_daily failed in DuckDB"))
    report = supervise_once()
    assert [h.agent for h in report.handled] == ["triage"]
    p = _only_proposal()
    assert p.status == ProposalStatus.needs_human and "route_daily" in p.diagnosis


def _use_llm(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    monkeypatch.setenv("PIPEWARDEN_OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("PIPEWARDEN_OPENAI_BASE_URL", base_url)
    monkeypatch.setenv("PIPEWARDEN_OPENAI_TIMEOUT_S", "5")
    get_settings.cache_clear()


def test_a_valid_llm_answer_becomes_the_proposal(
    february: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drifted_event(february, tmp_path)
    good = {"renames": [{"incoming": "departureDelay", "contract_column": "dep_delay"}],
            "casts": [{"column": "flight", "type": "integer"}], "rationale": "same values", "cited_chunks": []}
    with MockLLMServer([answer(good)]) as llm:
        _use_llm(monkeypatch, llm.base_url)
        supervise_once()
        assert len(llm.chat_requests) == 1
    p = _only_proposal()
    assert p.planner == "openai"
    assert p.change.renames == {"departureDelay": "dep_delay"}


def test_a_hallucinating_llm_is_retried_then_the_offline_planner_answers(
    february: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drifted_event(february, tmp_path)
    bad = {"renames": [{"incoming": "departureDelay", "contract_column": "departure_delay_minutes"}], "casts": [],
           "rationale": "trust me", "cited_chunks": []}
    with MockLLMServer([answer(bad), answer(bad)]) as llm:
        _use_llm(monkeypatch, llm.base_url)
        supervise_once()
        assert len(llm.chat_requests) == 2
        assert "departure_delay_minutes" in llm.chat_requests[1].user_text  # the error was fed back
    p = _only_proposal()
    assert p.planner == "offline" and p.status == ProposalStatus.pending
    assert p.change.renames == {"departureDelay": "dep_delay"}
    assert any(line.startswith("openai attempt 1") for line in p.tried)


@pytest.mark.postgres
def test_the_loop_on_postgres_state_and_checkpoints(
    february: pd.DataFrame, tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    from pipewarden.db import make_engine, metadata

    with make_engine(postgres_url).begin() as conn:  # TRUNCATE: the audit log's triggers refuse DELETE
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    monkeypatch.setenv("PIPEWARDEN_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    drifted_event(february, tmp_path)
    supervise_once()
    p = _only_proposal()
    assert p.status == ProposalStatus.pending
    assert not get_settings().checkpoints_path.exists()  # checkpoints went to PostgresSaver
    assert approve(p.id, "alice").proposal.status == ProposalStatus.verified
    assert StateStore().verify_audit().ok
