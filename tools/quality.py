"""Batch-level quality detection: what a batch looks like against the history of accepted loads.

The row rules of a contract judge one row at a time; these detectors judge the batch: late or missing data
(freshness), an unusual row count (volume), a shifted distribution (PSI), duplicate keys, references to values
another dataset does not have, a spike of nulls, and a share of out-of-range values. Thresholds come from
`policies/quality.yaml` (`policies.quality`).

`evaluate(frame, contract, rules, history, dq)` is the one place a batch is judged: it applies the approved rules
(`tools.quality_rules`), the contract's row checks, and every detector, and returns an `Evaluation` (the check
report, the rows the rules keep, the rows that would be accepted, the findings). The pipeline's quality stage
(`flows/quality_checks.py`) and the quality agent's dry-run both call it, so a dry-run proves what the pipeline
will do. `load_history` reads the history from the warehouse (read-only; DuckDB or any SQLAlchemy warehouse, in
SQL both run); the detectors themselves are pure.

The module also holds the read-only tools the quality agent (and a model, through the OpenAI planner) may call:
`TOOLS` (see `tools.registry`).

Public names: `Finding`, `History`, `LoadRecord`, `ReferenceHistory`, `ColumnBins`, `Evaluation`, `DETECTORS`,
`evaluate`, `detect`, `load_history`, `load_batch`, `load_record`, `psi`, `bin_shares`, `event_time`, `TOOLS`,
`accepted_rows`, `suggest_suite`, `write_suggestion`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from statistics import median
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import UnknownNameError, UserError
from pipewarden.policies.column_types import NUMERIC
from pipewarden.policies.contract import Contract
from pipewarden.policies.quality import CheckName, DatasetQuality, dataset_quality
from pipewarden.settings import get_settings
from pipewarden.tools.drift import psi  # one PSI for quality, drift and the detectors
from pipewarden.tools.quality_rules import ActiveRule, check_with_rules, rule_reasons
from pipewarden.tools.warehouse import quote_ident as _q


# --------------------------------------------------------------------------- models
class Finding(BaseModel):
    """One quality fault found on a batch: which check, on which column, what was seen against what was expected."""

    check: CheckName
    column: str | None = None
    observed: float
    expected: float | None = None
    halt: bool = True
    message: str
    detail: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.check}:{self.column or '*'}"


class LoadRecord(BaseModel):
    """An accepted load of the history (from `meta_loads`, with its event-time span from the accepted rows)."""

    load_id: str
    source: str = ""
    arrived_at: datetime | None = None
    rows: int = 0
    status: str = "accepted"
    min_time: datetime | None = None
    max_time: datetime | None = None


class ReferenceHistory(BaseModel):
    column: str
    reference: str
    keys: list[str] = Field(default_factory=list, description="Every value of the reference column.")
    known_broken: list[str] = Field(default_factory=list, description="Unmatched values earlier loads already had.")
    shares: list[float] = Field(default_factory=list, description="Broken share of each earlier load.")
    reference_source: str = ""


class ColumnBins(BaseModel):
    column: str
    edges: list[float]
    shares: list[float]
    rows: int


class History(BaseModel):
    """What earlier accepted loads of a dataset looked like."""

    dataset: str
    loads: list[LoadRecord] = Field(default_factory=list)
    null_shares: dict[str, list[float]] = Field(default_factory=dict)
    references: list[ReferenceHistory] = Field(default_factory=list)
    bins: list[ColumnBins] = Field(default_factory=list)

    def reference(self, column: str) -> ReferenceHistory | None:
        return next((r for r in self.references if r.column == column), None)

    def column_bins(self, column: str) -> ColumnBins | None:
        return next((b for b in self.bins if b.column == column), None)


@dataclass
class Evaluation:
    """A batch judged as the pipeline would judge it."""

    report: Any  # tools.checks.CheckReport over the whole batch
    kept: pd.DataFrame  # rows the quality rules keep (before the contract's row checks)
    accepted: pd.DataFrame  # rows that would be accepted, conformed to the contract's types
    findings: list[Finding] = field(default_factory=list)
    rows_landed: int = 0
    ruled_out: int = 0

    @property
    def halted_by_contract(self) -> bool:
        return bool(self.report.over_threshold or self.report.result.schema_errors)

    def finding(self, check: str, column: str | None) -> Finding | None:
        return next((f for f in self.findings if f.check == check and f.column == column), None)


# --------------------------------------------------------------------------- helpers
def event_time(values: pd.Series) -> pd.Series:
    """A column as UTC timestamps (ISO strings parsed; unparseable values become NaT)."""
    from pipewarden.tools.mapping import to_timestamp

    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        s = values
        return s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
    return to_timestamp(values)


def _utc(t: Any) -> datetime | None:
    if t is None or (isinstance(t, float) and math.isnan(t)) or t is pd.NaT:
        return None
    ts = pd.Timestamp(t)
    if pd.isna(ts):
        return None
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def bin_shares(values: np.ndarray, edges: list[float]) -> list[float]:
    idx = np.searchsorted(np.asarray(edges, dtype="float64"), values, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype("float64")
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * (len(edges) + 1)


def _top(values: pd.Series, n: int = 10) -> list[dict[str, Any]]:
    return [{"value": str(v), "rows": int(c)} for v, c in values.astype(str).value_counts().head(n).items()]


def _period_end(t: datetime, period: str) -> datetime | None:
    if period == "month":
        return datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=UTC)
    if period == "day":
        return (pd.Timestamp(t).normalize() + pd.Timedelta(days=1)).to_pydatetime()
    return None


# --------------------------------------------------------------------------- detectors
@dataclass
class BatchFacts:
    kept: pd.DataFrame
    accepted: pd.DataFrame
    rows_landed: int


Detector = Callable[[BatchFacts, History, DatasetQuality, Contract], list[Finding]]


def detect_freshness(b: BatchFacts, h: History, dq: DatasetQuality, contract: Contract) -> list[Finding]:
    """A hole between the previous load's data and this batch (a missing batch), a batch whose data stops well
    before its period ends (a late tail), or a hole inside the batch."""
    pol = dq.checks.freshness
    col = dq.time_column
    if not col or col not in b.accepted.columns or b.accepted.empty:
        return []
    times = event_time(b.accepted[col]).dropna().sort_values()
    if times.empty:
        return []
    t_min, t_max = times.iloc[0].to_pydatetime(), times.iloc[-1].to_pydatetime()
    problems: list[str] = []
    detail: dict[str, Any] = {"time_column": col, "batch_from": t_min.isoformat(), "batch_to": t_max.isoformat()}
    worst = 0.0
    ends = [ld.max_time for ld in h.loads if ld.max_time is not None and _utc(ld.max_time) <= t_max]  # type: ignore[operator]
    if ends:
        prev_end = max(_utc(e) for e in ends)  # type: ignore[type-var]
        gap_h = (t_min - prev_end).total_seconds() / 3600  # type: ignore[operator]
        if gap_h > pol.max_gap_hours:
            problems.append(f"no data from {prev_end:%Y-%m-%d %H:%M} to {t_min:%Y-%m-%d %H:%M} UTC ({gap_h:.0f} h): "
                            "the batch before this one is missing")
            detail["missing_from"], detail["missing_to"] = prev_end.isoformat(), t_min.isoformat()  # type: ignore[union-attr]
            worst = max(worst, gap_h)
    end = _period_end(t_min, dq.period)
    if end is not None:
        lag_h = (end - t_max).total_seconds() / 3600
        if lag_h > pol.max_lag_hours:
            problems.append(f"the batch's data stops at {t_max:%Y-%m-%d %H:%M} UTC, {lag_h:.0f} h before its "
                            f"{dq.period} ends: its tail is late or was cut off")
            detail["late_from"], detail["period_end"] = t_max.isoformat(), end.isoformat()
            worst = max(worst, lag_h)
    gaps = times.diff().dt.total_seconds().div(3600)
    inside = gaps[gaps > pol.max_gap_hours]
    if len(inside):
        holes = [(times.iloc[i - 1].isoformat(), times.iloc[i].isoformat())
                 for i in (times.index.get_indexer(inside.index))]
        problems.append(f"{len(holes)} hole(s) of more than {pol.max_gap_hours:g} h inside the batch, the first "
                        f"from {holes[0][0]} to {holes[0][1]}")
        detail["holes"] = holes[:10]
        worst = max(worst, float(inside.max()))
    if not problems:
        return []
    return [Finding(check="freshness", column=col, observed=round(worst, 2),
                    expected=pol.max_gap_hours if "missing_from" in detail or "holes" in detail else pol.max_lag_hours,
                    halt=pol.halt, message="; ".join(problems), detail=detail)]


def detect_volume(b: BatchFacts, h: History, dq: DatasetQuality, contract: Contract) -> list[Finding]:
    """Rows landed against the rows of earlier loads: a ratio to their median and a z-score."""
    pol = dq.checks.volume
    rows = [ld.rows for ld in h.loads if ld.rows > 0]
    if len(rows) < pol.min_history:
        return []
    med, mean = median(rows), sum(rows) / len(rows)
    std = max(float(np.std(rows)), 0.03 * mean)
    ratio = b.rows_landed / med if med else math.inf
    z = (b.rows_landed - mean) / std if std else 0.0
    if pol.min_ratio <= ratio <= pol.max_ratio and abs(z) <= pol.max_z:
        return []
    direction = "fewer" if b.rows_landed < med else "more"
    return [Finding(check="volume", column=None, observed=float(b.rows_landed), expected=float(med), halt=pol.halt,
                    message=f"{b.rows_landed} rows landed, {ratio:.2f}x the median of the last {len(rows)} loads "
                            f"({med:.0f}); z-score {z:+.1f}: {direction} rows than usual",
                    detail={"ratio": round(ratio, 4), "z": round(z, 3), "history_rows": rows[-12:]})]


def _null_columns(dq: DatasetQuality, contract: Contract) -> list[str]:
    cols = dq.checks.null_spike.columns
    return list(cols) if cols is not None else [c.name for c in contract.columns if c.nullable]


def detect_null_spike(b: BatchFacts, h: History, dq: DatasetQuality, contract: Contract) -> list[Finding]:
    """The null share of accepted rows per nullable column against the median of earlier loads."""
    pol = dq.checks.null_spike
    out: list[Finding] = []
    if b.accepted.empty:
        return out
    for col in _null_columns(dq, contract):
        past = h.null_shares.get(col, [])
        if col not in b.accepted.columns or len(past) < pol.min_history:
            continue
        share = float(b.accepted[col].isna().mean())
        expected = median(past)
        if share - expected > pol.max_increase and share >= pol.min_ratio * expected:
            out.append(Finding(
                check="null_spike", column=col, observed=round(share, 6), expected=round(expected, 6), halt=pol.halt,
                message=f"{share:.1%} of accepted rows have no {col}, against {expected:.2%} in earlier loads",
                detail={"null_rows": int(b.accepted[col].isna().sum()), "rows": len(b.accepted),
                        "history": [round(x, 5) for x in past[-12:]]}))
    return out


def detect_range(b: BatchFacts, h: History, dq: DatasetQuality, contract: Contract) -> list[Finding]:
    """The share of rows (before the row checks) whose value is outside a contract bound, per column."""
    pol = dq.checks.range
    out: list[Finding] = []
    n = len(b.kept)
    if not n:
        return out
    for c in contract.columns:
        if c.type not in NUMERIC or (c.min is None and c.max is None) or c.name not in b.kept.columns:
            continue
        values = pd.to_numeric(b.kept[c.name], errors="coerce")
        low = values < c.min if c.min is not None else pd.Series(False, index=values.index)
        high = values > c.max if c.max is not None else pd.Series(False, index=values.index)
        bad = (low | high).fillna(False)
        count = int(bad.sum())
        if count / n > pol.max_share:
            vals = values[bad]
            out.append(Finding(
                check="range", column=c.name, observed=round(count / n, 6), expected=pol.max_share, halt=pol.halt,
                message=f"{count} rows ({count / n:.1%}) have {c.name} outside [{c.min}, {c.max}] "
                        f"(seen {vals.min():g} to {vals.max():g})",
                detail={"rows": count, "below": int(low.fillna(False).sum()), "above": int(high.fillna(False).sum()),
                        "min": c.min, "max": c.max, "seen_min": float(vals.min()), "seen_max": float(vals.max()),
                        "distinct": int(vals.nunique()), "top": _top(vals)}))
    return out


def detect_duplicates(b: BatchFacts, h: History, dq: DatasetQuality, contract: Contract) -> list[Finding]:
    """Accepted rows sharing the dataset's key (policy `keys`)."""
    pol = dq.checks.duplicates
    keys = [k for k in dq.keys if k in b.accepted.columns]
    if not keys or len(keys) != len(dq.keys) or b.accepted.empty:
        return []
    dup = b.accepted.duplicated(subset=keys, keep="first")
    extra = int(dup.sum())
    share = extra / len(b.accepted)
    if extra == 0 or share <= pol.max_share:
        return []
    exact = int(b.accepted.duplicated(keep="first").sum())
    groups = int(b.accepted[b.accepted.duplicated(subset=keys, keep=False)].groupby(keys, dropna=False).ngroups)
    return [Finding(check="duplicates", column=None, observed=float(extra), expected=pol.max_share * len(b.accepted),
                    halt=pol.halt,
                    message=f"{extra} extra rows ({share:.1%}) repeat the key ({', '.join(keys)}) of another row; "
                            f"{exact} of them are exact copies",
                    detail={"keys": keys, "extra_rows": extra, "exact_copies": exact, "groups": groups,
                            "rows": len(b.accepted)})]


