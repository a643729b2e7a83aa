"""Drafting and proving fixes for a quality fault: the candidates, their dry-runs, and the root cause evidence.

A `FaultCase` is one failing batch as the quality agent sees it: the event (`CheckFailed` or `QualityAnomaly`), the
landed batch with the active column mapping, the active contract and quality rules, the history of accepted loads,
the load's metadata. `dry_run(case, change)` judges the batch with `tools.quality.evaluate` twice, as it stands and
with the change in force (a quarantine or dedupe rule added, a contract replaced), and returns the `DryRun`: the
checks before and after (the event's own fault is what must go away), rows taken out, a sample of them, and notes.
A `Reingest` cannot be proven on the batch (the missing rows are not in it): its dry-run says so and shows the
evidence that rows are missing.

`draft_candidates(case)` proposes the deterministic candidates for the fault, best first; `root_cause(case)` says
which load, source and upstream dataset the fault came from, where in the batch the bad rows concentrate, and which
SQL models downstream read the affected column (or that no SQL model reads the dataset's raw table).

Public names: `FaultCase`, `Candidate`, `load_case`, `judge`, `dry_run`, `draft_candidates`, `root_cause`,
`bad_rows`, `taken_out`, `quote_list`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from pipewarden.errors import UserError
from pipewarden.models import CheckResult, ContractChange, DedupeRule, DryRun, Quarantine, Reingest
from pipewarden.policies.contract import Contract
from pipewarden.policies.quality import DatasetQuality
from pipewarden.tools.quality import Evaluation, History, LoadRecord, evaluate
from pipewarden.tools.quality_rules import ActiveRule, duplicate_mask, predicate_mask
from pipewarden.tools.warehouse import quote_ident

SAMPLE_ROWS = 5
REINGEST_CHECKS = frozenset({"freshness", "volume"})


@dataclass
class FaultCase:
    """One failing batch, with everything needed to judge it again under a candidate change."""

    event: Any
    frame: pd.DataFrame
    contract: Contract
    dq: DatasetQuality
    rules: list[ActiveRule]
    history: History
    load: LoadRecord | None = None
    cast_failures: dict[str, Any] = field(default_factory=dict)
    rows_landed: int = 0
    _before: Evaluation | None = None
    _dry_runs: dict[str, DryRun] = field(default_factory=dict)
    _masks: dict[str, np.ndarray] = field(default_factory=dict)
    _candidates: list[Candidate] | None = None

    @property
    def dataset(self) -> str:
        return str(self.event.dataset)

    @property
    def load_id(self) -> str:
        return str(self.event.load_id or "")

    @property
    def target(self) -> tuple[str, str | None] | None:
        """The anomaly's (check, column); None for a CheckFailed (the contract's checks are the target)."""
        if self.event.kind == "quality_anomaly":
            return str(self.event.check), self.event.column
        return None

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    def before(self) -> Evaluation:
        if self._before is None:
            self._before = judge(self)
        return self._before

    def mask(self, predicate: str) -> np.ndarray:
        """`predicate_mask` of the batch, computed once per case and predicate (each call parses the predicate
        with sqlglot twice, seconds for a long IN list; drafting, the dry-run's rows taken out, the root cause
        and the planner's answer all ask for the same ones); each caller gets its own copy."""
        if predicate not in self._masks:
            self._masks[predicate] = predicate_mask(self.frame, predicate)
        return self._masks[predicate].copy()

    def guarded(self, predicate: str) -> bool:
        """Whether `predicate` already passed `tools.sql_guard.check_predicate` over the batch's columns: its mask
        is kept (`predicate_mask` refuses, before it runs anything, a predicate the guard finds anything wrong with)."""
        return predicate in self._masks and not self.frame.empty  # an empty batch's mask is made unguarded


def load_case(event: Any) -> FaultCase:
    """The case for a `CheckFailed` or `QualityAnomaly` event: its landed batch (mapped), contract, rules, history."""
    from pipewarden.policies.quality import dataset_quality
    from pipewarden.tools.contracts import active_contract
    from pipewarden.tools.quality import load_batch, load_history, load_record
    from pipewarden.tools.quality_rules import active_rules

    if not event.load_id:
        raise UserError(f"{event.kind} event {event.id} names no load", hint="only batch events can be fixed here")
    frame, cast_failures = load_batch(event.dataset, event.load_id, path=getattr(event, "batch_path", None))
    contract = active_contract(event.dataset)
    dq = dataset_quality(event.dataset)
    return FaultCase(
        event=event, frame=frame, contract=contract, dq=dq, rules=active_rules(event.dataset, event.load_id),
        history=load_history(event.dataset, event.load_id, dq, contract), load=load_record(event.dataset, event.load_id),
        cast_failures=dict(cast_failures), rows_landed=len(frame),
    )


# --------------------------------------------------------------------------- judging
def _with_change(case: FaultCase, change: Any) -> tuple[list[ActiveRule], Contract]:
    from pipewarden.tools.contracts import contract_from_dict

    rules, contract = list(case.rules), case.contract
    if isinstance(change, Quarantine | DedupeRule):
        # approving it activates a new version of its target, replacing the active one
        rules = [r for r in rules if r.rule.target != change.target]
        rule = ActiveRule(change)
        rules = [rule, *rules] if isinstance(change, DedupeRule) else [*rules, rule]
    elif isinstance(change, ContractChange):
        contract = contract_from_dict(change.contract, where=f"the proposed contract:{change.dataset}")
    return rules, contract


def judge(case: FaultCase, change: Any = None) -> Evaluation:
    """The batch judged as the pipeline would judge it, with `change` (a quality rule or a contract) in force."""
    rules, contract = _with_change(case, change)
    return evaluate(case.frame, contract, rules, case.history, case.dq, cast_failures=case.cast_failures,
                    rows_landed=case.rows_landed)


def _result(case: FaultCase, ev: Evaluation) -> CheckResult:
    r = ev.report.result
    lines = list(r.failed_checks)
    passed = not ev.halted_by_contract
    if case.target is not None:
        found = ev.finding(*case.target)
        if found is not None:
            passed = False
            lines.append(f"{found.check}{f' on {found.column}' if found.column else ''}: {found.message}")
    return CheckResult(passed=passed, rows=r.rows, failed_rows=r.failed_rows, schema_errors=list(r.schema_errors),
                       failed_checks=lines)


def taken_out(case: FaultCase, change: Any) -> np.ndarray:
    """Boolean array (by position of the batch): the rows `change` itself takes out (none for other kinds)."""
    if isinstance(change, Quarantine):
        return case.mask(change.predicate)
    if isinstance(change, DedupeRule):
        return duplicate_mask(case.frame, change)
    return np.zeros(len(case.frame), dtype=bool)


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    shown = frame.head(SAMPLE_ROWS)
    return shown.astype(object).where(shown.notna(), None).to_dict(orient="records")  # type: ignore[return-value]


def dry_run(case: FaultCase, change: Any) -> DryRun:
    """The change proven on the failing batch: the checks before and after, the rows it takes out, notes.

    Judged once per case and change: the agent proves a drafted candidate, validates the planner's answer (often
    that same candidate) and writes the proposal's evidence from the same dry-run; each gets its own copy."""
    key = f"{type(change).__name__}:{change.model_dump_json()}"
    if key not in case._dry_runs:
        case._dry_runs[key] = _dry_run(case, change)
    return case._dry_runs[key].model_copy(deep=True)


def _dry_run(case: FaultCase, change: Any) -> DryRun:
    before = case.before()
    notes: list[str] = []
    metrics: dict[str, float] = {"rows": float(len(case.frame)), "accepted_before": float(len(before.accepted))}
    if isinstance(change, Reingest):
        target = before.finding(*case.target) if case.target else None
        notes.append("a re-ingest cannot be proven on this batch: the rows it lacks are not in it; the detectors "
                     "judge the re-delivered load when it lands")
        if target is not None:
            notes.append(f"evidence: {target.message}")
            metrics["observed"] = float(target.observed)
        res = _result(case, before)
        return DryRun(before=res, after=res, metrics=metrics, notes=notes)
    after = judge(case, change)
    out = taken_out(case, change)
    n_out = int(out.sum())
    metrics.update(accepted_after=float(len(after.accepted)), rows_taken_out=float(n_out),
                   fraction_taken_out=round(n_out / len(case.frame), 6) if len(case.frame) else 0.0)
    if case.target is not None:
        b, a = before.finding(*case.target), after.finding(*case.target)
        if b is not None:
            metrics["observed_before"] = float(b.observed)
        if a is not None:
            metrics["observed_after"] = float(a.observed)
    if isinstance(change, DedupeRule):
        extra = int(case.frame.duplicated(subset=change.keys).sum())
        metrics["duplicate_rows"] = float(extra)
        notes.append(f"{n_out} rows taken out, {extra} rows repeat a key: "
                     + ("no other row is lost" if n_out == extra else "OTHER ROWS WOULD BE LOST"))
    elif isinstance(change, Quarantine):
        notes.append(f"{n_out} of {len(case.frame)} rows ({n_out / max(len(case.frame), 1):.1%}) match "
                     f"{change.predicate!r} and go to quarantine; the rest of the batch "
                     + ("passes" if _result(case, after).passed else "still fails"))
    elif isinstance(change, ContractChange):
        notes.append(f"{len(after.accepted) - len(before.accepted):+d} rows accepted under the new contract")
    new = [f for f in after.findings if f.halt and not any(f.key == g.key for g in before.findings)]
    for f in new:
        notes.append(f"the change makes a new halting finding: {f.check} on {f.column}: {f.message}")
    return DryRun(before=_result(case, before), after=_result(case, after),
                  sample=_rows(case.frame.reset_index(drop=True).loc[out]) if n_out else _rows(after.accepted),
                  metrics=metrics, notes=notes)


# --------------------------------------------------------------------------- candidates
class Candidate(BaseModel):
    """One drafted change and why."""

    name: str
    change: Quarantine | DedupeRule | Reingest | ContractChange
    rationale: str


def quote_list(values: list[Any]) -> str:
    """Values as a SQL list literal body (strings quoted, quotes doubled)."""
    out = []
    for v in values:
        if isinstance(v, bool | np.bool_):
            out.append("TRUE" if v else "FALSE")
        elif isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool):
            out.append(repr(float(v)) if isinstance(v, float | np.floating) else str(int(v)))
        else:
            out.append("'" + str(v).replace("'", "''") + "'")
    return ", ".join(out)


