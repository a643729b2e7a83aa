"""The train stage: a delay classifier on `features_flights`, tracked and registered in MLflow.

The model is a scikit-learn Pipeline (carrier and origin ordinal-encoded, then a HistGradientBoostingClassifier,
which takes the history features' nulls as they are) predicting `delayed` (arrival more than 15 minutes
late). The split is by time: the last ~20% of rows by flight date are the holdout, cut at a day boundary.
Params and metrics (AUC, accuracy, base rate, rows) go to an MLflow run in the experiment
`pipewarden-delay`, whose artifacts live under `PIPEWARDEN_HOME/mlartifacts`; the model is registered as
`pipewarden-delay` and the alias (`champion` by default) moves to the new version. The training features'
distribution is stored as the drift reference, in the warehouse table `model_reference` and as the run's
artifact `reference.json`, and a sample of its training rows as the artifact `reference_sample.parquet` (what
`tools.drift` compares scored batches with). The MLflow plumbing is shared with the retrain tools
(`tools.model_registry`).
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from pipewarden.errors import PipewardenError
from pipewarden.flows.detectors import REFERENCE_TABLE, FeatureReference, reference_profile
from pipewarden.flows.features import CATEGORICAL_FEATURES, FEATURES, FEATURES_TABLE, LABEL, NUMERIC_FEATURES
from pipewarden.flows.warehouse import connect
from pipewarden.policies.retrain import load_retrain_policy
from pipewarden.tools.model_registry import (
    REFERENCE_SAMPLE_ARTIFACT,
    SKOPS_TRUSTED_TYPES,
    experiment_id,
    mlflow_client,
    quiet_mlflow,
)
from pipewarden.tools.model_registry import register_version as _register_version

if TYPE_CHECKING:
    import pandas as pd

MODEL_NAME = "pipewarden-delay"
EXPERIMENT = "pipewarden-delay"
CHAMPION = "champion"
HOLDOUT_SHARE = 0.2
DEFAULT_PARAMS: dict[str, Any] = {
    "max_iter": 150, "learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 40, "l2_regularization": 1.0,
}

_REFERENCE_DDL = f"""
CREATE TABLE IF NOT EXISTS {REFERENCE_TABLE} (
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    feature VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    mean DOUBLE,
    std DOUBLE,
    null_share DOUBLE,
    profile VARCHAR NOT NULL,
    created_at TIMESTAMP DEFAULT now()
)
"""


class TrainingError(PipewardenError):
    """Training could not run on the warehouse's features (missing table, one class only...)."""


class TrainResult(BaseModel):
    """What a training run produced; `status` is `skipped` when there were too few rows to train on."""

    status: Literal["trained", "skipped"]
    reason: str = ""
    model_name: str = MODEL_NAME
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    model_uri: str | None = None
    rows_train: int = 0
    rows_holdout: int = 0
    split_date: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    elapsed_ms: float = 0.0


# --------------------------------------------------------------------------- MLflow plumbing
# quiet_mlflow, mlflow_client, the experiment and registration helpers live in tools.model_registry (the retrain
# agent's tools share them); they are imported above under their old names.
def _experiment_id(client: Any) -> str:
    return experiment_id(client, EXPERIMENT)


def has_champion(model_name: str = MODEL_NAME, alias: str = CHAMPION) -> bool:
    """Whether the registry has a version of `model_name` under `alias`."""
    from mlflow.exceptions import MlflowException

    with quiet_mlflow():
        client = mlflow_client()
        try:
            client.get_model_version_by_alias(model_name, alias)
        except MlflowException:
            return False
    return True


# --------------------------------------------------------------------------- data
def _load_features() -> pd.DataFrame:
    with connect(read_only=True) as con:
        present = con.execute("SELECT COUNT(*) FROM duckdb_tables() WHERE table_name = ?", [FEATURES_TABLE]).fetchone()
        if not present or not present[0]:
            raise TrainingError(f"cannot train: the warehouse has no table {FEATURES_TABLE}",
                                hint="run transform and build_features first")
        cols = ", ".join(["flight_date", LABEL, *FEATURES])
        return con.execute(f"SELECT {cols} FROM {FEATURES_TABLE} ORDER BY dep_ts, flight_id").df()


def time_split(df: pd.DataFrame, holdout_share: float = HOLDOUT_SHARE) -> tuple[pd.DataFrame, pd.DataFrame, date]:
    """Split rows ordered by time: the holdout starts on the day where the last `holdout_share` of rows begin."""
    import pandas as pd

    dates = pd.to_datetime(df["flight_date"])
    cut = dates.iloc[min(int(len(df) * (1 - holdout_share)), len(df) - 1)]
    train, holdout = df[dates < cut], df[dates >= cut]
    if train.empty:  # everything on one day: split the ordered rows instead
        n = int(len(df) * (1 - holdout_share))
        train, holdout = df.iloc[:n], df.iloc[n:]
    return train, holdout, cut.date()