def _not_in(values: pd.Series, allowed: set[str]) -> np.ndarray:
    """Mask of the values not in `allowed`, as `~values.isin(allowed)`, but testing each distinct value once (an
    Arrow-backed string column's `isin` converts every member of a large set, thousands of keys, on every call)."""
    codes, uniques = pd.factorize(values)
    outside = np.fromiter((u not in allowed for u in uniques), dtype=bool, count=len(uniques))
    return outside[codes] if len(codes) else np.zeros(0, dtype=bool)


def detect_referential(b: BatchFacts, h: History, dq: DatasetQuality, contract: Contract) -> list[Finding]:
    """Values of a key column that its reference dataset does not have, against earlier loads' broken share."""
    pol = dq.checks.referential
    out: list[Finding] = []
    for ref in pol.references:
        rh = h.reference(ref.column)
        if rh is None or not rh.keys or ref.column not in b.accepted.columns:
            continue
        values = b.accepted[ref.column].dropna().astype(str)
        if values.empty:
            continue
        broken = values[_not_in(values, set(rh.keys))]
        share = len(broken) / len(values)
        new = broken[_not_in(broken, set(rh.known_broken))]
        if rh.shares:
            expected = median(rh.shares)
            fired = share > expected + pol.margin and len(new) > 0
        else:
            expected = ref.max_share
            fired = share > ref.max_share
        if fired:
            out.append(Finding(
                check="referential", column=ref.column, observed=round(share, 6), expected=round(expected, 6),
                halt=pol.halt,
                message=f"{len(broken)} rows ({share:.1%}) have a {ref.column} that {ref.reference} does not list "
                        f"(earlier loads: {expected:.1%}); {new.nunique()} value(s) never seen before",
                detail={"reference": ref.reference, "broken_rows": len(broken), "new_broken_rows": len(new),
                        "new_values": _top(new, 20), "reference_source": rh.reference_source}))
    return out


