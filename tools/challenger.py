"""The challenger tool: train a challenger on recent data as an MLflow run, and compare it with the champion on a
recent holdout under the retrain gates.

Training takes the champion's own recipe (its scikit-learn pipeline, cloned unfitted with the same
hyperparameters, and the features and label its run logged) and fits it on the latest `window_days` of the
features table (the model's declaration names it, and its time column), holding out the last `holdout_share` of those days, cut at a day boundary. The run logs its
params (the champion's, plus the window), its holdout metrics, the model (skops, no pickle) and a reference
sample of its training rows (the drift reference if it is promoted); the model is registered as a new version
tagged with the event it was trained for and given the alias `challenger`. Training for an event that already has
a challenger returns that one (work before the human decision must be idempotent).

Comparing scores both versions on the same holdout rows, overall and per slice (the declared slice columns), and applies
the gates of `policies/retrain.yaml`: the challenger must beat the champion by `min_improvement`, and no slice with
at least `min_slice_rows` rows (and both classes) may lose more than `max_slice_regression`. The champion fails its
own gate when it has decayed on the holdout against its training metric, or when the challenger beats it.

Public names: `ChallengerSpec`, `ChallengerRun`, `train_challenger`, `CompareInput`, `SliceComparison`,
`Comparison`, `compare_models`, `judge`, `recent_window`, `TOOLS`, `ChallengerError`.
"""

from __future__ import annotations

import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import ModelRetry, PipewardenError
from pipewarden.policies.retrain import RetrainPolicy, gain, gate_slices, load_retrain_policy
from pipewarden.tools.drift import DriftInputError, metric_value, sql_ident, warehouse
from pipewarden.tools.model_registry import RegistryError
from pipewarden.tools.registry import Tool
from pipewarden.tools.warehouse import duckdb_has_table

if TYPE_CHECKING:
    import pandas as pd

ROLE_TAG = "pipewarden.role"
BASE_TAG = "pipewarden.base_version"


class ChallengerError(PipewardenError):
    """A challenger cannot be trained or compared (no champion, too little recent data, one class only...)."""


# --------------------------------------------------------------------------- data
def _date(value: Any) -> date:
    import pandas as pd

    return pd.Timestamp(value).date()


def recent_window(model: Any, columns: list[str], window_days: int,
                  end: date | None = None) -> tuple[pd.DataFrame, date, date]:
    """The labelled rows of the last `window_days` days of the declared `model`'s features table up to `end`
    (default: its latest day), in time order, with `__day` (the row's date), the label and `columns`; and the
    window's first and last day."""
    table, label, day = model.features, model.label, f"CAST({sql_ident(model.time_column)} AS DATE)"
    cols = ", ".join(sql_ident(c) for c in dict.fromkeys([label, *columns]))
    with warehouse() as con:
        if not duckdb_has_table(con, table):
            raise ChallengerError(f"cannot train a challenger: the warehouse has no table {table}",
                                  hint="run the pipeline (build and score) first")
        last = end or con.execute(f"SELECT MAX({day}) FROM {sql_ident(table)}").fetchone()[0]
        if last is None:
            raise ChallengerError(f"cannot train a challenger: {table} is empty", hint="load a batch first")
        last = _date(last)
        first = last - timedelta(days=window_days - 1)
        frame = con.execute(
            f"SELECT {cols}, {day} AS __day FROM {sql_ident(table)} WHERE {day} BETWEEN ? AND ? "
            f"AND {sql_ident(label)} IS NOT NULL ORDER BY {sql_ident(model.time_column)}, "
            f"{sql_ident(model.id_column)}", [first, last]).df()
    return frame, first, last


def _columns(con: Any, table: str) -> set[str]:
    """The table's column names, in one catalog query (a query per column: 15 of them, 20-35 ms in all)."""
    return {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ?",
                                      [table]).fetchall()}


def _time_split(frame: pd.DataFrame, holdout_share: float) -> tuple[pd.DataFrame, pd.DataFrame, date]:
    """Train on the days before the day where the last `holdout_share` of rows begin; hold out the rest."""
    import pandas as pd

    dates = pd.to_datetime(frame["__day"])
    cut = dates.iloc[min(int(len(frame) * (1 - holdout_share)), len(frame) - 1)]
    train, holdout = frame[dates < cut], frame[dates >= cut]
    return train, holdout, cut.date()


