-- Revenue per day and country, from order_facts.
SELECT order_date, country, COUNT(*) AS orders, SUM(amount) AS revenue
FROM order_facts
GROUP BY order_date, country
