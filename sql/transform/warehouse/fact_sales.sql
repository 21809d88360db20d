-- fact_sales: insert the candidate order lines (_wh_items) not yet in the fact, and update the
-- ones whose values changed in production; each line takes the dimension versions valid on its
-- order date. A customer or product never seen before gets an inferred member first (completed in
-- place by dim_customers.sql / dim_products.sql when its row arrives), so no line is lost.
-- The keys of every inserted or changed line (old and new) are queued for the aggregates.
-- Parameters: full_refresh (the fact is empty: every line is inserted straight from the join,
-- no keys are queued, the aggregates are rebuilt), first_from.
-- Returns one row: inserted, updated, inferred customers, inferred products, queued keys,
-- orphan lines (written lines whose keys have no dimension row: the stage fails on any).

-- ── inferred members ─────────────────────────────────────────────────────────────────────────
DROP TABLE IF EXISTS _wh_inferred;
CREATE TEMP TABLE _wh_inferred (kind text) ON COMMIT DROP;

WITH added AS (
    INSERT INTO warehouse.dim_customers (
        customer_id, effective_from, effective_to, is_current, is_inferred, _row_hash, _batch_id
    )
    SELECT i.customer_id, %(first_from)s::date, DATE '9999-12-31', true, true, 'inferred',
           min(i._batch_id)
    FROM _wh_items i
    WHERE NOT EXISTS (SELECT 1 FROM warehouse.dim_customers d WHERE d.customer_id = i.customer_id)
    GROUP BY i.customer_id
    ORDER BY i.customer_id
    RETURNING 1
)
INSERT INTO _wh_inferred SELECT 'customer' FROM added;

WITH added AS (
    INSERT INTO warehouse.dim_products (
        product_id, effective_from, effective_to, is_current, is_inferred, _row_hash, _batch_id
    )
    SELECT i.product_id, %(first_from)s::date, DATE '9999-12-31', true, true, 'inferred',
           min(i._batch_id)
    FROM _wh_items i
    WHERE NOT EXISTS (SELECT 1 FROM warehouse.dim_products d WHERE d.product_id = i.product_id)
    GROUP BY i.product_id
    ORDER BY i.product_id
    RETURNING 1
)
INSERT INTO _wh_inferred SELECT 'product' FROM added;

-- ── watermarks: the production rows looked at ───────────────────────────────────────────────
INSERT INTO ops.warehouse_watermarks (source_table, updated_at)
SELECT w.source_table, w.updated_at
FROM (SELECT max(item_updated_at) AS items, max(transaction_updated_at) AS transactions
      FROM _wh_items) AS m
CROSS JOIN LATERAL (VALUES ('production.transaction_items', m.items),
                           ('production.transactions', m.transactions)) AS w (source_table, updated_at)
WHERE w.updated_at IS NOT NULL
ON CONFLICT (source_table) DO UPDATE
SET updated_at = greatest(ops.warehouse_watermarks.updated_at, EXCLUDED.updated_at);

-- ── resolve the keys and derive the measures ───────────────────────────────────────────────
DROP VIEW IF EXISTS pg_temp._wh_resolved;
CREATE TEMP VIEW _wh_resolved AS
SELECT
    i.item_id,
    coalesce(dd.date_key, -1)             AS date_key,
    coalesce(dc.customer_key, -1)         AS customer_key,
    coalesce(dp.product_key, -1)          AS product_key,
    coalesce(pm.payment_method_key, -1)   AS payment_method_key,
    i.transaction_id,
    i.quantity,
    i.unit_price,
    i.discount_percentage,
    i.quantity * i.unit_price - i.line_total         AS discount_amount,
    i.quantity * i.unit_price                        AS gross_amount,
    i.line_total,
    coalesce(dp.cost, 0) * i.quantity                AS cost_amount,
    i.line_total - coalesce(dp.cost, 0) * i.quantity AS profit,
    i._batch_id,
    i.customer_id,
    i.product_id
FROM _wh_items i
LEFT JOIN warehouse.dim_date dd
       ON dd.full_date = i.transaction_date
