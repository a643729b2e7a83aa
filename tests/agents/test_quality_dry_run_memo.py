"""The quality agent proves a change once per case: drafting, validating the planner's answer and writing the
proposal's evidence share one dry-run of the same change, each with its own copy."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from pipewarden.models import DedupeRule


def _case(frame: pd.DataFrame):  # type: ignore[no-untyped-def]
    from pipewarden.policies.contract import load_contract
    from pipewarden.policies.quality import dataset_quality
    from pipewarden.tools.quality import History
    from pipewarden.tools.quality_fix import FaultCase

    event = SimpleNamespace(kind="check_failed", dataset="flights", load_id="L1")
    return FaultCase(event=event, frame=frame, contract=load_contract("flights"), dq=dataset_quality("flights"),
                     rules=[], history=History(dataset="flights"), rows_landed=len(frame))


def test_a_change_is_judged_once_per_case_and_each_caller_gets_its_own_copy(
        february: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.tools import quality_fix as qf

    frame = february.head(400).copy()
    frame.loc[:39, "dep_delay"] = 5000.0  # 40 rows over the contract's bound
    judged: list[str] = []
    real = qf.evaluate

    def counting(frame, contract, rules, *args, **kwargs):  # type: ignore[no-untyped-def]
        judged.append(",".join(r.rule.kind for r in rules))
        return real(frame, contract, rules, *args, **kwargs)

    monkeypatch.setattr(qf, "evaluate", counting)
    case = _case(frame)
    quarantine = qf._quarantine(case, "dep_delay > 1500", "over the bound")
    first = qf.dry_run(case, quarantine)
    again = qf.dry_run(case, quarantine.model_copy())  # an equal change, as validate and the proposal pass it
    assert judged == ["", "quarantine"]  # the batch as it is, then under the quarantine: once each
    assert first == again and first is not again
    assert first.metrics["rows_taken_out"] == 40 and first.after.passed and not first.before.passed
    first.notes.append("edited by a caller")
    assert "edited by a caller" not in qf.dry_run(case, quarantine).notes

    dedupe = DedupeRule(dataset="flights", keys=["year", "month", "day", "flight", "carrier"], keep="last")
    qf.dry_run(case, dedupe)
    assert judged == ["", "quarantine", "dedupe_rule"]  # a different change is judged on its own
