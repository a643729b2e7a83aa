"""A declared ML model's stages on one load, as the pipeline and a team's own flow run them.

`ensure_champion` trains the champion when no version holds the alias yet (retraining later is the retrain agent's
proposal, never a side effect of a batch); `score_load` scores the load and records its labels as feedback;
`check_model` judges drift and decay and sends the events to the outbox. `latest_load` is the most recent accepted
load of the model's dataset (what a flow scores when it does not name one). Which model: the NAME of
`[ml_models.NAME]` in the project file, or the only one declared.

Public names: `ensure_champion`, `score_load`, `check_model`, `run_stages`, `latest_load`, `MLStageResult`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from pipewarden.errors import UserError


class MLStageResult(BaseModel):
    """What one declared model's stages did on one load."""

    ml_model: str
    load_id: str
    trained: dict[str, Any] | None = Field(None, description="The champion's training, when there was none yet.")
    scored: dict[str, Any] | None = None
    feedback: dict[str, Any] | None = None
    events: list[str] = Field(default_factory=list, description="Ids of the model-drift events sent to the outbox.")


def latest_load(ml_model: str | None = None) -> str:
    """The most recent accepted load of the declared model's dataset; a UserError when there is none."""
    from pipewarden.flows.ingest import list_loads
    from pipewarden.tools.model_registry import declared_model

    key, model = declared_model(ml_model)
    accepted = [row for row in list_loads(model.dataset) if str(row["status"]).startswith("accepted")]
    if not accepted:
        raise UserError(f"ML model {key!r}: no accepted load of {model.dataset!r} to score",
                        hint=f"guard a batch of {model.dataset} first, or pass load_id")
    return str(accepted[-1]["load_id"])


def ensure_champion(ml_model: str | None = None) -> dict[str, Any] | None:
    """Train the declared model's champion when no version holds the alias yet; the training result, or None."""
    from pipewarden.flows.train import has_champion, train
    from pipewarden.tools.model_registry import declared_model

    key, model = declared_model(ml_model)
    if has_champion(model.registered_model):
        return None
    return train(key).model_dump(mode="json")


def score_load(load_id: str, ml_model: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score `load_id` with the champion and record the load's labels as feedback; both results as dicts."""
    from pipewarden.flows.score import record_feedback, score

    scored = score(load_id, ml_model)
    feedback = record_feedback(load_id, ml_model)
    return scored.model_dump(mode="json"), feedback.model_dump(mode="json")


def check_model(load_id: str, ml_model: str | None = None, *, emit_events: bool = True) -> list[str]:
    """Judge drift and decay of the model's scores on `load_id`; send the events to the outbox; their ids."""
    from pipewarden.flows.detectors import detect_model_drift
    from pipewarden.flows.emit import emit
    from pipewarden.tools.model_registry import declared_model

    key, _ = declared_model(ml_model)
    events = detect_model_drift(load_id, ml_model=key)
    if emit_events:
        for ev in events:
            emit(ev)
    return [str(e.id) for e in events]


def run_stages(load_id: str, ml_model: str | None = None, *, supervision: bool = True) -> MLStageResult:
    """All of the above on one load: champion if missing, score, feedback, then (supervised) the drift check."""
    from pipewarden.tools.model_registry import declared_model

    key, _ = declared_model(ml_model)
    trained = ensure_champion(key)
    scored, feedback = score_load(load_id, key)
    events = check_model(load_id, key) if supervision else []
    return MLStageResult(ml_model=key, load_id=load_id, trained=trained, scored=scored, feedback=feedback,
                         events=events)