# --------------------------------------------------------------------------- training
class ChallengerSpec(BaseModel):
    """What to train: the champion's recipe on the latest `window_days` of the features table."""

    model_config = ConfigDict(extra="forbid")
    model_name: str | None = Field(default=None, description="The registered model (declared in the project "
                                   "file); default: the only declared one.")
    base_version: str = Field(description="The champion version whose recipe (pipeline and params) is reused.")
    window_days: int = Field(ge=1, description="Recent days to train and hold out on.")
    holdout_share: float | None = Field(default=None, gt=0, lt=1, description="Default: the retrain policy's.")
    max_train_rows: int | None = Field(default=None, ge=100, description="Default: the retrain policy's.")
    event_id: str | None = Field(default=None, description="The event it is trained for; makes training idempotent.")
    reference_sample_rows: int | None = Field(default=None, ge=100, description="Default: the retrain policy's.")
    seed: int = 0


class ChallengerRun(BaseModel):
    """A trained (or found again) challenger: its registry version, MLflow run, window and holdout metrics."""

    model_name: str
    version: str
    run_id: str
    base_version: str
    reused: bool = False
    window_start: str
    window_end: str
    split_date: str = Field(description="The holdout's first day; the challenger never trained on it or later.")
    rows_train: int
    rows_holdout: int
    rows_available: int = Field(description="Training rows in the window before any sampling.")
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    elapsed_ms: float = 0.0


def _from_version(v: Any, reused: bool) -> ChallengerRun:
    p = v.params
    return ChallengerRun(
        model_name=v.model_name, version=v.version, run_id=v.run_id or "", base_version=p.get("base_version", ""),
        reused=reused, window_start=p.get("window_start", ""), window_end=p.get("window_end", ""),
        split_date=p.get("split_date", ""), rows_train=int(v.metrics.get("rows_train", 0)),
        rows_holdout=int(v.metrics.get("rows_holdout", 0)), rows_available=int(v.metrics.get("rows_available", 0)),
        params=p, metrics=v.metrics,
    )


