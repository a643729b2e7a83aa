"""The matcher on every schema-drift style: naming styles, abbreviations, synonyms, reordering, units, date formats,
epoch numbers, extra columns (against January's real values, and against the contract alone)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipewarden.evals.flights_data import month_batch
from pipewarden.flows.data import inject_added, inject_date_format, inject_drift, inject_reorder, inject_unit_change
from pipewarden.policies.contract import load_contract, schema_diff
from pipewarden.tools.schema_match import match_columns

ROWS = 3000


@pytest.fixture(scope="module")
def january() -> pd.DataFrame:
    return month_batch(1).sample(ROWS, random_state=1).reset_index(drop=True)


@pytest.fixture(scope="module")
def february() -> pd.DataFrame:
    return month_batch(2).sample(ROWS, random_state=2).reset_index(drop=True)


@pytest.mark.parametrize("new_name", ["DepDelay", "dep-delay", "DEP_DELAY", "depDelay", "dep_dly", "departure_delay"])
@pytest.mark.parametrize("against", ["data", "contract"])
def test_a_renamed_delay_column_is_found_in_any_style(january, february, new_name: str, against: str) -> None:
    reference = january if against == "data" else load_contract("flights")
    report = match_columns(reference, inject_drift(february, renames={"dep_delay": new_name}))
    assert report.renamed == {new_name: "dep_delay"}
    assert report.added == [] and report.dropped == [] and report.transforms == []


def test_a_synonym_and_several_renames_at_once(january, february) -> None:
    renames = {"tailnum": "tail_number", "arr_time": "ArrivalTime", "sched_dep_time": "scheduled-departure-time"}
    report = match_columns(january, inject_drift(february, renames=renames))
    assert report.renamed == {v: k for k, v in renames.items()}


def test_reordered_columns_are_not_drift(january, february) -> None:
    shuffled = inject_reorder(february, seed=5)
    assert list(shuffled.columns) != list(february.columns)
    assert match_columns(january, shuffled).clean
    assert schema_diff(load_contract("flights"), shuffled).clean


@pytest.mark.parametrize(("factor", "expected"), [(60, 1 / 60), (1 / 60, 60)])
def test_a_unit_change_is_measured_against_the_reference_distribution(january, february, factor, expected) -> None:
    report = match_columns(january, inject_unit_change(february, "air_time", factor))
    (t,) = report.transforms
    assert (t.column, t.kind) == ("air_time", "unit_scale") and t.factor == pytest.approx(expected)
    assert "spread ratio" in report.match_for("air_time").reason


def test_a_renamed_column_in_another_unit_gets_the_rename_and_the_scale(january, february) -> None:
    report = match_columns(january, inject_unit_change(february, "dep_delay", 60, rename="dep_delay_seconds"))
    assert report.renamed == {"dep_delay_seconds": "dep_delay"}
    (t,) = report.transforms
    assert t.column == "dep_delay" and t.factor == pytest.approx(1 / 60)
    assert report.to_mapping("flights").transforms == [t]


def test_the_same_unit_in_another_month_is_not_a_unit_change(january, february) -> None:
    assert match_columns(january, february).transforms == []


def test_no_unit_change_can_be_seen_against_a_contract_alone(february) -> None:
    report = match_columns(load_contract("flights"), inject_unit_change(february, "air_time", 60))
    assert report.transforms == []


@pytest.mark.parametrize("fmt", ["%m/%d/%Y %H:%M", "%d.%m.%Y %H:%M", "%Y%m%d%H%M"])
@pytest.mark.parametrize("against", ["data", "contract"])
def test_text_dates_in_another_format_get_a_date_format_transform(january, february, fmt, against) -> None:
    reference = january if against == "data" else load_contract("flights")
    report = match_columns(reference, inject_date_format(february, "time_hour", fmt))
    assert [(t.column, t.kind, t.format) for t in report.transforms] == [("time_hour", "date_format", fmt)]
    assert report.retyped == {}  # the transform yields timestamps: no cast on top


@pytest.mark.parametrize(("fmt", "factor"), [("epoch", None), ("epoch_ms", 0.001)])
def test_epoch_numbers_get_an_epoch_transform(january, february, fmt, factor) -> None:
    report = match_columns(load_contract("flights"), inject_date_format(february, "time_hour", fmt))
    assert [(t.column, t.kind, t.factor) for t in report.transforms] == [("time_hour", "epoch", factor)]


def test_non_iso_text_dates_are_a_type_change_for_the_contract(february) -> None:
    diff = schema_diff(load_contract("flights"), inject_date_format(february, "time_hour"))
    assert [(t.column, t.expected, t.observed) for t in diff.retyped] == [("time_hour", "timestamp", "string")]
    assert schema_diff(load_contract("flights"), february).clean  # ISO text stays fine


def test_an_extra_column_is_noted_unless_the_contract_is_strict(february) -> None:
    contract = load_contract("flights")
    extra = inject_added(february, {"gate": "B12"})
    loose = schema_diff(contract, extra)
    assert loose.clean and [c.name for c in loose.extra] == ["gate"] and loose.describe() == []
    strict = schema_diff(contract.model_copy(update={"strict": True}), extra)
    assert not strict.clean and [c.name for c in strict.added] == ["gate"]
    # with other drift, an extra column may be a renamed one: it stays in `added` for the agent
    renamed = schema_diff(contract, inject_drift(extra, renames={"dep_delay": "departureDelay"}))
    assert [c.name for c in renamed.added] == ["departureDelay", "gate"]
