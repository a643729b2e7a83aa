-- carrier_daily: one row per carrier per day: flights, planes flown, seats offered, delays.
-- Seats come from raw_planes; flights whose tail number is not in planes add no seats.
SELECT
    s.carrier,
    s.carrier_name,
    s.flight_date,
    COUNT(*) AS flights,
    COUNT(DISTINCT s.tailnum) AS planes,
    SUM(p.seats) AS seats_offered,
    SUM(s.distance) AS miles_flown,
    SUM(s.arr_delay) AS arr_delay_total,
    SUM(CASE WHEN s.is_delayed THEN 1 ELSE 0 END) AS delayed_total,
    AVG(s.arr_delay) AS avg_arr_delay,
    AVG(CASE WHEN s.is_delayed THEN 1.0 ELSE 0.0 END) AS delayed_share,
    AVG(s.dep_delay) AS avg_dep_delay
FROM stg_flights AS s
LEFT JOIN raw_planes AS p
    ON p.tailnum = s.tailnum
GROUP BY s.carrier, s.carrier_name, s.flight_date