def detect_distribution(b: BatchFacts, h: History, dq: DatasetQuality, contract: Contract) -> list[Finding]:
    """PSI of each policy column of the accepted rows against the pooled earlier loads (decile bins)."""
    pol = dq.checks.distribution
    out: list[Finding] = []
    for col in pol.columns:
        bins = h.column_bins(col)
        if bins is None or col not in b.accepted.columns or bins.rows < pol.min_rows:
            continue
        values = pd.to_numeric(b.accepted[col], errors="coerce").dropna().to_numpy(dtype="float64")
        if len(values) < pol.min_rows:
            continue
        actual = bin_shares(values, bins.edges)
        value = psi(bins.shares, actual)
        if value > pol.psi:
            out.append(Finding(
                check="distribution", column=col, observed=round(value, 4), expected=pol.psi, halt=pol.halt,
                message=f"{col} moved away from earlier loads: PSI {value:.2f} over {pol.psi:g} "
                        f"(median {float(np.median(values)):g})",
                detail={"edges": bins.edges, "expected_shares": [round(x, 4) for x in bins.shares],
                        "observed_shares": [round(x, 4) for x in actual], "median": float(np.median(values))}))
    return out


DETECTORS: tuple[Detector, ...] = (
    detect_freshness, detect_volume, detect_null_spike, detect_range, detect_duplicates, detect_referential,
    detect_distribution,
)


