-- agg_customer_categories: the categories each customer bought, over every order date and
-- state: the categories of its rows of agg_customer_slices_any_category together, so this runs
-- after agg_customer_slices_any_category.sql. A full rebuild groups every row. Otherwise a
-- customer to recompute is grouped again from its rows, and a customer with only inserted lines
-- gets the categories of those lines (_agg_customer_slices_added, agg_customer_slices.sql) added
-- to its stored ones; only the rows that change are written (a customer buying a category it
-- had bought before changes nothing). Parameter: full.

DROP TABLE IF EXISTS _agg_customer_categories;

INSERT INTO warehouse.agg_customer_categories (customer_id, categories)
SELECT a.customer_id, array_agg(DISTINCT u.category ORDER BY u.category)
FROM warehouse.agg_customer_slices_any_category a
CROSS JOIN LATERAL unnest(a.categories) AS u (category)
WHERE %(full)s
GROUP BY a.customer_id;

-- ── incremental (none on a full rebuild) ──────────────────────────────────────────────────────
CREATE TEMP TABLE _agg_customer_categories ON COMMIT DROP AS
SELECT a.customer_id, array_agg(DISTINCT u.category ORDER BY u.category) AS categories
FROM warehouse.agg_customer_slices_any_category a
CROSS JOIN LATERAL unnest(a.categories) AS u (category)
WHERE NOT %(full)s
  AND a.customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers WHERE recompute))
GROUP BY a.customer_id
UNION ALL
-- the customers whose inserted lines brought a category they had not bought before
SELECT n.customer_id,
       ARRAY(SELECT DISTINCT c FROM unnest(coalesce(s.categories, '{}') || n.added) AS u (c)
             ORDER BY c)
FROM (
    SELECT customer_id, array_agg(DISTINCT category ORDER BY category) AS added
    FROM _agg_customer_slices_added
    WHERE NOT %(full)s AND category IS NOT NULL
    GROUP BY customer_id
) n
LEFT JOIN warehouse.agg_customer_categories s ON s.customer_id = n.customer_id
WHERE s.customer_id IS NULL OR NOT n.added <@ s.categories;

-- a recomputed customer left with no line of a known category
DELETE FROM warehouse.agg_customer_categories c
WHERE NOT %(full)s
  AND c.customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers WHERE recompute))
  AND NOT EXISTS (SELECT 1 FROM _agg_customer_categories n WHERE n.customer_id = c.customer_id);

-- the stored rows of those customers read through the key index (the array: not a scan of the
-- whole table)
UPDATE warehouse.agg_customer_categories c
SET categories = n.categories
FROM _agg_customer_categories n
WHERE c.customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customer_categories))
  AND c.customer_id = n.customer_id
  AND c.categories <> n.categories;

INSERT INTO warehouse.agg_customer_categories (customer_id, categories)
SELECT n.customer_id, n.categories
FROM _agg_customer_categories n
WHERE NOT EXISTS (SELECT 1 FROM warehouse.agg_customer_categories c
                  WHERE c.customer_id = ANY (ARRAY(SELECT customer_id
                                                   FROM _agg_customer_categories))
                    AND c.customer_id = n.customer_id);

SELECT count(*) AS customers FROM _agg_customer_categories;
