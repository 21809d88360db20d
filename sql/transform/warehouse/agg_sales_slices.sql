-- agg_sales_slices: sales per day x category x state x segment x payment method (the slices the
-- dashboard's filters read). Category and state: of the versions the lines point at; segment:
-- the customer's current one, so this runs after agg_customer_totals.
-- Touched dates are deleted and inserted again from fact_sales. A touched customer whose segment
-- changed also has lines on other dates: those lines did not change (a changed line queues its
-- dates), so their sums move from the old segment's slices to the new one's (a delta, read
-- through the fact's customer index) instead of recomputing every date of that customer.
-- Parameter: full (every date).

DROP TABLE IF EXISTS _agg_seg_moves, _agg_moved_lines, _agg_slice_delta, _agg_slices_moved,
                     _agg_slices_replaced;

-- the touched dates' rows, summed over those dates (agg_sales_slices_all_dates.sql takes them off
-- its sums; empty on a full rebuild, which starts from an emptied table)
CREATE TEMP TABLE _agg_slices_replaced ON COMMIT DROP AS
WITH removed AS (
    DELETE FROM warehouse.agg_sales_slices
    WHERE %(full)s OR date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates))
    RETURNING category, state, customer_segment, lines, quantity, revenue, profit, orders,
              orders_first
)
SELECT category, state, customer_segment, sum(lines) AS lines, sum(quantity) AS quantity,
       sum(revenue) AS revenue, sum(profit) AS profit, sum(orders) AS orders,
       sum(orders_first) AS orders_first
FROM removed
GROUP BY category, state, customer_segment;

-- from the per-order rows agg_daily_sales.sql built (_agg_order_cat: one row per order x
-- category): orders = the orders with a line of the slice's category; orders_first = those whose
-- first category it is, so the slices of all categories add up to the distinct orders
INSERT INTO warehouse.agg_sales_slices (
    date_key, category, state, customer_segment, payment_method_key, lines, quantity, revenue,
    profit, orders, orders_first
)
SELECT s.date_key, s.category, s.state, m.customer_segment, s.payment_method_key,
       sum(s.lines), sum(s.quantity), sum(s.revenue), sum(s.profit),
       count(*), count(*) FILTER (WHERE s.is_first)
FROM _agg_order_cat s
LEFT JOIN warehouse.agg_customer_totals m ON m.customer_id = s.customer_id
GROUP BY s.date_key, s.category, s.state, m.customer_segment, s.payment_method_key;

-- ── segment moves (incremental only): lines on untouched dates change slice ────────────────
CREATE TEMP TABLE _agg_seg_moves ON COMMIT DROP AS
SELECT k.customer_id, k.old_segment, m.customer_segment AS new_segment
FROM _agg_customers k
JOIN warehouse.agg_customer_totals m ON m.customer_id = k.customer_id
WHERE NOT %(full)s
  AND k.old_segment IS NOT NULL
  AND k.old_segment IS DISTINCT FROM m.customer_segment;

-- their lines, read once through the fact's customer index; agg_order_category_sets.sql and
-- agg_product_slices.sql move them too
CREATE TEMP TABLE _agg_moved_lines ON COMMIT DROP AS
SELECT f.item_id, f.date_key, f.transaction_id, c.customer_id, p.product_id,
       p.category COLLATE "C" AS category, c.state COLLATE "C" AS state, f.payment_method_key,
       mv.old_segment, mv.new_segment, f.quantity, f.line_total, f.profit
FROM _agg_seg_moves mv
JOIN warehouse.dim_customers c ON c.customer_id = mv.customer_id
JOIN warehouse.fact_sales f ON f.customer_key = c.customer_key
JOIN warehouse.dim_products p ON p.product_key = f.product_key;

ANALYZE _agg_moved_lines (item_id, date_key, transaction_id, customer_id, product_id, category,
                          state, payment_method_key, old_segment, new_segment);

