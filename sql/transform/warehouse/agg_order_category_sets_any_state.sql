-- agg_order_category_sets_any_state: agg_order_category_sets summed over states (per day x set
-- of categories x segment x payment method), what the dashboard reads when no state is selected.
-- Runs after agg_order_category_sets.sql, from what it left: the touched dates are deleted and
-- grouped again from agg_order_category_sets; the segment moves on other dates (_agg_set_delta)
-- are summed over states and merged into the stored rows. Parameter: full (every date).

DROP TABLE IF EXISTS _agg_any_state_set_delta, _agg_any_state_set_merged;

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
SELECT date_key, categories, customer_segment, payment_method_key, sum(orders) AS orders
FROM _agg_set_delta
GROUP BY date_key, categories, customer_segment, payment_method_key;

ANALYZE _agg_any_state_set_delta (date_key, categories, customer_segment, payment_method_key);

CREATE TEMP TABLE _agg_any_state_set_merged ON COMMIT DROP AS
WITH removed AS (
    DELETE FROM warehouse.agg_order_category_sets_any_state t
    USING _agg_any_state_set_delta d
    WHERE t.date_key = d.date_key
      AND t.payment_method_key = d.payment_method_key
      AND t.categories = d.categories
      AND t.customer_segment IS NOT DISTINCT FROM d.customer_segment
    RETURNING t.*
)
SELECT date_key, categories, customer_segment, payment_method_key, sum(orders) AS orders
FROM (
    SELECT date_key, categories, customer_segment, payment_method_key, orders FROM removed
    UNION ALL
    SELECT date_key, categories, customer_segment, payment_method_key, orders
    FROM _agg_any_state_set_delta
) x
GROUP BY date_key, categories, customer_segment, payment_method_key;

INSERT INTO warehouse.agg_order_category_sets_any_state (
    date_key, categories, customer_segment, payment_method_key, orders
)
SELECT date_key, categories, customer_segment, payment_method_key, orders
FROM _agg_any_state_set_merged
WHERE orders <> 0;

SELECT count(*) AS merged_keys FROM _agg_any_state_set_merged;
