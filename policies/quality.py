"""The quality policy (`policies/quality.yaml`): per dataset, the thresholds of the batch-level quality detectors
and the limits the quality agent proposes within.

Loaded into frozen pydantic models (unknown keys are errors); a malformed file fails with its path and what to fix.
A dataset with no entry gets the defaults below with no time column, keys or references, so only the checks that
need none of them (volume, null spikes, ranges) run.

Public names: `QualityPolicy`, `DatasetQuality`, `QualityChecks`, `Reference`, `CHECK_NAMES`, `load_quality_policy`,
`dataset_quality`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipewarden.errors import ConfigError
from pipewarden.policies.defaults import policy_file

CheckName = Literal["freshness", "volume", "distribution", "duplicates", "referential", "null_spike", "range"]
CHECK_NAMES: tuple[str, ...] = ("freshness", "volume", "distribution", "duplicates", "referential", "null_spike",
                                "range")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Freshness(_Frozen):
    halt: bool = False
    max_gap_hours: float = Field(48.0, gt=0, description="A hole in event time this long means a missing batch.")
    max_lag_hours: float = Field(30.0, gt=0, description="Data ending this long before its period's end: a late tail.")


class Volume(_Frozen):
    halt: bool = True
    min_history: int = Field(2, ge=1)
    min_ratio: float = Field(0.6, gt=0)
    max_ratio: float = Field(1.6, gt=1)
    max_z: float = Field(6.0, gt=0)


class NullSpike(_Frozen):
    halt: bool = True
    min_history: int = Field(1, ge=1)
    columns: list[str] | None = Field(default=None, description="Default: every nullable contract column.")
    max_increase: float = Field(0.02, ge=0, le=1)
    min_ratio: float = Field(3.0, ge=1)


class Range(_Frozen):
    halt: bool = False
    max_share: float = Field(0.005, ge=0, le=1)


class Duplicates(_Frozen):
    halt: bool = True
    max_share: float = Field(0.0, ge=0, le=1)


class Reference(_Frozen):
    """`column` of this dataset must name a `reference` (`<dataset>.<column>`) value."""

    column: str
    reference: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
    max_share: float = Field(0.0, ge=0, le=1, description="Broken share allowed while there is no history.")

    @property
    def ref_dataset(self) -> str:
        return self.reference.split(".", 1)[0]

    @property
    def ref_column(self) -> str:
        return self.reference.split(".", 1)[1]


class Referential(_Frozen):
    halt: bool = True
    margin: float = Field(0.02, ge=0, le=1)
    references: list[Reference] = Field(default_factory=list)


class Distribution(_Frozen):
    halt: bool = True
    psi: float = Field(0.25, gt=0)
    columns: list[str] = Field(default_factory=list)
    bins: int = Field(10, ge=2, le=100)
    min_rows: int = Field(500, ge=1)


class QualityChecks(_Frozen):
    freshness: Freshness = Field(default_factory=Freshness)
    volume: Volume = Field(default_factory=Volume)
    null_spike: NullSpike = Field(default_factory=NullSpike)
    range: Range = Field(default_factory=Range)
    duplicates: Duplicates = Field(default_factory=Duplicates)
    referential: Referential = Field(default_factory=Referential)
    distribution: Distribution = Field(default_factory=Distribution)

    def halts(self, check: str) -> bool:
        return bool(getattr(self, check).halt)


class AgentLimits(_Frozen):
    max_quarantine_fraction: float = Field(0.35, gt=0, le=1)
    contract_margin: float = Field(0.25, ge=0)


class DatasetQuality(_Frozen):
    time_column: str | None = None
    period: Literal["month", "day", "none"] = "none"
    keys: list[str] = Field(default_factory=list)
    segments: list[str] = Field(default_factory=list)
    checks: QualityChecks = Field(default_factory=QualityChecks)
    agent: AgentLimits = Field(default_factory=AgentLimits)


class QualityPolicy(_Frozen):
    datasets: dict[str, DatasetQuality] = Field(default_factory=dict)
    path: str = ""

    def for_dataset(self, dataset: str) -> DatasetQuality:
        return self.datasets.get(dataset, DatasetQuality())


def load_quality_policy(path: Path | str | None = None) -> QualityPolicy:
    """The policy file (default `<policies_dir>/quality.yaml`); a missing file means the defaults."""
    p = Path(path) if path is not None else policy_file("quality.yaml")
    return _load(str(p), p.stat().st_mtime_ns if p.exists() else 0)


@lru_cache(maxsize=8)
def _load(path: str, mtime: int) -> QualityPolicy:
    p = Path(path)
    if not p.exists():
        return QualityPolicy(path=path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        return QualityPolicy.model_validate({**raw, "path": path})
    except (yaml.YAMLError, ValidationError, TypeError) as exc:
        raise ConfigError(f"{p}: not a valid quality policy: {exc}",
                          hint="compare it with policies/quality.yaml in the repository") from exc


def dataset_quality(dataset: str, path: Path | str | None = None) -> DatasetQuality:
    """The quality settings of one dataset (defaults when the policy has no entry for it)."""
    return load_quality_policy(path).for_dataset(dataset)
