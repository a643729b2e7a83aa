"""Two detectors over the warehouse: a SQL model's cost regressed, or the champion model's inputs drifted.

They read warehouse tables and return typed events (`CostRegression`, `ModelDrift`); they emit nothing, the
caller does. The drift reference (`FeatureReference`, one per feature) is made at training time by
`reference_profile` and stored in the `model_reference` table; PSI compares a scored batch with it.

Public names: `detect_cost_regressions`, `detect_model_drift`, `FeatureReference`, `reference_profile`,
`batch_psi`, `psi`.
"""

from __future__ import annotations

import json
import math
import uuid
from statistics import median
from typing import Any, Literal

from pydantic import BaseModel, Field

from flows.warehouse import connect
from pipewarden.events import CostRegression, ModelDrift
from pipewarden.settings import get_settings

DATASET = "flights"
RUNS_TABLE = "model_runs"
REFERENCE_TABLE = "model_reference"
SCORES_TABLE = "scores"
FEATURES_TABLE = "features_flights"
NULL_BIN = "__null__"
OTHER_BIN = "__other__"
_EPS = 1e-4


DETECTOR_NS = uuid.UUID("0f3c2a9e-6b1d-4c55-8a7e-2d9f41b7c6aa")


def stable_event_id(kind: str, load_id: str, *parts: str) -> uuid.UUID:
    """One id per fault: re-running the same load finds the same fault, and the outbox keeps it once."""
    return uuid.uuid5(DETECTOR_NS, ":".join([kind, load_id, *parts]))


# --------------------------------------------------------------------------- cost
def detect_cost_regressions(
    load_id: str, threshold: float = 3.0, min_ms: float = 50.0, *, min_history: int = 3, dataset: str = DATASET
) -> list[CostRegression]:
    """Models whose latest build for `load_id` took `threshold` times the median of their earlier builds.

    Only successful builds count. A model with fewer than `min_history` earlier builds has no baseline yet;
    a build under `min_ms` never fires (too small to be worth a human's time, and too noisy to trust).
    """
    if not _warehouse_exists():
        return []
    with connect(read_only=True) as con:
        if not _has_table(con, RUNS_TABLE):
            return []
        rows = con.execute(
            f"SELECT model, load_id, started_at, elapsed_ms FROM {RUNS_TABLE} WHERE status = 'ok' "
            "ORDER BY model, started_at"
        ).fetchall()
    history: dict[str, list[tuple[Any, str | None, Any, float]]] = {}
    for row in rows:
        history.setdefault(row[0], []).append(row)
    events: list[CostRegression] = []
    for model, runs in sorted(history.items()):
        latest = [i for i, r in enumerate(runs) if r[1] == load_id]
        if not latest:
            continue
        i = latest[-1]
        observed = float(runs[i][3])
        previous = [float(r[3]) for r in runs[:i]]
        if len(previous) < min_history or observed < min_ms:
            continue
        baseline = median(previous)
        ratio = observed / baseline if baseline > 0 else math.inf
        if ratio >= threshold:
            events.append(CostRegression(id=stable_event_id("cost_regression", load_id, model),
                                         dataset=dataset, load_id=load_id, model=model, metric="elapsed_ms",
                                         baseline=round(baseline, 3), observed=round(observed, 3),
                                         ratio=round(ratio, 3)))
    return events


# --------------------------------------------------------------------------- drift reference
class FeatureReference(BaseModel):
    """A feature's training distribution: summary numbers and the bins PSI compares against."""

    feature: str
    kind: Literal["numeric", "categorical"]
    rows: int
    null_share: float
    mean: float | None = None
    std: float | None = None
    edges: list[float] = Field(default_factory=list, description="Numeric: upper bounds of all bins but the last.")
    bins: list[str] = Field(default_factory=list, description="Bin labels, in the order of `shares`.")
    shares: list[float] = Field(default_factory=list, description="Share of training rows in each bin.")


