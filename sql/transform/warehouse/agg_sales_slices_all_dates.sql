-- agg_sales_slices_all_dates: agg_sales_slices summed over every order date and payment method
-- (per category x state x segment), what the dashboard reads when the range covers every date.
-- Runs after agg_sales_slices.sql, from what it left: a full rebuild sums the whole of
-- agg_sales_slices; otherwise the change of agg_sales_slices (the touched dates' new rows, less
-- their old ones, _agg_slices_replaced, plus the segment moves on other dates, _agg_slice_delta)
-- is merged into the rows of its keys. Parameter: full.

DROP TABLE IF EXISTS _agg_all_dates_merged;

INSERT INTO warehouse.agg_sales_slices_all_dates (
    category, state, customer_segment, lines, quantity, revenue, profit, orders, orders_first
)
SELECT category, state, customer_segment, sum(lines), sum(quantity),
       sum(revenue), sum(profit), sum(orders), sum(orders_first)
FROM warehouse.agg_sales_slices
WHERE %(full)s
GROUP BY category, state, customer_segment;

-- ── incremental: the change of agg_sales_slices summed over dates (delta), and the stored rows
-- of its keys taken out (category, state and segment, which may be NULL, compared as two
-- equalities each, so that the join hashes) and added to it ─────────────────────────────────
CREATE TEMP TABLE _agg_all_dates_merged ON COMMIT DROP AS
WITH delta AS (
    SELECT category, state, customer_segment, sum(lines) AS lines, sum(quantity) AS quantity,
           sum(revenue) AS revenue, sum(profit) AS profit, sum(orders) AS orders,
           sum(orders_first) AS orders_first
    FROM (
        SELECT category, state, customer_segment, lines, quantity, revenue, profit, orders,
               orders_first
        FROM warehouse.agg_sales_slices
        WHERE date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates))
        UNION ALL
        SELECT category, state, customer_segment, -lines, -quantity, -revenue, -profit, -orders,
               -orders_first
        FROM _agg_slices_replaced
        UNION ALL
        SELECT category, state, customer_segment, lines, quantity, revenue, profit, orders,
               orders_first
        FROM _agg_slice_delta
    ) x
    WHERE NOT %(full)s
    GROUP BY category, state, customer_segment
),
removed AS (
    DELETE FROM warehouse.agg_sales_slices_all_dates t
    USING delta d
    WHERE coalesce(t.category, '') = coalesce(d.category, '')
      AND (t.category IS NULL) = (d.category IS NULL)
      AND coalesce(t.state, '') = coalesce(d.state, '')
      AND (t.state IS NULL) = (d.state IS NULL)
      AND coalesce(t.customer_segment, '') = coalesce(d.customer_segment, '')
      AND (t.customer_segment IS NULL) = (d.customer_segment IS NULL)
    RETURNING t.category, t.state, t.customer_segment, t.lines, t.quantity, t.revenue, t.profit,
              t.orders, t.orders_first
)
SELECT category, state, customer_segment, sum(lines) AS lines, sum(quantity) AS quantity,
       sum(revenue) AS revenue, sum(profit) AS profit, sum(orders) AS orders,
       sum(orders_first) AS orders_first
FROM (SELECT * FROM removed UNION ALL SELECT * FROM delta) x
GROUP BY category, state, customer_segment;

INSERT INTO warehouse.agg_sales_slices_all_dates (
    category, state, customer_segment, lines, quantity, revenue, profit, orders, orders_first
)
SELECT category, state, customer_segment, lines, quantity, revenue, profit, orders, orders_first
FROM _agg_all_dates_merged
WHERE lines <> 0;

SELECT count(*) AS merged_keys FROM _agg_all_dates_merged;
