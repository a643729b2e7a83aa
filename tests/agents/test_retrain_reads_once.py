"""The retrain agent reads each model version from the registry once per event: the champion is read to clone its
recipe and kept for scoring the holdout (`tools.model_registry.load_version`); the challenger is read from its
registered artifact, what a promotion would serve. The proposal is the one the agent made before (`test_retrain`
holds its evidence)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipewarden.agents.supervisor import supervise_once
from pipewarden.models import ProposalStatus
from pipewarden.store import StateStore
from tests.agents.retrain_world import world

MODEL = "pipewarden-delay"


@pytest.fixture
def decayed(pw_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return world().use("decayed", pw_home, monkeypatch)


def test_each_version_is_read_from_the_registry_once_per_event(decayed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.tools import model_registry

    monkeypatch.setattr(model_registry, "_LOADED", {})
    reads: Counter[tuple[str, str | None]] = Counter()
    real = model_registry.load_model

    def counting(model_name, version=None, *, alias=None):  # type: ignore[no-untyped-def]
        reads[(model_name, version)] += 1
        return real(model_name, version, alias=alias)

    monkeypatch.setattr(model_registry, "load_model", counting)
    report = supervise_once()
    assert [(h.agent, h.status) for h in report.handled] == [("retrain", "pending")]
    (p,) = StateStore().list_proposals()
    assert p.status == ProposalStatus.pending and p.change.kind == "model_promotion"
    assert (p.change.from_version, p.change.to_version) == ("1", "2")
    assert reads == Counter({(MODEL, "1"): 1, (MODEL, "2"): 1})


def test_a_kept_version_is_handed_out_as_a_copy(decayed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.tools import model_registry

    monkeypatch.setattr(model_registry, "_LOADED", {})
    info = model_registry.champion(MODEL)
    assert info is not None
    first = model_registry.load_version(info)
    first.set_params(**{first.steps[-1][0] + "__max_iter": 1})  # a caller changing its copy
    again = model_registry.load_version(info)
    assert again is not first and again.get_params()[again.steps[-1][0] + "__max_iter"] == 40
    assert len(model_registry._LOADED) == 1


@pytest.fixture
def proposed(pw_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return world().use("proposed", pw_home, monkeypatch)


def test_comparing_on_a_slice_the_features_table_lacks_names_every_missing_column(proposed: Path) -> None:
    """`compare_models` reads the features table's columns in one catalog query; what it lacks is still named."""
    from pipewarden.policies.retrain import load_retrain_policy
    from pipewarden.tools.challenger import ChallengerError, CompareInput, compare_models

    policy = load_retrain_policy()
    wrong = policy.model_copy(update={"gates": policy.gates.model_copy(update={"slices": ["carrier", "nosuch",
                                                                                          "Carrier"]})})
    with pytest.raises(ChallengerError) as refused:
        compare_models(CompareInput(model_name=MODEL, champion_version="1", challenger_version="2"), wrong)
    assert refused.value.message == "features_flights has no column nosuch, Carrier"  # names are case-sensitive
    cmp = compare_models(CompareInput(model_name=MODEL, champion_version="1", challenger_version="2"), policy)
    assert {s.column for s in cmp.slices} == {"carrier", "origin"}
