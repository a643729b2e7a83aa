"""The drift tool: has a model's world moved (feature drift), and has it got worse at its job (performance decay on
labelled feedback)?

Feature drift compares a scored batch with the training reference sample kept with the model version, feature by
feature, with the usual defaults (all numbers from `policies/retrain.yaml`):

- a small reference (fewer than `small_reference_rows` rows): a two-sample test, Kolmogorov-Smirnov for numbers and
  chi-squared for categories; drifted when p < `ks_p_value`;
- a large reference: a distance; a number drifted when the Wasserstein distance over the reference's standard
  deviation reaches `wasserstein_std`, or its population stability index (reference deciles plus a null bin)
  reaches `psi`; a category drifted when its PSI (reference categories, others, null) reaches `psi`.

The dataset has drifted when at least `dataset_share` of its features have. Performance decay compares the metric
on labelled feedback (the actual outcomes of scored rows) with the model's own training metric: decayed when it is
worse by `max_drop` or more, on at least `min_rows` labelled rows with both classes present.

`model_health` reads the warehouse (predictions, feedback, features) and the registry and returns both reports; the
pipeline's detector and the retrain agent call the same function, so what the agent sees is what fired. Which tables
and columns belong to a model comes from its declaration in the project file (`[ml_models.NAME]`).

Public names: `FeatureDrift`, `DriftReport`, `DecayReport`, `SliceMetric`, `ModelHealthInput`, `ModelHealth`,
`feature_drift`, `drift_report`, `performance_decay`, `metric_value`, `slice_metrics`, `psi`, `numeric_psi`,
`categorical_psi`, `model_health`, `warehouse`, `categorical_columns`, `has_table`, `sql_ident`, `TOOLS`,
`DriftInputError`. `has_table` is `tools.warehouse.duckdb_has_table` under the name `agents/retrain.py` imports.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import ModelRetry, UserError
from pipewarden.policies.retrain import (
    DecayPolicy,
    DriftPolicy,
    RetrainPolicy,
    gain,
    gate_slices,
    load_retrain_policy,
)
from pipewarden.settings import get_settings
from pipewarden.tools.registry import Tool
from pipewarden.tools.warehouse import duckdb_has_table as has_table

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

_EPS = 1e-4
FEEDBACK_TABLE = "feedback"  # labelled outcomes of scored rows (flows.score.record_feedback writes it)
NULL_BIN = "__null__"
OTHER_BIN = "__other__"


class DriftInputError(UserError):
    """The data a drift or decay report needs is not there (no warehouse, no scores for the load...)."""


# --------------------------------------------------------------------------- statistics
def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two share vectors over the same bins (empty bins floored at 1e-4)."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, _EPS), max(a, _EPS)
        total += (a - e) * math.log(a / e)
    return total


def _shares(counts: Any, total: int) -> list[float]:
    return [float(c) / total for c in counts] if total else [0.0 for _ in counts]


def numeric_psi(reference: Any, current: Any, n_bins: int = 10) -> float:
    """PSI of a numeric feature: bins at the reference's deciles, plus one bin for nulls."""
    import numpy as np

    ref = np.asarray(reference, dtype="float64")
    cur = np.asarray(current, dtype="float64")
    present = ref[~np.isnan(ref)]
    qs = np.quantile(present, np.linspace(0, 1, n_bins + 1)[1:-1]) if len(present) else np.array([])
    edges = np.asarray(sorted({float(q) for q in qs}), dtype="float64")

    def bins(arr: Any) -> list[float]:
        null = np.isnan(arr)
        counts = np.bincount(np.searchsorted(edges, arr[~null], side="left"), minlength=len(edges) + 1)
        return _shares([*counts.tolist(), int(null.sum())], len(arr))

    return psi(bins(ref), bins(cur))


def categorical_psi(reference: Any, current: Any) -> float:
    """PSI of a categorical feature over the reference's categories, one bin for the others and one for nulls."""
    ref_counts, cur_counts = _category_counts(reference, current)
    return psi(_shares(ref_counts, sum(ref_counts)), _shares(cur_counts, sum(cur_counts)))


def _category_counts(reference: Any, current: Any) -> tuple[list[int], list[int]]:
    import pandas as pd

    ref = pd.Series(reference, dtype="object")
    cur = pd.Series(current, dtype="object")
    cats = sorted(str(v) for v in ref.dropna().unique())

    def counts(s: pd.Series) -> list[int]:
        vc = s.dropna().astype(str).value_counts()
        known = [int(vc.get(c, 0)) for c in cats]
        return [*known, int(vc[~vc.index.isin(cats)].sum()), int(s.isna().sum())]

    return counts(ref), counts(cur)