def _ident(name: str) -> str:
    """A column name in a predicate a person reads: bare when it can be (`quote_ident(always=False)`)."""
    return quote_ident(name, always=False)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _range_predicate(col: str, lo: float | None, hi: float | None) -> str:
    parts = ([f"{_ident(col)} < {_num(lo)}"] if lo is not None else []) + \
            ([f"{_ident(col)} > {_num(hi)}"] if hi is not None else [])
    return " OR ".join(parts)


def _spec_predicate(case: FaultCase, check: str, col: str) -> str | None:
    """The predicate matching the rows a contract check rejects."""
    if col not in case.columns or col not in case.contract.names:
        return None
    c = case.contract.column(col)
    if check == "not_null":
        return f"{_ident(col)} IS NULL"
    if check == "between":
        return _range_predicate(col, c.min, c.max)
    if check == "in_set" and c.allowed:
        return f"{_ident(col)} NOT IN ({quote_list(list(c.allowed))})"
    if check == "length" and c.max_length is not None:
        return f"length(CAST({_ident(col)} AS VARCHAR)) > {c.max_length}"
    return None


def _quarantine(case: FaultCase, predicate: str, reason: str) -> Quarantine:
    mask = case.mask(predicate)
    return Quarantine(dataset=case.dataset, load_id=case.load_id or None, predicate=predicate, reason=reason,
                      rows=int(mask.sum()), batch_rows=len(case.frame))


