-- Sales per ISO day of the week of the order date (1 = Monday): days with sales, orders,
-- revenue, average revenue per day with sales, average order value, share of all revenue.
SELECT
    d.day_of_week,
    d.day_name,
    count(*)                                                          AS days_with_sales,
    sum(a.transactions)                                               AS orders,
    sum(a.revenue)                                                    AS revenue,
    round(sum(a.revenue) / count(*), 2)                               AS avg_daily_revenue,
    round(sum(a.revenue) / nullif(sum(a.transactions), 0), 2)         AS avg_order_value,
    round(sum(a.revenue) * 100 / nullif(sum(sum(a.revenue)) OVER (), 0), 2) AS revenue_share_pct
FROM warehouse.agg_daily_sales a
JOIN warehouse.dim_date d ON d.date_key = a.date_key
WHERE a.date_key > 0
GROUP BY d.day_of_week, d.day_name
ORDER BY d.day_of_week
