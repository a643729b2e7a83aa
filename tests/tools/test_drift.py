"""Drift and decay statistics against distributions whose answer is known (scipy computes the references), the
dataset-drift rule, the retrain policy file, and decay on labelled feedback."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipewarden.errors import ConfigError
from pipewarden.policies.retrain import DecayPolicy, DriftPolicy, RetrainPolicy, gain, load_retrain_policy
from pipewarden.tools.drift import (
    DriftInputError,
    categorical_psi,
    drift_report,
    feature_drift,
    metric_value,
    numeric_psi,
    performance_decay,
    psi,
    slice_metrics,
)


def normal(mean: float, sd: float, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sd, n)


# --------------------------------------------------------------------------- small references: two-sample tests
def test_small_reference_uses_ks_and_its_p_value_is_scipys() -> None:
    ref, shifted = normal(0, 1, 300, 1), normal(0.5, 1, 300, 2)
    found = feature_drift(ref, shifted, feature="x", kind="numeric")
    assert found.method == "ks" and found.drifted
    assert found.p_value == pytest.approx(stats.ks_2samp(ref, shifted).pvalue)
    assert found.p_value < 0.05 and found.threshold == 0.05

    same = feature_drift(ref, normal(0, 1, 300, 3), feature="x", kind="numeric")
    assert same.method == "ks" and not same.drifted and same.p_value > 0.05


def test_small_reference_categories_use_chi_squared() -> None:
    ref = ["A"] * 150 + ["B"] * 150
    moved = ["A"] * 240 + ["B"] * 60
    found = feature_drift(ref, moved, feature="carrier", kind="categorical")
    expected = stats.chi2_contingency(np.array([[150, 150], [240, 60]]))[1]
    assert found.method == "chi2" and found.drifted and found.p_value == pytest.approx(expected)
    assert not feature_drift(ref, ref[::-1], feature="carrier", kind="categorical").drifted


# --------------------------------------------------------------------------- large references: distances
def test_large_reference_uses_wasserstein_over_the_reference_std() -> None:
    ref = normal(10, 2, 5000, 4)
    cur = normal(10.8, 2, 5000, 5)  # a shift of 0.4 standard deviations
    found = feature_drift(ref, cur, feature="temp", kind="numeric")
    expected = stats.wasserstein_distance(ref, cur) / ref.std()
    assert found.wasserstein_std == pytest.approx(expected) and expected == pytest.approx(0.4, abs=0.05)
    assert found.drifted and found.method in ("wasserstein", "psi")

    steady = feature_drift(ref, normal(10, 2, 5000, 6), feature="temp", kind="numeric")
    assert not steady.drifted and steady.method == "wasserstein" and steady.wasserstein_std < 0.1
    assert steady.psi < 0.1


def test_a_small_shift_under_both_thresholds_is_not_drift_and_psi_alone_can_flag_drift() -> None:
    ref = normal(0, 1, 5000, 7)
    small = feature_drift(ref, normal(0.05, 1, 5000, 8), feature="x", kind="numeric")
    assert not small.drifted and small.wasserstein_std < 0.1 and small.psi < 0.1
    # the same values with 30% of them gone missing: the distance of what is left barely moves, PSI's null bin does
    cur = normal(0, 1, 5000, 9)
    cur[: 1500] = np.nan
    nulls = feature_drift(ref, cur, feature="x", kind="numeric")
    assert nulls.wasserstein_std < 0.1 and nulls.psi >= 0.1
    assert nulls.drifted and nulls.method == "psi" and nulls.current_null_share == pytest.approx(0.3)


def test_psi_matches_its_formula_on_known_shares() -> None:
    assert psi([0.5, 0.5], [0.8, 0.2]) == pytest.approx(0.3 * math.log(0.8 / 0.5) + (-0.3) * math.log(0.2 / 0.5))
    assert psi([0.25] * 4, [0.25] * 4) == 0.0
    ref = ["A"] * 2500 + ["B"] * 2500
    cur = ["A"] * 4000 + ["B"] * 1000
    assert categorical_psi(ref, cur) == pytest.approx(psi([0.5, 0.5, 0, 0], [0.8, 0.2, 0, 0]))
    big = feature_drift(ref, cur, feature="origin", kind="categorical")
    assert big.method == "psi" and big.drifted and big.statistic == pytest.approx(0.416, abs=1e-3)
    # deciles of the reference: the reference against itself is 0
    x = normal(0, 1, 2000, 10)
    assert numeric_psi(x, x) == pytest.approx(0.0, abs=1e-12)


def test_a_new_category_counts_in_the_other_bin() -> None:
    ref = ["A"] * 2500 + ["B"] * 2500
    cur = ["A"] * 2500 + ["Z"] * 2500  # B vanished, an unseen Z arrived
    found = feature_drift(ref, cur, feature="carrier", kind="categorical")
    assert found.drifted and found.psi > 1.0


# --------------------------------------------------------------------------- the dataset rule
def _frames(n_drifted: int, n_features: int = 4, rows: int = 3000) -> tuple[pd.DataFrame, pd.DataFrame]:
    ref = pd.DataFrame({f"f{i}": normal(0, 1, rows, 100 + i) for i in range(n_features)})
    cur = pd.DataFrame({f"f{i}": normal(1.0 if i < n_drifted else 0.0, 1, rows, 200 + i) for i in range(n_features)})
    return ref, cur


@pytest.mark.parametrize(("n_drifted", "dataset_drift"), [(0, False), (1, False), (2, True), (4, True)])
def test_the_dataset_drifts_when_half_its_features_do(n_drifted: int, dataset_drift: bool) -> None:
    ref, cur = _frames(n_drifted)
    report = drift_report(ref, cur, list(ref.columns))
    assert set(report.drifted_features) == {f"f{i}" for i in range(n_drifted)}
    assert report.share == n_drifted / 4 and report.share_threshold == 0.5
    assert report.dataset_drift is dataset_drift and not report.small_reference


def test_drift_report_puts_the_worst_feature_first_and_refuses_missing_features() -> None:
    ref = pd.DataFrame({"a": normal(0, 1, 2000, 1), "b": normal(0, 1, 2000, 2), "c": ["x", "y"] * 1000})
    cur = pd.DataFrame({"a": normal(0.3, 1, 2000, 3), "b": normal(3, 1, 2000, 4), "c": ["x", "y"] * 1000})
    report = drift_report(ref, cur, ["a", "b", "c"])
    assert report.drifted_features[0] == "b" and report.feature("c").kind == "categorical"
    assert not report.feature("c").drifted
    with pytest.raises(DriftInputError, match="missing from the batch"):
        drift_report(ref, cur.drop(columns=["b"]), ["a", "b"])
    strict = DriftPolicy(dataset_share=0.9)
    assert not drift_report(ref, cur, ["a", "b", "c"], policy=strict).dataset_drift


# --------------------------------------------------------------------------- decay
def _scored(n: int, signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(int)
    proba = np.clip(0.25 + signal * (y - 0.25) + rng.normal(0, 0.2, n), 0, 1)
    return y, proba


def test_decay_compares_the_feedback_metric_with_the_training_metric() -> None:
    from sklearn.metrics import roc_auc_score

    y, good = _scored(2000, 0.5, 1)
    held = performance_decay(y, good, reference_metric=0.80)
    assert held.value == pytest.approx(roc_auc_score(y, good)) and held.value > 0.8
    assert not held.decayed and held.drop < 0 and "within" in held.verdict

    y2, noise = _scored(2000, 0.0, 2)  # the model lost its signal: AUC about 0.5
    decayed = performance_decay(y2, noise, reference_metric=0.70)
    assert decayed.decayed and decayed.drop == pytest.approx(0.70 - roc_auc_score(y2, noise), abs=1e-6)
    assert decayed.rows == 2000 and decayed.positives == int(y2.sum())
    assert performance_decay(y2, noise, reference_metric=0.70, policy=DecayPolicy(max_drop=0.5)).decayed is False


def test_decay_gives_no_verdict_on_too_few_rows_one_class_or_no_training_metric() -> None:
    y, p = _scored(2000, 0.5, 3)
    assert "fewer than 500" in performance_decay(y[:100], p[:100], 0.7).verdict
    ones = performance_decay(np.ones(800), p[:800], 0.7)
    assert ones.value is None and not ones.decayed and "one class" in ones.verdict
    no_ref = performance_decay(y, p, None)
    assert no_ref.value is not None and not no_ref.decayed and "no training" in no_ref.verdict


def test_brier_decays_upward_and_gain_knows_the_direction() -> None:
    y, p = _scored(2000, 0.0, 4)
    worse = performance_decay(y, p, reference_metric=0.10, policy=DecayPolicy(metric="brier", max_drop=0.02))
    assert worse.value == pytest.approx(metric_value("brier", y, p)) and worse.value > 0.12 and worse.decayed
    assert gain(0.8, 0.7, "auc") == pytest.approx(0.1) and gain(0.1, 0.2, "brier") == pytest.approx(0.1)


def test_slice_metrics_cut_by_column_and_skip_small_slices() -> None:
    frame = pd.DataFrame({"carrier": ["AA"] * 600 + ["ZZ"] * 20, "y": [0, 1] * 310, "p": [0.2, 0.8] * 310})
    out = slice_metrics(frame, ["carrier"], label="y", proba="p", metric="auc", min_rows=100)
    assert [(s.name, s.rows, s.score) for s in out] == [("carrier=AA", 600, 1.0)]
    with pytest.raises(DriftInputError, match="no such column"):
        slice_metrics(frame, ["origin"], label="y", proba="p", metric="auc")


# --------------------------------------------------------------------------- the policy file
def test_the_shipped_policy_loads_with_the_issues_defaults() -> None:
    policy = load_retrain_policy()
    assert policy.drift.ks_p_value == 0.05 and policy.drift.small_reference_rows == 1000
    assert policy.drift.wasserstein_std == 0.1 and policy.drift.psi == 0.1 and policy.drift.dataset_share == 0.5
    assert policy.gates.slices is None and policy.gates.min_improvement > 0  # the slices: the model's declaration
    assert policy == RetrainPolicy.model_validate(policy.model_dump())
    from pipewarden.policies.retrain import gate_slices
    from pipewarden.settings import get_settings

    delay = get_settings().project_config.ml_model("delay")
    assert gate_slices(policy, delay) == ["carrier", "origin"] == delay.slices
    own = policy.model_copy(update={"gates": policy.gates.model_copy(update={"slices": ["dest"]})})
    assert gate_slices(own, delay) == ["dest"]  # a policy that names its own slices wins


def test_a_bad_policy_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "retrain.yaml"
    bad.write_text("gates: {min_improvement: -1}\n")
    with pytest.raises(ConfigError, match=r"retrain.yaml: gates.min_improvement"):
        load_retrain_policy(bad)
    bad.write_text("retrain: {window_days: 500}\n")
    with pytest.raises(ConfigError, match="window_days 500 must lie between"):
        load_retrain_policy(bad)
    bad.write_text("drift: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_retrain_policy(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_retrain_policy(tmp_path / "missing.yaml")
