-- agg_order_category_sets: orders with lines in two or more categories, per day x set of
-- categories x state x customer segment x payment method (the keys of agg_sales_slices, with the
-- order's whole set of categories instead of one). With several categories selected, the
-- dashboard counts orders as the sum of agg_sales_slices.orders over the selected categories
-- minus, for each order here, the number of selected categories it holds minus one: each order
-- once, exactly (docs/warehouse.md). Orders with one category need no row: they are counted once.
-- Touched dates are deleted and inserted again from _agg_order_cat (built by agg_daily_sales.sql:
-- one row per order x category of the touched dates, every date with full). Like
-- agg_sales_slices, a touched customer whose segment changed moves its orders on other dates from
-- the old segment's rows to the new one's, as a delta read through the fact's customer index.
-- Segment: the customer's current one, so this runs after agg_customer_totals (and after
-- agg_sales_slices, whose _agg_moved_lines holds the lines of the customers whose segment changed).
-- Parameter: full (every date). Returns the customers whose orders moved.

DROP TABLE IF EXISTS _agg_set_delta, _agg_sets_moved, _agg_sets_replaced;

-- the touched dates' rows, summed over those dates (agg_order_category_sets_all_dates.sql takes
-- them off its sums; empty on a full rebuild, which starts from an emptied table)
CREATE TEMP TABLE _agg_sets_replaced ON COMMIT DROP AS
WITH removed AS (
    DELETE FROM warehouse.agg_order_category_sets
    WHERE %(full)s OR date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates))
    RETURNING categories, state, customer_segment, orders
)
SELECT categories, state, customer_segment, sum(orders) AS orders
FROM removed
GROUP BY categories, state, customer_segment;

INSERT INTO warehouse.agg_order_category_sets (
    date_key, categories, state, customer_segment, payment_method_key, orders
)
SELECT o.date_key, o.categories, o.state, m.customer_segment, o.payment_method_key,
       count(*)::integer
FROM (
    -- an order: its date, customer, state and payment method, and its non-NULL categories
    -- (distinct per order in _agg_order_cat), sorted in byte order
    SELECT s.date_key, s.customer_id, s.state, s.payment_method_key,
           array_agg(s.category ORDER BY s.category) FILTER (WHERE s.category IS NOT NULL)
               AS categories
    FROM _agg_order_cat s
    GROUP BY s.date_key, s.transaction_id, s.customer_id, s.state, s.payment_method_key
    HAVING count(s.category) >= 2
) o
LEFT JOIN warehouse.agg_customer_totals m ON m.customer_id = o.customer_id
GROUP BY o.date_key, o.categories, o.state, m.customer_segment, o.payment_method_key
-- stored in date order, so that a range of days reads its own pages, not every page
ORDER BY o.date_key;

-- ── segment moves (incremental only; the lines of the customers whose segment changed are
-- agg_sales_slices.sql's _agg_moved_lines): orders on untouched dates change segment ────────
CREATE TEMP TABLE _agg_set_delta ON COMMIT DROP AS
WITH moved_orders AS (
    SELECT date_key, state, payment_method_key, old_segment, new_segment,
           array_agg(DISTINCT category ORDER BY category)
               FILTER (WHERE category IS NOT NULL) AS categories
    FROM _agg_moved_lines
    WHERE date_key NOT IN (SELECT date_key FROM _agg_dates)
    GROUP BY date_key, transaction_id, customer_id, state, payment_method_key, old_segment,
             new_segment
    HAVING count(DISTINCT category) >= 2
)
SELECT date_key, categories, state, segment AS customer_segment, payment_method_key,
       sum(sign)::integer AS orders, row_number() OVER () AS delta_id
FROM (
    SELECT moved_orders.*, old_segment AS segment, -1 AS sign FROM moved_orders
    UNION ALL
    SELECT moved_orders.*, new_segment AS segment, 1 AS sign FROM moved_orders
) x
GROUP BY date_key, categories, state, segment, payment_method_key;

-- the delta is added in place to the stored rows of its keys (HOT updates, as in
-- agg_sales_slices.sql): by the whole key in the key index, and for the few keys with a NULL state
-- by the rest of the key, since `IS NOT DISTINCT FROM` cannot be an index condition (a moved
-- order's segments are never NULL: both are agg_customer_totals' segments). The delta rows it
-- added are kept: the others are new keys.
CREATE TEMP TABLE _agg_sets_moved ON COMMIT DROP AS
WITH updated_keys AS (
    UPDATE warehouse.agg_order_category_sets t
    SET orders = t.orders + d.orders
    FROM _agg_set_delta d
    WHERE t.date_key = d.date_key
      AND t.payment_method_key = d.payment_method_key
      AND t.categories = d.categories
      AND t.state = d.state
      AND t.customer_segment = d.customer_segment
    RETURNING d.delta_id, t.ctid AS row_ctid, t.orders
),
updated_nulls AS (
    UPDATE warehouse.agg_order_category_sets t
    SET orders = t.orders + d.orders
    FROM _agg_set_delta d
    WHERE d.state IS NULL
      AND t.date_key = d.date_key
      AND t.payment_method_key = d.payment_method_key
      AND t.categories = d.categories
      AND t.state IS NOT DISTINCT FROM d.state
      AND t.customer_segment = d.customer_segment
    RETURNING d.delta_id, t.ctid AS row_ctid, t.orders
)
SELECT * FROM updated_keys
UNION ALL
SELECT * FROM updated_nulls;

INSERT INTO warehouse.agg_order_category_sets (
    date_key, categories, state, customer_segment, payment_method_key, orders
)
SELECT d.date_key, d.categories, d.state, d.customer_segment, d.payment_method_key, d.orders
FROM _agg_set_delta d
WHERE d.orders <> 0
  AND NOT EXISTS (SELECT 1 FROM _agg_sets_moved u WHERE u.delta_id = d.delta_id);

-- rows whose every order moved to another segment: the row versions the update wrote (as in
-- agg_sales_slices.sql)
DELETE FROM warehouse.agg_order_category_sets t
USING _agg_sets_moved e
WHERE e.orders = 0 AND t.ctid = e.row_ctid;

SELECT count(*) AS moved_customers FROM _agg_seg_moves;
