-- features_flights: one row per flight in stg_flights, with the delay label and point-in-time features; the
-- delay model's features (`[ml_models.delay]` in pipewarden.toml).
-- Point in time: no feature of a flight uses data later than the flight. The history features (per route and per
-- carrier: flights, mean arrival delay and share delayed over 15 minutes) come from the daily models over the 28
-- days that END THE DAY BEFORE the flight, so a flight never sees its own day, whose arrivals are not all known at
-- its departure. Weather is the observation at the origin in the flight's scheduled departure hour. Schedule
-- features (hour, weekday, distance) are known when the flight is booked. The label `delayed` is an arrival more
-- than 15 minutes late.
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
        RANGE BETWEEN INTERVAL 28 DAYS PRECEDING AND INTERVAL 1 DAY PRECEDING
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
        RANGE BETWEEN INTERVAL 28 DAYS PRECEDING AND INTERVAL 1 DAY PRECEDING
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
    s.arr_delay > 15 AS delayed,
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
