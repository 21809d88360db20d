-- Customer lifetime value: the 100 customers with the highest historical value (total spent over
-- all their orders), with orders, average order value, first and last purchase, lifespan in
-- days (last - first purchase) and their segments. Ties: customer_id.
SELECT
    m.customer_id,
    c.full_name,
    m.customer_segment,
    m.rfm_segment,
    m.transactions                                  AS orders,
    m.total_spent                                   AS lifetime_value,
    m.avg_order_value,
    m.first_purchase_date,
    m.last_purchase_date,
    m.last_purchase_date - m.first_purchase_date    AS lifespan_days
FROM warehouse.agg_customer_metrics m
JOIN warehouse.dim_customers c ON c.customer_id = m.customer_id AND c.is_current
ORDER BY m.total_spent DESC, m.customer_id
LIMIT 100
