-- agg_customer_categories: the categories each customer bought, over every order date and
-- state: the categories of its rows of agg_customer_slices_any_category together, so this runs
-- after agg_customer_slices_any_category.sql. A full rebuild groups every row; otherwise the
-- touched customers' rows are grouped again and written where they changed (a customer buying
-- a category it had bought before changes nothing). Parameter: full.

DROP TABLE IF EXISTS _agg_customer_categories;

INSERT INTO warehouse.agg_customer_categories (customer_id, categories)
SELECT a.customer_id, array_agg(DISTINCT u.category ORDER BY u.category)
FROM warehouse.agg_customer_slices_any_category a
CROSS JOIN LATERAL unnest(a.categories) AS u (category)
WHERE %(full)s
GROUP BY a.customer_id;

-- ── incremental: the touched customers (none on a full rebuild) ───────────────────────────────
CREATE TEMP TABLE _agg_customer_categories ON COMMIT DROP AS
SELECT a.customer_id, array_agg(DISTINCT u.category ORDER BY u.category) AS categories
FROM warehouse.agg_customer_slices_any_category a
CROSS JOIN LATERAL unnest(a.categories) AS u (category)
WHERE NOT %(full)s
  AND a.customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers))
GROUP BY a.customer_id;

-- a recomputed customer left with no line of a known category
DELETE FROM warehouse.agg_customer_categories c
WHERE NOT %(full)s
  AND c.customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers WHERE recompute))
  AND NOT EXISTS (SELECT 1 FROM _agg_customer_categories n WHERE n.customer_id = c.customer_id);

UPDATE warehouse.agg_customer_categories c
SET categories = n.categories
FROM _agg_customer_categories n
WHERE c.customer_id = n.customer_id
  AND c.categories <> n.categories;

INSERT INTO warehouse.agg_customer_categories (customer_id, categories)
SELECT n.customer_id, n.categories
FROM _agg_customer_categories n
WHERE NOT EXISTS (SELECT 1 FROM warehouse.agg_customer_categories c
                  WHERE c.customer_id = n.customer_id);

SELECT count(*) AS customers FROM _agg_customer_categories;
