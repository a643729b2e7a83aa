"""The train stage: a declared ML model's champion, trained by the project's own entry point, tracked and registered in
MLflow.

What to train comes from the project file (`[ml_models.NAME]`, `pipewarden.project.MLModelConfig`): the features
table (a SQL model of the project), the label, the feature columns and the training entry point. The rows with a
label are read in time order and split by time: the last `holdout_share` of rows by day is the holdout, cut at a day
boundary. The entry point fits a scikit-learn classifier on the training rows:

- `module:function`, imported from the project's folder (the folder is on `sys.path` for that import only), called
  as `function(frame, label=..., features=[...], params={...})` and returning the fitted model;
- `mlflow-project:URI`, an MLflow project run locally (`mlflow.projects.run`, the active environment) with the
  parameters `warehouse`, `features_table`, `label`, `features`, `time_column` and `split_date`; its run must log a
  scikit-learn model under `model`.

pipewarden then scores the holdout (AUC, accuracy, Brier, base rates), logs params and metrics to an MLflow run in
the experiment named after the registered model (artifacts under `PIPEWARDEN_HOME/mlartifacts`), saves the model with
skops (no pickle), registers it and moves the alias (`champion` by default) to the new version. The training features'
distribution is the drift reference: in the warehouse table `model_reference`, as the run's artifact `reference.json`,
and a sample of the training rows as `reference_sample.parquet` (what `tools.drift` compares scored batches with).

Public names: `train`, `has_champion`, `TrainResult`, `TrainingError`, `load_trainer`, `time_split`,
`write_reference`, `CHAMPION`, `HOLDOUT_SHARE`.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from pipewarden.errors import PipewardenError
from pipewarden.flows.detectors import REFERENCE_TABLE, FeatureReference, reference_profile
from pipewarden.flows.warehouse import connect
from pipewarden.policies.retrain import load_retrain_policy
from pipewarden.tools.model_registry import (
    CHAMPION,
    REFERENCE_SAMPLE_ARTIFACT,
    declared_model,
    experiment_id,
    mlflow_client,
    quiet_mlflow,
    register_version,
    trusted_types,
)

if TYPE_CHECKING:
    import pandas as pd

    from pipewarden.project import MLModelConfig

HOLDOUT_SHARE = 0.2  # the default of MLModelConfig.holdout_share

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
    """Training could not run on the warehouse's features (missing table, one class only, a broken trainer...)."""


class TrainResult(BaseModel):
    """What a training run produced; `status` is `skipped` when there were too few rows to train on."""

    status: Literal["trained", "skipped"]
    reason: str = ""
    ml_model: str = Field("", description="The declared model (the NAME of [ml_models.NAME]).")
    model_name: str = Field("", description="The MLflow registered model.")
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


def has_champion(model_name: str, alias: str = CHAMPION) -> bool:
    """Whether the registry has a version of the registered model `model_name` under `alias`."""
    from mlflow.exceptions import MlflowException

    with quiet_mlflow():
        client = mlflow_client()
        try:
            client.get_model_version_by_alias(model_name, alias)
        except MlflowException:
            return False
    return True


# --------------------------------------------------------------------------- data
def _ident(name: str) -> str:
    from pipewarden.tools.warehouse import quote_ident

    return quote_ident(name)


def load_training_rows(model: MLModelConfig) -> pd.DataFrame:
    """Every labelled row of the model's features table, in time order, with `__day` (the row's date) added."""
    from pipewarden.tools.warehouse import duckdb_has_table

    cols = ", ".join(_ident(c) for c in dict.fromkeys([model.id_column, model.time_column, model.label,
                                                        *model.feature_columns]))
    with connect(read_only=True) as con:
        if not duckdb_has_table(con, model.features):
            raise TrainingError(f"cannot train {model.registered_model}: the warehouse has no table {model.features}",
                                hint=f"build the project's SQL models first (`pipewarden build`); {model.features} "
                                     "is the features table the model's declaration names")
        missing = [c for c in dict.fromkeys([model.id_column, model.time_column, model.label, *model.feature_columns])
                   if not con.execute("SELECT COUNT(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = ?",
                                      [model.features, c]).fetchone()[0]]
        if missing:
            raise TrainingError(f"{model.features} has no column {', '.join(missing)}",
                                hint="fix the model's declaration ([ml_models] in the project file) or the SQL model")
        return con.execute(
            f"SELECT {cols}, CAST({_ident(model.time_column)} AS DATE) AS __day FROM {_ident(model.features)} "
            f"WHERE {_ident(model.label)} IS NOT NULL ORDER BY {_ident(model.time_column)}, {_ident(model.id_column)}"
        ).df()


