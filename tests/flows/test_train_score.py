"""Training the declared delay model (`[ml_models.delay]` of the flights example) registers the champion in MLflow,
scoring writes per-load scores, and the two detectors fire on real regressions and drift but not on flat history or
on the reference itself."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from pipewarden.events import CostRegression, ModelDrift
from pipewarden.flows.detectors import (
    REFERENCE_TABLE,
    batch_psi,
    detect_cost_regressions,
    detect_model_drift,
    psi,
    reference_profile,
)
from pipewarden.flows.transform import RUNS_DDL, RUNS_TABLE, transform
from pipewarden.flows.warehouse import connect
from pipewarden.project import load_project
from tests.conftest import FLIGHTS_PROJECT
from tests.flows.test_transform import load_id_for, seed_warehouse

DELAY = load_project(FLIGHTS_PROJECT).ml_model("delay")  # the declaration these tests train and score
MODEL_NAME, FEATURES_TABLE, SCORES_TABLE = DELAY.registered_model, DELAY.features, DELAY.predictions
FEATURES = tuple(DELAY.feature_columns)
CATEGORICAL_FEATURES = ("carrier", "origin")
NUMERIC_FEATURES = tuple(f for f in FEATURES if f not in CATEGORICAL_FEATURES)


def _champion_version() -> str:
    from pipewarden.tools.model_registry import CHAMPION, mlflow_client

    return str(mlflow_client().get_model_version_by_alias(MODEL_NAME, CHAMPION).version)


@pytest.mark.slow
def test_train_registers_champion_a_second_train_moves_it_and_score_uses_it(pw_home) -> None:
    from pipewarden.flows.score import score
    from pipewarden.flows.train import has_champion, train

    seed_warehouse()
    transform(load_id_for(2))  # the project's SQL models, features_flights among them
    assert not has_champion(MODEL_NAME)

    first = train()
    assert first.status == "trained" and first.version == "1" and first.alias == "champion"
    assert has_champion(MODEL_NAME) and _champion_version() == "1"
    assert first.split_date is not None and first.split_date.startswith("2013-02")  # the holdout is the latest days
    assert first.rows_train > 3 * first.rows_holdout > 0
    assert {"auc", "accuracy", "base_rate_holdout", "rows_train"} <= set(first.metrics)
    assert 0.55 < first.metrics["auc"] < 1.0  # better than chance, on days it never saw

    import mlflow

    run = mlflow.get_run(first.run_id)
    assert run.data.metrics["auc"] == pytest.approx(first.metrics["auc"])
    assert run.data.params["split_date"] == first.split_date
    assert run.data.params["trainer"] == "ml.delay:train" and run.data.params["ml_model"] == "delay"
    assert run.info.artifact_uri.startswith((pw_home / "mlartifacts").resolve().as_uri())
    with connect(read_only=True) as con:
        ref = con.execute(f"SELECT feature FROM {REFERENCE_TABLE} WHERE model_version = '1'").fetchall()
    assert {r[0] for r in ref} == set(FEATURES)

    second = train(params={"max_iter": 50})
    assert second.version == "2" and _champion_version() == "2"

    scored = score(load_id_for(2))
    assert scored.status == "scored" and scored.model_version == "2"
    with connect(read_only=True) as con:
        n_feb = con.execute(f"SELECT COUNT(*) FROM {FEATURES_TABLE} WHERE load_id = ?", [load_id_for(2)]).fetchone()[0]
    assert scored.rows == n_feb > 20_000
    assert 0.1 < scored.mean_proba < 0.4  # the base rate is about 0.23

    again = score(load_id_for(2))
    other = score(load_id_for(1))
    with connect(read_only=True) as con:
        per_load = dict(con.execute(f"SELECT load_id, COUNT(*) FROM {SCORES_TABLE} GROUP BY 1").fetchall())
        probs = con.execute(f"SELECT MIN(proba), MAX(proba) FROM {SCORES_TABLE}").fetchone()
    assert per_load == {load_id_for(2): again.rows, load_id_for(1): other.rows}  # re-scoring replaced, not added
    assert again.mean_proba == pytest.approx(scored.mean_proba)
    assert 0.0 <= probs[0] < probs[1] <= 1.0

    # the scored batch against its own model's reference: the model saw most of these days, no strong drift
    assert not [e for e in detect_model_drift(load_id_for(2), per_feature=True)
                if e.metric in ("psi:carrier", "psi:distance")]
    # a heat wave in February's features is drift on `temp`
    with connect() as con:
        con.execute(f"UPDATE {FEATURES_TABLE} SET temp = temp + 40 WHERE load_id = ?", [load_id_for(2)])
    drifted = detect_model_drift(load_id_for(2), per_feature=True)
    assert "psi:temp" in {e.metric for e in drifted}
    assert all(isinstance(e, ModelDrift) and e.model == f"{MODEL_NAME}@v2" for e in drifted)


def test_train_skips_below_min_rows_and_score_skips_without_champion() -> None:
    from pipewarden.flows.score import score
    from pipewarden.flows.train import train

    seed_warehouse(months=(1,))
    transform()
    with connect(read_only=True) as con:
        rows = con.execute(f"SELECT COUNT(*) FROM {FEATURES_TABLE} WHERE delayed IS NOT NULL").fetchone()[0]
    skipped = train(min_rows=rows + 1)
    assert skipped.status == "skipped" and "fewer than" in skipped.reason
    assert score(load_id_for(1)).status == "skipped"


# --------------------------------------------------------------------------- cost detector
def _write_runs(history: dict[str, list[float]], new_loop_join: tuple[str, ...] = ()) -> None:
    """Synthetic model_runs: each model's builds in order, one load per build (load-0, load-1, ...); the plan of
    every build is a hash join, except the last build of each model in `new_loop_join`: a nested-loop join."""
    start = datetime(2026, 1, 1)
    with connect() as con:
        con.execute(RUNS_DDL)
        con.execute(f"ALTER TABLE {RUNS_TABLE} ADD COLUMN operators VARCHAR")
        for model, times in history.items():
            for i, ms in enumerate(times):
                loop = model in new_loop_join and i == len(times) - 1
                con.execute(f"INSERT INTO {RUNS_TABLE} VALUES (?, ?, ?, 'ok', ?, ?, 100, 100, NULL, NULL, 'h', NULL, ?)",
                            [f"run-{i}", model, f"load-{i}", start + timedelta(minutes=i), ms,
                             '["NESTED_LOOP_JOIN"]' if loop else '["HASH_JOIN"]'])


def test_cost_detector_fires_on_a_5x_jump_only() -> None:
    _write_runs({
        "route_daily": [100, 110, 95, 105, 520],     # 5x its median, with a new nested-loop join: a regression
        "stg_flights": [300, 310, 290, 305, 320],    # flat
        "carrier_daily": [10, 11, 9, 10, 49],        # 5x but under min_ms: noise
        "busy_model": [100, 110, 95, 105, 520],      # 5x under the same plan: the machine was busy, not a regression
    }, new_loop_join=("route_daily", "carrier_daily"))
    events = detect_cost_regressions("load-4")
    assert [(e.model, e.metric) for e in events] == [("route_daily", "elapsed_ms")]
    ev = events[0]
    assert isinstance(ev, CostRegression) and ev.load_id == "load-4"
    assert ev.baseline == pytest.approx(102.5) and ev.observed == 520 and ev.ratio == pytest.approx(520 / 102.5, rel=1e-3)
    # detecting again on the same load finds the same fault: the same event id, kept once by the outbox
    assert [e.id for e in detect_cost_regressions("load-4")] == [ev.id]
    # the flat history of an earlier load fires nothing; an unknown load neither
    assert detect_cost_regressions("load-3") == []
    assert detect_cost_regressions("no-such-load") == []


def test_a_cost_event_names_the_dataset_of_its_load_else_of_its_model() -> None:
    from pipewarden.flows.ingest import META_LOADS_DDL

    _write_runs({"route_daily": [100, 110, 95, 105, 520], "hourly_orders": [100, 110, 95, 105, 520]},
                new_loop_join=("route_daily", "hourly_orders"))
    # no recorded load: the dataset the model is built from (route_daily reads raw_flights through stg_flights, and
    # the reference table raw_airports); a model the project does not have is all the detector knows
    assert {e.model: e.dataset for e in detect_cost_regressions("load-4")} == {
        "route_daily": "flights", "hourly_orders": "hourly_orders"}
    with connect() as con:  # the load is recorded: its own dataset, whatever the model reads
        con.execute(META_LOADS_DDL)
        con.execute("INSERT INTO meta_loads VALUES ('weather', 'load-4', 'w.csv', now(), 'fp', 10, 'accepted')")
    assert {e.dataset for e in detect_cost_regressions("load-4")} == {"weather"}
    assert {e.dataset for e in detect_cost_regressions("load-4", dataset="orders")} == {"orders"}  # the caller's


def test_cost_detector_needs_a_baseline() -> None:
    _write_runs({"route_daily": [100, 900]}, new_loop_join=("route_daily",))
    assert detect_cost_regressions("load-1") == []
    assert [e.model for e in detect_cost_regressions("load-1", min_history=1)] == ["route_daily"]


def test_detectors_on_an_empty_warehouse_find_nothing() -> None:
    assert detect_cost_regressions("load-1") == []
    assert detect_model_drift("load-1") == []


# --------------------------------------------------------------------------- drift detector
def _synthetic_features(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({name: rng.normal(10, 3, n) for name in NUMERIC_FEATURES})
    df["carrier"] = rng.choice(["AA", "B6", "UA"], n)
    df["origin"] = rng.choice(["EWR", "JFK", "LGA"], n)
    df.loc[rng.random(n) < 0.05, "temp"] = np.nan
    return df


def test_drift_detector_fires_on_a_shifted_batch_not_on_the_reference(pw_home, monkeypatch) -> None:
    """The detector judges a scored batch against the reference sample logged with the scoring version, by the
    rules of policies/retrain.yaml (tools.drift): the reference itself does not drift; a warmer batch with one
    carrier and half its distances missing drifts on exactly those features; three features of fifteen are not the
    dataset drifting, so by default (and with no labelled feedback yet) there is no event."""
    from pipewarden.flows.score import predictions_ddl
    from pipewarden.tools.model_registry import reference_sample
    from tests.agents.retrain_world import world

    world().use("base", pw_home, monkeypatch)  # a real champion (v1) with its logged reference sample
    reference = reference_sample(MODEL_NAME, "1")

    def write(frame: pd.DataFrame, load_id: str) -> None:
        batch = frame.assign(flight_id=[f"{load_id}-{i}" for i in range(len(frame))], load_id=load_id)
        scores = batch[["flight_id", "load_id"]].rename(columns={"flight_id": "example_id"}).assign(
            model_name=MODEL_NAME, model_version="1", proba=0.2)
        with connect() as con:
            con.register("df", batch)
            con.execute(f"INSERT INTO {FEATURES_TABLE} BY NAME SELECT * FROM df")
            con.register("sc", scores)
            con.execute(predictions_ddl(SCORES_TABLE))
            con.execute(f"INSERT INTO {SCORES_TABLE} BY NAME SELECT * FROM sc")

    write(reference, "same")
    assert detect_model_drift("same", per_feature=True) == [] and detect_model_drift("same") == []

    shifted = reference.copy()
    shifted["temp"] = shifted["temp"] + 6          # about half a January standard deviation warmer
    shifted["carrier"] = "UA"                      # one carrier flies everything
    shifted.loc[: len(shifted) // 2, "distance"] = np.nan  # half the distances went missing
    write(shifted, "shifted")
    events = detect_model_drift("shifted", per_feature=True)
    assert {e.metric.split(":")[1] for e in events} == {"temp", "carrier", "distance"}
    assert all(e.value >= e.threshold and e.model == f"{MODEL_NAME}@v1" for e in events)
    assert all(e.dataset == "flights" and e.detail["ml_model"] == "delay" for e in events)
    assert all(e.drifted_features == events[0].drifted_features for e in events)
    assert detect_model_drift("shifted") == []


def test_psi_basics() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.9, 0.1]) > 0.5
    frame = _synthetic_features(2000, seed=4)
    ref = reference_profile(frame, NUMERIC_FEATURES, CATEGORICAL_FEATURES)
    assert max(batch_psi(ref, frame).values()) < 1e-9
    temp = next(r for r in ref if r.feature == "temp")
    assert len(temp.shares) == len(temp.edges) + 2 and sum(temp.shares) == pytest.approx(1.0)
    assert temp.null_share == pytest.approx(frame["temp"].isna().mean())
