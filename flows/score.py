"""The score stage: a declared ML model's champion scores one load's rows of its features table.

Scores go to the model's predictions table (`predictions` in its declaration; columns load_id, example_id,
model_name, model_version, proba, scored_at), `proba` being the probability of the positive label; scoring a load
again replaces that load's rows of that model, so the stage is idempotent per load.

Labelled feedback: `record_feedback` stores the actual outcome (the label) of a load's scored rows as it arrives,
in the table `feedback` (load_id, model_name, example_id, label); by default the labels that arrived with the load in
the features table. The retrain tools (`tools.drift.model_health`) measure performance decay on it.

Public names: `score`, `record_feedback`, `ScoreResult`, `FeedbackResult`, `ScoringError`, `FEEDBACK_TABLE`,
`predictions_ddl`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from pipewarden.errors import PipewardenError
from pipewarden.flows.warehouse import connect
from pipewarden.tools.model_registry import CHAMPION, declared_model, mlflow_client, quiet_mlflow

if TYPE_CHECKING:
    import pandas as pd

FEEDBACK_TABLE = "feedback"
_FEEDBACK_DDL = f"""
CREATE TABLE IF NOT EXISTS {FEEDBACK_TABLE} (
    load_id VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    example_id VARCHAR NOT NULL,
    label BOOLEAN NOT NULL,
    received_at TIMESTAMP DEFAULT now()
)
"""


def predictions_ddl(table: str) -> str:
    """The DDL of a predictions table (one row per scored example of a load)."""
    return f"""