def build_pipeline(params: dict[str, Any]) -> Any:
    """The classifier: carrier/origin ordinal-encoded (unknown -> missing), numbers passed through, then HGB."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    encode = ColumnTransformer(
        [("categories", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                       encoded_missing_value=-1), list(CATEGORICAL_FEATURES)),
         ("numbers", "passthrough", list(NUMERIC_FEATURES))],
        verbose_feature_names_out=False,
    )
    n_cat = len(CATEGORICAL_FEATURES)
    mask = [True] * n_cat + [False] * len(NUMERIC_FEATURES)
    model = HistGradientBoostingClassifier(categorical_features=mask, early_stopping=False, random_state=0, **params)
    return Pipeline([("encode", encode), ("model", model)])


def _metrics(y_true: Any, proba: Any, base_rate_train: float) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score

    out = {
        "accuracy": float(accuracy_score(y_true, proba >= 0.5)),
        "brier": float(brier_score_loss(y_true, proba)),
        "base_rate_holdout": float(y_true.mean()),
        "base_rate_train": base_rate_train,
        "mean_proba_holdout": float(proba.mean()),
    }
    if y_true.nunique() == 2:
        out["auc"] = float(roc_auc_score(y_true, proba))
    return out


# --------------------------------------------------------------------------- train
def train(
    min_rows: int = 1000, *, alias: str = CHAMPION, model_name: str = MODEL_NAME, params: dict[str, Any] | None = None
) -> TrainResult:
    """Train on every row of `features_flights`, log the run to MLflow, register the model, point `alias` at it.

    Fewer than `min_rows` rows gives a `skipped` result (nothing logged). A label with one class only raises
    TrainingError. `alias="challenger"` trains a candidate without replacing the champion.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    t0 = time.perf_counter()
    df = _load_features()
    if len(df) < min_rows:
        return TrainResult(status="skipped", reason=f"{len(df)} rows in {FEATURES_TABLE}, fewer than {min_rows}",
                           model_name=model_name)
    df[LABEL] = df[LABEL].astype(int)
    if df[LABEL].nunique() < 2:
        raise TrainingError(f"cannot train on {FEATURES_TABLE}: every row has {LABEL}={int(df[LABEL].iloc[0])}",
                            hint="load more batches; a classifier needs delayed and on-time flights")
    train_df, holdout, cut = time_split(df)
    used = {**DEFAULT_PARAMS, **(params or {})}
    pipe = build_pipeline(used)
    X_train, y_train = train_df[list(FEATURES)], train_df[LABEL]
    pipe.fit(X_train, y_train)
    proba = pipe.predict_proba(holdout[list(FEATURES)])[:, 1]
    metrics = _metrics(holdout[LABEL], proba, float(y_train.mean()))
    metrics |= {"rows": float(len(df)), "base_rate": float(df[LABEL].mean()),
                "rows_train": float(len(train_df)), "rows_holdout": float(len(holdout))}
    reference = reference_profile(X_train, NUMERIC_FEATURES, CATEGORICAL_FEATURES)

    import sklearn

    with quiet_mlflow():
        client = mlflow_client()
        experiment_id = _experiment_id(client)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{model_name}-{cut.isoformat()}") as run:
            mlflow.log_params({**used, "classifier": "HistGradientBoostingClassifier", "label": LABEL,
                               "features": ",".join(FEATURES), "split_date": cut.isoformat(),
                               "holdout_share": HOLDOUT_SHARE})
            mlflow.log_metrics(metrics)
            with tempfile.TemporaryDirectory() as tmp:
                ref_path = Path(tmp) / "reference.json"
                ref_path.write_text(json.dumps([r.model_dump() for r in reference], indent=1))
                mlflow.log_artifact(str(ref_path))
                sample_path = Path(tmp) / REFERENCE_SAMPLE_ARTIFACT  # the drift reference (tools.drift)
                keep = load_retrain_policy().drift.reference_sample_rows
                X_train.sample(min(len(X_train), keep), random_state=0).to_parquet(sample_path, index=False)
                mlflow.log_artifact(str(sample_path))
            signature = infer_signature(X_train.head(50), proba[:50])
            info = mlflow.sklearn.log_model(
                pipe, name="model", signature=signature,
                pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"mlflow=={mlflow.__version__}"],
                serialization_format="skops", skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
            )
        version = _register_version(client, model_name, info.model_uri, run.info.run_id, info.model_id)
        client.set_registered_model_alias(model_name, alias, version)
    write_reference(model_name, version, reference)
    return TrainResult(
        status="trained", model_name=model_name, version=version, alias=alias, run_id=run.info.run_id,
        model_uri=f"models:/{model_name}/{version}", rows_train=len(train_df), rows_holdout=len(holdout),
        split_date=cut.isoformat(), params=used, metrics=metrics,
        elapsed_ms=round((time.perf_counter() - t0) * 1000, 3),
    )


def write_reference(model_name: str, version: str, reference: list[FeatureReference]) -> None:
    """Store a model version's training distribution in `model_reference` (replacing any earlier one)."""
    with connect() as con:
        con.execute(_REFERENCE_DDL)
        con.execute("BEGIN TRANSACTION")
        con.execute(f"DELETE FROM {REFERENCE_TABLE} WHERE model_name = ? AND model_version = ?", [model_name, version])
        con.executemany(
            f"INSERT INTO {REFERENCE_TABLE} (model_name, model_version, feature, kind, mean, std, null_share, profile) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [[model_name, version, r.feature, r.kind, r.mean, r.std, r.null_share, r.model_dump_json()]
             for r in reference],
        )
        con.execute("COMMIT")
