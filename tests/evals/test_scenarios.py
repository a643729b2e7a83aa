"""The scenario catalogue and its loader: coverage the issue asks for, and errors that name file, scenario and field."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from pipewarden.agents import registry
from pipewarden.errors import ConfigError, UnknownNameError
from pipewarden.evals.faults import FAULTS
from pipewarden.evals.scenarios import eval_agents, load_catalogue, select


def test_the_catalogue_holds_at_least_60_scenarios_across_the_four_agents() -> None:
    scenarios = load_catalogue().scenarios
    per_agent = Counter(s.agent for s in scenarios)
    assert len(scenarios) >= 60
    assert set(per_agent) == {"schema-drift", "quality", "cost", "retrain"} and min(per_agent.values()) >= 10


def test_the_adversarial_behaviours_of_the_issue_are_all_covered() -> None:
    tags = Counter(t for s in load_catalogue().scenarios if s.adversarial for t in s.tags)
    for needed in ("invalid-json", "hallucinated-column", "unknown-tool", "destructive-sql", "injection", "timeout",
                   "refusal"):
        assert tags[needed] >= 2, needed
    sql = " ".join(str(step) for s in load_catalogue().scenarios for step in s.llm).upper()
    assert all(word in sql for word in ("DROP", "DELETE", "UPDATE"))


def test_every_scenario_names_a_known_fault_and_injection_scenarios_forbid_what_the_plant_asks() -> None:
    for s in load_catalogue().scenarios:
        assert s.fault.name in FAULTS, s.id
        if "injection" in s.tags:
            assert s.forbidden, f"{s.id} plants an instruction but forbids nothing"


def _write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "scenarios"
    folder.mkdir(exist_ok=True)
    (folder / "bad.yaml").write_text(text)
    return folder


def test_a_bad_field_is_named_with_the_file_and_the_scenario(tmp_path: Path) -> None:
    folder = _write(tmp_path, """
agent: schema-drift
scenarios:
  - id: ok-one
    fault: {name: drift}
    expect: {outcome: needs_human}
  - id: broken
    fault: {name: drift}
    expect: {outcome: change}
""")
    with pytest.raises(ConfigError) as info:
        load_catalogue(folder)
    msg = info.value.message
    assert "bad.yaml" in msg and "scenario #2 (broken)" in msg and "expect" in msg and "change" in msg


def test_an_unknown_step_kind_and_an_unknown_agent_are_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path, """
scenarios:
  - {id: a, agent: schema-drift, fault: {name: drift}, expect: {outcome: needs_human}, llm: [{kind: shout}]}
""")
    with pytest.raises(ConfigError, match=r"scenario #1 \(a\): llm\.0"):
        load_catalogue(folder)
    folder = _write(tmp_path, """
scenarios:
  - {id: a, agent: pricing, fault: {name: drift}, expect: {outcome: needs_human}}
""")
    with pytest.raises(ConfigError, match="unknown agent 'pricing'"):
        load_catalogue(folder)


def test_duplicate_ids_across_files_are_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path, "scenarios:\n  - {id: a, agent: cost, fault: {name: clean}, expect: {outcome: needs_human}}\n")
    (folder / "other.yaml").write_text(
        "scenarios:\n  - {id: a, agent: cost, fault: {name: clean}, expect: {outcome: needs_human}}\n")
    with pytest.raises(ConfigError, match="'a' is already used"):
        load_catalogue(folder)


def test_selection_by_id_agent_and_pattern() -> None:
    cat = load_catalogue()
    assert [s.id for s in select(cat, scenario="sd-adv-timeout")] == ["sd-adv-timeout"]
    assert {s.agent for s in select(cat, agent="cost")} == {"cost"}
    injection = select(cat, pattern="injection")
    assert injection and all("injection" in s.tags or "injection" in s.id for s in injection)
    assert all(s.id.startswith("sd-adv") for s in select(cat, pattern="sd-adv-*"))
    with pytest.raises(UnknownNameError, match="did you mean 'sd-adv-timeout'"):
        select(cat, scenario="sd-adv-timeot")
    with pytest.raises(ConfigError, match="no scenario matches"):
        select(cat, pattern="no-such-thing-anywhere")


def test_the_evals_cover_the_registered_agents_that_plan_in_routing_order() -> None:
    assert eval_agents() == tuple(spec.name for spec in registry.AGENTS if spec.name != "triage")
    assert eval_agents() == ("schema-drift", "cost", "quality", "retrain")


_FIFTH = """
agent: run-failure
scenarios:
  - {id: rf-one, fault: {name: clean}, expect: {outcome: needs_human}}
"""


def test_a_fifth_agent_registered_with_one_line_gets_scenarios_without_editing_evals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write(tmp_path, _FIFTH)
    with pytest.raises(ConfigError, match="unknown agent 'run-failure'"):
        load_catalogue(folder)  # not registered yet: refused
    # docs/adding-an-agent.md's one line: the new spec before the catch-all (a planning agent; here a copy of one)
    fifth = dataclasses.replace(registry.spec_for("quality"), name="run-failure", handles=("run_failed",))
    monkeypatch.setattr(registry, "AGENTS", (*registry.AGENTS[:-1], fifth, registry.AGENTS[-1]))
    cat = load_catalogue(folder)
    assert [(s.id, s.agent) for s in cat.scenarios] == [("rf-one", "run-failure")]
    assert [s.id for s in select(cat, agent="run-failure")] == ["rf-one"]
    assert "run-failure" in eval_agents()


def test_triage_is_registered_but_not_evaluated_and_a_misspelt_agent_gets_a_suggestion(tmp_path: Path) -> None:
    folder = _write(tmp_path, "scenarios:\n  - {id: t, agent: triage, fault: {name: clean}, "
                              "expect: {outcome: needs_human}}\n")
    with pytest.raises(ConfigError, match="agent 'triage' does not plan"):
        load_catalogue(folder)
    cat = load_catalogue()
    with pytest.raises(ConfigError, match="agent 'triage' does not plan"):
        select(cat, agent="triage")
    with pytest.raises(UnknownNameError, match="did you mean 'retrain'"):
        select(cat, agent="retrian")