def _round_out(value: float, integer: bool, up: bool) -> float:
    mag = 10 ** max(math.floor(math.log10(abs(value))) - 1, 0) if value else 1
    r = (math.ceil(value / mag) if up else math.floor(value / mag)) * mag
    return float(int(r)) if integer else float(r)


def _widen(case: FaultCase, col: str) -> ContractChange | None:
    """A contract with `col`'s bounds widened to what the batch holds, when the out-of-range values look like real
    data the contract is too tight for: few past the bound, spread over several values, close to it."""
    from pipewarden.tools.contracts import contract_to_dict

    c = case.contract.column(col)
    values = pd.to_numeric(case.frame[col], errors="coerce").dropna()
    if values.empty or (c.min is None and c.max is None):
        return None
    span = (c.max if c.max is not None else values.max()) - (c.min if c.min is not None else values.min()) or 1.0
    margin = case.dq.agent.contract_margin * span
    new_min, new_max = c.min, c.max
    for side, bound in (("max", c.max), ("min", c.min)):
        if bound is None:
            continue
        past = values[values > bound] if side == "max" else values[values < bound]
        if past.empty:
            continue
        far = (past - bound).abs().max()
        if far > margin or past.nunique() < min(3, len(past)):
            return None  # a sentinel or garbage: quarantine, not a looser contract
        integer = c.type == "integer"
        if side == "max":
            new_max = _round_out(float(past.max()), integer, up=True)
        else:
            new_min = _round_out(float(past.min()), integer, up=False)
    if (new_min, new_max) == (c.min, c.max):
        return None
    data = contract_to_dict(case.contract)
    data["version"] = int(data.get("version", 1)) + 1
    for col_d in data["columns"]:
        if col_d["name"] == col:
            col_d["min"], col_d["max"] = new_min, new_max
    return ContractChange(dataset=case.dataset, contract=data, loosens=True,
                          summary=f"{col}: bounds [{c.min}, {c.max}] -> [{new_min}, {new_max}]")