class FeatureDrift(BaseModel):
    """One feature of a batch against its training reference: the statistic that decided, and the others."""

    feature: str
    kind: Literal["numeric", "categorical"]
    method: Literal["ks", "chi2", "wasserstein", "psi"] = Field(description="The statistic that decided.")
    statistic: float = Field(description="The deciding statistic's value (a p-value for ks and chi2).")
    threshold: float
    drifted: bool
    p_value: float | None = None
    wasserstein_std: float | None = Field(default=None, description="Wasserstein distance / reference std.")
    psi: float | None = None
    reference_rows: int
    current_rows: int
    reference_mean: float | None = None
    current_mean: float | None = None
    reference_null_share: float = 0.0
    current_null_share: float = 0.0

    @property
    def severity(self) -> float:
        """How far past (or short of) its threshold the feature is; comparable across methods (> 1: drifted)."""
        if self.method in ("ks", "chi2"):
            return self.threshold / max(self.statistic, 1e-300)
        return self.statistic / self.threshold if self.threshold else 0.0

    def describe(self) -> str:
        shift = ""
        if self.reference_mean is not None and self.current_mean is not None:
            shift = f", mean {self.reference_mean:.3g} -> {self.current_mean:.3g}"
        return (f"{self.feature}: {self.method} {self.statistic:.4g} (threshold {self.threshold:g})"
                f"{' DRIFTED' if self.drifted else ''}{shift}")


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def feature_drift(reference: Any, current: Any, *, feature: str, kind: Literal["numeric", "categorical"],
                  policy: DriftPolicy | None = None) -> FeatureDrift:
    """Compare one feature's values in a batch (`current`) with its training reference, by the policy's rule."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    policy = policy or DriftPolicy()
    ref_s, cur_s = pd.Series(reference), pd.Series(current)
    small = len(ref_s) < policy.small_reference_rows
    base: dict[str, Any] = {
        "feature": feature, "kind": kind, "reference_rows": len(ref_s), "current_rows": len(cur_s),
        "reference_null_share": float(ref_s.isna().mean()) if len(ref_s) else 0.0,
        "current_null_share": float(cur_s.isna().mean()) if len(cur_s) else 0.0,
    }
    if kind == "categorical":
        value_psi = categorical_psi(ref_s, cur_s)
        if small:
            ref_counts, cur_counts = _category_counts(ref_s, cur_s)
            keep = [i for i, (a, b) in enumerate(zip(ref_counts, cur_counts, strict=True)) if a + b > 0]
            table = np.array([[ref_counts[i] for i in keep], [cur_counts[i] for i in keep]])
            p = 1.0 if table.shape[1] < 2 or min(table.sum(axis=1)) == 0 else float(stats.chi2_contingency(table)[1])
            return FeatureDrift(**base, method="chi2", statistic=p, threshold=policy.ks_p_value,
                                drifted=p < policy.ks_p_value, p_value=p, psi=value_psi)
        return FeatureDrift(**base, method="psi", statistic=value_psi, threshold=policy.psi,
                            drifted=value_psi >= policy.psi, psi=value_psi)

    ref = ref_s.astype("float64").to_numpy()
    cur = cur_s.astype("float64").to_numpy()
    ref_v, cur_v = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    base |= {"reference_mean": _finite(float(ref_v.mean())) if len(ref_v) else None,
             "current_mean": _finite(float(cur_v.mean())) if len(cur_v) else None}
    value_psi = numeric_psi(ref, cur)
    if small:
        p = float(stats.ks_2samp(ref_v, cur_v).pvalue) if len(ref_v) and len(cur_v) else 1.0
        return FeatureDrift(**base, method="ks", statistic=p, threshold=policy.ks_p_value,
                            drifted=p < policy.ks_p_value, p_value=p, psi=value_psi)
    if len(ref_v) and len(cur_v):
        std = float(ref_v.std())
        scale = std if std > 0 else max(abs(float(ref_v.mean())), 1.0)  # a constant reference: relative to its level
        w = float(stats.wasserstein_distance(ref_v, cur_v)) / scale
    else:
        w = 0.0
    if value_psi >= policy.psi:  # either distance crossing its threshold is drift; PSI also sees null shares
        return FeatureDrift(**base, method="psi", statistic=value_psi, threshold=policy.psi, drifted=True,
                            wasserstein_std=w, psi=value_psi)
    return FeatureDrift(**base, method="wasserstein", statistic=w, threshold=policy.wasserstein_std,
                        drifted=w >= policy.wasserstein_std, wasserstein_std=w, psi=value_psi)


class DriftReport(BaseModel):
    """Every feature's verdict and the dataset's: drifted when at least `share_threshold` of features drifted."""

    reference_rows: int
    current_rows: int
    small_reference: bool
    features: list[FeatureDrift]
    drifted_features: list[str] = Field(description="Drifted features, most severe first.")
    share: float = Field(description="Share of features that drifted.")
    share_threshold: float
    dataset_drift: bool

    def feature(self, name: str) -> FeatureDrift | None:
        return next((f for f in self.features if f.feature == name), None)


def categorical_columns(frame: pd.DataFrame, features: Sequence[str]) -> list[str]:
    """Features whose values are text (or pandas categories) in `frame`; the rest are numbers."""
    import pandas as pd

    return [f for f in features if f in frame.columns and not pd.api.types.is_numeric_dtype(frame[f])
            and not pd.api.types.is_bool_dtype(frame[f])]


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, features: Sequence[str], *,
                 categorical: Sequence[str] | None = None, policy: DriftPolicy | None = None) -> DriftReport:
    """Feature drift of `current` against `reference` for each of `features`, and the dataset's verdict.

    `categorical` defaults to the features whose reference values are text. A feature missing from either frame
    is an error naming it (it would otherwise be silently left out of the share).
    """
    policy = policy or DriftPolicy()
    missing = [f for f in features if f not in reference.columns or f not in current.columns]
    if missing:
        where = "reference" if any(f not in reference.columns for f in missing) else "batch"
        raise DriftInputError(f"cannot judge drift: feature(s) {', '.join(missing)} missing from the {where}",
                              hint="pass only the model's features, with both frames holding every one")
    if not features:
        raise DriftInputError("cannot judge drift with no features", hint="pass the model's feature names")
    cats = set(categorical if categorical is not None else categorical_columns(reference, features))
    found = [feature_drift(reference[f], current[f], feature=f, kind="categorical" if f in cats else "numeric",
                           policy=policy) for f in features]
    drifted = sorted((f for f in found if f.drifted), key=lambda f: -f.severity)
    share = len(drifted) / len(found)
    return DriftReport(
        reference_rows=len(reference), current_rows=len(current),
        small_reference=len(reference) < policy.small_reference_rows, features=found,
        drifted_features=[f.feature for f in drifted], share=round(share, 4), share_threshold=policy.dataset_share,
        dataset_drift=share >= policy.dataset_share,
    )


# --------------------------------------------------------------------------- performance
def metric_value(metric: str, y_true: Any, proba: Any) -> float | None:
    """`auc`, `accuracy` (at 0.5) or `brier` of probabilities against 0/1 labels; None when AUC is undefined
    (one class only) or there are no rows."""
    import numpy as np
    from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score

    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype="float64")
    if len(y) == 0:
        return None
    if metric == "auc":
        return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None
    if metric == "accuracy":
        return float(accuracy_score(y, p >= 0.5))
    if metric == "brier":
        return float(brier_score_loss(y, p))
    raise ValueError(f"unknown metric {metric!r}: use auc, accuracy or brier")


class DecayReport(BaseModel):
    """The model's metric on labelled feedback against its own training metric."""

    metric: str
    value: float | None = Field(default=None, description="The metric on the feedback rows.")
    reference: float | None = Field(default=None, description="The model's metric at training (its holdout).")
    drop: float | None = Field(default=None, description="How much worse than at training (positive: worse).")
    max_drop: float
    rows: int
    positives: int = 0
    decayed: bool = False
    verdict: str = Field(description="The finding in words, or why there is none.")


