"""The quality agent through the supervisor, on real flights batches with injected faults: real validate, quality
stage, history warehouse, planner loop, store and checkpoints. Re-runs go through `quality_runner` (the real
validate and quality stages without Prefect)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipewarden.agents.supervisor import supervise_once
from pipewarden.evals.mock_llm import MockLLMServer, answer
from pipewarden.flows import data as D
from pipewarden.inbox.service import approve
from pipewarden.models import ProposalStatus, Risk
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.agents import quality_runner
from tests.fakes.runtimes import swap
from tests.quality_history import build_history, land_and_check, use_history


@pytest.fixture(scope="module")
def history_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, pd.DataFrame]]:
    folder = tmp_path_factory.mktemp("quality-agent-history")
    return folder, build_history(folder)


@pytest.fixture
def m3(history_home, pw_home: Path, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    """This test's home starts with the two accepted months; re-runs use the real validate + quality stages."""
    folder, samples = history_home
    use_history(folder, pw_home)
    swap(monkeypatch, pipeline_runner=quality_runner.run)
    return samples[3]


def _propose(df: pd.DataFrame, tmp_path: Path) -> list:
    landed, _, _ = land_and_check(df, tmp_path)
    report = supervise_once()
    assert all(h.agent == "quality" for h in report.handled), report.lines()
    return sorted(StateStore().list_proposals(), key=lambda p: p.title), landed


def test_null_spike_becomes_a_quarantine_that_heals_names_its_load_and_verifies(m3, tmp_path: Path) -> None:
    (p,), landed = _propose(D.inject_nulls(m3, "tailnum", 0.1), tmp_path)
    assert p.status == ProposalStatus.pending and p.change.kind == "quarantine"
    assert p.change.predicate == "tailnum IS NULL" and p.change.load_id == landed.load_id
    assert p.dry_run.heals and p.dry_run.metrics["rows_taken_out"] == p.change.rows > 0
    assert landed.load_id in p.diagnosis and landed.source in p.diagnosis and "downstream:" in p.diagnosis
    outcome = approve(p.id, "alice")
    assert outcome.proposal.status == ProposalStatus.verified, outcome.proposal.status_reason
    from pipewarden.flows.warehouse import connect

    with connect(read_only=True) as con:
        reasons = con.execute("SELECT DISTINCT reason FROM quarantine WHERE load_id = ? AND reason LIKE "
                              "'quarantine:flights v1%'", [landed.load_id]).fetchall()
        accepted = con.execute("SELECT count(*) FROM raw_flights WHERE _load_id = ?", [landed.load_id]).fetchone()[0]
    assert reasons and "tailnum IS NULL" in reasons[0][0] and accepted > 0


def test_duplicates_become_a_dedupe_rule_that_loses_no_other_row(m3, tmp_path: Path) -> None:
    (p,), _ = _propose(D.inject_duplicates(m3, 0.03), tmp_path)
    assert p.change.kind == "dedupe_rule" and p.change.keys == ["carrier", "flight", "origin", "time_hour"]
    assert p.dry_run.heals and p.dry_run.metrics["rows_taken_out"] == p.dry_run.metrics["duplicate_rows"] == 180
    assert approve(p.id, "alice").proposal.status == ProposalStatus.verified


def test_broken_references_quarantine_only_the_new_codes_and_name_the_upstream(m3, tmp_path: Path) -> None:
    (p,), _ = _propose(D.inject_broken_refs(m3, "tailnum", 0.06), tmp_path)
    assert p.change.kind == "quarantine" and p.dry_run.heals
    assert p.change.predicate.startswith("tailnum IN ('X0000") and "N" not in p.change.predicate.split("IN")[1]
    assert "upstream: planes.tailnum, loaded from" in p.diagnosis and "planes.csv" in p.diagnosis


def test_values_just_past_a_bound_propose_a_high_risk_loosening_contract_change(m3, tmp_path: Path) -> None:
    (p,), _ = _propose(D.inject_out_of_range(m3, "dep_delay", 0.02, dataset="flights"), tmp_path)
    assert p.change.kind == "contract_change" and p.change.loosens and p.risk == Risk.high
    col = next(c for c in p.change.contract["columns"] if c["name"] == "dep_delay")
    assert col["max"] > 1500 and p.change.contract["version"] == 2 and p.dry_run.heals


