"""The score stage: the champion model predicts, for one load's flights, the probability of a >15 min delay.

Scores go to the warehouse table `scores` (load_id, flight_id, model, version, probability, scored_at); scoring
a load again replaces that load's rows, so the stage is idempotent per load.

Labelled feedback: `record_feedback` stores the actual outcome (arrival delay, and `delayed` = more than 15 minutes
late) of a load's scored flights as it arrives, in the table `feedback`; by default the arrivals that landed with
the load. The retrain tools (`tools.drift.model_health`) measure performance decay on it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from pipewarden.errors import PipewardenError
from pipewarden.flows.detectors import SCORES_TABLE
from pipewarden.flows.features import FEATURES, FEATURES_TABLE
from pipewarden.flows.train import CHAMPION, MODEL_NAME, mlflow_client, quiet_mlflow
from pipewarden.flows.warehouse import connect

if TYPE_CHECKING:
    import pandas as pd

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


FEEDBACK_TABLE = "feedback"
DELAY_MINUTES = 15  # the label: arriving more than this late (the same rule as features_flights.delayed)
_FEEDBACK_DDL = f"""
CREATE TABLE IF NOT EXISTS {FEEDBACK_TABLE} (
    load_id VARCHAR NOT NULL,
    flight_id VARCHAR NOT NULL,
    arr_delay DOUBLE NOT NULL,
    delayed BOOLEAN NOT NULL,
    received_at TIMESTAMP DEFAULT now()
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


class FeedbackResult(BaseModel):
    """What `record_feedback` stored for one load: outcomes of scored flights (others are counted, not stored)."""

    load_id: str
    rows: int = 0
    not_scored: int = 0
    delayed_share: float | None = None


def record_feedback(load_id: str, outcomes: pd.DataFrame | None = None) -> FeedbackResult:
    """Store the actual arrival delays of `load_id`'s scored flights as labelled feedback.

    `outcomes` has `flight_id` and `arr_delay` (minutes); by default, the arrivals that landed with the load (in
    `features_flights`). Only flights that were scored are stored (feedback is about predictions); an outcome for a
    flight already in `feedback` replaces it, so late or repeated arrivals never duplicate. Rows with no
    `arr_delay` are not outcomes yet and are skipped.
    """
    with connect() as con:
        if not _has(con, SCORES_TABLE):
            return FeedbackResult(load_id=load_id)
        if outcomes is None:
            if not _has(con, FEATURES_TABLE):
                return FeedbackResult(load_id=load_id)
            outcomes = con.execute(f"SELECT flight_id, arr_delay FROM {FEATURES_TABLE} WHERE load_id = ? "
                                   "AND arr_delay IS NOT NULL", [load_id]).df()
        missing = {"flight_id", "arr_delay"} - set(outcomes.columns)
        if missing:
            raise ScoringError(f"feedback for load {load_id!r} lacks column(s) {', '.join(sorted(missing))}",
                               hint="pass a frame with flight_id and arr_delay (minutes)")
        con.register("outcomes_df", outcomes[["flight_id", "arr_delay"]])
        con.execute(_FEEDBACK_DDL)
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "CREATE TEMP TABLE arrived AS SELECT CAST(o.flight_id AS VARCHAR) AS flight_id, "
            "CAST(o.arr_delay AS DOUBLE) AS arr_delay, s.flight_id IS NOT NULL AS scored FROM outcomes_df AS o "
            f"LEFT JOIN (SELECT DISTINCT flight_id FROM {SCORES_TABLE} WHERE load_id = ?) AS s "
            "ON s.flight_id = CAST(o.flight_id AS VARCHAR) WHERE o.arr_delay IS NOT NULL "
            "QUALIFY row_number() OVER (PARTITION BY o.flight_id) = 1", [load_id])
        con.execute(f"DELETE FROM {FEEDBACK_TABLE} WHERE load_id = ? AND flight_id IN "
                    "(SELECT flight_id FROM arrived WHERE scored)", [load_id])
        con.execute(f"INSERT INTO {FEEDBACK_TABLE} (load_id, flight_id, arr_delay, delayed) "
                    f"SELECT ?, flight_id, arr_delay, arr_delay > {DELAY_MINUTES} FROM arrived WHERE scored", [load_id])
        stored, not_scored, share = con.execute(
            "SELECT COUNT(*) FILTER (WHERE scored), COUNT(*) FILTER (WHERE NOT scored), "
            f"AVG(CASE WHEN scored THEN (arr_delay > {DELAY_MINUTES})::DOUBLE END) FROM arrived").fetchone()
        con.execute("DROP TABLE arrived")
        con.execute("COMMIT")
        con.unregister("outcomes_df")
    return FeedbackResult(load_id=load_id, rows=int(stored), not_scored=int(not_scored),
                          delayed_share=None if share is None else float(share))


def _has(con: Any, table: str) -> bool:
    return bool(con.execute("SELECT COUNT(*) FROM duckdb_tables() WHERE table_name = ?", [table]).fetchall()[0][0])
