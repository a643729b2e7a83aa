"""The registry tool on a real MLflow (SQLite) with a real champion: lookups, the reference sample, and the alias
move that promotes a model: refused without approval, idempotent both ways, rolled back to from_version."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest

from pipewarden.errors import ModelRetry, NotApproved
from pipewarden.events import ModelDrift
from pipewarden.models import ModelPromotion, Proposal, ProposalStatus, Risk, Verdict
from pipewarden.store import StateStore
from pipewarden.tools.apply import apply_change, rollback_change
from pipewarden.tools.model_registry import (
    ALIAS_MOVE,
    RegistryError,
    alias_version,
    challenger,
    champion,
    load_model,
    mlflow_client,
    reference_sample,
    register_version,
    version_info,
)
from pipewarden.tools.registry import get_tool
from tests.agents.retrain_world import world

MODEL = "pipewarden-delay"


@pytest.fixture
def base(pw_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return world().use("base", pw_home, monkeypatch)


def _second_version() -> str:
    """Another registered version of the champion's model (same artifacts): something to promote."""
    v1 = version_info(MODEL, "1")
    return register_version(mlflow_client(), MODEL, v1.source, v1.run_id, None)


def _proposal(change: ModelPromotion) -> Proposal:
    store = StateStore()
    event = ModelDrift(dataset="flights", load_id="load-x", model=f"{MODEL}@v1", metric="auc_drop", value=0.1,
                       threshold=0.05)
    store.append_event(event)
    p = Proposal(id=uuid4(), event_id=event.id, agent="retrain", dataset="flights", title="promote",
                 diagnosis="test", change=change, risk=Risk.high, thread_id=f"event-{event.id}")
    return store.create_proposal(p, actor="agent:retrain")


def test_lookups_read_the_champion_its_run_and_its_reference_sample(base: Path) -> None:
    champ = champion(MODEL)
    assert champ is not None and champ.version == "1" and "champion" in champ.aliases
    assert champ.uri == f"models:/{MODEL}/1" and len(champ.features) == 15 and champ.params["label"] == "delayed"
    assert 0.55 < champ.metrics["auc"] < 1.0 and champ.run_id
    assert challenger(MODEL) is None and alias_version("no-such-model", "champion") is None
    with pytest.raises(RegistryError, match="no version 9"):
        version_info(MODEL, "9")
    sample = reference_sample(MODEL, "1")
    assert sample is not None and len(sample) == 2000 and list(sample.columns) == champ.features
    proba = load_model(MODEL, alias="champion").predict_proba(sample.head(50))[:, 1]
    assert ((proba > 0) & (proba < 1)).all()
    tool = get_tool("model_version")
    assert tool.call({"alias": "champion"}).version == "1"
    with pytest.raises(ModelRetry, match="no version of 'pipewarden-delay' has the alias 'staging'"):
        tool.call({"alias": "staging"})


def test_the_alias_move_refuses_without_an_approved_decision(base: Path) -> None:
    v2 = _second_version()
    p = _proposal(ModelPromotion(model_name=MODEL, from_version="1", to_version=v2))
    with pytest.raises(NotApproved, match="refuses to move an alias"):
        ALIAS_MOVE.apply(p.change, p)
    with pytest.raises(NotApproved):
        apply_change(p.id)
    assert champion(MODEL).version == "1"


def test_apply_moves_the_alias_once_and_rollback_moves_it_back_once(base: Path) -> None:
    v2 = _second_version()
    p = _proposal(ModelPromotion(model_name=MODEL, from_version="1", to_version=v2))
    StateStore().decide(p.id, Verdict.approve, "erin", "ok")
    result = apply_change(p.id)
    assert result.proposal.status == ProposalStatus.applied and champion(MODEL).version == v2
    again = ALIAS_MOVE.apply(p.change, StateStore().get_proposal(p.id))  # a crash re-runs the effect: no-op
    assert again == {"moved": False, "alias": "champion", "version": v2}
    assert apply_change(p.id).already_applied

    reopened = rollback_change(p.id, "verification failed")
    assert reopened.status == ProposalStatus.pending and champion(MODEL).version == "1"
    assert ALIAS_MOVE.rollback(p.change, reopened)["moved"] is False  # already back: nothing to do
    assert champion(MODEL).version == "1"


def test_a_new_alias_is_removed_on_rollback_and_a_foreign_move_is_left_alone(base: Path) -> None:
    v2 = _second_version()
    p = _proposal(ModelPromotion(model_name=MODEL, alias="staging", from_version=None, to_version=v2))
    StateStore().decide(p.id, Verdict.approve, "erin", "ok")
    apply_change(p.id)
    assert alias_version(MODEL, "staging").version == v2
    rollback_change(p.id, "undo")
    assert alias_version(MODEL, "staging") is None

    mlflow_client().set_registered_model_alias(MODEL, "champion", v2)  # moved by someone else
    other = ModelPromotion(model_name=MODEL, from_version="1", to_version="1")
    assert ALIAS_MOVE.rollback(other, p)["left_alone"].startswith("the alias points at version 2")
    assert champion(MODEL).version == v2
