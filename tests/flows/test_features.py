"""Features are point in time: nothing a flight's features use is later than the flight's own day."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from pipewarden.flows.features import FEATURES, FEATURES_TABLE, LABEL, FeaturesNotReady, build_features
from pipewarden.flows.transform import transform
from pipewarden.flows.warehouse import connect
from tests.flows.test_transform import seed_warehouse

CUTOFF = date(2013, 2, 10)


def _features(until: date | None = None) -> pd.DataFrame:
    where = f"WHERE flight_date <= DATE '{until.isoformat()}'" if until else ""
    with connect(read_only=True) as con:
        df = con.execute(f"SELECT * FROM {FEATURES_TABLE} {where} ORDER BY flight_id").df()
    return df.reset_index(drop=True)


def _rebuild() -> None:
    transform()
    build_features()


def test_one_row_per_flight_with_label_and_history() -> None:
    flights = seed_warehouse()
    transform()
    result = build_features()
    expected = int(flights["arr_delay"].notna().sum())
    assert result.rows == expected and result.loads == 2
    assert (result.first_date, result.last_date) == ("2013-01-01", "2013-02-28")
    df = _features()
    assert df["flight_id"].is_unique
    assert set(FEATURES) <= set(df.columns)
    assert (df[LABEL] == (df["arr_delay"] > 15)).all()
    assert result.base_rate == pytest.approx(df[LABEL].mean())
    # the first day has no history; later days do
    first = df[df["flight_date"] == pd.Timestamp("2013-01-01")]
    assert (first["route_flights_28d"] == 0).all() and first["route_avg_arr_delay_28d"].isna().all()
    later = df[df["flight_date"] >= pd.Timestamp("2013-01-10")]
    assert later["carrier_flights_28d"].gt(0).mean() > 0.99


def test_route_history_is_the_28_days_before_the_flight_day() -> None:
    flights = seed_warehouse()
    transform()
    build_features()
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


def test_features_need_the_models_first() -> None:
    seed_warehouse()
    with pytest.raises(FeaturesNotReady, match="(?s)stg_flights.*transform"):
        build_features()
