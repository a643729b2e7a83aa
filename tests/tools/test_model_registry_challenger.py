"""Challengers on real flights: trained with the champion's recipe on the recent window as an MLflow run,
compared with the champion on the recent holdout, and held to the gates (margin and slice regression)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipewarden.policies.retrain import GatePolicy, RetrainPolicy
from pipewarden.tools.challenger import (
    ChallengerError,
    ChallengerSpec,
    CompareInput,
    SliceComparison,
    compare_models,
    judge,
    train_challenger,
)
from pipewarden.tools.drift import warehouse
from pipewarden.tools.model_registry import (
    CHALLENGER,
    EVENT_TAG,
    alias_version,
    champion,
    reference_sample,
    version_info,
)
from tests.agents.retrain_world import world

MODEL = "pipewarden-delay"


@pytest.fixture
def decayed(pw_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return world().use("decayed", pw_home, monkeypatch)


def test_a_challenger_is_an_mlflow_run_on_the_recent_window_and_training_is_idempotent(decayed: Path) -> None:
    run = train_challenger(ChallengerSpec(base_version="1", window_days=28, max_train_rows=3000, event_id="ev-1"))
    assert (run.version, run.base_version, run.reused) == ("2", "1", False)
    assert (run.window_start, run.window_end) == ("2013-03-04", "2013-03-31")
    assert run.window_start < run.split_date <= run.window_end and run.rows_train == 3000 < run.rows_available
    v = version_info(MODEL, "2")
    assert v.run_id == run.run_id and v.tags[EVENT_TAG] == "ev-1" and v.params["window_days"] == "28"
    assert v.params["features"] == version_info(MODEL, "1").params["features"]  # the champion's recipe
    assert v.params["max_iter"] == "40" and v.metrics["auc"] == pytest.approx(run.metrics["auc"])
    assert alias_version(MODEL, CHALLENGER).version == "2" and champion(MODEL).version == "1"
    sample = reference_sample(MODEL, "2")
    assert sample is not None and len(sample) == 2000 and sample["carrier"].notna().all()
    with warehouse() as con:
        holdout = con.execute("SELECT COUNT(*) FROM features_flights WHERE flight_date BETWEEN ? AND ?",
                              [run.split_date, run.window_end]).fetchall()[0][0]
    assert run.rows_holdout == holdout

    again = train_challenger(ChallengerSpec(base_version="1", window_days=28, max_train_rows=3000, event_id="ev-1"))
    assert again.reused and again.version == "2"
    with pytest.raises(ChallengerError, match="spans one day only"):
        train_challenger(ChallengerSpec(base_version="1", window_days=1, event_id="ev-2"))


def test_the_comparison_scores_both_on_the_same_holdout_and_slices(pw_home: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    world().use("proposed", pw_home, monkeypatch)  # the retrain agent trained v2 on the last 42 days
    run = version_info(MODEL, "2")
    cmp = compare_models(CompareInput(champion_version="1", challenger_version="2"))
    assert (cmp.holdout_start, cmp.holdout_end) == (run.params["split_date"], run.params["window_end"])
    assert cmp.rows == run.metrics["rows_holdout"]
    assert cmp.challenger_score == pytest.approx(run.metrics["auc"])  # the same rows the run was scored on
    assert cmp.delta == pytest.approx(cmp.challenger_score - cmp.champion_score, abs=1e-6)
    assert cmp.delta > 0.1 and cmp.champion_drop > 0.05  # the flipped pattern: the champion decayed, retraining won
    assert not cmp.champion_passes and cmp.challenger_passes
    assert {s.column for s in cmp.slices} == {"carrier", "origin"}
    assert sum(s.rows for s in cmp.slices if s.column == "origin") == cmp.rows
    assert all(s.gated == (s.rows >= 500 and s.delta is not None) for s in cmp.slices)  # the shipped policy


def test_the_gates_refuse_a_worse_challenger(decayed: Path) -> None:
    # trained on the last two weeks of the flipped March, it learned mornings are late; on February (clean, and
    # seen by neither model) that is wrong, and the January champion is the better model
    flipped = train_challenger(ChallengerSpec(base_version="1", window_days=14, max_train_rows=3000))
    policy = RetrainPolicy(gates=GatePolicy(min_slice_rows=500, max_slice_regression=0.05))
    cmp = compare_models(CompareInput(champion_version="1", challenger_version=flipped.version,
                                      holdout_start="2013-02-01", holdout_end="2013-02-28"), policy)
    assert cmp.rows > 5000 and cmp.notes == []
    assert cmp.delta < -0.05 and cmp.champion_passes and not cmp.challenger_passes
    assert any("does not beat the champion" in f for f in cmp.challenger_failures)
    regressed = [s for s in cmp.slices if s.regressed]
    assert regressed and all(s.rows >= 500 and s.delta < -0.05 for s in regressed)
    assert len(cmp.challenger_failures) == 1 + len(regressed)  # the margin, then one line per regressed slice


def _slice(name: str, rows: int, champ: float, chall: float) -> SliceComparison:
    col, value = name.split("=")
    return SliceComparison(column=col, value=value, rows=rows, positives=rows // 4, champion=champ,
                           challenger=chall, delta=round(chall - champ, 6), gated=True)


def test_judge_applies_the_margin_and_the_slice_bound() -> None:
    policy = RetrainPolicy(gates=GatePolicy(min_improvement=0.02, max_slice_regression=0.03, min_slice_rows=500))
    fine = [_slice("carrier=UA", 900, 0.60, 0.70), _slice("origin=EWR", 800, 0.62, 0.60)]  # -0.02: within bound
    champ_fail, chall_fail = judge("auc", 0.60, 0.70, 0.62, fine, policy)
    assert chall_fail == [] and champ_fail == ["challenger v? beats it by +0.1000 auc (margin 0.02)"]

    thin = judge("auc", 0.60, 0.615, 0.61, fine, policy)
    assert champ_fail != thin[0] and thin[0] == []  # no decay (0.01 < 0.05), not beaten by 0.02
    assert thin[1] == ["challenger v? auc 0.6150 does not beat the champion's 0.6000 by the margin 0.02 "
                       "(gain +0.0150)"]

    bad_slice = [*fine, _slice("carrier=EV", 700, 0.70, 0.62)]
    _, failures = judge("auc", 0.60, 0.70, 0.66, bad_slice, policy)
    assert failures == ["slice carrier=EV (700 rows): auc 0.7000 -> 0.6200 (-0.0800) regresses past the bound 0.03"]
    small = [*fine, _slice("carrier=HA", 40, 0.90, 0.10)]  # under min_slice_rows: reported, never gated
    assert judge("auc", 0.60, 0.70, 0.66, small, policy)[1] == []

    decayed_champ, _ = judge("auc", 0.55, 0.56, 0.66, fine, policy, champion_version="1")
    assert decayed_champ[0].startswith("champion v1 auc 0.5500 on the recent holdout is 0.1100 worse")
    assert judge("brier", 0.20, 0.15, 0.20, [], RetrainPolicy(gates=GatePolicy(metric="brier")))[1] == []