LEFT JOIN warehouse.dim_customers dc
       ON dc.customer_id = i.customer_id
      AND i.transaction_date >= dc.effective_from AND i.transaction_date < dc.effective_to
LEFT JOIN warehouse.dim_products dp
       ON dp.product_id = i.product_id
      AND i.transaction_date >= dp.effective_from AND i.transaction_date < dp.effective_to
LEFT JOIN warehouse.dim_payment_method pm
       ON pm.payment_method_name = i.payment_method;

-- ── unless the fact is empty, keep what changes: new lines, and existing lines whose values
-- differ (with their previous keys: the old date, customer and product need a refresh of the
-- aggregates too) ─────────────────────────────────────────────────────────────────────────────
DROP TABLE IF EXISTS _wh_changes;
CREATE TEMP TABLE _wh_changes ON COMMIT DROP AS
SELECT
    r.*,
    f.item_id IS NULL AS is_new,
    f.date_key AS previous_date_key,
    pc.customer_id AS previous_customer_id,
    pp.product_id AS previous_product_id
FROM _wh_resolved r
-- one index lookup per candidate line: a hash join would read the whole fact for a day's batch
LEFT JOIN LATERAL (
    SELECT f.* FROM warehouse.fact_sales f
    WHERE f.item_id = r.item_id
    LIMIT 1
) f ON true
LEFT JOIN warehouse.dim_customers pc ON pc.customer_key = f.customer_key
LEFT JOIN warehouse.dim_products pp ON pp.product_key = f.product_key
WHERE NOT %(full_refresh)s
  AND (f.item_id IS NULL
       OR (f.date_key, f.customer_key, f.product_key, f.payment_method_key, f.transaction_id,
           f.quantity, f.unit_price, f.discount_percentage, f.line_total, f.cost_amount)
          IS DISTINCT FROM
          (r.date_key, r.customer_key, r.product_key, r.payment_method_key, r.transaction_id,
           r.quantity, r.unit_price, r.discount_percentage, r.line_total, r.cost_amount));

-- ── insert the new lines (an empty fact, full_refresh: every candidate, straight from the
-- join, without the temp table), update the changed ones. One run at a time holds the pipeline
-- lock, so a plain insert cannot meet a concurrent one; no speculative insertion needed ──────
INSERT INTO warehouse.fact_sales (
    date_key, customer_key, product_key, payment_method_key, transaction_id, item_id,
    quantity, unit_price, discount_percentage, discount_amount, gross_amount, line_total,
    cost_amount, profit, _batch_id
)
SELECT
    n.date_key, n.customer_key, n.product_key, n.payment_method_key, n.transaction_id,
    n.item_id, n.quantity, n.unit_price, n.discount_percentage, n.discount_amount,
    n.gross_amount, n.line_total, n.cost_amount, n.profit, n._batch_id
FROM (
    SELECT r.date_key, r.customer_key, r.product_key, r.payment_method_key, r.transaction_id,
           r.item_id, r.quantity, r.unit_price, r.discount_percentage, r.discount_amount,
           r.gross_amount, r.line_total, r.cost_amount, r.profit, r._batch_id
    FROM _wh_resolved r WHERE %(full_refresh)s
    UNION ALL
    SELECT c.date_key, c.customer_key, c.product_key, c.payment_method_key, c.transaction_id,
           c.item_id, c.quantity, c.unit_price, c.discount_percentage, c.discount_amount,
           c.gross_amount, c.line_total, c.cost_amount, c.profit, c._batch_id
    FROM _wh_changes c WHERE c.is_new
) n;

UPDATE warehouse.fact_sales AS f
SET date_key = c.date_key,
    customer_key = c.customer_key,
    product_key = c.product_key,
    payment_method_key = c.payment_method_key,
    transaction_id = c.transaction_id,
    quantity = c.quantity,
    unit_price = c.unit_price,
    discount_percentage = c.discount_percentage,
    discount_amount = c.discount_amount,
    gross_amount = c.gross_amount,
    line_total = c.line_total,
    cost_amount = c.cost_amount,
    profit = c.profit,
    _batch_id = c._batch_id,
    _loaded_at = now()
