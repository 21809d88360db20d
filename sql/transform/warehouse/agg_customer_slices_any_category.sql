-- agg_customer_slices_any_category: agg_customer_slices summed over categories (per customer x
-- state), what the dashboard's distinct customers read when no category is selected. Runs after
-- agg_customer_slices.sql, and refreshes the same way from what it left: a customer to recompute
-- (_agg_customers, agg_refresh_keys.sql) is deleted and grouped again from its rows there, read
-- through its key index; a customer with only inserted lines gets their sums
-- (_agg_customer_slices_added, summed over categories) added in place to its rows of those
-- lines' states (or inserted), and its other rows change only when its segment did. categories:
-- the distinct non-NULL categories of the rows summed (sorted: "C" columns sort in byte order).
-- Parameter: full (every customer).

DROP TABLE IF EXISTS _agg_any_category_added, _agg_any_category_updated;

DELETE FROM warehouse.agg_customer_slices_any_category
WHERE %(full)s
   OR customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers WHERE recompute));

INSERT INTO warehouse.agg_customer_slices_any_category (
    customer_id, state, customer_segment, first_purchase_date, last_purchase_date, revenue,
    active_days, categories
)
SELECT customer_id, state, customer_segment, min(first_purchase_date),
       max(last_purchase_date), sum(revenue), range_agg(active_days),
       coalesce(array_agg(DISTINCT category ORDER BY category)
                    FILTER (WHERE category IS NOT NULL), '{}')
FROM warehouse.agg_customer_slices
WHERE %(full)s
   OR customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers WHERE recompute))
GROUP BY customer_id, state, customer_segment;

-- ── customers with only inserted lines (none on a full rebuild): add their sums ──────────────
CREATE TEMP TABLE _agg_any_category_added ON COMMIT DROP AS
SELECT customer_id, state, customer_segment, min(first_purchase_date) AS first_purchase_date,
       max(last_purchase_date) AS last_purchase_date, sum(revenue) AS revenue,
       range_agg(active_days) AS active_days,
       coalesce(array_agg(DISTINCT category ORDER BY category)
                    FILTER (WHERE category IS NOT NULL), '{}') AS categories
FROM _agg_customer_slices_added
GROUP BY customer_id, state, customer_segment;

ANALYZE _agg_any_category_added (customer_id, state, customer_segment);

-- (the keys it updated kept for the insert's anti-join, as in agg_customer_slices.sql)
CREATE TEMP TABLE _agg_any_category_updated ON COMMIT DROP AS
WITH updated AS (
    UPDATE warehouse.agg_customer_slices_any_category s
    SET first_purchase_date = least(s.first_purchase_date, a.first_purchase_date),
        last_purchase_date = greatest(s.last_purchase_date, a.last_purchase_date),
        revenue = s.revenue + a.revenue,
        active_days = s.active_days + a.active_days,
        categories = CASE WHEN a.categories <@ s.categories THEN s.categories
                          ELSE ARRAY(SELECT DISTINCT c
                                     FROM unnest(s.categories || a.categories) AS u (c)
                                     ORDER BY c) END,
        customer_segment = a.customer_segment
    FROM _agg_any_category_added a
    WHERE s.customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers WHERE NOT recompute))
      AND s.customer_id = a.customer_id
      AND s.state IS NOT DISTINCT FROM a.state
    RETURNING s.customer_id, s.state
)
SELECT customer_id, state FROM updated;

INSERT INTO warehouse.agg_customer_slices_any_category (
    customer_id, state, customer_segment, first_purchase_date, last_purchase_date, revenue,
    active_days, categories
)
SELECT a.customer_id, a.state, a.customer_segment, a.first_purchase_date, a.last_purchase_date,
       a.revenue, a.active_days, a.categories
FROM _agg_any_category_added a
WHERE NOT EXISTS (SELECT 1 FROM _agg_any_category_updated u
                  WHERE u.customer_id = a.customer_id
                    AND u.state IS NOT DISTINCT FROM a.state);

-- their other rows: the new segment of the customers whose segment changed (_agg_seg_moves)
UPDATE warehouse.agg_customer_slices_any_category s
SET customer_segment = k.new_segment
FROM _agg_seg_moves k
WHERE s.customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_seg_moves))
  AND s.customer_id = k.customer_id
  AND s.customer_segment IS DISTINCT FROM k.new_segment;

SELECT count(*) AS customers FROM _agg_customers;