def time_split(df: pd.DataFrame, holdout_share: float = HOLDOUT_SHARE,
               day: str = "__day") -> tuple[pd.DataFrame, pd.DataFrame, date]:
    """Split rows ordered by time: the holdout starts on the day where the last `holdout_share` of rows begin."""
    import pandas as pd

    dates = pd.to_datetime(df[day])
    cut = dates.iloc[min(int(len(df) * (1 - holdout_share)), len(df) - 1)]
    train, holdout = df[dates < cut], df[dates >= cut]
    if train.empty:  # everything on one day: split the ordered rows instead
        n = int(len(df) * (1 - holdout_share))
        train, holdout = df.iloc[:n], df.iloc[n:]
    return train, holdout, cut.date()


# --------------------------------------------------------------------------- the entry point
def load_trainer(key: str, model: MLModelConfig) -> Callable[..., Any]:
    """The declared `module:function` trainer, imported from the project's folder (`Project.load_callable`)."""
    from pipewarden.settings import get_settings

    return get_settings().project_config.load_callable(model.trainer, what=f"ml_models.{key}.trainer")


def _fit(key: str, model: MLModelConfig, train_df: pd.DataFrame, params: dict[str, Any], split: date) -> Any:
    """Run the declared entry point on the training rows; return the fitted scikit-learn model."""
    if model.trainer_kind == "mlflow_project":
        return _fit_mlflow_project(model, split)
    fn = load_trainer(key, model)
    try:
        fitted = fn(train_df[[*model.feature_columns, model.label]].copy(), label=model.label,
                    features=list(model.feature_columns), params=dict(params))
    except Exception as exc:  # the project's code failed: say whose, keep the cause
        raise TrainingError(f"trainer {model.trainer!r} failed: {type(exc).__name__}: {exc}",
                            hint="fix the training function; run it alone on the features table to see why") from exc
    if not hasattr(fitted, "predict_proba"):
        raise TrainingError(f"trainer {model.trainer!r} returned {type(fitted).__name__}, which has no predict_proba",
                            hint="return a fitted scikit-learn classifier")
    return fitted


def _fit_mlflow_project(model: MLModelConfig, split: date) -> Any:
    """Run the declared MLflow project locally and load the scikit-learn model its run logged under `model`."""
    import mlflow.projects
    import mlflow.sklearn

    from pipewarden.settings import get_settings

    uri = model.trainer.removeprefix("mlflow-project:").strip()
    settings = get_settings()
    local = settings.project_root / uri
    if "://" not in uri and local.exists():
        uri = str(local)
    params = {"warehouse": str(settings.warehouse_path), "features_table": model.features, "label": model.label,
              "features": ",".join(model.feature_columns), "time_column": model.time_column,
              "split_date": split.isoformat()}
    with quiet_mlflow():
        client = mlflow_client()
        try:
            submitted = mlflow.projects.run(uri, parameters=params, env_manager="local", synchronous=True,
                                            experiment_id=experiment_id(client, f"{model.registered_model}-trainer"))
        except Exception as exc:  # ExecutionException and the project's own failures
            raise TrainingError(f"trainer {model.trainer!r}: the MLflow project run failed: {exc}",
                                hint="run it by hand with `mlflow run` and the same parameters") from exc
        try:
            return mlflow.sklearn.load_model(f"runs:/{submitted.run_id}/model")
        except Exception as exc:
            raise TrainingError(f"trainer {model.trainer!r}: run {submitted.run_id} logged no scikit-learn model "
                                "under 'model'", hint="log it with mlflow.sklearn.log_model(model, name='model')") from exc


