-- agg_order_category_sets_all_dates: agg_order_category_sets summed over every order date (per
-- set of categories x state x segment x payment method), what the dashboard reads when the
-- range covers every date. Runs after agg_order_category_sets.sql, from what it left, as
-- agg_sales_slices_all_dates.sql does: a full rebuild sums the whole table; otherwise the
-- touched dates' new rows, less their old ones (_agg_sets_replaced), plus the segment moves on
-- other dates (_agg_set_delta) are grouped with the stored rows and written back. Parameter: full.

DROP TABLE IF EXISTS _agg_all_dates_sets;

INSERT INTO warehouse.agg_order_category_sets_all_dates (
    categories, state, customer_segment, payment_method_key, orders
)
SELECT categories, state, customer_segment, payment_method_key, sum(orders)
FROM warehouse.agg_order_category_sets
WHERE %(full)s
GROUP BY categories, state, customer_segment, payment_method_key;

-- ── incremental: the stored sums with the change of agg_order_category_sets ─────────────────
CREATE TEMP TABLE _agg_all_dates_sets ON COMMIT DROP AS
SELECT categories, state, customer_segment, payment_method_key, sum(orders) AS orders
FROM (
    SELECT categories, state, customer_segment, payment_method_key, orders
    FROM warehouse.agg_order_category_sets_all_dates
    UNION ALL
    SELECT categories, state, customer_segment, payment_method_key, orders
    FROM warehouse.agg_order_category_sets
    WHERE date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates))
    UNION ALL
    SELECT categories, state, customer_segment, payment_method_key, -orders
    FROM _agg_sets_replaced
    UNION ALL
    SELECT categories, state, customer_segment, payment_method_key, orders
    FROM _agg_set_delta
) x
WHERE NOT %(full)s
GROUP BY categories, state, customer_segment, payment_method_key
HAVING sum(orders) <> 0;

DELETE FROM warehouse.agg_order_category_sets_all_dates WHERE NOT %(full)s;

INSERT INTO warehouse.agg_order_category_sets_all_dates (
    categories, state, customer_segment, payment_method_key, orders
)
SELECT categories, state, customer_segment, payment_method_key, orders
FROM _agg_all_dates_sets;

SELECT count(*) AS sets FROM _agg_all_dates_sets;