def _numeric_bins(values: Any, edges: list[float]) -> list[float]:
    import numpy as np

    arr = np.asarray(values, dtype="float64")
    null = np.isnan(arr)
    idx = np.searchsorted(np.asarray(edges, dtype="float64"), arr[~null], side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype("float64")
    total = max(len(arr), 1)
    return [*(counts / total).tolist(), float(null.sum()) / total]


def _categorical_bins(values: Any, categories: list[str]) -> list[float]:
    import pandas as pd

    s = pd.Series(values, dtype="object")
    total = max(len(s), 1)
    null = s.isna()
    counts = s[~null].astype(str).value_counts()
    known = [float(counts.get(c, 0)) / total for c in categories]
    other = float(counts[~counts.index.isin(categories)].sum()) / total
    return [*known, other, float(null.sum()) / total]


def reference_profile(frame: Any, numeric: list[str] | tuple[str, ...],
                      categorical: list[str] | tuple[str, ...] = (), n_bins: int = 10) -> list[FeatureReference]:
    """Profile each feature of a (training) DataFrame: deciles for numbers, shares for categories."""
    import numpy as np

    out: list[FeatureReference] = []
    rows = len(frame)
    for name in numeric:
        arr = frame[name].astype("float64").to_numpy()
        present = arr[~np.isnan(arr)]
        qs = np.quantile(present, np.linspace(0, 1, n_bins + 1)[1:-1]) if len(present) else np.array([])
        edges = sorted({float(q) for q in qs})
        out.append(FeatureReference(
            feature=name, kind="numeric", rows=rows, null_share=float(np.isnan(arr).mean()) if rows else 0.0,
            mean=float(present.mean()) if len(present) else None, std=float(present.std()) if len(present) else None,
            edges=edges, bins=[*(f"<={e:g}" for e in edges), f">{edges[-1]:g}" if edges else "all", NULL_BIN],
            shares=_numeric_bins(arr, edges),
        ))
    for name in categorical:
        s = frame[name]
        categories = sorted(str(v) for v in s.dropna().unique())
        out.append(FeatureReference(
            feature=name, kind="categorical", rows=rows, null_share=float(s.isna().mean()) if rows else 0.0,
            bins=[*categories, OTHER_BIN, NULL_BIN], shares=_categorical_bins(s, categories),
        ))
    return out


def psi(expected: list[float], actual: list[float]) -> float:
    """Population stability index of two share vectors over the same bins (empty bins floored at 1e-4)."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, _EPS), max(a, _EPS)
        total += (a - e) * math.log(a / e)
    return total


def batch_psi(reference: list[FeatureReference], frame: Any) -> dict[str, float]:
    """PSI of each referenced feature of `frame` against its training reference."""
    out: dict[str, float] = {}
    for ref in reference:
        if ref.feature not in frame.columns:
            continue
        if ref.kind == "numeric":
            actual = _numeric_bins(frame[ref.feature].astype("float64").to_numpy(), ref.edges)
        else:
            actual = _categorical_bins(frame[ref.feature], ref.bins[:-2])
        out[ref.feature] = psi(ref.shares, actual)
    return out


# --------------------------------------------------------------------------- drift
def detect_model_drift(
    load_id: str, threshold_psi: float = 0.2, *, per_feature: bool = False, min_rows: int = 100,
    dataset: str = DATASET,
) -> list[ModelDrift]:
    """Whether the features of the batch `load_id` moved away from the scoring model's training reference:
    PSI over `threshold_psi` (0.1 is a small shift, 0.2 a real one, by the usual rule of thumb).

    One drifting batch is one incident: by default the result holds at most one event, for the feature with
    the highest PSI (`metric="psi:<feature>"`); `per_feature=True` gives one event per drifting feature.
    Use `batch_psi` for every feature's value. The model and version come from the batch's rows in `scores`;
    a batch not scored, scored by a model with no stored reference, or smaller than `min_rows` gives none.
    """
    import pandas as pd

    if not _warehouse_exists():
        return []
    with connect(read_only=True) as con:
        if not all(_has_table(con, t) for t in (SCORES_TABLE, REFERENCE_TABLE, FEATURES_TABLE)):
            return []
        used = con.execute(
            f"SELECT model_name, model_version, COUNT(*) FROM {SCORES_TABLE} WHERE load_id = ? "
            "GROUP BY ALL ORDER BY 3 DESC LIMIT 1", [load_id]
        ).fetchone()
        if used is None or used[2] < min_rows:
            return []
        model_name, version = used[0], used[1]
        ref_rows = con.execute(
            f"SELECT profile FROM {REFERENCE_TABLE} WHERE model_name = ? AND model_version = ? ORDER BY feature",
            [model_name, version],
        ).fetchall()
        if not ref_rows:
            return []
        reference = [FeatureReference.model_validate(json.loads(r[0])) for r in ref_rows]
        cols = ", ".join(f'f."{r.feature}"' for r in reference)
        frame: pd.DataFrame = con.execute(
            f"SELECT {cols} FROM {FEATURES_TABLE} AS f JOIN {SCORES_TABLE} AS s "
            "ON s.flight_id = f.flight_id AND s.load_id = ? WHERE f.load_id = ?", [load_id, load_id]
        ).df()
    if len(frame) < min_rows:
        return []
    model = f"{model_name}@v{version}"
    drifted = sorted(((v, f) for f, v in batch_psi(reference, frame).items() if v > threshold_psi), reverse=True)
    if not per_feature:
        drifted = drifted[:1]
    return [
        ModelDrift(id=stable_event_id("model_drift", load_id, model, *([feature] if per_feature else [])),
                   dataset=dataset, load_id=load_id, model=model, metric=f"psi:{feature}",
                   value=round(value, 4), threshold=threshold_psi)
        for value, feature in drifted
    ]


def _warehouse_exists() -> bool:
    return get_settings().warehouse_path.exists()


def _has_table(con: Any, name: str) -> bool:
    return bool(con.execute("SELECT COUNT(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0])