def _metrics(y_true: Any, proba: Any, base_rate_train: float) -> dict[str, float]:
    from pipewarden.tools.drift import metric_value

    out = {name: value for name in ("auc", "accuracy", "brier")
           if (value := metric_value(name, y_true, proba)) is not None}
    return out | {"base_rate_holdout": float(y_true.mean()), "base_rate_train": base_rate_train,
                  "mean_proba_holdout": float(proba.mean())}


# --------------------------------------------------------------------------- train
def train(ml_model: str | None = None, *, alias: str = CHAMPION, params: dict[str, Any] | None = None,
          min_rows: int | None = None) -> TrainResult:
    """Train the declared model `ml_model` (default: the only one declared) on every labelled row of its features
    table; log the run to MLflow, register the version, point `alias` at it.

    `params` override the declaration's. Fewer than `min_rows` rows (default: the declaration's) gives a `skipped`
    result (nothing logged). A label with one class only raises TrainingError. `alias="challenger"` trains a
    candidate without replacing the champion.
    """
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow.models import infer_signature

    key, model = declared_model(ml_model)
    name = model.registered_model
    t0 = time.perf_counter()
    df = load_training_rows(model)
    need = model.min_rows if min_rows is None else min_rows
    if len(df) < need:
        return TrainResult(status="skipped", ml_model=key, model_name=name,
                           reason=f"{len(df)} labelled rows in {model.features}, fewer than {need}")
    label, features = model.label, list(model.feature_columns)
    df[label] = df[label].astype(int)
    if df[label].nunique() < 2:
        raise TrainingError(f"cannot train on {model.features}: every row has {label}={int(df[label].iloc[0])}",
                            hint="load more batches; a classifier needs both classes")
    train_df, holdout, cut = time_split(df, model.holdout_share)
    used = {**model.params, **(params or {})}
    fitted = _fit(key, model, train_df, used, cut)
    X_train, y_train = train_df[features], train_df[label]
    proba = fitted.predict_proba(holdout[features])[:, 1]
    metrics = _metrics(holdout[label], proba, float(y_train.mean()))
    metrics |= {"rows": float(len(df)), "base_rate": float(df[label].mean()),
                "rows_train": float(len(train_df)), "rows_holdout": float(len(holdout))}
    from pipewarden.tools.drift import categorical_columns

    categorical = categorical_columns(X_train, features)
    reference = reference_profile(X_train, [f for f in features if f not in categorical], categorical)

    with quiet_mlflow():
        client = mlflow_client()
        with mlflow.start_run(experiment_id=experiment_id(client, name), run_name=f"{name}-{cut.isoformat()}") as run:
            mlflow.log_params({**used, "trainer": model.trainer, "ml_model": key, "label": label,
                               "features": ",".join(features), "split_date": cut.isoformat(),
                               "holdout_share": model.holdout_share})
            mlflow.log_metrics(metrics)
            with tempfile.TemporaryDirectory() as tmp:
                ref_path = Path(tmp) / "reference.json"
                ref_path.write_text(json.dumps([r.model_dump() for r in reference], indent=1))
                mlflow.log_artifact(str(ref_path))
                sample_path = Path(tmp) / REFERENCE_SAMPLE_ARTIFACT  # the drift reference (tools.drift)
                keep = load_retrain_policy().drift.reference_sample_rows
                X_train.sample(min(len(X_train), keep), random_state=0).to_parquet(sample_path, index=False)
                mlflow.log_artifact(str(sample_path))
            info = mlflow.sklearn.log_model(
                fitted, name="model", signature=infer_signature(X_train.head(50), proba[:50]),
                pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"mlflow=={mlflow.__version__}"],
                serialization_format="skops", skops_trusted_types=trusted_types(fitted),
            )
        version = register_version(client, name, info.model_uri, run.info.run_id, info.model_id,
                                   description=model.description or f"the project's ML model {key!r}")
        client.set_registered_model_alias(name, alias, version)
    write_reference(name, version, reference)
    return TrainResult(
        status="trained", ml_model=key, model_name=name, version=version, alias=alias, run_id=run.info.run_id,
        model_uri=f"models:/{name}/{version}", rows_train=len(train_df), rows_holdout=len(holdout),
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
