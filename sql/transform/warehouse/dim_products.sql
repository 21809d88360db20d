-- dim_products: SCD type 2 merge of production.products (rules: docs/warehouse.md).
-- Parameters: full_refresh (compare every production row, not only those changed since the
-- last merge), first_from (effective_from of a product's first version).
-- A version overwritten in place (inferred member completed, same-day change) re-costs the facts
-- that point at it, and queues their keys for the aggregates.
-- Returns one row: new, changed (new version), overwritten, candidates, facts re-costed.

-- ── import: production rows written since the last merge (all on --full-refresh) ─────────────
DROP TABLE IF EXISTS _wh_src_products;
CREATE TEMP TABLE _wh_src_products ON COMMIT DROP AS
SELECT
    p.product_id,
    p.product_name,
    p.category,
    p.sub_category,
    p.brand,
    p.price,
    p.cost,
    p.price_category,
    p._batch_id,
    p.updated_at
FROM production.products p
WHERE %(full_refresh)s
   OR p.updated_at > coalesce(
        (SELECT w.updated_at FROM ops.warehouse_watermarks w
          WHERE w.source_table = 'production.products'),
        '-infinity');

-- ── logic: what differs from the current version, and the day the change takes effect ──────
DROP TABLE IF EXISTS _wh_chg_products;
CREATE TEMP TABLE _wh_chg_products ON COMMIT DROP AS
SELECT
    s.*,
    h.row_hash,
    d.product_key     AS current_key,
    d.effective_from  AS current_from,
    d.is_inferred     AS current_inferred,
    -- the batch's business date; else the last order date of that batch; else the load date
    coalesce(
        b.business_date,
        (SELECT max(t.transaction_date) FROM production.transactions t
          WHERE t._batch_id = s._batch_id),
        (s.updated_at AT TIME ZONE 'UTC')::date
    )                 AS change_date
FROM _wh_src_products s
CROSS JOIN LATERAL (
    SELECT md5(row(s.product_name, s.category, s.sub_category, s.brand, s.price, s.cost,
                   s.price_category)::text) AS row_hash
) h
LEFT JOIN warehouse.dim_products d ON d.product_id = s.product_id AND d.is_current
LEFT JOIN ops.batches b ON b.batch_id = s._batch_id
WHERE d.product_key IS NULL OR d._row_hash <> h.row_hash;

-- ── overwrite in place: an inferred member completed, a second change on the same day, or a
--    batch older than the current version; facts of that version get its (new) cost ──────────
WITH overwritten AS (
    UPDATE warehouse.dim_products d
    SET product_name = c.product_name,
        category = c.category,
        sub_category = c.sub_category,
        brand = c.brand,
        price = c.price,
        cost = c.cost,
        price_category = c.price_category,
        is_inferred = false,
        _row_hash = c.row_hash,
        _batch_id = c._batch_id,
        _loaded_at = now()
    FROM _wh_chg_products c
    WHERE d.product_key = c.current_key
      AND (c.current_inferred OR c.change_date <= c.current_from)
    RETURNING d.product_key, d.product_id, d.cost
),
recosted AS (
    UPDATE warehouse.fact_sales f
    SET cost_amount = f.quantity * o.cost,
        profit = f.line_total - f.quantity * o.cost
    FROM overwritten o
    WHERE f.product_key = o.product_key
      AND f.cost_amount <> f.quantity * o.cost
    RETURNING f.date_key, f.customer_key, o.product_id
)
INSERT INTO ops.warehouse_refresh_queue (date_key, customer_id, product_id)
SELECT DISTINCT r.date_key, dc.customer_id, r.product_id
FROM recosted r
JOIN warehouse.dim_customers dc ON dc.customer_key = r.customer_key;

-- ── close the current version on the day the change takes effect ───────────────────────────
UPDATE warehouse.dim_products d
SET effective_to = c.change_date,
    is_current = false
FROM _wh_chg_products c
WHERE d.product_key = c.current_key
  AND NOT c.current_inferred
  AND c.change_date > c.current_from;

-- ── open the new version (a new product's first version starts at first_from) ──────────────
INSERT INTO warehouse.dim_products (
    product_id, product_name, category, sub_category, brand, price, cost, price_category,
    effective_from, effective_to, is_current, is_inferred, _row_hash, _batch_id
)
SELECT
    c.product_id, c.product_name, c.category, c.sub_category, c.brand, c.price, c.cost,
    c.price_category,
    CASE WHEN c.current_key IS NULL THEN %(first_from)s::date ELSE c.change_date END,
    DATE '9999-12-31', true, false, c.row_hash, c._batch_id
FROM _wh_chg_products c
WHERE c.current_key IS NULL
   OR (NOT c.current_inferred AND c.change_date > c.current_from)
ORDER BY c.product_id;

-- ── watermark: the production rows looked at ────────────────────────────────────────────────
INSERT INTO ops.warehouse_watermarks (source_table, updated_at)
SELECT 'production.products', max(updated_at) FROM _wh_src_products
HAVING max(updated_at) IS NOT NULL
ON CONFLICT (source_table) DO UPDATE
SET updated_at = greatest(ops.warehouse_watermarks.updated_at, EXCLUDED.updated_at);

SELECT
    count(*) FILTER (WHERE current_key IS NULL)                                        AS new,
    count(*) FILTER (WHERE NOT current_inferred AND change_date > current_from)        AS changed,
    count(*) FILTER (WHERE current_inferred OR change_date <= current_from)            AS overwritten,
    (SELECT count(*) FROM _wh_src_products)                                            AS candidates
FROM _wh_chg_products;