CREATE TABLE IF NOT EXISTS "{table}" (
    load_id VARCHAR NOT NULL,
    example_id VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    proba DOUBLE NOT NULL,
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
    ml_model: str = ""
    model_name: str = ""
    model_version: str | None = None
    rows: int = 0
    mean_proba: float | None = None
    elapsed_ms: float = 0.0


def _q(name: str) -> str:
    from pipewarden.tools.warehouse import quote_ident

    return quote_ident(name)


def score(load_id: str, ml_model: str | None = None, *, alias: str = CHAMPION) -> ScoreResult:
    """Score the rows of `load_id` in the declared model's features table with `models:/<name>@<alias>`.

    Writes (replaces) that load's rows of this model in its predictions table. With no model under the alias yet,
    returns `skipped`. Raises ScoringError if the features table is missing.
    """
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    from pipewarden.tools.warehouse import duckdb_has_table

    key, model = declared_model(ml_model)
    name = model.registered_model
    t0 = time.perf_counter()
    with quiet_mlflow():
        client = mlflow_client()
        try:
            mv = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return ScoreResult(status="skipped", load_id=load_id, ml_model=key, model_name=name,
                               reason=f"no version of {name!r} has the alias {alias!r}; train first")
        version = str(mv.version)
        fitted = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    features = list(model.feature_columns)
    with connect() as con:
        if not duckdb_has_table(con, model.features):
            raise ScoringError(f"cannot score load {load_id!r}: the warehouse has no table {model.features}",
                               hint="build the project's SQL models first (`pipewarden build`)")
        cols = ", ".join(_q(c) for c in dict.fromkeys([model.id_column, *features]))
        frame = con.execute(f"SELECT {cols} FROM {_q(model.features)} WHERE {_q(model.load_column)} = ? "
                            f"ORDER BY {_q(model.id_column)}", [load_id]).df()
        proba = fitted.predict_proba(frame[features])[:, 1] if len(frame) else []
        out = frame[[model.id_column]].rename(columns={model.id_column: "example_id"}).astype({"example_id": str})
        out = out.assign(load_id=load_id, model_name=name, model_version=version, proba=proba)
        table = _q(model.predictions)
        con.execute(predictions_ddl(model.predictions))
        con.execute("BEGIN TRANSACTION")
        con.execute(f"DELETE FROM {table} WHERE load_id = ? AND model_name = ?", [load_id, name])
        con.register("scored_df", out)
        con.execute(f"INSERT INTO {table} (load_id, example_id, model_name, model_version, proba) "
                    "SELECT load_id, example_id, model_name, model_version, proba FROM scored_df")
        con.unregister("scored_df")
        con.execute("COMMIT")
    return ScoreResult(
        status="scored", load_id=load_id, ml_model=key, model_name=name, model_version=version, rows=len(out),
        mean_proba=float(out["proba"].mean()) if len(out) else None,
        elapsed_ms=round((time.perf_counter() - t0) * 1000, 3),
    )


class FeedbackResult(BaseModel):
    """What `record_feedback` stored for one load: outcomes of scored rows (others are counted, not stored)."""

    load_id: str
    ml_model: str = ""
    rows: int = 0
    not_scored: int = 0
    positive_share: float | None = None


def record_feedback(load_id: str, ml_model: str | None = None,
                    outcomes: pd.DataFrame | None = None) -> FeedbackResult:
    """Store the actual outcomes (labels) of `load_id`'s scored rows as labelled feedback.

    `outcomes` has the model's id column and its label; by default, the labels that arrived with the load (in the
    features table). Only rows that were scored are stored (feedback is about predictions); an outcome for a row
    already in `feedback` replaces it, so late or repeated outcomes never duplicate. Rows with no label are not
    outcomes yet and are skipped.
    """
    from pipewarden.tools.warehouse import duckdb_has_table

    key, model = declared_model(ml_model)
    name, id_col, label = model.registered_model, model.id_column, model.label
    with connect() as con:
        if not duckdb_has_table(con, model.predictions):
            return FeedbackResult(load_id=load_id, ml_model=key)
        if outcomes is None:
            if not duckdb_has_table(con, model.features):
                return FeedbackResult(load_id=load_id, ml_model=key)
            outcomes = con.execute(f"SELECT {_q(id_col)}, {_q(label)} FROM {_q(model.features)} "
                                   f"WHERE {_q(model.load_column)} = ? AND {_q(label)} IS NOT NULL", [load_id]).df()
        missing = {id_col, label} - set(outcomes.columns)
        if missing:
            raise ScoringError(f"feedback for load {load_id!r} lacks column(s) {', '.join(sorted(missing))}",
                               hint=f"pass a frame with {id_col} and {label}")
        frame = outcomes[[id_col, label]].rename(columns={id_col: "example_id", label: "label"})
        con.register("outcomes_df", frame)
        con.execute(_FEEDBACK_DDL)
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "CREATE TEMP TABLE arrived AS SELECT CAST(o.example_id AS VARCHAR) AS example_id, "
            "CAST(o.label AS BOOLEAN) AS label, s.example_id IS NOT NULL AS scored FROM outcomes_df AS o "
            f"LEFT JOIN (SELECT DISTINCT example_id FROM {_q(model.predictions)} WHERE load_id = ? AND model_name = ?) "
            "AS s ON s.example_id = CAST(o.example_id AS VARCHAR) WHERE o.label IS NOT NULL "
            "QUALIFY row_number() OVER (PARTITION BY o.example_id) = 1", [load_id, name])
        con.execute(f"DELETE FROM {FEEDBACK_TABLE} WHERE load_id = ? AND model_name = ? AND example_id IN "
                    "(SELECT example_id FROM arrived WHERE scored)", [load_id, name])
        con.execute(f"INSERT INTO {FEEDBACK_TABLE} (load_id, model_name, example_id, label) "
                    "SELECT ?, ?, example_id, label FROM arrived WHERE scored", [load_id, name])
        stored, not_scored, share = con.execute(
            "SELECT COUNT(*) FILTER (WHERE scored), COUNT(*) FILTER (WHERE NOT scored), "
            "AVG(CASE WHEN scored THEN label::DOUBLE END) FROM arrived").fetchone()
        con.execute("DROP TABLE arrived")
        con.execute("COMMIT")
        con.unregister("outcomes_df")
    return FeedbackResult(load_id=load_id, ml_model=key, rows=int(stored), not_scored=int(not_scored),
                          positive_share=None if share is None else float(share))

