"""The quality stage: after validate accepted a batch, judge it against the history of accepted loads.

`check_quality(landed, df)` runs `tools.quality.evaluate` on the batch exactly as validate saw it (the active
column mapping, the active quality rules, the contract's row checks) and every detector of `policies/quality.yaml`
on what was accepted, against the history of earlier accepted loads read from the profile validate stored for each
(`tools.load_profile.quality_history`; from their rows when a load has none), not re-scanned on every batch: freshness (gaps and late tails in event time, from `meta_loads` and the accepted rows),
volume (rows landed against earlier loads), null spikes, out-of-range shares, duplicate keys, broken references
(e.g. flights.tailnum -> planes.tailnum) and distribution shifts (PSI). Each finding becomes a `QualityAnomaly`
event in the outbox (through `flows.emit`), with a stable id: the same finding on the same load is one event,
however often the load is re-run.

Given validate's `RowVerdicts` (which rows it quarantined and which a quality rule took out, on a batch it judged
unmapped), the stage does not check the rows again: it takes the rows validate kept and accepted and runs the
detectors on them, as `evaluate` does after its own checks (which answer as validate's do; `tests/flows/
test_guard_paths.py` holds the findings equal).

When a finding's check halts (`halt: true` in the policy), the batch stops before transform as a contract failure
does: in one warehouse transaction its accepted rows are taken back out of `raw_<dataset>` (they stay in the landing
zone; a re-run after the fix accepts them again) and the load's status becomes `halted_quality`. The outcome lists
the ids of every finding's event, new or not, so a verifier can tell whether the fault it fixed is gone.

Public names: `QualityOutcome`, `check_quality`, `anomaly_event_id`.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import BaseModel, Field

from pipewarden.events import QualityAnomaly
from pipewarden.flows.emit import emit
from pipewarden.flows.ingest import Landed, connect, read_landed, set_load_status
from pipewarden.store import StateStore
from pipewarden.tools.quality import Finding

if TYPE_CHECKING:
    from pipewarden.flows.validate import RowVerdicts
    from pipewarden.policies.contract import Contract
    from pipewarden.policies.quality import DatasetQuality
    from pipewarden.tools.quality import History

QUALITY_NS = uuid.UUID("3f6c9b1e-2a47-4d8e-b5a0-7c1d2e3f4a5b")


class QualityOutcome(BaseModel):
    """What the quality stage found on one batch, and whether it halted it."""

    dataset: str
    load_id: str
    halted: bool = False
    reason: str = ""
    findings: list[Finding] = Field(default_factory=list)
    event_ids: list[str] = Field(default_factory=list)
    rows_withdrawn: int = 0
    timings_ms: dict[str, float] = Field(default_factory=dict)


def anomaly_event_id(dataset: str, load_id: str, check: str, column: str | None) -> uuid.UUID:
    """One id per (load, check, column): a re-run that finds the fault again finds the same event."""
    return uuid.uuid5(QUALITY_NS, f"quality_anomaly|{dataset}|{load_id}|{check}|{column or '*'}")


def check_quality(landed: Landed, df: pd.DataFrame | None = None, *, run_id: str | None = None,
                  verdicts: RowVerdicts | None = None) -> QualityOutcome:
    """Judge an accepted batch against its history; emit one `QualityAnomaly` per finding; halt on halting ones.

    `verdicts` (validate's, for `df` as it judged it unmapped) spares checking the rows again."""
    from pipewarden.flows.validate import active_mapping
    from pipewarden.policies.quality import dataset_quality
    from pipewarden.tools.contracts import active_contract
    from pipewarden.tools.load_profile import quality_history
    from pipewarden.tools.mapping import map_frame
    from pipewarden.tools.quality import evaluate
    from pipewarden.tools.quality_rules import active_rules

    t0 = time.perf_counter()
    if df is None:
        df, _ = read_landed(landed.dataset, landed.load_id)
    store = StateStore()
    contract = active_contract(landed.dataset, store)
    dq = dataset_quality(landed.dataset)
    history = quality_history(landed.dataset, landed.load_id, dq, contract)  # stored load profiles, else the rows
    t1 = time.perf_counter()
    if verdicts is not None:
        findings = _judge_accepted(df, verdicts, contract, history, dq)
    else:
        mapping, _ = active_mapping(landed, df, contract, store)
        frame, cast_failures = df, {}
        if mapping is not None:
            mapped = map_frame(df, mapping, contract)
            frame, cast_failures = mapped.frame, mapped.cast_failures
        findings = evaluate(frame, contract, active_rules(landed.dataset, landed.load_id, store), history, dq,
                            cast_failures=cast_failures, rows_landed=len(df)).findings
    out = QualityOutcome(dataset=landed.dataset, load_id=landed.load_id, findings=findings,
                         timings_ms={"history_ms": _ms(t0, t1), "evaluate_ms": _ms(t1)})
    for f in findings:
        event = QualityAnomaly(
            id=anomaly_event_id(landed.dataset, landed.load_id, f.check, f.column), dataset=landed.dataset,
            load_id=landed.load_id, run_id=run_id, check=f.check, batch_path=landed.uri, column=f.column,
            observed=f.observed, expected=f.expected, detail={**_jsonable(f.detail), "message": f.message, "halt": f.halt},
        )
        emit(event, store=store)
        out.event_ids.append(str(event.id))
    halting = [f for f in findings if f.halt]
    if halting:
        out.halted = True
        out.reason = "quality: " + "; ".join(f"{f.check}{f' on {f.column}' if f.column else ''}: {f.message}"
                                              for f in halting)
        out.rows_withdrawn = _withdraw(landed)
    out.timings_ms["total_ms"] = _ms(t0)
    return out


def _judge_accepted(df: pd.DataFrame, verdicts: RowVerdicts, contract: Contract, history: History,
                    dq: DatasetQuality) -> list[Finding]:
    """The detectors' findings on the rows validate kept and accepted: `tools.quality.evaluate`'s last steps on
    its own checks' answer, here on validate's (the rows a rule took out are not kept; the accepted ones are
    conformed to the contract's types, as evaluate conforms them)."""
    from pipewarden.tools.mapping import conform_to_contract
    from pipewarden.tools.quality import BatchFacts, detect

    kept = df.loc[~verdicts.ruled] if verdicts.ruled.any() else df  # no copy when no row was taken out
    accepting = df.loc[~verdicts.rejected] if verdicts.rejected.any() else df
    cols = [c for c in contract.names if c in df.columns]
    accepted = conform_to_contract(accepting, contract)[cols] if len(cols) == len(contract.names) \
        else accepting[cols]
    return detect(BatchFacts(kept, accepted.reset_index(drop=True), len(df)), history, dq, contract)


def _withdraw(landed: Landed) -> int:
    """Take the load's accepted rows back out of `raw_<dataset>` and mark it `halted_quality`, in one transaction."""
    table = f"raw_{landed.dataset}"
    with connect() as wh, wh.transaction():
        n = 0
        if wh.has_table(table):
            q = wh.quote(table)
            n = int(wh.execute(f"SELECT count(*) FROM {q} WHERE _load_id = ?", [landed.load_id])[0][0])
            wh.execute(f"DELETE FROM {q} WHERE _load_id = ?", [landed.load_id])
        set_load_status(landed.dataset, landed.load_id, "halted_quality", con=wh)
    return n


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def _ms(since: float, until: float | None = None) -> float:
    return round(((until or time.perf_counter()) - since) * 1000, 1)
