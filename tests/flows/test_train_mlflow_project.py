"""A declared ML model whose trainer is an MLflow project (`trainer = "mlflow-project:trainer"`): pipewarden runs it
locally with the features table, label, feature columns, time column and split date, loads the scikit-learn model
its run logged, scores the holdout itself and registers the champion as for a Python trainer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PROJECT_FILE = """\
name = "sensors"

[ml_models.fault]
registered_model = "sensor-fault"
dataset = "readings"
features = "reading_features"
feature_columns = ["vibration", "temperature"]
label = "failed"
id_column = "reading_id"
time_column = "taken_at"
trainer = "mlflow-project:trainer"
min_rows = 100
"""

MLPROJECT = """\
name: sensor-fault-trainer
entry_points:
  main:
    parameters:
      warehouse: string
      features_table: string
      label: string
      features: string
      time_column: string
      split_date: string
    command: "{python} train.py {{warehouse}} {{features_table}} {{label}} {{features}} {{time_column}} {{split_date}}"
"""

TRAIN = """\
import sys

import duckdb
import mlflow
import mlflow.sklearn
from sklearn.linear_model import LogisticRegression

warehouse, table, label, features, time_column, split = sys.argv[1:7]
cols = features.split(",")
con = duckdb.connect(warehouse, read_only=True)
frame = con.execute(f'SELECT * FROM "{table}" WHERE CAST("{time_column}" AS DATE) < ?', [split]).df()
model = LogisticRegression().fit(frame[cols], frame[label].astype(int))
with mlflow.start_run():
    mlflow.log_param("rows_seen", len(frame))
    mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])  # no inference: fast
"""


@pytest.fixture
def sensors_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from pipewarden.settings import get_settings

    root = tmp_path / "sensors"
    (root / "trainer").mkdir(parents=True)
    (root / "pipewarden.toml").write_text(PROJECT_FILE)
    (root / "trainer" / "MLproject").write_text(MLPROJECT.format(python=sys.executable))
    (root / "trainer" / "train.py").write_text(TRAIN)
    monkeypatch.setenv("PIPEWARDEN_PROJECT", str(root))
    get_settings.cache_clear()
    return root


@pytest.mark.slow  # the MLflow project runs in a child Python process (imports mlflow, scikit-learn, duckdb)
def test_an_mlflow_project_trains_the_champion(sensors_project: Path) -> None:
    from pipewarden.flows.train import train
    from pipewarden.flows.warehouse import connect
    from pipewarden.tools.model_registry import champion

    rng = np.random.default_rng(0)
    n = 1500
    vibration, temperature = rng.normal(0, 1, n), rng.normal(0, 1, n)
    frame = pd.DataFrame({
        "reading_id": [f"r{i}" for i in range(n)], "load_id": "readings-1",
        "taken_at": pd.Timestamp("2025-03-01") + pd.to_timedelta(np.arange(n) // 50, unit="D"),
        "vibration": vibration, "temperature": temperature,
        "failed": rng.random(n) < 1 / (1 + np.exp(-3 * vibration)),
    })
    with connect() as con:
        con.register("df", frame)
        con.execute("CREATE TABLE reading_features AS SELECT * FROM df")

    result = train("fault")
    assert result.status == "trained" and result.version == "1"
    assert result.metrics["auc"] > 0.8  # pipewarden scored the holdout days the project never saw
    assert result.params == {} and result.split_date is not None
    current = champion("sensor-fault")
    assert current is not None and current.params["trainer"] == "mlflow-project:trainer"
    assert current.features == ["vibration", "temperature"]