def train_challenger(spec: ChallengerSpec) -> ChallengerRun:
    """Train the champion's recipe on recent data, log and register it, point `challenger` at it.

    With `spec.event_id`, a version already trained for that event (and window) is returned instead (`reused`).
    Raises ChallengerError when the base version is unknown or the window has too few rows or one class only.
    """
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow.models import infer_signature
    from sklearn.base import clone

    from pipewarden.tools.model_registry import (
        CHALLENGER,
        EVENT_TAG,
        REFERENCE_SAMPLE_ARTIFACT,
        declared_model,
        load_version,
        mlflow_client,
        quiet_mlflow,
        register_version,
        registered_name,
        trusted_types,
        version_info,
    )
    from pipewarden.tools.model_registry import find_versions as _find

    t0 = time.perf_counter()
    spec = spec.model_copy(update={"model_name": registered_name(spec.model_name)})
    assert spec.model_name is not None
    policy = load_retrain_policy()
    holdout_share = spec.holdout_share or policy.retrain.holdout_share
    max_rows = spec.max_train_rows or policy.retrain.max_train_rows
    keep_rows = spec.reference_sample_rows or policy.drift.reference_sample_rows
    if spec.event_id:
        for found in reversed(_find(spec.model_name, EVENT_TAG, spec.event_id)):
            if found.params.get("window_days") == str(spec.window_days):
                return _from_version(found, reused=True)
    _, decl = declared_model(registered=spec.model_name)
    base = version_info(spec.model_name, spec.base_version)
    features = base.features
    label = decl.label
    if not features:
        raise ChallengerError(f"{spec.model_name} version {spec.base_version} logged no 'features' param; its recipe "
                              "is unknown", hint="retrain the champion with flows.train.train")
    frame, first, last = recent_window(decl, features, spec.window_days)
    if len(frame) < 200:
        raise ChallengerError(f"only {len(frame)} labelled rows in the last {spec.window_days} days of "
                              f"{decl.features}", hint="choose a longer window or load more batches")
    frame[label] = frame[label].astype(int)
    train_df, holdout, cut = _time_split(frame, holdout_share)
    if train_df.empty or holdout.empty:
        raise ChallengerError(f"the {spec.window_days}-day window ({first}..{last}) spans one day only; nothing to "
                              "hold out", hint="choose a longer window")
    if train_df[label].nunique() < 2:
        raise ChallengerError(f"every training row in {first}..{cut} has {label}={int(train_df[label].iloc[0])}",
                              hint="choose a longer window; a classifier needs both classes")
    available = len(train_df)
    if available > max_rows:
        train_df = train_df.sample(max_rows, random_state=spec.seed).sort_index()

    estimator = clone(load_version(base))
    X_train, y_train = train_df[features], train_df[label]
    estimator.fit(X_train, y_train)
    proba = estimator.predict_proba(holdout[features])[:, 1]
    y_hold = holdout[label]
    metrics: dict[str, float] = {
        name: value for name in ("auc", "accuracy", "brier")
        if (value := metric_value(name, y_hold, proba)) is not None  # type: ignore[misc]
    }
    metrics |= {"base_rate_holdout": float(y_hold.mean()), "base_rate_train": float(y_train.mean()),
                "mean_proba_holdout": float(proba.mean()), "rows_train": float(len(train_df)),
                "rows_holdout": float(len(holdout)), "rows_available": float(available)}
    recipe = {k: v for k, v in base.params.items()
              if k not in {"split_date", "window_days", "window_start", "window_end", "base_version", "role"}}
    params = {**recipe, "label": label, "features": ",".join(features), "role": "challenger",
              "base_version": spec.base_version, "window_days": str(spec.window_days), "window_start": str(first),
              "window_end": str(last), "split_date": str(cut), "holdout_share": str(holdout_share),
              "max_train_rows": str(max_rows), "event_id": spec.event_id or ""}
    tags = {ROLE_TAG: "challenger", BASE_TAG: spec.base_version, **({EVENT_TAG: spec.event_id} if spec.event_id else {})}
    reference = X_train.sample(min(len(X_train), keep_rows), random_state=spec.seed)

    with quiet_mlflow():
        client = mlflow_client()
        experiment = client.get_run(base.run_id).info.experiment_id if base.run_id else None
        with mlflow.start_run(experiment_id=experiment, run_name=f"challenger-{cut.isoformat()}", tags=tags) as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            with tempfile.TemporaryDirectory() as tmp:
                ref_path = Path(tmp) / REFERENCE_SAMPLE_ARTIFACT
                reference.to_parquet(ref_path, index=False)
                mlflow.log_artifact(str(ref_path))
            info = mlflow.sklearn.log_model(
                estimator, name="model", signature=infer_signature(X_train.head(50), proba[:50]),
                pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"mlflow=={mlflow.__version__}"],
                serialization_format="skops", skops_trusted_types=trusted_types(estimator),
            )
        version = register_version(client, spec.model_name, info.model_uri, run.info.run_id, info.model_id, tags=tags)
        client.set_registered_model_alias(spec.model_name, CHALLENGER, version)
    return ChallengerRun(
        model_name=spec.model_name, version=version, run_id=run.info.run_id, base_version=spec.base_version,
        window_start=str(first), window_end=str(last), split_date=str(cut), rows_train=len(train_df),
        rows_holdout=len(holdout), rows_available=available, params=params, metrics=metrics,
        elapsed_ms=round((time.perf_counter() - t0) * 1000, 1),
    )


# --------------------------------------------------------------------------- comparing
class CompareInput(BaseModel):
    """Which two versions to compare, and on which days (default: the challenger's holdout)."""

    model_config = ConfigDict(extra="forbid")
    model_name: str | None = Field(default=None, description="The registered model named in the data; default: "
                                   "the project's only declared ML model.")
    champion_version: str = Field(description="The version the champion alias points at.")
    challenger_version: str = Field(description="The candidate version.")
    holdout_start: str | None = Field(default=None, description="First day (YYYY-MM-DD); default: its split_date.")
    holdout_end: str | None = Field(default=None, description="Last day; default: the challenger's window end.")


class SliceComparison(BaseModel):
    """Both versions' metric on one slice of the holdout."""

    column: str
    value: str
    rows: int
    positives: int
    champion: float | None = None
    challenger: float | None = None
    delta: float | None = Field(default=None, description="Challenger's gain over the champion (positive: better).")
    gated: bool = Field(description="Large enough, with both classes, to be held to the slice bound.")
    regressed: bool = False

    @property
    def name(self) -> str:
        return f"{self.column}={self.value}"

    def describe(self, metric: str) -> str:
        if self.champion is None or self.challenger is None or self.delta is None:
            return f"{self.name} ({self.rows} rows): {metric} undefined (one class)"
        return (f"{self.name} ({self.rows} rows): {metric} {self.champion:.4f} -> {self.challenger:.4f} "
                f"({self.delta:+.4f}){'' if self.gated else ', too small to gate'}")


