-- Revenue per customer state (the customers' current state; missing = 'Unknown'): customers,
-- orders, revenue, average order value (revenue / orders) and share of all revenue.
SELECT
    coalesce(c.country, 'Unknown')                                       AS country,
    coalesce(c.state, 'Unknown')                                         AS state,
    count(*)                                                             AS customers,
    sum(m.transactions)                                                  AS orders,
    sum(m.total_spent)                                                   AS revenue,
    round(sum(m.total_spent) / nullif(sum(m.transactions), 0), 2)        AS avg_order_value,
    round(sum(m.total_spent) * 100 / nullif(sum(sum(m.total_spent)) OVER (), 0), 2)
                                                                         AS revenue_share_pct
FROM warehouse.agg_customer_metrics m
JOIN warehouse.dim_customers c ON c.customer_id = m.customer_id AND c.is_current
GROUP BY 1, 2
ORDER BY revenue DESC, country, state