def _allow(case: FaultCase, col: str) -> ContractChange | None:
    """A contract whose `col` allows the batch's new values, when the reference dataset lists every one of them."""
    from pipewarden.tools.contracts import contract_to_dict

    c = case.contract.column(col)
    rh = case.history.reference(col)
    if not c.allowed or rh is None or not rh.keys:
        return None
    new = sorted(set(case.frame[col].dropna().astype(str)) - set(c.allowed))
    if not new or not set(new) <= set(rh.keys):
        return None
    data = contract_to_dict(case.contract)
    data["version"] = int(data.get("version", 1)) + 1
    for col_d in data["columns"]:
        if col_d["name"] == col:
            col_d["allowed"] = [*c.allowed, *new]
    return ContractChange(dataset=case.dataset, contract=data, loosens=True,
                          summary=f"{col}: also allow {', '.join(new)} (listed in {rh.reference})")


def _reingest(case: FaultCase, reason: str) -> Reingest:
    return Reingest(dataset=case.dataset, load_id=case.load_id, source=case.load.source if case.load else None,
                    reason=reason)


def _segment(case: FaultCase, column: str) -> Quarantine | None:
    """The one segment (a value of a policy segment column) whose rows explain a distribution shift: without it the
    accepted rows are back under the PSI threshold, and it is small enough to quarantine (the smallest such)."""
    from pipewarden.tools.quality import bin_shares, psi

    bins = case.history.column_bins(column)
    accepted = case.before().accepted
    if bins is None or column not in accepted.columns:
        return None
    limit = case.dq.agent.max_quarantine_fraction
    best: tuple[float, str, str] | None = None
    for seg in case.dq.segments:
        if seg not in accepted.columns:
            continue
        labels = accepted[seg].astype(str)
        for value, share in labels.value_counts(normalize=True).head(20).items():
            if share > limit or (best is not None and share >= best[0]):
                continue
            rest = pd.to_numeric(accepted.loc[labels != value, column], errors="coerce").dropna().to_numpy("float64")
            if len(rest) and psi(bins.shares, bin_shares(rest, bins.edges)) <= case.dq.checks.distribution.psi:
                best = (float(share), seg, str(value))
    if best is None:
        return None
    _, seg, value = best
    return _quarantine(case, f"{_ident(seg)} = {quote_list([value])}",
                       f"distribution shift: {column} of {seg} {value} moved away from earlier loads")


def draft_candidates(case: FaultCase) -> list[Candidate]:
    """Deterministic candidates for the case's fault, best first (the offline planner proposes the first that is
    valid; a model may pick another or write its own). Drafted once per case (gather and the root cause both ask);
    each caller gets its own copies."""
    if case._candidates is None:
        case._candidates = _draft(case)
    return [c.model_copy(deep=True) for c in case._candidates]


