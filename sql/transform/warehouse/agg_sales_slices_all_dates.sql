-- agg_sales_slices_all_dates: agg_sales_slices summed over every order date (per category x
-- state x segment x payment method), what the dashboard reads when the range covers every date.
-- Runs after agg_sales_slices.sql, from what it left: a full rebuild sums the whole of
-- agg_sales_slices; otherwise the change of agg_sales_slices is added to the stored sums: the
-- touched dates' new rows, less their old ones (_agg_slices_replaced), plus the segment moves on
-- other dates (_agg_slice_delta). The table holds a few thousand rows, so they are grouped again
-- with the change and written back. Parameter: full.

DROP TABLE IF EXISTS _agg_all_dates_sums;

INSERT INTO warehouse.agg_sales_slices_all_dates (
    category, state, customer_segment, payment_method_key, lines, quantity, revenue, profit,
    orders, orders_first
)
SELECT category, state, customer_segment, payment_method_key, sum(lines), sum(quantity),
       sum(revenue), sum(profit), sum(orders), sum(orders_first)
FROM warehouse.agg_sales_slices
WHERE %(full)s
GROUP BY category, state, customer_segment, payment_method_key;

-- ── incremental: the stored sums with the change of agg_sales_slices ────────────────────────
CREATE TEMP TABLE _agg_all_dates_sums ON COMMIT DROP AS
SELECT category, state, customer_segment, payment_method_key, sum(lines) AS lines,
       sum(quantity) AS quantity, sum(revenue) AS revenue, sum(profit) AS profit,
       sum(orders) AS orders, sum(orders_first) AS orders_first
FROM (
    SELECT category, state, customer_segment, payment_method_key, lines, quantity, revenue,
           profit, orders, orders_first
    FROM warehouse.agg_sales_slices_all_dates
    UNION ALL
    SELECT category, state, customer_segment, payment_method_key, lines, quantity, revenue,
           profit, orders, orders_first
    FROM warehouse.agg_sales_slices
    WHERE date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates))
    UNION ALL
    SELECT category, state, customer_segment, payment_method_key, -lines, -quantity, -revenue,
           -profit, -orders, -orders_first
    FROM _agg_slices_replaced
    UNION ALL
    SELECT category, state, customer_segment, payment_method_key, lines, quantity, revenue,
           profit, orders, orders_first
    FROM _agg_slice_delta
) x
WHERE NOT %(full)s
GROUP BY category, state, customer_segment, payment_method_key
HAVING sum(lines) <> 0;

DELETE FROM warehouse.agg_sales_slices_all_dates WHERE NOT %(full)s;

INSERT INTO warehouse.agg_sales_slices_all_dates (
    category, state, customer_segment, payment_method_key, lines, quantity, revenue, profit,
    orders, orders_first
)
SELECT category, state, customer_segment, payment_method_key, lines, quantity, revenue, profit,
       orders, orders_first
FROM _agg_all_dates_sums;

SELECT count(*) AS slices FROM _agg_all_dates_sums;
