-- agg_order_category_sets_any_state: agg_order_category_sets summed over states (per day x set
-- of categories x segment x payment method), what the dashboard reads when no state is selected.
-- Runs after agg_order_category_sets.sql, from what it left: the touched dates are deleted and
-- grouped again from agg_order_category_sets; the segment moves on other dates (_agg_set_delta)
-- are summed over states and added to the stored rows. Parameter: full (every date).

DROP TABLE IF EXISTS _agg_any_state_set_delta, _agg_any_state_sets_moved;

DELETE FROM warehouse.agg_order_category_sets_any_state
WHERE %(full)s OR date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates));

INSERT INTO warehouse.agg_order_category_sets_any_state (
    date_key, categories, customer_segment, payment_method_key, orders
)
SELECT date_key, categories, customer_segment, payment_method_key, sum(orders)
FROM warehouse.agg_order_category_sets
WHERE %(full)s OR date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates))
GROUP BY date_key, categories, customer_segment, payment_method_key
-- stored in date order, so that a range of days reads its own pages
ORDER BY date_key;

-- ── segment moves (incremental only; none on a full rebuild) ─────────────────────────────────
CREATE TEMP TABLE _agg_any_state_set_delta ON COMMIT DROP AS
SELECT date_key, categories, customer_segment, payment_method_key, sum(orders) AS orders,
       row_number() OVER () AS delta_id
FROM _agg_set_delta
GROUP BY date_key, categories, customer_segment, payment_method_key;

ANALYZE _agg_any_state_set_delta (date_key, categories, customer_segment, payment_method_key);

-- added in place to the stored rows of its keys (HOT updates, as in agg_order_category_sets.sql),
-- found by the whole key in the key index: a moved order's segments are never NULL (both are
-- agg_customer_totals' segments)
CREATE TEMP TABLE _agg_any_state_sets_moved ON COMMIT DROP AS
WITH updated AS (
    UPDATE warehouse.agg_order_category_sets_any_state t
    SET orders = t.orders + d.orders
    FROM _agg_any_state_set_delta d
    WHERE t.date_key = d.date_key
      AND t.payment_method_key = d.payment_method_key
      AND t.categories = d.categories
      AND t.customer_segment = d.customer_segment
    RETURNING d.delta_id, t.ctid AS row_ctid, t.orders
)
SELECT * FROM updated;

INSERT INTO warehouse.agg_order_category_sets_any_state (
    date_key, categories, customer_segment, payment_method_key, orders
)
SELECT d.date_key, d.categories, d.customer_segment, d.payment_method_key, d.orders
FROM _agg_any_state_set_delta d
WHERE d.orders <> 0
  AND NOT EXISTS (SELECT 1 FROM _agg_any_state_sets_moved u WHERE u.delta_id = d.delta_id);

-- rows whose every order moved to another segment: the row versions the update wrote (as in
-- agg_sales_slices.sql)
DELETE FROM warehouse.agg_order_category_sets_any_state t
USING _agg_any_state_sets_moved e
WHERE e.orders = 0 AND t.ctid = e.row_ctid;

SELECT count(*) AS merged_keys FROM _agg_any_state_set_delta;
