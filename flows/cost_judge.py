"""Whether one build of a SQL model is a cost regression against the model's own history, judged by measures that
do not depend on the machine's load or on how busy the batch was.

- Volume: rows and bytes scanned are divided by the build's input rows (every table it read, each counted once, at
  build time: `ScanStat.table_rows`). A month with twice the rows scans twice the rows under the same plan: the
  cost per input row is unchanged, so nothing fires. A model downstream of a regressed one reads a bigger table
  and scans more rows for it, but not more per input row, so one injected regression gives one event.
- Plan shape (`tools.cost.plan_changes`): a new nested-loop join, a join condition that is no longer a plain
  equality, a table not read before, a table scanned more times, a scan that lost its filters. Elapsed time (per input row) fires only beside a plan-shape change: the
  plan says why, time says how much. Time alone (a loaded machine) never fires.
- The event's `baseline` is the baseline cost per input row times this build's input rows: what the model would
  cost on this batch under its usual plan, so `observed / baseline` is the regression and a re-build on the same
  data (the cost agent's verification) compares like with like.

Builds recorded before input rows were counted fall back to the raw metric (the old behaviour) for rows and
bytes; elapsed time then never fires without a plan-shape change either.

Public names: `CostBuild`, `Judgement`, `judge_build`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import median

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.policies.cost import CostPolicy
from pipewarden.tools.cost import CostProfile, JoinStat, ScanStat, input_rows, plan_changes


class CostBuild(BaseModel):
    """One successful build of a model, as `model_runs` holds it."""

    model_config = ConfigDict(extra="forbid")
    load_id: str | None
    elapsed_ms: float | None = None
    rows_scanned: int | None = None
    bytes_scanned: int | None = None
    scans: list[ScanStat] = Field(default_factory=list)
    operators: list[str] = Field(default_factory=list)
    joins: list[JoinStat] = Field(default_factory=list)

    @property
    def input_rows(self) -> int | None:
        return input_rows(self.scans)

    def profile(self) -> CostProfile | None:
        """The plan shape this build recorded (None when it recorded none)."""
        if not self.scans and not self.operators:
            return None
        return CostProfile(scans=self.scans, operators=self.operators, joins=self.joins)


class Judgement(BaseModel):
    """A regression: the metric that fired, the expected cost at this batch's volume, what was observed, and why."""

    model_config = ConfigDict(extra="forbid")
    metric: str
    baseline: float
    observed: float
    ratio: float
    per_input_row: bool = Field(description="Whether the comparison was per input row (False: raw, old history).")
    plan_changes: list[str] = Field(default_factory=list)


def _value(build: CostBuild, metric: str) -> float | None:
    v = getattr(build, metric, None)
    return float(v) if v is not None else None


def judge_build(latest: CostBuild, earlier: Sequence[CostBuild], policy: CostPolicy) -> Judgement | None:
    """The first of the policy's metrics on which `latest` regressed against `earlier` (the model's baseline
    builds, oldest first), or None. The caller checks `policy.min_history` first."""
    if not earlier:
        return None
    shape = plan_changes([b.profile() for b in earlier], latest.profile()) if latest.profile() else []
    n_now = latest.input_rows
    for rule in policy.metrics:
        observed = _value(latest, rule.metric)
        if observed is None or observed < rule.min_absolute:
            continue
        if rule.metric == "elapsed_ms" and not shape:
            continue  # time is evidence, not a cause: without a plan-shape change it is the machine's load
        pairs = [(v, b.input_rows) for b in earlier if (v := _value(b, rule.metric)) is not None]
        if not pairs:
            continue
        normalised = n_now is not None and n_now > 0 and all(n is not None and n > 0 for _, n in pairs)
        if normalised:
            assert n_now is not None
            baseline = median(v / n for v, n in pairs if n) * n_now
        else:
            baseline = median(v for v, _ in pairs)
        ratio = observed / baseline if baseline > 0 else math.inf
        if ratio >= rule.ratio:
            return Judgement(metric=rule.metric, baseline=round(baseline, 3), observed=round(observed, 3),
                             ratio=round(ratio, 3), per_input_row=normalised, plan_changes=shape)
    return None