def performance_decay(y_true: Any, proba: Any, reference_metric: float | None, *,
                      policy: DecayPolicy | None = None) -> DecayReport:
    """Whether performance on labelled feedback decayed past the policy's bound against `reference_metric`."""
    import numpy as np

    policy = policy or DecayPolicy()
    y = np.asarray(y_true).astype(int)
    base = {"metric": policy.metric, "max_drop": policy.max_drop, "rows": len(y), "positives": int(y.sum()),
            "reference": reference_metric}
    if len(y) < policy.min_rows:
        return DecayReport(**base, verdict=f"{len(y)} labelled rows, fewer than {policy.min_rows}: no verdict")
    value = metric_value(policy.metric, y, proba)
    if value is None:
        return DecayReport(**base, verdict=f"{policy.metric} is undefined on feedback with one class only")
    if reference_metric is None:
        return DecayReport(**base, value=value, verdict=f"the model logged no training {policy.metric}: no verdict")
    drop = -gain(value, reference_metric, policy.metric)
    decayed = drop >= policy.max_drop
    verdict = (f"{policy.metric} on {len(y)} labelled rows is {value:.4f}, {abs(drop):.4f} "
               f"{'worse' if drop > 0 else 'better'} than at training ({reference_metric:.4f}); "
               f"{'decayed' if decayed else 'within'} the bound {policy.max_drop:g}")
    return DecayReport(**base, value=value, drop=round(drop, 6), decayed=decayed, verdict=verdict)


