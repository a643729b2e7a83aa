"""Typed pipeline events: one pydantic union discriminated by `kind`.

Every event is written to the outbox in the state DB before anything acts on it (invariant 5), and is
mirrored as a Prefect event named `event.name` on the resource `pipewarden.dataset.<dataset>`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from pipewarden.ids import UtcDatetime, new_id, utcnow


class ColumnSpec(BaseModel):
    """A column as observed in a batch: its name, its type in contract vocabulary and a few sample values."""

    model_config = ConfigDict(frozen=True)
    name: str
    type: str
    samples: list[Any] = Field(default_factory=list)


class TypeChange(BaseModel):
    model_config = ConfigDict(frozen=True)
    column: str
    expected: str
    observed: str


class FailedCheck(BaseModel):
    """One contract check that failed on a batch, with how many rows it rejected."""

    model_config = ConfigDict(frozen=True)
    check: str
    column: str | None = None
    failed_rows: int
    detail: str = ""


class _EventBase(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: UUID = Field(default_factory=new_id)
    occurred: UtcDatetime = Field(default_factory=utcnow)
    dataset: str
    load_id: str | None = None
    run_id: str | None = Field(default=None, description="The pipeline run (Prefect flow run id) that saw it.")

    @property
    def name(self) -> str:
        return EVENT_NAMES[self.kind]  # type: ignore[attr-defined]

    @property
    def resource_id(self) -> str:
        return f"pipewarden.dataset.{self.dataset}"


class SchemaDrift(_EventBase):
    """The batch's columns or types do not match the contract (after any active column mapping)."""

    kind: Literal["schema_drift"] = "schema_drift"
    batch_path: str
    contract_version: str
    schema_fingerprint: str | None = Field(
        default=None, description="The fingerprint of the batch's schema as it landed (what a fix is scoped to)."
    )
    added: list[ColumnSpec] = Field(default_factory=list)
    dropped: list[ColumnSpec] = Field(default_factory=list)
    retyped: list[TypeChange] = Field(default_factory=list)


class CheckFailed(_EventBase):
    """Row-level contract checks failed on more rows than the contract's threshold allows."""

    kind: Literal["check_failed"] = "check_failed"
    batch_path: str
    failed: list[FailedCheck]
    failure_rate: float
    threshold: float
    halted: bool = True


class RunFailed(_EventBase):
    """A pipeline stage raised. `crashed` is true when the machinery broke, not the user code."""

    kind: Literal["run_failed"] = "run_failed"
    stage: str
    error: str
    crashed: bool = False


class CostRegression(_EventBase):
    """A SQL model's cost rose past the policy threshold over its baseline."""

    kind: Literal["cost_regression"] = "cost_regression"
    model: str
    metric: Literal["elapsed_ms", "rows_scanned", "bytes_scanned"] = "elapsed_ms"
    baseline: float
    observed: float
    ratio: float


class ModelDrift(_EventBase):
    """The champion model's inputs or outputs moved away from its training reference, or its performance on
    labelled feedback decayed."""

    kind: Literal["model_drift"] = "model_drift"
    model: str
    metric: str
    value: float
    threshold: float
    drifted_features: list[str] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict, description="Per-feature statistics and how they were got.")


class QualityAnomaly(_EventBase):
    """A batch-level quality fault the row checks cannot see: a late or missing batch (freshness), an unusual row
    count (volume), a shifted distribution, duplicate keys or broken references to another dataset."""

    kind: Literal["quality_anomaly"] = "quality_anomaly"
    check: Literal["freshness", "volume", "distribution", "duplicates", "referential", "null_spike", "range"]
    batch_path: str | None = None
    column: str | None = None
    observed: float | None = None
    expected: float | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


Event = Annotated[
    SchemaDrift | CheckFailed | RunFailed | CostRegression | ModelDrift | QualityAnomaly, Field(discriminator="kind")
]
EventAdapter: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_NAMES: dict[str, str] = {
    "schema_drift": "pipewarden.schema.drift",
    "check_failed": "pipewarden.check.failed",
    "run_failed": "pipewarden.run.failed",
    "cost_regression": "pipewarden.cost.regression",
    "model_drift": "pipewarden.model.drift",
    "quality_anomaly": "pipewarden.quality.anomaly",
}


def parse_event(data: dict[str, Any] | str) -> Event:
    """Parse an event from a dict or its JSON text."""
    if isinstance(data, str):
        return EventAdapter.validate_json(data)
    return EventAdapter.validate_python(data)
