-- stg_flights: one typed, cleaned row per accepted flight, with its carrier's name.
-- Grain: one row per flight_id (date, carrier, flight number, origin). Flights with no arrival delay
-- (cancelled or diverted) or no scheduled hour are dropped; a flight landed twice keeps its latest load.
-- dep_ts is the scheduled local departure; time_hour is the scheduled hour in UTC (joins to weather).
WITH typed AS (
    SELECT
        CAST(f._load_id AS VARCHAR) AS load_id,
        CAST(f.year AS INTEGER) AS year,
        CAST(f.month AS INTEGER) AS month,
        CAST(f.day AS INTEGER) AS day,
        CAST(f.dep_time AS INTEGER) AS dep_time,
        CAST(f.sched_dep_time AS INTEGER) AS sched_dep_time,
        CAST(f.dep_delay AS DOUBLE) AS dep_delay,
        CAST(f.arr_time AS INTEGER) AS arr_time,
        CAST(f.sched_arr_time AS INTEGER) AS sched_arr_time,
        CAST(f.arr_delay AS DOUBLE) AS arr_delay,
        UPPER(TRIM(f.carrier)) AS carrier,
        CAST(f.flight AS INTEGER) AS flight,
        NULLIF(TRIM(f.tailnum), '') AS tailnum,
        UPPER(TRIM(f.origin)) AS origin,
        UPPER(TRIM(f.dest)) AS dest,
        CAST(f.air_time AS DOUBLE) AS air_time,
        CAST(f.distance AS INTEGER) AS distance,
        CAST(f.hour AS INTEGER) AS hour,
        CAST(f.minute AS INTEGER) AS minute,
        TRY_CAST(f.time_hour AS TIMESTAMP) AS time_hour
    FROM raw_flights AS f
),

keyed AS (
    SELECT
        CONCAT_WS('-', STRFTIME(MAKE_DATE(t.year, t.month, t.day), '%Y%m%d'), t.carrier, t.flight, t.origin) AS flight_id,
        t.load_id,
        MAKE_DATE(t.year, t.month, t.day) AS flight_date,
        MAKE_TIMESTAMP(t.year, t.month, t.day, t.hour, t.minute, 0.0) AS dep_ts,
        t.time_hour,
        t.carrier,
        t.flight,
        t.tailnum,
        t.origin,
        t.dest,
        t.sched_dep_time,
        t.dep_time,
        t.dep_delay,
        t.sched_arr_time,
        t.arr_time,
        t.arr_delay,
        t.air_time,
        t.distance,
        t.hour,
        t.minute
    FROM typed AS t
    WHERE t.arr_delay IS NOT NULL
      AND t.time_hour IS NOT NULL
)

SELECT
    k.flight_id,
    k.load_id,
    k.flight_date,
    k.dep_ts,
    k.time_hour,
    k.carrier,
    a.name AS carrier_name,
    k.flight,
    k.tailnum,
    k.origin,
    k.dest,
    k.sched_dep_time,
    k.dep_time,
    k.dep_delay,
    k.sched_arr_time,
    k.arr_time,
    k.arr_delay,
    k.arr_delay > 15 AS is_delayed,
    k.air_time,
    k.distance,
    k.hour,
    k.minute
FROM keyed AS k
LEFT JOIN raw_airlines AS a
    ON a.carrier = k.carrier
QUALIFY ROW_NUMBER() OVER (PARTITION BY k.flight_id ORDER BY k.load_id DESC) = 1
