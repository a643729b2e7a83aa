"""The flights example's features model (examples/flights/models/features_flights.sql, the delay model's features)
is point in time: nothing a flight's features use is later than the flight's own day."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from pipewarden.flows.transform import ModelRunError, transform
from pipewarden.flows.warehouse import connect
from pipewarden.project import load_project
from tests.conftest import FLIGHTS_PROJECT
from tests.flows.test_transform import seed_warehouse

DELAY = load_project(FLIGHTS_PROJECT).ml_model("delay")
FEATURES, FEATURES_TABLE, LABEL = DELAY.feature_columns, DELAY.features, DELAY.label

CUTOFF = date(2013, 2, 10)


def _features(until: date | None = None) -> pd.DataFrame:
    where = f"WHERE flight_date <= DATE '{until.isoformat()}'" if until else ""
    with connect(read_only=True) as con:
        df = con.execute(f"SELECT * FROM {FEATURES_TABLE} {where} ORDER BY flight_id").df()
    return df.reset_index(drop=True)


def _rebuild() -> None:
    transform()


def test_one_row_per_flight_with_label_and_history() -> None:
    flights = seed_warehouse()
    result = transform()
    expected = int(flights["arr_delay"].notna().sum())
    assert result.rows[FEATURES_TABLE] == expected
    df = _features()
    assert df["load_id"].nunique() == 2
    assert (str(df["flight_date"].min().date()), str(df["flight_date"].max().date())) == ("2013-01-01", "2013-02-28")
    assert df["flight_id"].is_unique
    assert set(FEATURES) <= set(df.columns)
    assert (df[LABEL] == (df["arr_delay"] > 15)).all()
    # the first day has no history; later days do
    first = df[df["flight_date"] == pd.Timestamp("2013-01-01")]
    assert (first["route_flights_28d"] == 0).all() and first["route_avg_arr_delay_28d"].isna().all()
    later = df[df["flight_date"] >= pd.Timestamp("2013-01-10")]
    assert later["carrier_flights_28d"].gt(0).mean() > 0.99


def test_route_history_is_the_28_days_before_the_flight_day() -> None:
    flights = seed_warehouse()
    transform()
    df = _features()
    row = df[(df.origin == "JFK") & (df.dest == "LAX") & (df.flight_date == pd.Timestamp("2013-02-14"))].iloc[0]
    f = flights[flights.arr_delay.notna() & (flights.origin == "JFK") & (flights.dest == "LAX")].copy()
    f["d"] = pd.to_datetime(f[["year", "month", "day"]])
    window = f[(f.d >= pd.Timestamp("2013-01-17")) & (f.d <= pd.Timestamp("2013-02-13"))]
    assert row.route_flights_28d == len(window)
    assert row.route_avg_arr_delay_28d == pytest.approx(window.arr_delay.mean())
    assert row.route_delayed_share_28d == pytest.approx((window.arr_delay > 15).mean())


def test_later_data_changes_no_feature_on_or_before_the_cutoff() -> None:
    flights = seed_warehouse()
    _rebuild()
    before = _features(CUTOFF)
    assert len(before) > 10_000

    day = pd.to_datetime(flights[["year", "month", "day"]])
    later = day.dt.date > CUTOFF
    # 1. every later flight is much more delayed, and the later weather is a heat wave
    changed = flights.copy()
    changed.loc[later, "arr_delay"] = changed.loc[later, "arr_delay"] + 500
    changed.loc[later, "dep_delay"] = changed.loc[later, "dep_delay"] + 500
    seed_warehouse(flights=changed)
    with connect() as con:
        con.execute(f"UPDATE raw_weather SET temp = temp + 50, visib = 0 "
                    f"WHERE make_date(year, month, day) > DATE '{CUTOFF.isoformat()}'")
    _rebuild()
    pd.testing.assert_frame_equal(_features(CUTOFF), before)
    assert _features()["route_avg_arr_delay_28d"].max() > 400  # the change did reach the later features

    # 2. every later flight and weather observation is gone
    seed_warehouse(flights=flights[~later])
    with connect() as con:
        con.execute(f"DELETE FROM raw_weather WHERE make_date(year, month, day) > DATE '{CUTOFF.isoformat()}'")
    _rebuild()
    after = _features()
    assert after["flight_date"].max() == pd.Timestamp(CUTOFF)
    pd.testing.assert_frame_equal(after, before)


def test_a_flights_own_day_is_not_in_its_history() -> None:
    flights = seed_warehouse()
    _rebuild()
    before = _features()
    on_day = (pd.to_datetime(flights[["year", "month", "day"]]).dt.date == CUTOFF) & flights["arr_delay"].notna()
    changed = flights.copy()
    changed.loc[on_day, "arr_delay"] = 900.0
    seed_warehouse(flights=changed)
    _rebuild()
    after = _features()
    history = ["route_avg_arr_delay_28d", "carrier_avg_arr_delay_28d", "carrier_delayed_share_28d"]
    same_day = after["flight_date"] == pd.Timestamp(CUTOFF)
    next_day = after["flight_date"] == pd.Timestamp(date(2013, 2, 11))
    pd.testing.assert_frame_equal(after.loc[same_day, history], before.loc[same_day, history])
    assert (after.loc[next_day, "carrier_avg_arr_delay_28d"] > before.loc[next_day, "carrier_avg_arr_delay_28d"]).all()


def test_features_are_built_after_the_models_they_read() -> None:
    seed_warehouse()
    built = [r.model for r in transform().runs]
    assert built.index(FEATURES_TABLE) > max(built.index(m) for m in ("route_daily", "carrier_daily", "flights_weather"))


def test_features_need_the_raw_tables_first() -> None:
    with pytest.raises(ModelRunError, match="raw table is missing|raw_flights"):
        transform()
