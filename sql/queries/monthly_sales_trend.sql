-- Sales per calendar month of the order date: orders (distinct transactions), order lines,
-- units, revenue, profit, average order value (revenue / orders) and unique customers (distinct
-- customers with an order in the month; every customer is in exactly one cohort, so the sum of
-- the cohorts' active customers of a month counts each once).
WITH sales AS (
    SELECT
        date_trunc('month', full_date)::date  AS month,
        sum(transactions)                     AS orders,
        sum(items)                            AS items,
        sum(quantity)                         AS quantity,
        sum(revenue)                          AS revenue,
        sum(profit)                           AS profit
    FROM warehouse.agg_daily_sales
    WHERE date_key > 0
    GROUP BY 1
),
customers AS (
    SELECT activity_month AS month, sum(active_customers) AS unique_customers
    FROM warehouse.agg_monthly_cohorts
    GROUP BY 1
)
SELECT
    s.month,
    s.orders,
    s.items,
    s.quantity,
    s.revenue,
    s.profit,
    round(s.revenue / s.orders, 2)    AS avg_order_value,
    coalesce(c.unique_customers, 0)   AS unique_customers
FROM sales s
LEFT JOIN customers c ON c.month = s.month
ORDER BY s.month
