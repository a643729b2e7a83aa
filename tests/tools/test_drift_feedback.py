"""Labelled feedback and the model-drift detector on real flights: a scored March whose delays moved from the
evening to the morning (`inject_label_decay`) decays the champion; its features drift from January's; the detector's event carries both
reports; feedback is stored once per scored flight; the injectors change only what they say."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipewarden.errors import UserError
from pipewarden.evals.flights_data import month_batch
from pipewarden.events import ModelDrift
from pipewarden.flows.detectors import detect_model_drift
from pipewarden.flows.score import FEEDBACK_TABLE, record_feedback
from pipewarden.flows.warehouse import connect
from pipewarden.store import StateStore
from pipewarden.tools.drift import DriftInputError, ModelHealthInput, model_health
from tests.agents.retrain_world import load_id_for, world
from tests.model_faults import inject_feature_shift, inject_label_decay, inject_label_noise

MARCH = load_id_for(3)


@pytest.fixture
def decayed(pw_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return world().use("decayed", pw_home, monkeypatch)


def test_model_health_finds_decay_and_drift_on_the_flipped_march(decayed: Path) -> None:
    h = model_health(ModelHealthInput(load_id=MARCH))
    assert (h.model_name, h.version) == ("pipewarden-delay", "1")
    assert h.categorical == ["carrier", "origin"] and len(h.features) == 15
    assert h.decay.decayed and h.decay.reference is not None and h.decay.value < h.decay.reference - 0.05
    assert h.decay.rows == h.rows > 10_000
    assert h.drift is not None and h.drift.dataset_drift and h.drift.share >= 0.5
    assert not h.drift.small_reference and h.drift.reference_rows == 2000  # the sample logged with v1
    assert "temp" in h.drift.drifted_features  # March is warmer than January
    assert not h.drift.feature("origin").drifted  # the same three airports in the same shares
    assert {s.column for s in h.feedback_slices} == {"carrier", "origin"}
    assert all(s.rows >= 400 for s in h.feedback_slices)


def test_the_detector_emits_one_decay_event_with_both_reports(decayed: Path) -> None:
    (stored,) = StateStore().list_events()
    (event,) = detect_model_drift(MARCH)
    assert isinstance(event, ModelDrift) and str(event.id) == stored["id"]  # stable id: a re-run finds the same
    assert event.metric == "auc_drop" and event.value >= 0.05 and event.threshold == 0.05
    assert event.model == "pipewarden-delay@v1" and event.load_id == MARCH
    assert event.dataset == "flights" and event.detail["ml_model"] == "delay"  # from [ml_models.delay]
    assert event.detail["decay"]["decayed"] is True and event.detail["drift"]["dataset_drift"] is True
    assert event.drifted_features and set(event.drifted_features) <= set(event.detail["drift"]["features"])
    per_feature = detect_model_drift(MARCH, per_feature=True)
    assert {e.metric.split(":")[1] for e in per_feature} == set(event.drifted_features)
    assert len({e.id for e in per_feature}) == len(per_feature)


def test_a_loose_policy_fires_nothing_and_an_unscored_load_gives_nothing(decayed: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.settings import get_settings

    loose = tmp_path / "loose.yaml"
    loose.write_text("drift: {dataset_share: 1.0, psi: 5.0, wasserstein_std: 5.0}\ndecay: {max_drop: 0.9}\n")
    monkeypatch.setenv("PIPEWARDEN_RETRAIN_POLICY_FILE", str(loose))
    get_settings.cache_clear()
    assert detect_model_drift(MARCH) == []
    assert detect_model_drift("load-never-scored") == []
    with pytest.raises(DriftInputError, match="no scores"):
        model_health(ModelHealthInput(load_id="load-never-scored"))


def test_feedback_is_stored_once_per_scored_flight_and_late_outcomes_replace_earlier_ones(decayed: Path) -> None:
    with connect(read_only=True) as con:
        scored = con.execute("SELECT COUNT(*) FROM scores WHERE load_id = ?", [MARCH]).fetchone()[0]
        stored = con.execute(f"SELECT COUNT(*), COUNT(DISTINCT example_id) FROM {FEEDBACK_TABLE} WHERE load_id = ?",
                             [MARCH]).fetchone()
        flight, label = con.execute(f"SELECT example_id, label FROM {FEEDBACK_TABLE} LIMIT 1").fetchone()
    assert stored == (scored, scored)
    again = record_feedback(MARCH)
    assert again.rows == scored and again.not_scored == 0
    # the declared id and label columns: flight_id and delayed
    late = pd.DataFrame({"flight_id": [flight, flight, "no-such-flight"], "delayed": [not label, not label, True]})
    result = record_feedback(MARCH, outcomes=late)
    assert (result.rows, result.not_scored) == (1, 1)  # an outcome for an unscored flight is counted, not stored
    with connect(read_only=True) as con:
        rows = con.execute(f"SELECT label FROM {FEEDBACK_TABLE} WHERE example_id = ?", [flight]).fetchall()
        total = con.execute(f"SELECT COUNT(*) FROM {FEEDBACK_TABLE} WHERE load_id = ?", [MARCH]).fetchone()[0]
    assert rows == [(not label,)] and total == scored
    from pipewarden.flows.score import ScoringError

    with pytest.raises(ScoringError, match="lacks column"):
        record_feedback(MARCH, outcomes=pd.DataFrame({"flight_id": ["x"]}))


def test_the_injectors_change_only_what_they_say() -> None:
    df = month_batch(3).head(4000)
    flipped = inject_label_decay(df)
    morning, evening = df["hour"].between(5, 11), df["hour"].between(16, 23)
    late = flipped["arr_delay"] > 15
    assert late[morning].mean() > (df["arr_delay"] > 15)[morning].mean() + 0.1  # mornings are late now ...
    assert late[evening].mean() < (df["arr_delay"] > 15)[evening].mean() - 0.1  # ... evenings on time
    assert sorted(flipped["arr_delay"].dropna()) == sorted(df["arr_delay"].dropna())  # the same delays, re-dealt
    middle = ~morning & ~evening
    assert flipped["arr_delay"][middle].equals(df["arr_delay"][middle].astype("float64"))
    assert flipped.drop(columns="arr_delay").equals(df.drop(columns="arr_delay"))
    ewr = inject_label_decay(df, origin="EWR")
    assert ewr["arr_delay"][df["origin"] != "EWR"].equals(df["arr_delay"][df["origin"] != "EWR"].astype("float64"))

    noisy = inject_label_noise(df, share=0.5)
    assert sorted(noisy["arr_delay"].dropna()) == sorted(df["arr_delay"].dropna())  # the same outcomes, moved
    assert (noisy["arr_delay"] != df["arr_delay"])[df["arr_delay"].notna()].mean() > 0.3

    shifted = inject_feature_shift(df, scale={"distance": 1.5}, shift={"hour": 1})
    assert (shifted["distance"] == (df["distance"] * 1.5).round()).all() and (shifted["hour"] == df["hour"] + 1).all()
    assert shifted["arr_delay"].equals(df["arr_delay"])
    with pytest.raises(UserError, match="at least one column"):
        inject_feature_shift(df)