class SliceMetric(BaseModel):
    """A metric on one slice of rows (a slice column's value, e.g. region = north)."""

    column: str
    value: str
    rows: int
    positives: int
    metric: str
    score: float | None = Field(default=None, description="None when undefined (one class only).")

    @property
    def name(self) -> str:
        return f"{self.column}={self.value}"


def slice_metrics(frame: pd.DataFrame, columns: Sequence[str], *, label: str, proba: str, metric: str,
                  min_rows: int = 1) -> list[SliceMetric]:
    """`metric` per value of each of `columns` (slices with fewer than `min_rows` rows are left out), largest
    slices first within a column."""
    out: list[SliceMetric] = []
    for col in columns:
        if col not in frame.columns:
            raise DriftInputError(f"cannot cut slices by {col!r}: no such column",
                                  hint=f"slice by one of {', '.join(map(str, frame.columns))}")
        for value, part in sorted(frame.groupby(col, dropna=False), key=lambda kv: -len(kv[1])):
            if len(part) < min_rows:
                continue
            y = part[label].astype(int)
            out.append(SliceMetric(column=col, value=str(value), rows=len(part), positives=int(y.sum()),
                                   metric=metric, score=metric_value(metric, y, part[proba])))
    return out


# --------------------------------------------------------------------------- the warehouse
@contextmanager
def warehouse(wait_s: float = 10.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the DuckDB warehouse (`tools.warehouse.connect`), closed on exit. No warehouse yet:
    DriftInputError (nothing was scored, so there is nothing to judge). A pipeline stage writing it in another
    process holds its lock for seconds: wait up to `wait_s`, then `WarehouseUnavailable`, as for any other
    warehouse that does not open."""
    from pipewarden.tools.warehouse import connect

    path = get_settings().warehouse_path
    if not path.exists():
        raise DriftInputError(f"no warehouse at {path}", hint="run the pipeline on a batch first (pipewarden run)")
    with connect(read_only=True, wait_s=wait_s) as wh:
        yield wh.duckdb


def sql_ident(name: str) -> str:
    """A table or column name, quoted (`tools.warehouse.quote_ident`); anything but letters, digits and _ is
    refused."""
    from pipewarden.tools.warehouse import quote_ident

    if not name.replace("_", "").isalnum():
        raise DriftInputError(f"{name!r} is not a plain table or column name", hint="use letters, digits and _")
    return quote_ident(name)


# --------------------------------------------------------------------------- the tool
class ModelHealthInput(BaseModel):
    """Which scored batch of which registered model to judge (its tables come from the model's declaration)."""

    model_config = ConfigDict(extra="forbid")
    load_id: str = Field(description="The batch (load id) whose scores and feedback to judge.")
    model_name: str | None = Field(default=None, description="The registered model named in the data; default: "
                                   "the project's only declared ML model.")
    version: str | None = Field(default=None, description="Default: the version that scored the load.")


class ModelHealth(BaseModel):
    """Feature drift and performance decay of one scored batch, with the feedback cut into slices."""

    model_name: str
    version: str
    load_id: str
    rows: int = Field(description="Scored rows of the load.")
    features: list[str]
    categorical: list[str]
    drift: DriftReport | None = Field(default=None, description="None when the batch or reference is too small.")
    decay: DecayReport
    feedback_slices: list[SliceMetric] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="Why a report is missing, in words.")

    @property
    def dataset_drift(self) -> bool:
        return bool(self.drift and self.drift.dataset_drift)

    @property
    def degraded(self) -> bool:
        return self.dataset_drift or self.decay.decayed


def model_health(inp: ModelHealthInput, policy: RetrainPolicy | None = None) -> ModelHealth:
    """Judge one scored load: its features against the scoring version's reference sample, its labelled feedback
    against that version's training metric. Raises DriftInputError when the load was never scored."""
    from pipewarden.tools.model_registry import declared_model, reference_sample, registered_name, version_info

    policy = policy or load_retrain_policy()
    inp = inp.model_copy(update={"model_name": registered_name(inp.model_name)})
    _, decl = declared_model(registered=inp.model_name)
    ft, st, fb = sql_ident(decl.features), sql_ident(decl.predictions), sql_ident(FEEDBACK_TABLE)
    ident, load_col = sql_ident(decl.id_column), sql_ident(decl.load_column)
    slice_cols = gate_slices(policy, decl)
    with warehouse() as con:
        if not has_table(con, decl.predictions):
            raise DriftInputError(f"load {inp.load_id!r} was never scored: no table {decl.predictions}",
                                  hint="run the score stage first")
        where = "load_id = ? AND model_name = ?" + (" AND model_version = ?" if inp.version else "")
        args: list[Any] = [inp.load_id, inp.model_name, *([inp.version] if inp.version else [])]
        used = con.execute(f"SELECT model_version, COUNT(*) FROM {st} WHERE {where} GROUP BY 1 ORDER BY 2 DESC LIMIT 1",
                           args).fetchone()
        if used is None:
            raise DriftInputError(f"load {inp.load_id!r} has no scores by {inp.model_name}"
                                  + (f" version {inp.version}" if inp.version else ""),
                                  hint="score the load first, or pass the version that scored it")
        version = str(used[0])
        info = version_info(inp.model_name, version)
        features = info.features
        if not features:
            raise DriftInputError(f"{inp.model_name} version {version} logged no 'features' param",
                                  hint="train it with flows.train.train or tools.challenger.train_challenger")
        cols = ", ".join(f"f.{sql_ident(c)}" for c in dict.fromkeys([*features, *slice_cols]))
        joined = (f"FROM {st} AS s JOIN {ft} AS f ON CAST(f.{ident} AS VARCHAR) = s.example_id "
                  f"AND f.{load_col} = s.load_id")
        scope = "WHERE s.load_id = ? AND s.model_name = ? AND s.model_version = ?"
        current = con.execute(f"SELECT {cols}, s.proba AS __proba {joined} {scope}",
                              [inp.load_id, inp.model_name, version]).df()
        labelled = None
        if has_table(con, FEEDBACK_TABLE):
            labelled = con.execute(
                f"SELECT {cols}, s.proba AS __proba, b.label AS __label {joined} JOIN {fb} AS b "
                "ON b.example_id = s.example_id AND b.load_id = s.load_id AND b.model_name = s.model_name "
                f"{scope} AND b.label IS NOT NULL", [inp.load_id, inp.model_name, version]).df()
    notes: list[str] = []
    reference = reference_sample(inp.model_name, version)
    categorical = categorical_columns(reference, features) if reference is not None else []
    drift = None
    if reference is None:
        notes.append(f"version {version} logged no reference sample: feature drift not judged")
    elif len(current) < policy.drift.min_rows:
        notes.append(f"{len(current)} scored rows, fewer than {policy.drift.min_rows}: feature drift not judged")
    else:
        drift = drift_report(reference, current, features, categorical=categorical, policy=policy.drift)
    metric = policy.decay.metric
    reference_metric = info.metrics.get(metric)
    if labelled is None or labelled.empty:
        decay = DecayReport(metric=metric, max_drop=policy.decay.max_drop, rows=0, reference=reference_metric,
                            verdict="no labelled feedback for this load yet")
        slices: list[SliceMetric] = []
    else:
        decay = performance_decay(labelled["__label"], labelled["__proba"], reference_metric, policy=policy.decay)
        slices = slice_metrics(labelled, [c for c in slice_cols if c in labelled.columns], label="__label",
                               proba="__proba", metric=metric, min_rows=policy.gates.min_slice_rows)
    return ModelHealth(model_name=inp.model_name, version=version, load_id=inp.load_id, rows=len(current),
                       features=features, categorical=categorical, drift=drift, decay=decay,
                       feedback_slices=slices, notes=notes)


def _model_health_tool(inp: ModelHealthInput) -> ModelHealth:
    try:
        return model_health(inp)
    except DriftInputError as exc:  # a model asked about a load or table that is not there: tell it
        raise ModelRetry(exc.message, hint=exc.hint) from exc


TOOLS: list[Tool] = [
    Tool(name="model_health", description="Feature drift (per feature, against the model's training reference) and "
         "performance decay on labelled feedback (overall and per slice) of one scored batch.",
         input=ModelHealthInput, output=ModelHealth, fn=_model_health_tool),
]
