-- flights_weather: each flight with the weather observed at its origin in its scheduled departure hour (UTC).
-- Weather is first reduced to one row per origin and hour (the feed repeats a few hours around DST changes);
-- a flight with no observation for its hour keeps null weather.
WITH hourly_weather AS (
    SELECT
        w.origin,
        TRY_CAST(w.time_hour AS TIMESTAMP) AS time_hour,
        AVG(w.temp) AS temp,
        AVG(w.dewp) AS dewp,
        AVG(w.humid) AS humid,
        AVG(w.wind_speed) AS wind_speed,
        AVG(w.wind_gust) AS wind_gust,
        AVG(w.precip) AS precip,
        AVG(w.pressure) AS pressure,
        AVG(w.visib) AS visib
    FROM raw_weather AS w
    GROUP BY w.origin, TRY_CAST(w.time_hour AS TIMESTAMP)
)

SELECT
    s.flight_id,
    s.load_id,
    s.flight_date,
    s.dep_ts,
    s.time_hour,
    s.origin,
    s.carrier,
    s.arr_delay,
    s.is_delayed,
    hw.temp,
    hw.dewp,
    hw.humid,
    hw.wind_speed,
    hw.wind_gust,
    hw.precip,
    hw.pressure,
    hw.visib
FROM stg_flights AS s
LEFT JOIN hourly_weather AS hw
    ON hw.origin = s.origin
   AND hw.time_hour = s.time_hour