def detect(facts: BatchFacts, history: History, dq: DatasetQuality, contract: Contract) -> list[Finding]:
    """Every detector's findings, in `DETECTORS` order."""
    return [f for d in DETECTORS for f in d(facts, history, dq, contract)]


def evaluate(
    frame: pd.DataFrame, contract: Contract, rules: list[ActiveRule], history: History, dq: DatasetQuality, *,
    cast_failures: Any = None, rows_landed: int | None = None,
) -> Evaluation:
    """Judge a (mapped) batch as the pipeline does: the rules, the contract's row checks (pandas engine, the same
    answers as GX), then the detectors on what would be accepted. A batch the contract halts gets no findings."""
    from pipewarden.tools.mapping import conform_to_contract

    ruled = rule_reasons(frame, rules) if rules else pd.Series("", index=frame.index, dtype="str")
    keep = (ruled == "").to_numpy()
    report = check_with_rules(frame, contract, rules, cast_failures=cast_failures, engine="pandas", ruled=ruled)
    kept = frame.loc[keep]
    ok = ~report.rejected.to_numpy()
    cols = [c for c in contract.names if c in frame.columns]
    accepted = conform_to_contract(frame.loc[ok], contract)[cols] if len(cols) == len(contract.names) \
        else frame.loc[ok, cols]
    ev = Evaluation(report=report, kept=kept, accepted=accepted.reset_index(drop=True),
                    rows_landed=len(frame) if rows_landed is None else rows_landed, ruled_out=int((~keep).sum()))
    if not ev.halted_by_contract:
        ev.findings = detect(BatchFacts(kept, ev.accepted, ev.rows_landed), history, dq, contract)
    return ev


