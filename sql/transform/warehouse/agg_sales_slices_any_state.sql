-- agg_sales_slices_any_state: agg_sales_slices summed over states (per day x category x segment
-- x payment method), what the dashboard reads when no state is selected. Runs after
-- agg_sales_slices.sql, from what it left: the touched dates are deleted and grouped again from
-- agg_sales_slices; the segment moves on other dates (_agg_slice_delta) are summed over states
-- and merged into the stored rows, as agg_sales_slices merges them. Parameter: full (every date,
-- from the whole of agg_sales_slices).

DROP TABLE IF EXISTS _agg_any_state_delta, _agg_any_state_merged;

DELETE FROM warehouse.agg_sales_slices_any_state
WHERE %(full)s OR date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates));

INSERT INTO warehouse.agg_sales_slices_any_state (
    date_key, category, customer_segment, payment_method_key, lines, quantity, revenue, profit,
    orders, orders_first
)
SELECT date_key, category, customer_segment, payment_method_key, sum(lines), sum(quantity),
       sum(revenue), sum(profit), sum(orders), sum(orders_first)
FROM warehouse.agg_sales_slices
WHERE %(full)s OR date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates))
GROUP BY date_key, category, customer_segment, payment_method_key;

-- ── segment moves (incremental only; none on a full rebuild) ─────────────────────────────────
CREATE TEMP TABLE _agg_any_state_delta ON COMMIT DROP AS
SELECT date_key, category, customer_segment, payment_method_key, sum(lines) AS lines,
       sum(quantity) AS quantity, sum(revenue) AS revenue, sum(profit) AS profit,
       sum(orders) AS orders, sum(orders_first) AS orders_first
FROM _agg_slice_delta
GROUP BY date_key, category, customer_segment, payment_method_key;

ANALYZE _agg_any_state_delta (date_key, category, customer_segment, payment_method_key);

CREATE TEMP TABLE _agg_any_state_merged ON COMMIT DROP AS
WITH removed AS (
    DELETE FROM warehouse.agg_sales_slices_any_state t
    USING _agg_any_state_delta d
    WHERE t.date_key = d.date_key
      AND t.payment_method_key = d.payment_method_key
      AND t.category IS NOT DISTINCT FROM d.category
      AND t.customer_segment IS NOT DISTINCT FROM d.customer_segment
    RETURNING t.*
)
SELECT date_key, category, customer_segment, payment_method_key, sum(lines) AS lines,
       sum(quantity) AS quantity, sum(revenue) AS revenue, sum(profit) AS profit,
       sum(orders) AS orders, sum(orders_first) AS orders_first
FROM (
    SELECT date_key, category, customer_segment, payment_method_key, lines, quantity, revenue,
           profit, orders, orders_first
    FROM removed
    UNION ALL
    SELECT date_key, category, customer_segment, payment_method_key, lines, quantity, revenue,
           profit, orders, orders_first
    FROM _agg_any_state_delta
) x
GROUP BY date_key, category, customer_segment, payment_method_key;

INSERT INTO warehouse.agg_sales_slices_any_state (
    date_key, category, customer_segment, payment_method_key, lines, quantity, revenue, profit,
    orders, orders_first
)
SELECT date_key, category, customer_segment, payment_method_key, lines, quantity, revenue,
       profit, orders, orders_first
FROM _agg_any_state_merged
WHERE lines <> 0;

SELECT count(*) AS merged_keys FROM _agg_any_state_merged;