FROM _wh_changes c
WHERE NOT c.is_new AND f.item_id = c.item_id;

-- ── queue the keys of what changed, unless the aggregates are rebuilt: an inserted line with
-- its item_id (its sums are added to the aggregates of its keys), a changed line's old and new
-- keys without (those keys are recomputed) ───────────────────────────────────────────────────
DROP TABLE IF EXISTS _wh_queued;
CREATE TEMP TABLE _wh_queued ON COMMIT DROP AS
WITH queued AS (
    INSERT INTO ops.warehouse_refresh_queue (date_key, customer_id, product_id, item_id)
    SELECT k.date_key, k.customer_id, k.product_id, k.item_id
    FROM (
        SELECT c.date_key, c.customer_id, c.product_id, c.item_id
        FROM _wh_changes c WHERE c.is_new
        UNION ALL
        SELECT DISTINCT x.date_key, x.customer_id, x.product_id, NULL::text
        FROM _wh_changes c
        CROSS JOIN LATERAL (VALUES (c.date_key, c.customer_id, c.product_id),
                                   (c.previous_date_key, c.previous_customer_id,
                                    c.previous_product_id)) x (date_key, customer_id, product_id)
        WHERE NOT c.is_new
    ) k
    WHERE NOT %(full_refresh)s
    RETURNING 1
)
SELECT count(*) AS keys FROM queued;

-- (no data-modifying part in this last statement, so that the orphan check's pass over a full
-- refresh's fact can run in parallel workers)
SELECT
    CASE WHEN %(full_refresh)s THEN (SELECT count(*) FROM _wh_items)
         ELSE (SELECT count(*) FROM _wh_changes WHERE is_new) END      AS inserted,
    (SELECT count(*) FROM _wh_changes WHERE NOT is_new)               AS updated,
    (SELECT count(*) FROM _wh_inferred WHERE kind = 'customer')       AS inferred_customers,
    (SELECT count(*) FROM _wh_inferred WHERE kind = 'product')        AS inferred_products,
    (SELECT keys FROM _wh_queued)                                     AS queued_keys,
    -- lines written here with a key that no dimension row has: none can be (each key comes
    -- from its dimension or is -1, the unknown member), but on PostgreSQL 18+ no foreign key
    -- trigger checks it (50_warehouse.sql), so this query does, for the stage to fail on any:
    -- the fact of a full refresh, or the written lines, joined to the four dimensions. The
    -- fact is counted apart from the temporary table, which workers cannot read: at 10M lines
    -- 4.2 s in two workers; as NOT EXISTS per line (hashed subplans) 8.0 s in one process
    (SELECT count(*)
     FROM warehouse.fact_sales w
     LEFT JOIN warehouse.dim_date d ON d.date_key = w.date_key
     LEFT JOIN warehouse.dim_customers c ON c.customer_key = w.customer_key
     LEFT JOIN warehouse.dim_products p ON p.product_key = w.product_key
     LEFT JOIN warehouse.dim_payment_method m ON m.payment_method_key = w.payment_method_key
     WHERE %(full_refresh)s
       AND (d.date_key IS NULL OR c.customer_key IS NULL OR p.product_key IS NULL
            OR m.payment_method_key IS NULL))
    + (SELECT count(*)
       FROM _wh_changes w
       LEFT JOIN warehouse.dim_date d ON d.date_key = w.date_key
       LEFT JOIN warehouse.dim_customers c ON c.customer_key = w.customer_key
       LEFT JOIN warehouse.dim_products p ON p.product_key = w.product_key
       LEFT JOIN warehouse.dim_payment_method m ON m.payment_method_key = w.payment_method_key
       WHERE d.date_key IS NULL OR c.customer_key IS NULL OR p.product_key IS NULL
          OR m.payment_method_key IS NULL)                            AS orphan_lines;