# --------------------------------------------------------------------------- the warehouse side (read-only)
@contextmanager
def _connect() -> Iterator[Any]:
    """The warehouse, read-only, for the block; None when it is a DuckDB file that does not exist yet."""
    from pipewarden.tools.warehouse import DUCKDB_PREFIX, connect

    url = get_settings().warehouse
    if url.startswith(DUCKDB_PREFIX) and not get_settings().warehouse_path.exists():
        yield None
        return
    with connect(url, read_only=True) as wh:
        yield wh


def _in_list(wh: Any, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
    """`column IN (...)` over `values` and its parameters: one list parameter on DuckDB, one `?` each elsewhere."""
    if wh.is_duckdb:
        return f"{column} IN (SELECT unnest(?::VARCHAR[]))", [list(values)]
    return f"{column} IN ({', '.join('?' for _ in values)})", list(values)


def _sample(wh: Any, n: int) -> str:
    """A clause that keeps about `n` random rows (DuckDB: reservoir sampling; elsewhere: random order, limit)."""
    return f" USING SAMPLE {int(n)} ROWS" if wh.is_duckdb else f" ORDER BY random() LIMIT {int(n)}"


def load_history(dataset: str, exclude_load_id: str | None, dq: DatasetQuality | None = None,
                 contract: Contract | None = None, *, max_rows: int = 400_000) -> History:
    """The accepted loads of `dataset` other than `exclude_load_id`, from `meta_loads` and `raw_<dataset>`: their
    rows, event-time spans, null shares, the reference columns' values, and pooled decile bins of the distribution
    columns. An empty History when the warehouse or the tables are not there yet."""
    dq = dq or dataset_quality(dataset)
    with _connect() as wh:
        return History(dataset=dataset) if wh is None else _history(wh, dataset, exclude_load_id, dq, contract,
                                                                    max_rows)


def _history(wh: Any, dataset: str, exclude_load_id: str | None, dq: DatasetQuality, contract: Contract | None,
             max_rows: int) -> History:
    h = History(dataset=dataset)
    if not wh.has_table("meta_loads"):
        return h
    rows = wh.execute(
        "SELECT load_id, source, arrived_at, rows, status FROM meta_loads WHERE dataset = ? AND status = 'accepted' "
        "AND load_id <> ? ORDER BY arrived_at", [dataset, exclude_load_id or ""])
    loads = {r[0]: LoadRecord(load_id=r[0], source=r[1], arrived_at=_utc(r[2]), rows=int(r[3]), status=r[4])
             for r in rows}
    raw = f"raw_{dataset}"
    if not loads or not wh.has_table(raw):
        h.loads = list(loads.values())
        return h
    present = set(wh.columns(raw))
    ids = list(loads)
    where, where_params = _in_list(wh, "_load_id", ids)
    nulls = [c for c in (_null_columns(dq, contract) if contract else []) if c in present]
    tcol = dq.time_column if dq.time_column in present else None
    select = ["_load_id", "count(*)"]
    select += [f"min({_q(tcol)})", f"max({_q(tcol)})"] if tcol else ["NULL", "NULL"]
    select += [f"avg(CASE WHEN {_q(c)} IS NULL THEN 1.0 ELSE 0.0 END)" for c in nulls]
    per_load = wh.execute(f"SELECT {', '.join(select)} FROM {raw} WHERE {where} GROUP BY _load_id", where_params)
    for r in per_load:
        rec = loads[r[0]]
        rec.min_time, rec.max_time = _utc(r[2]), _utc(r[3])
        for c, v in zip(nulls, r[4:], strict=True):
            h.null_shares.setdefault(c, []).append(float(v))
    h.loads = sorted(loads.values(), key=lambda x: x.arrived_at or datetime.min.replace(tzinfo=UTC))
    for ref in dq.checks.referential.references:
        ref_table = f"raw_{ref.ref_dataset}"
        if ref.column not in present or not wh.has_table(ref_table):
            continue
        keys = [str(k[0]) for k in wh.execute(
            f"SELECT DISTINCT CAST({_q(ref.ref_column)} AS VARCHAR) FROM {ref_table} "
            f"WHERE {_q(ref.ref_column)} IS NOT NULL")]
        f_where, f_params = _in_list(wh, "f._load_id", ids)
        join = (f"FROM {raw} f LEFT JOIN (SELECT DISTINCT CAST({_q(ref.ref_column)} AS VARCHAR) AS k FROM {ref_table}) r "
                f"ON CAST(f.{_q(ref.column)} AS VARCHAR) = r.k WHERE f.{_q(ref.column)} IS NOT NULL AND {f_where}")
        shares = wh.execute(f"SELECT f._load_id, avg(CASE WHEN r.k IS NULL THEN 1.0 ELSE 0.0 END) {join} "
                            "GROUP BY f._load_id", f_params)
        known = wh.execute(f"SELECT DISTINCT CAST(f.{_q(ref.column)} AS VARCHAR) {join} AND r.k IS NULL", f_params)
        source = wh.execute("SELECT source FROM meta_loads WHERE dataset = ? ORDER BY arrived_at DESC LIMIT 1",
                            [ref.ref_dataset])
        h.references.append(ReferenceHistory(
            column=ref.column, reference=ref.reference, keys=keys, known_broken=[str(k[0]) for k in known],
            shares=[float(s[1]) for s in shares], reference_source=source[0][0] if source else ""))
    pol = dq.checks.distribution
    dist = [c for c in pol.columns if c in present]
    if dist:
        total = sum(ld.rows for ld in h.loads)
        sample = _sample(wh, max_rows) if total > max_rows else ""
        cols = ", ".join(f"CAST({_q(c)} AS DOUBLE PRECISION) AS {_q(c)}" for c in dist)
        arrays = wh.read_frame(f"SELECT {cols} FROM {raw} WHERE {where}{sample}", where_params)
        for col in dist:
            values = pd.to_numeric(arrays[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            values = values[~np.isnan(values)]
            if len(values) == 0:
                continue
            edges = sorted({float(q) for q in np.quantile(values, np.linspace(0, 1, pol.bins + 1)[1:-1])})
            h.bins.append(ColumnBins(column=col, edges=edges, shares=bin_shares(values, edges), rows=len(values)))
    return h


def load_record(dataset: str, load_id: str) -> LoadRecord | None:
    """One load's row of `meta_loads` (any status), or None."""
    with _connect() as wh:
        if wh is None or not wh.has_table("meta_loads"):
            return None
        found = wh.execute("SELECT load_id, source, arrived_at, rows, status FROM meta_loads WHERE dataset = ? AND "
                           "load_id = ?", [dataset, load_id])
    r = found[0] if found else None
    return LoadRecord(load_id=r[0], source=r[1], arrived_at=_utc(r[2]), rows=int(r[3]), status=r[4]) if r else None


def load_batch(dataset: str, load_id: str, *, path: str | None = None) -> tuple[pd.DataFrame, Any]:
    """A landed batch with the dataset's active column mapping applied, and the mapping's cast failures."""
    from pipewarden.tools.contracts import active_contract
    from pipewarden.tools.io import landed_load_ids, landed_uri, read_table
    from pipewarden.tools.mapping import landed_fingerprint, map_frame, mapping_for_batch

    if not load_id or "/" in load_id or load_id.startswith("."):
        raise UserError(f"load id {load_id!r} cannot name a landed batch", hint="pass the load id an event carries")
    p = path or landed_uri(dataset, load_id)
    try:
        df = read_table(p)
    except UserError:
        raise UnknownNameError(f"load of {dataset}", load_id, landed_load_ids(dataset)) from None
    contract = active_contract(dataset)
    mapping, _ = mapping_for_batch(dataset, df, contract, fingerprint=landed_fingerprint(p))
    if mapping is None:
        return df, {}
    mapped = map_frame(df, mapping, contract)
    return mapped.frame, mapped.cast_failures


# --------------------------------------------------------------------------- tools a model may call
class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(description="The dataset of the failing batch, as its event names it.")
    load_id: str = Field(description="The load id of the failing batch, as the event gives it.")


class ColumnProfileInput(_In):
    """Profile one column of the failing batch against earlier accepted loads."""

    column: str = Field(description="A column of the batch.")


class ColumnProfileOutput(BaseModel):
    dataset: str
    load_id: str
    column: str
    rows: int
    null_share: float
    history_null_share: float | None = Field(description="Median null share of earlier accepted loads.")
    distinct: int
    min: float | str | None
    max: float | str | None
    contract_min: float | None
    contract_max: float | None
    out_of_range_rows: int
    top_values: list[str] = Field(description="The most common values with their counts, 'value: count'.")


class CountRowsInput(_In):
    """Count the batch rows a SQL boolean predicate matches (what a quarantine with it would take out)."""

    predicate: str = Field(description="One SQL boolean expression over the batch's columns, e.g. \"tailnum IS NULL\".")


class CountRowsOutput(BaseModel):
    rows: int
    matched: int
    fraction: float
    sample: list[str] = Field(description="Up to 5 matching rows, each as JSON text.")


class LoadInfoInput(_In):
    """The load's metadata (source file, arrival, rows, status) and the dataset's recent loads."""


class LoadInfoOutput(BaseModel):
    load: LoadRecord | None
    recent: list[LoadRecord]


class BrokenReferencesInput(_In):
    """Values of a key column that the reference dataset (policies/quality.yaml) does not list."""

    column: str = Field(description="A column with a reference in the quality policy, e.g. 'tailnum'.")


class BrokenReferencesOutput(BaseModel):
    column: str
    reference: str
    rows: int
    broken_rows: int
    new_broken_rows: int
    new_values: list[str] = Field(description="Broken values earlier loads never had, 'value: rows'.")


class DuplicatesInput(_In):
    """Rows of the batch that share a key with another row."""

    keys: list[str] = Field(description="The key columns.")


class DuplicatesOutput(BaseModel):
    keys: list[str]
    rows: int
    extra_rows: int
    exact_copies: int
    sample: list[str] = Field(description="Up to 5 duplicated rows, each as JSON text.")


def _rows_json(frame: pd.DataFrame, n: int = 5) -> list[str]:
    text = frame.head(n).to_json(orient="records", lines=True, date_format="iso", force_ascii=False)
    return [line for line in text.split("\n") if line]


def _tool_batch(dataset: str, load_id: str) -> pd.DataFrame:
    return load_batch(dataset, load_id)[0]


def _column_profile(a: ColumnProfileInput) -> ColumnProfileOutput:
    from pipewarden.tools.contracts import active_contract
    from pipewarden.tools.profile import profile_column

    df = _tool_batch(a.dataset, a.load_id)
    if a.column not in df.columns:
        raise UnknownNameError(f"column of {a.dataset}", a.column, [str(c) for c in df.columns])
    s = profile_column(a.column, df[a.column])
    contract = active_contract(a.dataset)
    c = contract.column(a.column) if a.column in contract.names else None
    out = 0
    if c is not None and c.type in NUMERIC:
        v = pd.to_numeric(df[a.column], errors="coerce")
        out = int((((v < c.min) if c.min is not None else False) | ((v > c.max) if c.max is not None else False)).sum())
    past = load_history(a.dataset, a.load_id, contract=contract).null_shares.get(a.column)
    top = _top(df[a.column].dropna())
    return ColumnProfileOutput(
        dataset=a.dataset, load_id=a.load_id, column=a.column, rows=s.rows, null_share=round(s.null_share, 6),
        history_null_share=round(median(past), 6) if past else None, distinct=s.distinct, min=s.min, max=s.max,
        contract_min=c.min if c else None, contract_max=c.max if c else None, out_of_range_rows=out,
        top_values=[f"{t['value']}: {t['rows']}" for t in top])


def _count_rows(a: CountRowsInput) -> CountRowsOutput:
    from pipewarden.tools.quality_rules import predicate_mask

    df = _tool_batch(a.dataset, a.load_id)
    mask = predicate_mask(df, a.predicate)
    n = int(mask.sum())
    return CountRowsOutput(rows=len(df), matched=n, fraction=round(n / len(df), 6) if len(df) else 0.0,
                           sample=_rows_json(df.reset_index(drop=True).loc[mask]))


def _load_info(a: LoadInfoInput) -> LoadInfoOutput:
    return LoadInfoOutput(load=load_record(a.dataset, a.load_id),
                          recent=load_history(a.dataset, a.load_id).loads[-6:])


def _broken_references(a: BrokenReferencesInput) -> BrokenReferencesOutput:
    from pipewarden.tools.contracts import active_contract

    dq = dataset_quality(a.dataset)
    refs = {r.column: r for r in dq.checks.referential.references}
    if a.column not in refs:
        raise UnknownNameError(f"referenced column of {a.dataset}", a.column, list(refs))
    h = load_history(a.dataset, a.load_id, dq, active_contract(a.dataset))
    rh = h.reference(a.column)
    df = _tool_batch(a.dataset, a.load_id)
    values = df[a.column].dropna().astype(str) if a.column in df.columns else pd.Series([], dtype="str")
    broken = values[~values.isin(set(rh.keys))] if rh else values.iloc[:0]
    new = broken[~broken.isin(set(rh.known_broken))] if rh else broken
    return BrokenReferencesOutput(column=a.column, reference=refs[a.column].reference, rows=len(values),
                                  broken_rows=len(broken), new_broken_rows=len(new),
                                  new_values=[f"{t['value']}: {t['rows']}" for t in _top(new, 20)])


def _duplicates(a: DuplicatesInput) -> DuplicatesOutput:
    df = _tool_batch(a.dataset, a.load_id)
    missing = [k for k in a.keys if k not in df.columns]
    if missing or not a.keys:
        raise UserError(f"duplicate keys must be columns of the batch; not found: {', '.join(missing) or '(none given)'}",
                        hint=f"columns: {', '.join(map(str, df.columns))}")
    dup = df.duplicated(subset=a.keys, keep=False)
    return DuplicatesOutput(keys=a.keys, rows=len(df), extra_rows=int(df.duplicated(subset=a.keys).sum()),
                            exact_copies=int(df.duplicated().sum()), sample=_rows_json(df[dup].sort_values(a.keys)))


def _tools() -> list[Any]:
    from pipewarden.tools.registry import Tool

    return [
        Tool("quality_column_profile", "Profile one column of the failing batch against earlier accepted loads "
             "(nulls, range, common values, out-of-range rows).", ColumnProfileInput, ColumnProfileOutput,
             _column_profile),
        Tool("quality_count_rows", "Count the rows of the failing batch a SQL boolean predicate matches, with a "
             "sample: what a quarantine with that predicate would take out.", CountRowsInput, CountRowsOutput,
             _count_rows),
        Tool("quality_load_info", "The failing load's metadata (source file, arrival time, rows, status) and the "
             "dataset's recent accepted loads.", LoadInfoInput, LoadInfoOutput, _load_info),
        Tool("quality_broken_references", "Values of a key column of the failing batch that its reference dataset "
             "does not list, and which of them earlier loads never had.", BrokenReferencesInput,
             BrokenReferencesOutput, _broken_references),
        Tool("quality_duplicates", "Rows of the failing batch that share a key with another row.", DuplicatesInput,
             DuplicatesOutput, _duplicates),
    ]


TOOLS: list[Any] = _tools()


# --------------------------------------------------------------------------- `pipewarden quality suggest`
def accepted_rows(dataset: str, *, limit: int = 500_000) -> pd.DataFrame:
    """The accepted rows of `dataset` in the warehouse (`raw_<dataset>`, without `_load_id`), up to `limit`."""
    table = f"raw_{dataset}"
    with _connect() as wh:
        if wh is None:
            raise UserError(f"there is no warehouse yet, so no accepted {dataset} rows to profile",
                            hint="run the pipeline first (`pipewarden run --file F --dataset NAME`), or profile a file with --from FILE")
        if not wh.has_table(table):
            raise UserError(f"the warehouse has no accepted {dataset} rows ({table} does not exist)",
                            hint="run the pipeline on a batch of it first, or profile a file with --from FILE")
        df = wh.read_frame(f"SELECT * FROM {_q(table)} LIMIT {int(limit)}")
    df = df.drop(columns=["_load_id"], errors="ignore")
    if df.empty:
        raise UserError(f"{table} holds no rows to profile", hint="profile a file with --from FILE")
    return df


def suggest_suite(dataset: str, source: str | None = None) -> tuple[Any, str]:
    """Profile `source` (a CSV or Parquet file) or the accepted rows of `dataset`, and propose its contract.
    Returns the `tools.profile.SuggestedContract` and the contract YAML text."""
    from pipewarden.tools.contracts import active_contract
    from pipewarden.tools.io import read_table
    from pipewarden.tools.profile import contract_yaml, suggest_contract

    current = active_contract(dataset)  # an unknown dataset fails here, with the known names
    if source is not None:
        df, label = read_table(source), str(source)
    else:
        df, label = accepted_rows(dataset), f"the accepted rows of raw_{dataset}"
    s = suggest_contract(df, dataset, current, keys=dataset_quality(dataset).keys or None)
    return s, contract_yaml(s, source=label)


def write_suggestion(dataset: str, text: str, folder: str | None = None) -> str:
    """Write the suggested contract beside the contracts, in `<contracts>/suggested/` (not a contract until a
    person moves it), as `<dataset>.yaml`, or `<dataset>-2.yaml`, ... when that exists: never over a file."""
    from pathlib import Path

    d = Path(folder) if folder else get_settings().contracts_dir / "suggested"
    d.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = d / (f"{dataset}.yaml" if n == 1 else f"{dataset}-{n}.yaml")
        try:
            with open(path, "x", encoding="utf-8") as fh:  # exclusive create: never overwrite
                fh.write(text)
            return str(path)
        except FileExistsError:
            n += 1