def test_a_sentinel_out_of_range_is_quarantined_not_allowed(m3, tmp_path: Path) -> None:
    (p,), _ = _propose(D.inject_out_of_range(m3, "distance", 0.02, value=99999), tmp_path)
    assert p.change.kind == "quarantine" and p.change.predicate == "distance < 1 OR distance > 6000"


def test_a_contract_failure_over_threshold_quarantines_the_faulty_check_only(m3, tmp_path: Path) -> None:
    (p,), _ = _propose(D.inject_nulls(m3, "carrier", 0.15), tmp_path)
    assert StateStore().get_event(p.event_id).kind == "check_failed"
    assert p.change.kind == "quarantine" and p.change.predicate == "carrier IS NULL"  # not the cancelled flights
    assert not p.dry_run.before.passed and p.dry_run.after.passed
    assert approve(p.id, "alice").proposal.status == ProposalStatus.verified


def test_a_partial_load_asks_for_a_reingest_verified_once_recorded(m3, tmp_path: Path) -> None:
    (p,), landed = _propose(D.inject_volume_drop(m3, 0.4), tmp_path)
    assert p.change.kind == "reingest" and p.change.source == landed.source and p.change.load_id == landed.load_id
    assert any("cannot be proven" in n for n in p.dry_run.notes)
    outcome = approve(p.id, "alice")
    assert outcome.proposal.status == ProposalStatus.verified
    assert StateStore().active_version("reingest:flights").content["load_id"] == landed.load_id


def test_a_shift_in_one_carrier_quarantines_that_carrier(m3, tmp_path: Path) -> None:
    (p,), _ = _propose(D.inject_distribution_shift(m3, "dep_delay", shift=60, where={"carrier": "UA"}), tmp_path)
    assert p.change.kind == "quarantine" and p.change.predicate == "carrier = 'UA'" and p.dry_run.heals


def _llm(srv: MockLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEWARDEN_OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("PIPEWARDEN_OPENAI_BASE_URL", srv.base_url)
    monkeypatch.setenv("PIPEWARDEN_OPENAI_TIMEOUT_S", "5")
    monkeypatch.setenv("PIPEWARDEN_OPENAI_MAX_RETRIES", "0")
    get_settings.cache_clear()


def test_the_llm_path_retries_a_hallucinated_column_then_takes_the_valid_answer(
    m3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = {"action": "quarantine", "predicate": "tail_number IS NULL", "reason": "nulls", "keys": [], "keep": "last",
           "order_by": None, "bounds": [], "rationale": "", "cited_chunks": []}
    good = {**bad, "predicate": "tailnum IS NULL", "rationale": "the feed lost tail numbers"}
    with MockLLMServer([answer(bad), answer(good)]) as srv:
        _llm(srv, monkeypatch)
        (p,), _ = _propose(D.inject_nulls(m3, "tailnum", 0.1), tmp_path)
        prompt = srv.chat_requests[0].user_text
    assert p.planner == "openai" and p.change.predicate == "tailnum IS NULL" and p.dry_run.heals
    assert "tail_number" in p.tried[0] and p.tried[-1] == "openai attempt 2: accepted"
    assert "<data>" in prompt and "tailnum" in prompt


def test_destructive_sql_from_the_model_never_reaches_the_inbox(
    m3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop = {"action": "quarantine", "predicate": "1=1; DROP TABLE raw_flights", "reason": "x", "keys": [],
            "keep": "last", "order_by": None, "bounds": [], "rationale": "", "cited_chunks": []}
    everything = {**drop, "predicate": "tailnum IS NULL OR tailnum IS NOT NULL"}
    with MockLLMServer([answer(drop), answer(everything)]) as srv:
        _llm(srv, monkeypatch)
        (p,), _ = _propose(D.inject_nulls(m3, "tailnum", 0.1), tmp_path)
    assert p.planner == "offline" and p.change.predicate == "tailnum IS NULL"
    assert "does not parse" in p.tried[0] and "over the 35%" in p.tried[1]
