-- agg_daily_sales: delete the touched dates, insert them again from fact_sales.
-- First builds _agg_order_cat, the one pass over the fact that the date-keyed aggregates share
-- (agg_daily_sales, agg_payment_method_daily, agg_sales_slices) and that a full rebuild also
-- sums agg_customer_totals, agg_monthly_cohorts and agg_customer_slices from: one row per order
-- x category of the touched dates (every date with full), with the order's customer, state and
-- payment method, its lines' sums, and is_first: true on exactly one row per order, that of its
-- first category (the smallest in byte order; NULL only when none of its lines has one). Counting is_first
-- rows counts distinct orders with hash aggregates, no per-group sort of every line.
-- Parameter: full (every date). Returns the rows inserted.

DROP TABLE IF EXISTS _agg_order_cat;

CREATE TEMP TABLE _agg_order_cat ON COMMIT DROP AS
SELECT x.*,
       x.category IS NOT DISTINCT FROM
           min(x.category) OVER (PARTITION BY x.date_key, x.transaction_id) AS is_first
FROM (
    -- text keys compared as bytes (COLLATE "C"): the same groups, cheaper comparisons; an
    -- order has one date, so (date_key, transaction_id) is the order and the window below
    -- reuses this grouping's order. date_key + 0: a full rebuild sorts a parallel scan with
    -- hash joins instead of walking the date index with a dimension lookup per line
    SELECT f.date_key + 0 AS date_key, f.transaction_id COLLATE "C" AS transaction_id,
           c.customer_id, c.state COLLATE "C" AS state,
           f.payment_method_key, p.category COLLATE "C" AS category,
           count(*)::integer AS lines, sum(f.quantity) AS quantity,
           sum(f.line_total) AS revenue, sum(f.profit) AS profit
    FROM warehouse.fact_sales f
    JOIN warehouse.dim_products p ON p.product_key = f.product_key
    JOIN warehouse.dim_customers c ON c.customer_key = f.customer_key
    WHERE %(full)s OR f.date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates))
    GROUP BY 1, 2, 3, 4, 5, 6
) x;
ANALYZE _agg_order_cat (date_key, transaction_id, customer_id, state, payment_method_key,
                        category);

DELETE FROM warehouse.agg_daily_sales
WHERE %(full)s OR date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates));

INSERT INTO warehouse.agg_daily_sales (
    date_key, full_date, transactions, items, quantity, revenue, profit, unique_customers,
    avg_order_value
)
SELECT
    s.date_key,
    d.full_date,
    s.transactions,
    s.items,
    s.quantity,
    s.revenue,
    s.profit,
    u.unique_customers,
    round(s.revenue / s.transactions, 2)
FROM (
    SELECT date_key,
           count(*) FILTER (WHERE is_first)::integer AS transactions,
           sum(lines)::integer AS items, sum(quantity) AS quantity,
           sum(revenue) AS revenue, sum(profit) AS profit
    FROM _agg_order_cat
    GROUP BY date_key
) s
JOIN (
    SELECT date_key, count(*)::integer AS unique_customers
    FROM (SELECT DISTINCT date_key, customer_id FROM _agg_order_cat) dc
    GROUP BY date_key
) u ON u.date_key = s.date_key
JOIN warehouse.dim_date d ON d.date_key = s.date_key;
