"""The cost policy (`policies/cost.yaml`): when a SQL model's build is a cost regression, and what a rewrite must
prove before it becomes a proposal.

Public names: `CostPolicy`, `MetricRule`, `ProveRule`, `load_cost_policy`, `COST_METRICS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import ConfigError

COST_METRICS: tuple[str, ...] = ("rows_scanned", "bytes_scanned", "elapsed_ms")
CostMetric = Literal["rows_scanned", "bytes_scanned", "elapsed_ms"]


class MetricRule(BaseModel):
    """One metric's threshold: fires when observed / baseline >= `ratio` and observed >= `min_absolute`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: CostMetric
    ratio: float = Field(gt=1.0, description="Observed over baseline at or above this is a regression.")
    min_absolute: float = Field(default=0.0, ge=0.0, description="Smaller observed values never fire.")


class ProveRule(BaseModel):
    """What a rewrite must show on the current data to become a proposal."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_saving: float = Field(default=0.2, gt=0.0, lt=1.0, description="At least this much cheaper (0.2 = 20%).")
    timed_runs: int = Field(default=5, ge=1, le=50, description="Timed builds of each side; the median counts.")
    max_time_growth: float = Field(default=0.25, ge=0.0, description=(
        "Evidence only: a rewrite slower than this by median time is noted in its verdict, never refused for it "
        "(time depends on the machine's load; rows and bytes scanned and the plan decide)."))


class CostPolicy(BaseModel):
    """The whole cost policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metrics: list[MetricRule] = Field(min_length=1)
    baseline_runs: int = Field(default=5, ge=1, description="Baseline: median of the last N successful builds.")
    min_history: int = Field(default=3, ge=1, description="Fewer earlier builds: no baseline, nothing fires.")
    prove: ProveRule = Field(default_factory=ProveRule)

    def rule(self, metric: str) -> MetricRule | None:
        return next((r for r in self.metrics if r.metric == metric), None)


def load_cost_policy(path: Path | str | None = None) -> CostPolicy:
    """Read `policies_dir/cost.yaml` (or `path`); a malformed file raises ConfigError naming it and the field."""
    from pipewarden.policies.defaults import policy_file, read_policy

    p = Path(path) if path is not None else policy_file("cost.yaml")
    if not p.exists():
        raise ConfigError(f"{p}: the cost policy file does not exist",
                          hint="restore policies/cost.yaml or set PIPEWARDEN_POLICIES_DIR to a folder holding one")
    return read_policy(p, CostPolicy, hint=f"metrics are {', '.join(COST_METRICS)}; ratios are above 1")