class Comparison(BaseModel):
    """Champion vs challenger on the same recent holdout, and what the gates say about each."""

    model_name: str
    champion_version: str
    challenger_version: str
    metric: str
    holdout_start: str
    holdout_end: str
    rows: int
    positives: int
    champion_score: float | None
    challenger_score: float | None
    delta: float | None = Field(description="Challenger's gain over the champion (positive: better).")
    champion_train_score: float | None = Field(description="The champion's metric at its own training.")
    champion_drop: float | None = Field(description="How much worse the champion is here than at training.")
    min_improvement: float
    max_slice_regression: float
    min_slice_rows: int
    max_drop: float
    slices: list[SliceComparison] = Field(default_factory=list)
    champion_failures: list[str] = Field(default_factory=list, description="Why the champion fails its gate.")
    challenger_failures: list[str] = Field(default_factory=list, description="Gates the challenger fails.")
    notes: list[str] = Field(default_factory=list)

    @property
    def champion_passes(self) -> bool:
        return not self.champion_failures

    @property
    def challenger_passes(self) -> bool:
        return not self.challenger_failures

    @property
    def regressed_slices(self) -> list[SliceComparison]:
        return [s for s in self.slices if s.regressed]


def compare_models(inp: CompareInput, policy: RetrainPolicy | None = None) -> Comparison:
    """Score the holdout rows with both versions; the overall and per-slice metric, and the gates' verdicts."""
    from pipewarden.tools.model_registry import (
        declared_model,
        load_model,
        load_version,
        registered_name,
        version_info,
    )

    inp = inp.model_copy(update={"model_name": registered_name(inp.model_name)})
    policy = policy or load_retrain_policy()
    gates, metric = policy.gates, policy.gates.metric
    _, decl = declared_model(registered=inp.model_name)
    table = decl.features
    champ, chall = (version_info(inp.model_name, inp.champion_version),
                    version_info(inp.model_name, inp.challenger_version))
    start = inp.holdout_start or chall.params.get("split_date")
    end = inp.holdout_end or chall.params.get("window_end")
    if not start or not end:
        raise ChallengerError(f"version {inp.challenger_version} logged no holdout days (split_date, window_end)",
                              hint="pass holdout_start and holdout_end")
    features = chall.features or champ.features
    label = decl.label
    slice_cols = gate_slices(policy, decl)
    cols = list(dict.fromkeys([*features, *slice_cols]))
    with warehouse() as con:
        if not duckdb_has_table(con, table):
            raise ChallengerError(f"no table {table} in the warehouse", hint="run the pipeline first")
        present = _columns(con, table)
        missing = [c for c in cols if c not in present]
        if missing:
            raise ChallengerError(f"{table} has no column {', '.join(missing)}",
                                  hint="slice by columns of the features table (the model's declared slices, or "
                                       "gates.slices in policies/retrain.yaml)")
        sel = ", ".join(sql_ident(c) for c in dict.fromkeys([label, *cols]))
        holdout = con.execute(
            f"SELECT {sel} FROM {sql_ident(table)} WHERE CAST({sql_ident(decl.time_column)} AS DATE) BETWEEN ? AND ? "
            f"AND {sql_ident(label)} IS NOT NULL", [_date(start), _date(end)]).df()
    if holdout.empty:
        raise ChallengerError(f"no labelled rows in {table} from {start} to {end}",
                              hint="compare on days that are loaded")
    y = holdout[label].astype(int)
    # the champion as `train_challenger` read it (kept); the challenger from its registered artifact, which is what a
    # promotion would serve
    p_champ = load_version(champ).predict_proba(holdout[champ.features or features])[:, 1]
    p_chall = load_model(inp.model_name, inp.challenger_version).predict_proba(holdout[features])[:, 1]
    s_champ, s_chall = metric_value(metric, y, p_champ), metric_value(metric, y, p_chall)
    delta = gain(s_chall, s_champ, metric) if s_champ is not None and s_chall is not None else None
    train_score = champ.metrics.get(metric)
    drop = -gain(s_champ, train_score, metric) if s_champ is not None and train_score is not None else None

    frame = holdout.assign(__y=y, __champ=p_champ, __chall=p_chall)
    slices: list[SliceComparison] = []
    for col in slice_cols:
        for value, part in sorted(frame.groupby(col, dropna=False), key=lambda kv: -len(kv[1])):
            a = metric_value(metric, part["__y"], part["__champ"])
            b = metric_value(metric, part["__y"], part["__chall"])
            d = gain(b, a, metric) if a is not None and b is not None else None
            gated = len(part) >= gates.min_slice_rows and d is not None
            slices.append(SliceComparison(
                column=col, value=str(value), rows=len(part), positives=int(part["__y"].sum()), champion=a,
                challenger=b, delta=None if d is None else round(d, 6), gated=gated,
                regressed=gated and d is not None and d < -gates.max_slice_regression,
            ))

    champion_failures, challenger_failures = judge(
        metric, s_champ, s_chall, train_score, slices, policy,
        champion_version=inp.champion_version, challenger_version=inp.challenger_version)
    notes: list[str] = []
    champ_split = champ.params.get("split_date")
    if champ_split and _date(start) < _date(champ_split):
        notes.append(f"the champion trained on days before {champ_split}, which overlap this holdout "
                     f"({start}..{end}); its score here is optimistic")
    return Comparison(
        model_name=inp.model_name, champion_version=inp.champion_version, challenger_version=inp.challenger_version,
        metric=metric, holdout_start=str(start), holdout_end=str(end), rows=len(holdout), positives=int(y.sum()),
        champion_score=s_champ, challenger_score=s_chall, delta=None if delta is None else round(delta, 6),
        champion_train_score=train_score, champion_drop=None if drop is None else round(drop, 6),
        min_improvement=gates.min_improvement, max_slice_regression=gates.max_slice_regression,
        min_slice_rows=gates.min_slice_rows, max_drop=policy.decay.max_drop, slices=slices,
        champion_failures=champion_failures, challenger_failures=challenger_failures, notes=notes,
    )