CREATE TEMP TABLE _agg_slice_delta ON COMMIT DROP AS
WITH moved_lines AS (
    SELECT date_key, transaction_id, category, state, payment_method_key, old_segment,
           new_segment, count(*)::integer AS lines, sum(quantity) AS quantity,
           sum(line_total) AS revenue, sum(profit) AS profit
    FROM _agg_moved_lines
    WHERE date_key NOT IN (SELECT date_key FROM _agg_dates)
    GROUP BY 1, 2, 3, 4, 5, 6, 7
),
flagged AS (
    SELECT l.*,
           (l.category IS NOT DISTINCT FROM
                min(l.category) OVER (PARTITION BY l.transaction_id))::integer AS is_first
    FROM moved_lines l
)
SELECT date_key, category, state, segment AS customer_segment, payment_method_key,
       sum(sign * lines)::integer AS lines, sum(sign * quantity) AS quantity,
       sum(sign * revenue) AS revenue, sum(sign * profit) AS profit,
       sum(sign)::integer AS orders, sum(sign * is_first)::integer AS orders_first,
       row_number() OVER () AS delta_id
FROM (
    SELECT flagged.*, old_segment AS segment, -1 AS sign FROM flagged
    UNION ALL
    SELECT flagged.*, new_segment AS segment, 1 AS sign FROM flagged
) x
GROUP BY date_key, category, state, segment, payment_method_key;

ANALYZE _agg_slice_delta (date_key, category, state, customer_segment, payment_method_key);

-- the deltas are added in place to the stored rows of their keys: the sums are not indexed, so on
-- pages the table's fillfactor leaves room on, the new row versions stay on their page without
-- index entries (HOT updates; taking the rows out and inserting them again wrote three index
-- entries per row). The rows are found by the whole key in the key index, and for the few keys
-- with a NULL (an unknown category or state; a moved line's segments are never NULL) by their
-- date, since `IS NOT DISTINCT FROM` cannot be an index condition. The delta rows it added are
-- kept: the others are new keys.
CREATE TEMP TABLE _agg_slices_moved ON COMMIT DROP AS
WITH updated_keys AS (
    UPDATE warehouse.agg_sales_slices t
    SET lines = t.lines + d.lines, quantity = t.quantity + d.quantity,
        revenue = t.revenue + d.revenue, profit = t.profit + d.profit,
        orders = t.orders + d.orders, orders_first = t.orders_first + d.orders_first
    FROM _agg_slice_delta d
    WHERE t.date_key = d.date_key
      AND t.category = d.category
      AND t.state = d.state
      AND t.customer_segment = d.customer_segment
      AND t.payment_method_key = d.payment_method_key
    RETURNING d.delta_id, t.ctid AS row_ctid, t.lines
),
updated_nulls AS (
    UPDATE warehouse.agg_sales_slices t
    SET lines = t.lines + d.lines, quantity = t.quantity + d.quantity,
        revenue = t.revenue + d.revenue, profit = t.profit + d.profit,
        orders = t.orders + d.orders, orders_first = t.orders_first + d.orders_first
    FROM _agg_slice_delta d
    WHERE (d.category IS NULL OR d.state IS NULL)
      AND t.date_key = d.date_key
      AND t.payment_method_key = d.payment_method_key
      AND t.category IS NOT DISTINCT FROM d.category
      AND t.state IS NOT DISTINCT FROM d.state
      AND t.customer_segment = d.customer_segment
    RETURNING d.delta_id, t.ctid AS row_ctid, t.lines
)
SELECT * FROM updated_keys
UNION ALL
SELECT * FROM updated_nulls;

INSERT INTO warehouse.agg_sales_slices (
    date_key, category, state, customer_segment, payment_method_key, lines, quantity, revenue,
    profit, orders, orders_first
)
SELECT d.date_key, d.category, d.state, d.customer_segment, d.payment_method_key, d.lines,
       d.quantity, d.revenue, d.profit, d.orders, d.orders_first
FROM _agg_slice_delta d
WHERE d.lines <> 0
  AND NOT EXISTS (SELECT 1 FROM _agg_slices_moved u WHERE u.delta_id = d.delta_id);

-- rows whose every line moved to another segment: the row versions the update wrote (their
-- ctid, which nothing changes before this statement in the transaction)
DELETE FROM warehouse.agg_sales_slices t
USING _agg_slices_moved e
WHERE e.lines = 0 AND t.ctid = e.row_ctid;

SELECT count(*) AS moved_customers FROM _agg_seg_moves;
