"""The score stage: the champion model predicts, for one load's flights, the probability of a >15 min delay.

Scores go to the warehouse table `scores` (load_id, flight_id, model, version, probability, scored_at); scoring
a load again replaces that load's rows, so the stage is idempotent per load.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel

from flows.detectors import SCORES_TABLE
from flows.features import FEATURES, FEATURES_TABLE
from flows.train import CHAMPION, MODEL_NAME, mlflow_client, quiet_mlflow
from flows.warehouse import connect
from pipewarden.errors import PipewardenError

_SCORES_DDL = f"""
CREATE TABLE IF NOT EXISTS {SCORES_TABLE} (
    load_id VARCHAR NOT NULL,
    flight_id VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    proba_delayed DOUBLE NOT NULL,
    scored_at TIMESTAMP DEFAULT now()
)
"""


class ScoringError(PipewardenError):
    """The model or the features needed to score a load are missing."""


class ScoreResult(BaseModel):
    """What `score` wrote for one load; `status` is `skipped` when no model holds the alias yet."""

    status: Literal["scored", "skipped"]
    load_id: str
    reason: str = ""
    model_name: str = MODEL_NAME
    model_version: str | None = None
    rows: int = 0
    mean_proba: float | None = None
    elapsed_ms: float = 0.0


def score(load_id: str, *, alias: str = CHAMPION, model_name: str = MODEL_NAME) -> ScoreResult:
    """Score the flights of `load_id` in `features_flights` with `models:/<model_name>@<alias>`.

    Writes (replaces) that load's rows in `scores`. With no model under the alias yet, returns `skipped`.
    Raises ScoringError if features_flights is missing.
    """
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    t0 = time.perf_counter()
    with quiet_mlflow():
        client = mlflow_client()
        try:
            mv = client.get_model_version_by_alias(model_name, alias)
        except MlflowException:
            return ScoreResult(status="skipped", load_id=load_id, model_name=model_name,
                               reason=f"no version of {model_name!r} has the alias {alias!r}; train first")
        version = str(mv.version)
        model = mlflow.sklearn.load_model(f"models:/{model_name}/{version}")
    with connect() as con:
        present = con.execute("SELECT COUNT(*) FROM duckdb_tables() WHERE table_name = ?", [FEATURES_TABLE]).fetchone()
        if not present or not present[0]:
            raise ScoringError(f"cannot score load {load_id!r}: the warehouse has no table {FEATURES_TABLE}",
                               hint="run transform and build_features first")
        cols = ", ".join(["flight_id", *FEATURES])
        frame = con.execute(f"SELECT {cols} FROM {FEATURES_TABLE} WHERE load_id = ? ORDER BY flight_id",
                            [load_id]).df()
        proba = model.predict_proba(frame[list(FEATURES)])[:, 1] if len(frame) else []
        out = frame[["flight_id"]].assign(load_id=load_id, model_name=model_name, model_version=version,
                                          proba_delayed=proba)
        con.execute(_SCORES_DDL)
        con.execute("BEGIN TRANSACTION")
        con.execute(f"DELETE FROM {SCORES_TABLE} WHERE load_id = ?", [load_id])
        con.register("scored_df", out)
        con.execute(f"INSERT INTO {SCORES_TABLE} (load_id, flight_id, model_name, model_version, proba_delayed) "
                    "SELECT load_id, flight_id, model_name, model_version, proba_delayed FROM scored_df")
        con.unregister("scored_df")
        con.execute("COMMIT")
    return ScoreResult(
        status="scored", load_id=load_id, model_name=model_name, model_version=version, rows=len(out),
        mean_proba=float(out["proba_delayed"].mean()) if len(out) else None,
        elapsed_ms=round((time.perf_counter() - t0) * 1000, 3),
    )
