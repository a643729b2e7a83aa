-- One row per paid or shipped order, with the customer's country.
SELECT o.order_id, o.customer_id, c.country, o.amount, CAST(o.created_at AS DATE) AS order_date
FROM raw_orders AS o
JOIN raw_customers AS c ON c.customer_id = o.customer_id
WHERE o.status IN ('paid', 'shipped')