def judge(metric: str, champion_score: float | None, challenger_score: float | None,
          champion_train_score: float | None, slices: list[SliceComparison], policy: RetrainPolicy, *,
          champion_version: str = "?", challenger_version: str = "?") -> tuple[list[str], list[str]]:
    """The gates on measured numbers: why the champion fails its own gate (it decayed against its training
    metric, or the challenger beats it by the margin), and which gates the challenger fails (the margin, a gated
    slice that regressed past the bound). Empty lists pass."""
    gates = policy.gates
    delta = gain(challenger_score, champion_score, metric) if None not in (champion_score, challenger_score) else None
    drop = (-gain(champion_score, champion_train_score, metric)
            if None not in (champion_score, champion_train_score) else None)
    champion_failures: list[str] = []
    challenger_failures: list[str] = []
    if drop is not None and drop >= policy.decay.max_drop:
        champion_failures.append(f"champion v{champion_version} {metric} {champion_score:.4f} on the recent holdout is "
                                 f"{drop:.4f} worse than at training ({champion_train_score:.4f}; bound "
                                 f"{policy.decay.max_drop:g})")
    if delta is not None and delta >= gates.min_improvement:
        champion_failures.append(f"challenger v{challenger_version} beats it by {delta:+.4f} {metric} "
                                 f"(margin {gates.min_improvement:g})")
    if delta is None:
        challenger_failures.append(f"{metric} is undefined on the holdout (one class): no comparison")
    elif delta < gates.min_improvement:
        challenger_failures.append(f"challenger v{challenger_version} {metric} {challenger_score:.4f} does not beat "
                                   f"the champion's {champion_score:.4f} by the margin {gates.min_improvement:g} "
                                   f"(gain {delta:+.4f})")
    for sl in slices:
        regressed = (sl.rows >= gates.min_slice_rows and sl.delta is not None
                     and sl.delta < -gates.max_slice_regression)
        if regressed:
            challenger_failures.append(f"slice {sl.describe(metric)} regresses past the bound "
                                       f"{gates.max_slice_regression:g}")
    return champion_failures, challenger_failures


def _compare_tool(inp: CompareInput) -> Comparison:
    try:
        return compare_models(inp)
    except (ChallengerError, DriftInputError, RegistryError) as exc:  # a model asked for versions or days that are not there
        raise ModelRetry(exc.message, hint=exc.hint) from exc


TOOLS: list[Tool] = [
    Tool(name="compare_models", description="Champion vs challenger on the same recent holdout: the overall metric, "
         "each slice (the model's slice columns), and which retrain gates each one fails.", input=CompareInput,
         output=Comparison, fn=_compare_tool),
]
