-- Revenue per customer state (the customers' current state, kept on agg_customer_metrics;
-- missing = 'Unknown'): customers, orders, revenue, average order value (revenue / orders) and
-- share of all revenue.
SELECT
    coalesce(m.country, 'Unknown')                                       AS country,
    coalesce(m.state, 'Unknown')                                         AS state,
    count(*)                                                             AS customers,
    sum(m.transactions)                                                  AS orders,
    sum(m.total_spent)                                                   AS revenue,
    round(sum(m.total_spent) / nullif(sum(m.transactions), 0), 2)        AS avg_order_value,
    round(sum(m.total_spent) * 100 / nullif(sum(sum(m.total_spent)) OVER (), 0), 2)
                                                                         AS revenue_share_pct
FROM warehouse.agg_customer_metrics m
GROUP BY 1, 2
ORDER BY revenue DESC, country, state
