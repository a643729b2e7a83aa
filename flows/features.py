"""The features stage: one row per flight in `stg_flights`, with the label and point-in-time features.

Point in time means no feature of a flight uses data later than that flight. The history features (per route
and per carrier: flights, mean arrival delay and share delayed over 15 minutes) come from the daily models over
the 28 days that END THE DAY BEFORE the flight (`RANGE BETWEEN INTERVAL 28 DAYS PRECEDING AND INTERVAL 1 DAY
PRECEDING`), so a flight never sees its own day, whose arrivals are not all known at its departure. Weather is
the observation at the origin in the flight's scheduled departure hour. Schedule features (hour, weekday,
distance) are known when the flight is booked.

`NUMERIC_FEATURES` and `CATEGORICAL_FEATURES` are the model's inputs; `LABEL` is its target.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from pipewarden.errors import PipewardenError
from pipewarden.flows.warehouse import connect

FEATURES_TABLE = "features_flights"
LABEL = "delayed"
HISTORY_DAYS = 28
NUMERIC_FEATURES: tuple[str, ...] = (
    "dep_hour", "dep_dow", "distance",
    "route_flights_28d", "route_avg_arr_delay_28d", "route_delayed_share_28d",
    "carrier_flights_28d", "carrier_avg_arr_delay_28d", "carrier_delayed_share_28d",
    "temp", "wind_speed", "visib", "precip",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("carrier", "origin")
FEATURES: tuple[str, ...] = (*CATEGORICAL_FEATURES, *NUMERIC_FEATURES)
REQUIRED_MODELS: tuple[str, ...] = ("stg_flights", "route_daily", "carrier_daily", "flights_weather")

FEATURES_SQL = f"""
CREATE OR REPLACE TABLE {FEATURES_TABLE} AS
WITH route_history AS (
    SELECT
        r.origin,
        r.dest,
        r.flight_date,
        SUM(r.flights) OVER w AS flights_28d,
        SUM(r.arr_delay_total) OVER w AS arr_delay_total_28d,
        SUM(r.delayed_total) OVER w AS delayed_total_28d
    FROM route_daily AS r
    WINDOW w AS (
        PARTITION BY r.origin, r.dest ORDER BY r.flight_date
        RANGE BETWEEN INTERVAL {HISTORY_DAYS} DAYS PRECEDING AND INTERVAL 1 DAY PRECEDING
    )
),

carrier_history AS (
    SELECT
        c.carrier,
        c.flight_date,
        SUM(c.flights) OVER w AS flights_28d,
        SUM(c.arr_delay_total) OVER w AS arr_delay_total_28d,
        SUM(c.delayed_total) OVER w AS delayed_total_28d
    FROM carrier_daily AS c
    WINDOW w AS (
        PARTITION BY c.carrier ORDER BY c.flight_date
        RANGE BETWEEN INTERVAL {HISTORY_DAYS} DAYS PRECEDING AND INTERVAL 1 DAY PRECEDING
    )
)

SELECT
    s.flight_id,
    s.load_id,
    s.flight_date,
    s.dep_ts,
    s.carrier,
    s.origin,
    s.dest,
    s.flight,
    s.tailnum,
    s.arr_delay,
    s.arr_delay > 15 AS {LABEL},
    s.hour AS dep_hour,
    ISODOW(s.flight_date) AS dep_dow,
    s.distance,
    COALESCE(rh.flights_28d, 0) AS route_flights_28d,
    rh.arr_delay_total_28d / NULLIF(rh.flights_28d, 0) AS route_avg_arr_delay_28d,
    rh.delayed_total_28d / NULLIF(rh.flights_28d, 0) AS route_delayed_share_28d,
    COALESCE(ch.flights_28d, 0) AS carrier_flights_28d,
    ch.arr_delay_total_28d / NULLIF(ch.flights_28d, 0) AS carrier_avg_arr_delay_28d,
    ch.delayed_total_28d / NULLIF(ch.flights_28d, 0) AS carrier_delayed_share_28d,
    fw.temp,
    fw.wind_speed,
    fw.visib,
    fw.precip
FROM stg_flights AS s
LEFT JOIN route_history AS rh
    ON rh.origin = s.origin AND rh.dest = s.dest AND rh.flight_date = s.flight_date
LEFT JOIN carrier_history AS ch
    ON ch.carrier = s.carrier AND ch.flight_date = s.flight_date
LEFT JOIN flights_weather AS fw
    ON fw.flight_id = s.flight_id
ORDER BY s.dep_ts, s.flight_id
"""


class FeaturesNotReady(PipewardenError):
    """The models the features read are not in the warehouse yet."""


class FeatureResult(BaseModel):
    """What `build_features` wrote."""

    table: str = FEATURES_TABLE
    rows: int
    loads: int
    first_date: str | None
    last_date: str | None
    base_rate: float | None
    elapsed_ms: float


def build_features() -> FeatureResult:
    """Rebuild `features_flights` from the SQL models (one row per flight in stg_flights).

    Raises FeaturesNotReady if a model it reads is missing (run transform first).
    """
    t0 = time.perf_counter()
    with connect() as con:
        present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        missing = [m for m in REQUIRED_MODELS if m not in present]
        if missing:
            raise FeaturesNotReady(
                f"cannot build {FEATURES_TABLE}: the warehouse has no table {', '.join(missing)}",
                hint="run the transform stage first (flows.transform.transform)",
            )
        con.execute("SET TimeZone = 'UTC'")
        con.execute(FEATURES_SQL)
        rows, loads, first, last, rate = con.execute(
            f"SELECT COUNT(*), COUNT(DISTINCT load_id), MIN(flight_date), MAX(flight_date), AVG({LABEL}::DOUBLE) "
            f"FROM {FEATURES_TABLE}"
        ).fetchone()  # type: ignore[misc]
    return FeatureResult(
        rows=int(rows), loads=int(loads), first_date=str(first) if first else None,
        last_date=str(last) if last else None, base_rate=float(rate) if rate is not None else None,
        elapsed_ms=round((time.perf_counter() - t0) * 1000, 3),
    )
