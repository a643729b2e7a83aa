"""Two detectors over the warehouse: a SQL model's cost regressed, or a declared ML model drifted or decayed.

They read warehouse tables and return typed events (`CostRegression`, `ModelDrift`); they emit nothing, the
caller does. The drift reference (`FeatureReference`, one per feature) is made at training time by
`reference_profile` and stored in the `model_reference` table. The model-drift detector judges a scored batch
with `tools.drift.model_health` (feature drift against the reference sample logged with the model version, and
performance decay on labelled feedback), by the thresholds of `policies/retrain.yaml`.

Public names: `detect_cost_regressions`, `model_dataset`, `detect_model_drift`, `FeatureReference`, `reference_profile`,
`batch_psi`, `psi`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from pipewarden.events import CostRegression, ModelDrift
from pipewarden.flows.warehouse import connect
from pipewarden.settings import get_settings
from pipewarden.tools.drift import psi  # one PSI for quality, drift and the detectors
from pipewarden.tools.warehouse import duckdb_has_table, quote_ident

RUNS_TABLE = "model_runs"
REFERENCE_TABLE = "model_reference"
NULL_BIN = "__null__"
OTHER_BIN = "__other__"


DETECTOR_NS = uuid.UUID("0f3c2a9e-6b1d-4c55-8a7e-2d9f41b7c6aa")


def stable_event_id(kind: str, load_id: str, *parts: str) -> uuid.UUID:
    """One id per fault: re-running the same load finds the same fault, and the outbox keeps it once."""
    return uuid.uuid5(DETECTOR_NS, ":".join([kind, load_id, *parts]))


# --------------------------------------------------------------------------- cost
def _event_metrics() -> tuple[str, ...]:
    from typing import get_args

    return get_args(CostRegression.model_fields["metric"].annotation)


def detect_cost_regressions(
    load_id: str, threshold: float | None = None, min_ms: float | None = None, *, min_history: int | None = None,
    dataset: str | None = None, policy: Any = None,
) -> list[CostRegression]:
    """Models whose latest successful build for `load_id` costs past the cost policy's threshold over their baseline
    (their last `baseline_runs` earlier successful builds), at most one event per model, judged by
    `flows.cost_judge.judge_build`: rows and bytes scanned per input row (a busier batch is no regression), elapsed
    time only beside a change of the model's own plan shape (a loaded machine is no regression).

    The policy (`policies/cost.yaml`, or `policy`) lists metrics in order; the first metric that fires names the
    event. `threshold` / `min_ms` override the elapsed-time rule, `min_history` the policy's. A model with fewer
    than `min_history` earlier builds has no baseline yet.

    Each event's `dataset` is `dataset` when given (the pipeline passes the batch's), else the dataset whose load
    `load_id` is (`meta_loads`), else the dataset the model is built from (`model_dataset`).
    """
    from pipewarden.flows.cost_judge import CostBuild, judge_build
    from pipewarden.policies.cost import MetricRule, load_cost_policy

    policy = policy or load_cost_policy()
    rules = list(policy.metrics)
    if threshold is not None or min_ms is not None:
        old = policy.rule("elapsed_ms") or MetricRule(metric="elapsed_ms", ratio=3.0, min_absolute=50.0)
        new = MetricRule(metric="elapsed_ms", ratio=threshold if threshold is not None else old.ratio,
                         min_absolute=min_ms if min_ms is not None else old.min_absolute)
        rules = [new if r.metric == "elapsed_ms" else r for r in rules] + ([] if policy.rule("elapsed_ms") else [new])
    supported = _event_metrics()
    rules = [r for r in rules if r.metric in supported]  # a metric the event cannot carry cannot fire
    need_history = policy.min_history if min_history is None else min_history
    from pipewarden.tools.warehouse import connect as connect_warehouse

    url = get_settings().warehouse
    if url.startswith("duckdb:///") and not _warehouse_exists():
        return []
    with connect_warehouse(url, read_only=True) as wh:  # DuckDB or the project's server warehouse
        cols = set(wh.columns(RUNS_TABLE))
        if not cols:
            return []
        wanted = ("elapsed_ms", "rows_scanned", "bytes_scanned", "scans", "operators", "joins")
        rows = wh.execute(
            f"SELECT model, load_id, {', '.join(c if c in cols else f'NULL AS {c}' for c in wanted)} "
            f"FROM {RUNS_TABLE} WHERE status = 'ok' ORDER BY model, started_at"
        )
    history: dict[str, list[CostBuild]] = {}
    for row in rows:
        history.setdefault(row[0], []).append(CostBuild(
            load_id=row[1], elapsed_ms=row[2], rows_scanned=row[3], bytes_scanned=row[4],
            scans=json.loads(row[5]) if row[5] else [], operators=json.loads(row[6]) if row[6] else [],
            joins=json.loads(row[7]) if row[7] else []))
    judged = policy.model_copy(update={"metrics": rules})
    if dataset is None:
        dataset = _load_dataset(url, load_id)
    events: list[CostRegression] = []
    for model, runs in sorted(history.items()):
        latest = [i for i, r in enumerate(runs) if r.load_id == load_id]
        if not latest:
            continue
        i = latest[-1]
        if len(runs[:i]) < need_history:
            continue
        found = judge_build(runs[i], runs[:i][-policy.baseline_runs:], judged)
        if found is not None:
            events.append(CostRegression(id=stable_event_id("cost_regression", load_id, model),
                                         dataset=dataset or model_dataset(model),
                                         load_id=load_id, model=model, metric=found.metric,
                                         baseline=found.baseline, observed=found.observed, ratio=found.ratio))
    return events


def _load_dataset(url: str, load_id: str) -> str | None:
    """The dataset whose batch `load_id` landed (its `meta_loads` row), or None when the load is not recorded."""
    from pipewarden.tools.warehouse import connect as connect_warehouse

    with connect_warehouse(url, read_only=True) as wh:
        if not wh.has_table("meta_loads"):
            return None
        rows = wh.execute("SELECT dataset FROM meta_loads WHERE load_id = ? ORDER BY dataset LIMIT 1", [load_id])
    return str(rows[0][0]) if rows else None


def model_dataset(model: str) -> str:
    """The dataset a SQL model is built from: of the raw tables (`raw_<dataset>`) it reads, directly or through
    other models, the first batch dataset (not `reference = true` in the project file) by name, else the first
    reference one; the model's own name when it reads no raw table."""
    from pipewarden.tools.lineage import RAW_PREFIX, ModelSqlError, model_dependencies

    try:
        deps = model_dependencies()
    except ModelSqlError:  # the models folder is gone or broken since the build: the model is all we know
        return model
    seen: set[str] = set()
    todo = [model]
    while todo:
        for up in deps.get(todo.pop(), ()):
            if up not in seen:
                seen.add(up)
                todo.append(up)
    raw = sorted(t.removeprefix(RAW_PREFIX) for t in seen if t not in deps and t.startswith(RAW_PREFIX))
    settings = get_settings()
    declared = settings.project_config.datasets if settings.has_project else {}
    batch = [d for d in raw if not (d in declared and declared[d].reference)]
    return (batch or raw or [model])[0]


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
    load_id: str, threshold_psi: float | None = None, *, ml_model: str | None = None, per_feature: bool = False,
    min_rows: int | None = None, policy: Any = None,
) -> list[ModelDrift]:
    """Whether a declared ML model that scored the batch `load_id` drifted or decayed, by the retrain policy
    (`policies/retrain.yaml`) through `tools.drift.model_health`, the same tool the retrain agent reads.

    `ml_model` names one declared model (`[ml_models.NAME]`); by default every declared model that scored the load
    is judged. Feature drift compares the batch's features with the training reference sample logged with the
    scoring version (KS p < 0.05 for references under 1,000 rows; Wasserstein / reference std >= 0.1 or PSI >= 0.1
    for larger ones); the dataset drifts when at least half its features do. Performance decay compares the
    metric on the load's labelled feedback with the version's training metric.

    One incident per model and batch by default: one event when performance decayed (`metric="<metric>_drop"`,
    value the drop, threshold the bound) or else when the dataset drifted (`metric="drift_share"`, value the share
    of drifted features). `per_feature=True` gives one event per drifted feature instead
    (`metric="<method>:<feature>"`, e.g. `psi:temp`). `threshold_psi` and `min_rows` override the policy's PSI
    threshold and minimum batch. A batch not scored, or too small, gives none. Each event's `dataset` is the
    model's, and its `detail` carries the declared model, the per-feature statistics and the decay.
    """
    from pipewarden.policies.retrain import load_retrain_policy
    from pipewarden.settings import get_settings
    from pipewarden.tools.drift import DriftInputError, ModelHealthInput, model_health
    from pipewarden.tools.model_registry import RegistryError

    settings = get_settings()
    if not _warehouse_exists() or not settings.has_project:
        return []
    project = settings.project_config
    models = {ml_model: project.ml_model(ml_model)} if ml_model else project.ml_models
    policy = policy or load_retrain_policy()
    override = {k: v for k, v in (("psi", threshold_psi), ("min_rows", min_rows)) if v is not None}
    if override:
        policy = policy.model_copy(update={"drift": policy.drift.model_copy(update=override)})
    events: list[ModelDrift] = []
    for key, decl in models.items():
        with connect(read_only=True) as con:
            if not all(duckdb_has_table(con, t) for t in (decl.predictions, decl.features)):
                continue
            scored = con.execute(f"SELECT COUNT(*) FROM {quote_ident(decl.predictions)} WHERE load_id = ? AND model_name = ?",
                                 [load_id, decl.registered_model]).fetchone()[0]
        if not scored:
            continue
        try:
            health = model_health(ModelHealthInput(load_id=load_id, model_name=decl.registered_model), policy)
        except (DriftInputError, RegistryError):  # scored by a version the registry does not know: nothing to judge
            continue
        events += _drift_events(key, decl, health, load_id, per_feature)
    return events


