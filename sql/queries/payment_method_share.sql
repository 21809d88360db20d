-- Orders and revenue per payment method, with their shares of all orders and all revenue, and
-- the average order value (revenue / orders).
SELECT
    pm.payment_method_name                                                    AS payment_method,
    pm.payment_type,
    sum(a.transactions)                                                       AS orders,
    round(sum(a.transactions) * 100.0 / nullif(sum(sum(a.transactions)) OVER (), 0), 2)
                                                                              AS orders_pct,
    sum(a.revenue)                                                            AS revenue,
    round(sum(a.revenue) * 100 / nullif(sum(sum(a.revenue)) OVER (), 0), 2)   AS revenue_pct,
    round(sum(a.revenue) / nullif(sum(a.transactions), 0), 2)                 AS avg_order_value
FROM warehouse.agg_payment_method_daily a
JOIN warehouse.dim_payment_method pm ON pm.payment_method_key = a.payment_method_key
GROUP BY pm.payment_method_name, pm.payment_type
ORDER BY revenue DESC, payment_method
