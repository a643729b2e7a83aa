"""The quality agent masks each predicate, drafts the candidates and guards each answer's predicate once per event:
drafting, the dry-run's rows taken out, the root cause and the planner's answer (validated in the plan and again
in `alternatives`) share them. A long IN list takes tenths of a second to parse, and one event asked up to
thirteen times for the same one. The shared results are the same as computing each again."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest


def _case(frame: pd.DataFrame, event: SimpleNamespace):  # type: ignore[no-untyped-def]
    from pipewarden.policies.contract import load_contract
    from pipewarden.policies.quality import dataset_quality
    from pipewarden.tools.quality import History
    from pipewarden.tools.quality_fix import FaultCase

    return FaultCase(event=event, frame=frame, contract=load_contract("flights"), dq=dataset_quality("flights"),
                     rules=[], history=History(dataset="flights"), rows_landed=len(frame))


def _null_spike(february: pd.DataFrame):  # type: ignore[no-untyped-def]
    frame = february.dropna().head(600).reset_index(drop=True)
    frame.loc[:59, "tailnum"] = None
    event = SimpleNamespace(kind="quality_anomaly", dataset="flights", load_id="L1", check="null_spike",
                            column="tailnum", detail={"message": "60 nulls"})
    return _case(frame, event)


def _two_failing_checks(february: pd.DataFrame):  # type: ignore[no-untyped-def]
    frame = february.dropna().head(600).reset_index(drop=True)
    frame.loc[:29, "dep_delay"] = 5000.0
    frame.loc[20:49, "origin"] = "SWF"
    failed = [SimpleNamespace(check="between", column="dep_delay", failed_rows=30, detail="dep_delay in range"),
              SimpleNamespace(check="in_set", column="origin", failed_rows=30, detail="origin allowed")]
    event = SimpleNamespace(kind="check_failed", dataset="flights", load_id="L1", failed=failed,
                            failure_rate=0.08, threshold=0.01)
    return _case(frame, event)


def _count(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> Counter[str]:
    calls: Counter[str] = Counter()
    real = getattr(module, name)

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[str(args[1]) if len(args) > 1 else ""] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def test_an_events_predicates_are_masked_guarded_and_its_candidates_drafted_once(
        february: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.agents.quality import QualityAnswer, answer_to_change, validate_answer
    from pipewarden.tools import quality_fix as qf
    from pipewarden.tools import sql_guard

    masked = _count(monkeypatch, qf, "predicate_mask")
    drafts = _count(monkeypatch, qf, "_draft")
    guarded: Counter[str] = Counter()
    real_guard = sql_guard.check_predicate

    def guard(expr, columns):  # type: ignore[no-untyped-def]
        guarded[expr] += 1
        return real_guard(expr, columns)

    monkeypatch.setattr(sql_guard, "check_predicate", guard)
    case = _null_spike(february)
    candidates = qf.draft_candidates(case)  # gather: draft, then dry-run each
    for c in candidates:
        qf.dry_run(case, c.change)
    lines = qf.root_cause(case)  # drafts again to find the rows at fault
    # the offline planner's answer: the drafted candidate (a model's own reason would be another change, dry-run apart)
    answer = QualityAnswer(action="quarantine", predicate="tailnum IS NULL", reason=candidates[0].change.reason)
    ctx = {"check": "null_spike", "citations": []}
    verdict = validate_answer(answer, case, ctx)  # the planner's answer, validated in plan and again in alternatives
    assert validate_answer(answer, case, ctx) == verdict
    change = answer_to_change(answer, case)
    assert drafts[""] == 1
    assert masked == Counter({"tailnum IS NULL": 1})
    # guarded where drafting masked it and where the dry-run ran it as a rule; validation asks the kept verdict
    assert guarded == Counter({"tailnum IS NULL": 2})
    assert change.rows == 60 and "60 of 600 rows are at fault" in lines
    candidates[0].change.reason = "edited by a caller"  # each caller has its own copies
    assert qf.draft_candidates(case)[0].change.reason != "edited by a caller"
    mask = qf.taken_out(case, change)
    mask[:] = False
    assert qf.taken_out(case, change).sum() == 60


def test_the_rows_at_fault_of_several_checks_are_those_the_joined_predicate_matches(
        february: pd.DataFrame) -> None:
    """`bad_rows` ORs the masks drafting computed, instead of parsing `(p1) OR (p2)` again: the same rows (a NULL
    counts as false in both)."""
    from pipewarden.tools import quality_fix as qf
    from pipewarden.tools.quality_rules import predicate_mask

    case = _two_failing_checks(february)
    case.frame.loc[100:109, "dep_delay"] = None  # NULLs in one predicate's column, matched by the other on 0 rows
    preds = [qf._spec_predicate(case, f.check, f.column) for f in case.event.failed]
    assert all(preds)
    joined = predicate_mask(case.frame, " OR ".join(f"({p})" for p in preds))
    got = qf.bad_rows(case)
    assert got is not None and got.dtype == bool
    assert np.array_equal(got, joined) and int(got.sum()) == 50


def test_an_answers_predicate_is_guarded_once_for_the_plan_and_the_alternatives(
        february: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.agents import quality as q
    from pipewarden.tools import sql_guard

    q._predicate_errors.cache_clear()
    guarded_args: list[str] = []
    real = sql_guard.check_predicate

    def remember(expr, columns):  # type: ignore[no-untyped-def]
        guarded_args.append(expr)
        return real(expr, columns)

    monkeypatch.setattr(sql_guard, "check_predicate", remember)
    case = _null_spike(february)
    ctx = {"check": "null_spike", "citations": []}
    good = q.QualityAnswer(action="quarantine", predicate="tailnum IS NULL", reason="null spike")
    bad = q.QualityAnswer(action="quarantine", predicate="nosuch IS NULL", reason="a column the batch lacks")
    verdict = q.validate_answer(good, case, ctx)
    assert verdict == q.validate_answer(good, case, ctx) and not any("not in the batch" in e for e in verdict)
    first = q.validate_answer(bad, case, ctx)
    assert first == q.validate_answer(bad, case, ctx) and "column 'nosuch' is not in the batch" in first[0]
    # once each for the answer's guard, the mask that counts its rows and the dry-run under the quarantine (both
    # guard it too): all three kept for the second validation; the refused predicate never reaches a mask
    assert Counter(guarded_args) == Counter({"tailnum IS NULL": 3, "nosuch IS NULL": 1})
    q._predicate_errors.cache_clear()


def test_an_empty_batchs_mask_does_not_count_as_guarded(february: pd.DataFrame) -> None:
    """`predicate_mask` answers an empty batch without running the guard, so validation still guards the answer."""
    from pipewarden.agents import quality as q

    case = _null_spike(february)
    case.frame = case.frame.head(0)
    case.mask("nosuch IS NULL")
    assert not case.guarded("nosuch IS NULL")
    answer = q.QualityAnswer(action="quarantine", predicate="nosuch IS NULL", reason="a column the batch lacks")
    assert "column 'nosuch' is not in the batch" in q.validate_answer(answer, case, {"check": "null_spike"})[0]