def _drift_events(key: str, decl: Any, health: Any, load_id: str, per_feature: bool) -> list[ModelDrift]:
    model = f"{health.model_name}@v{health.version}"
    drift = health.drift
    detail: dict[str, Any] = {
        "ml_model": key, "model_name": health.model_name, "model_version": health.version,
        "features_table": decl.features, "rows": health.rows, "notes": health.notes,
        "decay": health.decay.model_dump(mode="json"),
        "drift": None if drift is None else {
            "share": drift.share, "share_threshold": drift.share_threshold, "dataset_drift": drift.dataset_drift,
            "reference_rows": drift.reference_rows, "small_reference": drift.small_reference,
            "features": {f.feature: {"method": f.method, "statistic": round(f.statistic, 6), "threshold": f.threshold,
                                     "drifted": f.drifted} for f in drift.features},
        },
    }
    drifted = list(drift.drifted_features) if drift else []
    base = {"dataset": decl.dataset, "load_id": load_id, "model": model, "drifted_features": drifted,
            "detail": detail}
    if per_feature:
        return [ModelDrift(id=stable_event_id("model_drift", load_id, model, f.feature), metric=f"{f.method}:{f.feature}",
                           value=round(f.statistic, 4), threshold=f.threshold, **base)
                for name in drifted if (f := drift.feature(name)) is not None]  # type: ignore[union-attr]
    decay = health.decay
    if decay.decayed and decay.drop is not None:
        return [ModelDrift(id=stable_event_id("model_drift", load_id, model), metric=f"{decay.metric}_drop",
                           value=round(decay.drop, 4), threshold=decay.max_drop, **base)]
    if drift is not None and drift.dataset_drift:
        return [ModelDrift(id=stable_event_id("model_drift", load_id, model), metric="drift_share",
                           value=round(drift.share, 4), threshold=drift.share_threshold, **base)]
    return []


def _warehouse_exists() -> bool:
    return get_settings().warehouse_path.exists()