def _draft(case: FaultCase) -> list[Candidate]:
    out: list[Candidate] = []
    ev = case.event
    limit = case.dq.agent.max_quarantine_fraction
    if ev.kind == "check_failed":
        preds: list[str] = []
        for f in sorted(ev.failed, key=lambda x: -x.failed_rows):
            if not f.column:
                continue
            pred = _spec_predicate(case, f.check, f.column)
            if f.check == "between" and f.column in case.columns:
                widened = _widen(case, f.column)
                if widened is not None:
                    out.append(Candidate(name=f"widen {f.column}", change=widened,
                                         rationale=f"the {f.failed_rows} out-of-range {f.column} values sit just past "
                                                   "the bound and spread like real data: the contract is too tight"))
            if f.check == "in_set" and f.column in case.columns:
                allowed = _allow(case, f.column)
                if allowed is not None:
                    out.append(Candidate(name=f"allow {f.column}", change=allowed,
                                         rationale=f"the new {f.column} values are real: the reference lists them"))
            if pred:
                preds.append(pred)
                out.append(Candidate(name=f"quarantine {f.check} {f.column}",
                                     change=_quarantine(case, pred, f"{f.detail or f.check} ({f.failed_rows} rows)"),
                                     rationale=f"take out the {f.failed_rows} rows failing {f.detail or f.check}"))
        if len(preds) > 1:
            both = " OR ".join(f"({p})" for p in preds)
            out.append(Candidate(name="quarantine every failing check", change=_quarantine(
                case, both, "rows failing the contract: " + "; ".join(f.detail for f in ev.failed if f.detail)),
                rationale="take out every row a failing check rejects"))
        quarantines = [c for c in out if isinstance(c.change, Quarantine)]
        others = [c for c in out if not isinstance(c.change, Quarantine)]
        quarantines.sort(key=lambda c: c.change.rows)  # type: ignore[union-attr]
        return others + [c for c in quarantines if c.change.fraction <= limit] + \
            [c for c in quarantines if c.change.fraction > limit]
    check, col = str(ev.check), ev.column
    message = str((ev.detail or {}).get("message", ""))
    if check == "null_spike" and col:
        out.append(Candidate(name=f"quarantine null {col}", change=_quarantine(
            case, f"{_ident(col)} IS NULL", f"null spike: {message}"), rationale=f"take out the rows without {col}"))
    elif check == "range" and col:
        widened = _widen(case, col)
        c = case.contract.column(col)
        q = Candidate(name=f"quarantine out-of-range {col}", change=_quarantine(
            case, _range_predicate(col, c.min, c.max), f"out of range: {message}"),
            rationale=f"take out the rows with {col} outside [{c.min}, {c.max}]")
        if widened is not None:
            out += [Candidate(name=f"widen {col}", change=widened, rationale="the values past the bound are close "
                              "to it and spread like real data: the contract is too tight"), q]
        else:
            out.append(q)
    elif check == "duplicates":
        keys = list((ev.detail or {}).get("keys") or case.dq.keys)
        out.append(Candidate(name="dedupe by key", change=DedupeRule(dataset=case.dataset, keys=keys, keep="last"),
                             rationale=f"keep the last copy of each ({', '.join(keys)}): a re-sent slice"))
    elif check == "referential" and col:
        rh = case.history.reference(col)
        if rh is not None:
            new = _new_broken(case, col, rh)
            if new:
                out.append(Candidate(name=f"quarantine broken {col}", change=_quarantine(
                    case, f"{_ident(col)} IN ({quote_list(new)})",
                    f"broken reference: {col} not in {rh.reference} ({len(new)} new values)"),
                    rationale=f"take out the rows whose {col} {rh.reference} does not list and no earlier load had"))
    elif check == "distribution" and col:
        seg = _segment(case, col)
        if seg is not None:
            out.append(Candidate(name=f"quarantine segment ({seg.predicate})", change=seg,
                                 rationale="one segment's rows explain the shift; the rest match earlier loads"))
        out.append(Candidate(name="re-ingest", change=_reingest(case, f"{col} shifted: {message}"),
                             rationale="the whole batch moved: ask the source to deliver it again"))
    if check in REINGEST_CHECKS:
        out.append(Candidate(name="re-ingest", change=_reingest(case, f"{check}: {message}"),
                             rationale="rows are missing from the batch: the source must deliver them"))
    return out


