"""The retrain policy as code: drift thresholds, the decay bound, how a challenger is trained and the gates it must
pass before a person is asked to promote it. Read from `policies/retrain.yaml` (under the configured policies
folder, or `PIPEWARDEN_RETRAIN_POLICY_FILE`).

Metrics are named in one vocabulary (`auc`, `accuracy`, `brier`); `better(a, b)` and `gain(new, old)` know which
way each one points, so a gate reads the same for every metric.

One policy serves every ML model the project declares (`[ml_models.NAME]`); the slices the gates judge are the
model's declared `slices` unless the policy names its own (`gate_slices`).

Public names: `RetrainPolicy`, `DriftPolicy`, `DecayPolicy`, `WindowPolicy`, `GatePolicy`, `Metric`,
`load_retrain_policy`, `gain`, `gate_slices`, `POLICY_FILE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipewarden.errors import ConfigError
from pipewarden.policies.defaults import policy_file
from pipewarden.settings import get_settings

POLICY_FILE = "retrain.yaml"
Metric = Literal["auc", "accuracy", "brier"]
LOWER_IS_BETTER: frozenset[str] = frozenset({"brier"})


def gain(new: float, old: float, metric: str) -> float:
    """How much better `new` is than `old` on `metric` (positive: better), whichever way the metric points."""
    return (old - new) if metric in LOWER_IS_BETTER else (new - old)


class DriftPolicy(BaseModel):
    """When a feature, and a whole scored batch, counts as drifted from the model's training reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    small_reference_rows: int = Field(default=1000, ge=2, description="Below: two-sample tests (KS, chi-squared).")
    ks_p_value: float = Field(default=0.05, gt=0, lt=1, description="Small reference: drifted when p < this.")
    wasserstein_std: float = Field(default=0.1, gt=0, description="Large: Wasserstein / reference std >= this.")
    psi: float = Field(default=0.1, gt=0, description="Large: population stability index >= this.")
    dataset_share: float = Field(default=0.5, gt=0, le=1, description="Dataset drift: share of features drifted.")
    min_rows: int = Field(default=100, ge=1, description="Smaller scored batches are not judged.")
    reference_sample_rows: int = Field(default=5000, ge=100, description="Training rows kept as the reference.")


class DecayPolicy(BaseModel):
    """When performance on labelled feedback has decayed against the model's own training metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: Metric = "auc"
    max_drop: float = Field(default=0.05, ge=0, description="Decayed when worse than the training metric by this.")
    min_rows: int = Field(default=500, ge=1, description="Fewer labelled rows: no verdict.")


class WindowPolicy(BaseModel):
    """How a challenger is trained: on the latest `window_days` of features, the last `holdout_share` held out."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    window_days: int = Field(default=42, ge=1)
    min_window_days: int = Field(default=14, ge=1)
    max_window_days: int = Field(default=120, ge=1)
    holdout_share: float = Field(default=0.2, gt=0, lt=1)
    max_train_rows: int = Field(default=30000, ge=100, description="Above: a seeded random sample of the rows.")

    @model_validator(mode="after")
    def _ordered(self) -> WindowPolicy:
        if not self.min_window_days <= self.window_days <= self.max_window_days:
            raise ValueError(f"window_days {self.window_days} must lie between min_window_days "
                             f"{self.min_window_days} and max_window_days {self.max_window_days}")
        return self


class GatePolicy(BaseModel):
    """What a challenger must show against the champion on the recent holdout."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: Metric = "auc"
    min_improvement: float = Field(default=0.01, ge=0, description="Must beat the champion overall by this.")
    slices: list[str] | None = Field(default=None, description="Columns cut into slices; default: the model's "
                                     "declared slices.")
    max_slice_regression: float = Field(default=0.03, ge=0, description="No gated slice may lose more than this.")
    min_slice_rows: int = Field(default=200, ge=1, description="Smaller slices are reported, not gated.")


class RetrainPolicy(BaseModel):
    """The whole retrain policy of the project's ML models."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_name: str | None = Field(default=None, description="Informational: the model the file was written for.")
    drift: DriftPolicy = Field(default_factory=DriftPolicy)
    decay: DecayPolicy = Field(default_factory=DecayPolicy)
    retrain: WindowPolicy = Field(default_factory=WindowPolicy)
    gates: GatePolicy = Field(default_factory=GatePolicy)


def gate_slices(policy: RetrainPolicy, model: object) -> list[str]:
    """The slice columns the gates judge for `model` (an MLModelConfig): the policy's own list when it names one,
    else the model's declared `slices`."""
    if policy.gates.slices is not None:
        return list(policy.gates.slices)
    return list(getattr(model, "slices", None) or [])


def load_retrain_policy(path: Path | str | None = None) -> RetrainPolicy:
    """The retrain policy from `path` (default: `PIPEWARDEN_RETRAIN_POLICY_FILE`, else `<policies_dir>/retrain.yaml`).
    A missing default file gives the defaults above; a missing named file, or a malformed one, raises ConfigError
    naming the file (and the field)."""
    settings = get_settings()
    named = path if path is not None else settings.retrain_policy_file
    p = Path(named) if named is not None else policy_file(POLICY_FILE)
    if not p.exists():
        if named is not None:
            raise ConfigError(f"{p}: retrain policy file not found", hint="pass an existing YAML file")
        return RetrainPolicy()
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}", hint="fix the YAML syntax") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(raw).__name__}",
                          hint="see policies/retrain.yaml for the shape")
    try:
        return RetrainPolicy.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise ConfigError(f"{p}: {where}: {first['msg']}",
                          hint="see policies/retrain.yaml for the fields and their meaning") from exc
