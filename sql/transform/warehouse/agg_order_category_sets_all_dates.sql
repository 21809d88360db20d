-- agg_order_category_sets_all_dates: agg_order_category_sets summed over every order date and
-- payment method (per set of categories x state x segment), what the dashboard reads when the
-- range covers every date. Runs after agg_order_category_sets.sql, from what it left, as
-- agg_sales_slices_all_dates.sql does: a full rebuild sums the whole table; otherwise the change
-- (the touched dates' new rows, less their old ones, _agg_sets_replaced, plus the segment moves
-- on other dates, _agg_set_delta) is merged into the rows of its keys. Parameter: full.

DROP TABLE IF EXISTS _agg_all_dates_set_merged;

INSERT INTO warehouse.agg_order_category_sets_all_dates (
    categories, state, customer_segment, orders
)
SELECT categories, state, customer_segment, sum(orders)
FROM warehouse.agg_order_category_sets
WHERE %(full)s
GROUP BY categories, state, customer_segment;

-- ── incremental: the change of agg_order_category_sets summed over dates (delta), and the
-- stored rows of its keys taken out (state and segment, which may be NULL, compared as two
-- equalities each, so that the join hashes) and added to it ─────────────────────────────────
CREATE TEMP TABLE _agg_all_dates_set_merged ON COMMIT DROP AS
WITH delta AS (
    SELECT categories, state, customer_segment, sum(orders) AS orders
    FROM (
        SELECT categories, state, customer_segment, orders
        FROM warehouse.agg_order_category_sets
        WHERE date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates))
        UNION ALL
        SELECT categories, state, customer_segment, -orders FROM _agg_sets_replaced
        UNION ALL
        SELECT categories, state, customer_segment, orders FROM _agg_set_delta
    ) x
    WHERE NOT %(full)s
    GROUP BY categories, state, customer_segment
),
removed AS (
    DELETE FROM warehouse.agg_order_category_sets_all_dates t
    USING delta d
    WHERE t.categories = d.categories
      AND coalesce(t.state, '') = coalesce(d.state, '')
      AND (t.state IS NULL) = (d.state IS NULL)
      AND coalesce(t.customer_segment, '') = coalesce(d.customer_segment, '')
      AND (t.customer_segment IS NULL) = (d.customer_segment IS NULL)
    RETURNING t.categories, t.state, t.customer_segment, t.orders
)
SELECT categories, state, customer_segment, sum(orders) AS orders
FROM (SELECT * FROM removed UNION ALL SELECT * FROM delta) x
GROUP BY categories, state, customer_segment;

INSERT INTO warehouse.agg_order_category_sets_all_dates (
    categories, state, customer_segment, orders
)
SELECT categories, state, customer_segment, orders
FROM _agg_all_dates_set_merged
WHERE orders <> 0;

SELECT count(*) AS merged_keys FROM _agg_all_dates_set_merged;