def _new_broken(case: FaultCase, col: str, rh: Any) -> list[str]:
    """The fewest never-seen broken values (most rows first) whose removal brings the accepted rows' broken share
    back to what earlier loads had (plus the policy margin); every new one when no prefix does."""
    from statistics import median

    accepted = case.before().accepted
    values = accepted[col].dropna().astype(str) if col in accepted.columns else pd.Series([], dtype="str")
    broken = values[~values.isin(set(rh.keys))]
    counts = broken[~broken.isin(set(rh.known_broken))].value_counts()
    if counts.empty:
        return []
    ref = next((r for r in case.dq.checks.referential.references if r.column == col), None)
    limit = (median(rh.shares) + case.dq.checks.referential.margin) if rh.shares else (ref.max_share if ref else 0.0)
    removed = 0
    for k, n in enumerate(counts.to_numpy(), start=1):
        removed += int(n)
        if (len(broken) - removed) / max(len(values) - removed, 1) <= limit:
            # and the values as frequent as those (the same fault's other codes), not the rare real stragglers
            floor = max(2, int(counts.iloc[k - 1]) // 2)
            return sorted(counts.index[(counts >= floor).to_numpy() | (np.arange(len(counts)) < k)].tolist())
    return sorted(counts.index.tolist())


# --------------------------------------------------------------------------- root cause
def bad_rows(case: FaultCase) -> np.ndarray | None:
    """The rows at fault (by position), when the fault is about rows; None for batch-level faults."""
    ev = case.event
    preds: list[str] = []
    if ev.kind == "check_failed":
        preds = [p for f in ev.failed if f.column and (p := _spec_predicate(case, f.check, f.column))]
    else:
        for c in draft_candidates(case):
            if isinstance(c.change, Quarantine) and not c.name.startswith("quarantine segment"):
                preds = [c.change.predicate]
                break
            if isinstance(c.change, DedupeRule):
                return duplicate_mask(case.frame, c.change)
    if not preds:
        return None
    # the rows any of them matches: the same rows as `(p1) OR (p2) ...` (a NULL counts as false either way), from
    # the masks drafting computed already
    return np.logical_or.reduce([case.mask(p) for p in preds])


def root_cause(case: FaultCase) -> list[str]:
    """Where the fault came from, in words: the load and its source, where the bad rows sit, the upstream reference
    and the downstream models that read the affected column."""
    lines: list[str] = []
    ld = case.load
    if ld is not None:
        when = f"{ld.arrived_at:%Y-%m-%d %H:%M} UTC" if ld.arrived_at else "at an unknown time"
        lines.append(f"load {ld.load_id} of {case.dataset} landed {when} from {ld.source} ({ld.rows} rows, "
                     f"status {ld.status})")
    else:
        lines.append(f"load {case.load_id} of {case.dataset} (no meta_loads row)")
    mask = bad_rows(case)
    if mask is not None and mask.any():
        frame = case.frame.reset_index(drop=True)
        bad = frame.loc[mask]
        lines.append(f"{int(mask.sum())} of {len(frame)} rows are at fault")
        for seg in case.dq.segments:
            if seg not in frame.columns:
                continue
            top = bad[seg].astype(str).value_counts(normalize=True)
            if top.empty:
                continue
            value, share = str(top.index[0]), float(top.iloc[0])
            base = float((frame[seg].astype(str) == value).mean())
            if share >= 0.5 and share > base * 1.5:
                lines.append(f"{share:.0%} of them have {seg} {value} ({base:.0%} of the batch): the fault "
                             f"concentrates there")
        if "day" in frame.columns:
            days = sorted(bad["day"].dropna().astype(int).unique().tolist())
            if days and len(days) <= 7:
                lines.append(f"on day(s) {', '.join(map(str, days))} of the batch")
    target = case.target
    if target and target[0] == "referential" and target[1]:
        rh = case.history.reference(target[1])
        if rh is not None:
            lines.append(f"upstream: {rh.reference}, loaded from {rh.reference_source or 'the reference table'}")
    column = target[1] if target else next((f.column for f in case.event.failed if f.column), None) \
        if case.event.kind == "check_failed" else None
    lines += _downstream(case.dataset, column)
    return lines


def _downstream(dataset: str, column: str | None) -> list[str]:
    from pipewarden.errors import PipewardenError
    from pipewarden.tools.lineage import affected_models, model_dependencies, topological_order

    table = f"raw_{dataset}"
    try:
        if column:
            models = affected_models(table, column)
            if models:
                return [f"downstream: {table}.{column} feeds {', '.join(models)}"]
        deps = model_dependencies()
        reached: set[str] = set()
        todo = [table]
        while todo:
            t = todo.pop()
            for m, ups in deps.items():
                if t in ups and m not in reached:
                    reached.add(m)
                    todo.append(m)
        if reached:
            order = [m for m in topological_order(deps) if m in reached]
            return [f"downstream: {table} feeds {', '.join(order)}"]
    except (PipewardenError, OSError, ValueError):
        return []
    return [f"downstream: no SQL model reads {table}"]
