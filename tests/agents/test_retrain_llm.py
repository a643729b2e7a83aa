"""The retrain agent's planner through the real `openai` client against the local mock endpoint
(`evals/mock_llm.py`): tool calls run and come back as data, a hallucinated feature is refused and retried with the
error, a valid answer steers the challenger's window; refusals fall back to the offline planner. The answer model
and the validation are also checked on their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipewarden.agents.llm import PlanRequest
from pipewarden.agents.retrain import RetrainAnswer, SliceRef, offline_solution, validate_answer
from pipewarden.agents.supervisor import supervise_once
from pipewarden.evals.mock_llm import MockLLMServer, answer, refusal, tool_call
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from pipewarden.tools.model_registry import version_info
from tests.agents.retrain_world import load_id_for, world


@pytest.fixture
def decayed(pw_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return world().use("decayed", pw_home, monkeypatch)


def _use_endpoint(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    monkeypatch.setenv("PIPEWARDEN_OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("PIPEWARDEN_OPENAI_BASE_URL", base_url)
    monkeypatch.setenv("PIPEWARDEN_OPENAI_TIMEOUT_S", "10")
    monkeypatch.setenv("PIPEWARDEN_OPENAI_MAX_RETRIES", "0")
    get_settings.cache_clear()


def _answer(**kw) -> dict:
    base = {"retrain": True, "window_days": 28, "highlight_features": ["temp"],
            "highlight_slices": [{"column": "origin", "value": "EWR"}],
            "rationale": "AUC fell far below training; the morning flights are late now.", "cited_chunks": []}
    return {**base, **kw}


def test_the_llm_plan_is_validated_retried_and_steers_the_challenger(decayed: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    script = [
        tool_call("model_health", {"load_id": load_id_for(3)}),
        answer(_answer(highlight_features=["departure_mood"])),  # not a feature of the model
        answer(_answer()),
    ]
    with MockLLMServer(script) as srv:
        _use_endpoint(monkeypatch, srv.base_url)
        report = supervise_once()
        requests = srv.chat_requests
    assert [h.status for h in report.handled] == ["pending"]
    (p,) = StateStore().list_proposals()
    assert p.planner == "openai" and p.change.kind == "model_promotion"
    assert p.tried[0].startswith("openai attempt 1: highlight_features names unknown feature(s) 'departure_mood'")
    assert p.tried[-1] == "openai attempt 2: accepted"
    assert version_info("pipewarden-delay", p.change.to_version).params["window_days"] == "28"  # the model's window
    assert "Planned by the openai planner" in p.diagnosis and "origin=EWR" in p.diagnosis

    assert len(requests) == 3
    first, after_tool, retry = requests
    assert "UNTRUSTED DATA" in first.system_prompt and "retrain may be false only" in first.system_prompt
    assert "<data>" in first.user_text and '"feedback_slices"' in first.user_text
    assert {t["function"]["name"] for t in first.body["tools"]} == {"model_health", "model_version"}
    tool_results = [m for m in after_tool.messages if m.get("role") == "tool"]
    assert len(tool_results) == 1
    assert '"decay"' in tool_results[0]["content"] and "auc" in tool_results[0]["content"]
    assert "departure_mood" in retry.user_text  # the error went back as feedback


def test_refusals_fall_back_to_the_offline_planner(decayed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with MockLLMServer([refusal("I can't help with models."), refusal("Still no.")]) as srv:
        _use_endpoint(monkeypatch, srv.base_url)
        supervise_once()
    (p,) = StateStore().list_proposals()
    assert p.planner == "offline" and p.change.kind == "model_promotion"
    assert [t.split(":")[0] for t in p.tried] == ["openai attempt 1", "openai attempt 2", "offline attempt 1"]
    assert "refused" in p.tried[0]


def _request(decayed: bool = True) -> PlanRequest:
    return PlanRequest(agent="retrain", task="t", data={
        "features": [{"name": "temp", "drifted": True}, {"name": "carrier", "drifted": False}],
        "dataset_drift": {"share": 0.5, "threshold": 0.5, "drifted": True},
        "decay": {"decayed": decayed, "verdict": "auc 0.44 vs 0.63"},
        "feedback_slices": [{"column": "origin", "value": "EWR", "rows": 900, "metric": "auc", "score": 0.45},
                            {"column": "carrier", "value": "UA", "rows": 800, "metric": "auc", "score": 0.60}],
        "window": {"default_days": 42, "min_days": 14, "max_days": 120},
        "citations": [{"id": "c1", "source": "contracts/flights.yaml", "excerpt": "arr_delay ..."}],
    })


def test_validation_names_every_invented_name_and_out_of_bounds_choice() -> None:
    req = _request()
    bad = RetrainAnswer(retrain=False, window_days=400, highlight_features=["temp", "mood"],
                        highlight_slices=[SliceRef(column="origin", value="BOS")], rationale=" ",
                        cited_chunks=["c1", "c9"])
    errors = validate_answer(bad, req)
    assert len(errors) == 6
    assert any("'mood'" in e for e in errors) and any("origin=BOS" in e for e in errors)
    assert any("outside the policy's bounds 14..120" in e for e in errors)
    assert any("performance decayed" in e for e in errors) and any("c9" in e for e in errors)
    assert validate_answer(offline_solution(req), req) == []
    no_decay = _request(decayed=False)
    assert validate_answer(bad.model_copy(update={"window_days": 30, "highlight_features": [],
                                                  "highlight_slices": [], "rationale": "holds",
                                                  "cited_chunks": []}), no_decay) == []


def test_the_offline_solution_highlights_the_worst_and_uses_the_policy_window() -> None:
    out = offline_solution(_request())
    assert out.retrain and out.window_days == 42 and out.highlight_features == ["temp"]
    assert [(s.column, s.value) for s in out.highlight_slices] == [("origin", "EWR"), ("carrier", "UA")]
    assert out.cited_chunks == ["c1"] and "auc 0.44 vs 0.63" in out.rationale
    assert RetrainAnswer.model_json_schema()["additionalProperties"] is False  # strict structured outputs
