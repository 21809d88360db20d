-- agg_product_slices: per product x category x customer segment over all dates (category of the
-- product version the lines point at; segment: the customer's current one, so this runs after
-- agg_customer_totals, and after agg_sales_slices, whose moved lines it reads).
-- A product to recompute (agg_refresh_keys.sql) is deleted and summed again from its lines. The
-- other changes are added to the stored rows in place as one delta: the inserted lines of the
-- other products, and the already counted lines of customers whose segment changed, moved from
-- the old segment's rows to the new one's (read through the fact's customer index).
-- Parameter: full (every product, from the fact).

DROP TABLE IF EXISTS _agg_product_delta, _agg_product_updated;

DELETE FROM warehouse.agg_product_slices
WHERE %(full)s
   OR product_id = ANY (ARRAY(SELECT product_id FROM _agg_products WHERE recompute));

INSERT INTO warehouse.agg_product_slices (
    product_id, category, customer_segment, lines, quantity, revenue, profit
)
SELECT x.product_id, x.category, x.customer_segment, sum(x.lines), sum(x.quantity),
       sum(x.revenue), sum(x.profit)
FROM (
    -- full: every line with its customer's segment, looked up in a map of the customer versions
    -- built once (OFFSET 0: not the metrics joined by customer_id to every line), sorted and
    -- summed per product version (a bigint) and segment, then per product. At 10M lines the
    -- lines joined to the dimensions and hashed per product, category and segment took
    -- 25-27 s, this 11.6 s (1.4-1.6 s -> 1.0 s at 1M)
    SELECT p.product_id, p.category, k.customer_segment, k.lines, k.quantity, k.revenue,
           k.profit
    FROM (
        SELECT product_key, customer_segment, count(*) AS lines, sum(quantity) AS quantity,
               sum(line_total) AS revenue, sum(profit) AS profit
        FROM (SELECT f.product_key, s.customer_segment, f.quantity, f.line_total, f.profit
              FROM warehouse.fact_sales f
              JOIN (SELECT c.customer_key, m.customer_segment
                    FROM warehouse.dim_customers c
                    LEFT JOIN warehouse.agg_customer_totals m ON m.customer_id = c.customer_id
                    OFFSET 0) s ON s.customer_key = f.customer_key
              WHERE %(full)s
              ORDER BY 1, 2) AS l
        GROUP BY product_key, customer_segment
    ) k
    JOIN warehouse.dim_products p ON p.product_key = k.product_key
    UNION ALL
    -- a product to recompute: its lines, through the fact's product index
    SELECT p.product_id, p.category, m.customer_segment, 1, f.quantity, f.line_total, f.profit
    FROM warehouse.fact_sales f
    JOIN warehouse.dim_products p ON p.product_key = f.product_key
    JOIN warehouse.dim_customers c ON c.customer_key = f.customer_key
    LEFT JOIN warehouse.agg_customer_totals m ON m.customer_id = c.customer_id
    WHERE NOT %(full)s
      AND f.product_key = ANY (ARRAY(SELECT d.product_key FROM warehouse.dim_products d
                                     JOIN _agg_products t ON t.product_id = d.product_id
                                     WHERE t.recompute))
) x
GROUP BY x.product_id, x.category, x.customer_segment;

-- ── incremental: the delta of the products not recomputed ────────────────────────────────────
CREATE TEMP TABLE _agg_product_delta ON COMMIT DROP AS
SELECT d.product_id, d.category, d.customer_segment, sum(d.lines)::integer AS lines,
       sum(d.quantity) AS quantity, sum(d.revenue) AS revenue, sum(d.profit) AS profit
FROM (
    -- their inserted lines, under their customers' segments after this refresh
    SELECT a.product_id, a.category, m.customer_segment, 1 AS lines, a.quantity,
           a.line_total AS revenue, a.profit
    FROM _agg_added a
    JOIN _agg_products t ON t.product_id = a.product_id AND NOT t.recompute
    LEFT JOIN warehouse.agg_customer_totals m ON m.customer_id = a.customer_id
    WHERE NOT %(full)s
    UNION ALL
    -- their lines counted before, of customers whose segment changed (_agg_moved_lines,
    -- agg_sales_slices.sql; empty on a full rebuild): out of the old segment, into the new one
    SELECT l.product_id, l.category, s.segment, s.sign, s.sign * l.quantity,
           s.sign * l.line_total, s.sign * l.profit
    FROM _agg_moved_lines l
    CROSS JOIN LATERAL (VALUES (l.old_segment, -1), (l.new_segment, 1)) AS s (segment, sign)
    WHERE NOT EXISTS (SELECT 1 FROM _agg_added a WHERE a.item_id = l.item_id)
      AND NOT EXISTS (SELECT 1 FROM _agg_products t
                      WHERE t.product_id = l.product_id AND t.recompute)
) d
GROUP BY d.product_id, d.category, d.customer_segment;

ANALYZE _agg_product_delta (product_id, category, customer_segment);

-- added in place: the sums are not indexed, so on pages the table's fillfactor leaves room on,
-- the new row versions stay on their page without new index entries (HOT updates). The keys it
-- updated are kept: the delta's other keys are new rows (an anti-join of the delta and those
-- keys, not of the delta and the whole table: at 10M lines 0.48 million rows hashed, 81 ms)
CREATE TEMP TABLE _agg_product_updated ON COMMIT DROP AS
WITH updated AS (
    UPDATE warehouse.agg_product_slices t
    SET lines = t.lines + d.lines, quantity = t.quantity + d.quantity,
        revenue = t.revenue + d.revenue, profit = t.profit + d.profit
    FROM _agg_product_delta d
    WHERE t.product_id = d.product_id
      AND t.category IS NOT DISTINCT FROM d.category
      AND t.customer_segment IS NOT DISTINCT FROM d.customer_segment
    RETURNING t.product_id, t.category, t.customer_segment, t.lines
)
SELECT product_id, category, customer_segment, lines FROM updated;

INSERT INTO warehouse.agg_product_slices (
    product_id, category, customer_segment, lines, quantity, revenue, profit
)
SELECT d.product_id, d.category, d.customer_segment, d.lines, d.quantity, d.revenue, d.profit
FROM _agg_product_delta d
WHERE d.lines <> 0
  AND NOT EXISTS (SELECT 1 FROM _agg_product_updated u
                  WHERE u.product_id = d.product_id
                    AND u.category IS NOT DISTINCT FROM d.category
                    AND u.customer_segment IS NOT DISTINCT FROM d.customer_segment);

-- rows whose every line moved to another segment
DELETE FROM warehouse.agg_product_slices t
USING _agg_product_updated e
WHERE e.lines = 0
  AND t.product_id = e.product_id
  AND t.category IS NOT DISTINCT FROM e.category
  AND t.customer_segment IS NOT DISTINCT FROM e.customer_segment;

SELECT count(*) AS delta_keys FROM _agg_product_delta;
