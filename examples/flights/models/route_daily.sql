-- route_daily: one row per origin-dest route per day: flights, arrival delay and the share delayed over 15 min.
-- The *_total columns let downstream windows re-weight averages over several days exactly.
SELECT
    s.origin,
    s.dest,
    ap.name AS dest_name,
    s.flight_date,
    COUNT(*) AS flights,
    SUM(s.arr_delay) AS arr_delay_total,
    SUM(CASE WHEN s.is_delayed THEN 1 ELSE 0 END) AS delayed_total,
    AVG(s.arr_delay) AS avg_arr_delay,
    AVG(CASE WHEN s.is_delayed THEN 1.0 ELSE 0.0 END) AS delayed_share,
    AVG(s.dep_delay) AS avg_dep_delay,
    MAX(s.distance) AS distance
FROM stg_flights AS s
LEFT JOIN raw_airports AS ap
    ON ap.faa = s.dest
GROUP BY s.origin, s.dest, ap.name, s.flight_date
