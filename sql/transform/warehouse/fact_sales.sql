-- fact_sales: insert the candidate order lines (_wh_items) not yet in the fact, and update the
-- ones whose values changed in production; each line takes the dimension versions valid on its
-- order date. A customer or product never seen before gets an inferred member first (completed in
-- place by dim_customers.sql / dim_products.sql when its row arrives), so no line is lost.
-- The keys of every inserted or changed line (old and new) are queued for the aggregates.
-- Parameters: full_refresh (do not queue keys: the aggregates are rebuilt), first_from.
-- Returns one row: inserted, updated, inferred customers, inferred products.

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

-- ── resolve the keys and derive the measures ────────────────────────────────────────────────
DROP TABLE IF EXISTS _wh_resolved;
CREATE TEMP TABLE _wh_resolved ON COMMIT DROP AS
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

-- ── watermarks: the production rows looked at ───────────────────────────────────────────────
INSERT INTO ops.warehouse_watermarks (source_table, updated_at)
SELECT source_table, max(updated_at)
FROM (
    SELECT 'production.transaction_items' AS source_table, item_updated_at AS updated_at
    FROM _wh_items
    UNION ALL
    SELECT 'production.transactions', transaction_updated_at FROM _wh_items
) w
GROUP BY source_table
ON CONFLICT (source_table) DO UPDATE
SET updated_at = greatest(ops.warehouse_watermarks.updated_at, EXCLUDED.updated_at);

-- ── upsert, and queue the keys of what changed ──────────────────────────────────────────────
WITH previous AS (
    -- the keys a changed line had before (its old date, customer and product need a refresh)
    SELECT f.item_id, f.date_key, dc.customer_id, dp.product_id
    FROM warehouse.fact_sales f
    JOIN _wh_resolved r ON r.item_id = f.item_id
    JOIN warehouse.dim_customers dc ON dc.customer_key = f.customer_key
    JOIN warehouse.dim_products dp ON dp.product_key = f.product_key
),
upserted AS (
    INSERT INTO warehouse.fact_sales (
        date_key, customer_key, product_key, payment_method_key, transaction_id, item_id,
        quantity, unit_price, discount_percentage, discount_amount, gross_amount, line_total,
        cost_amount, profit, _batch_id
    )
    SELECT
        r.date_key, r.customer_key, r.product_key, r.payment_method_key, r.transaction_id,
        r.item_id, r.quantity, r.unit_price, r.discount_percentage, r.discount_amount,
        r.gross_amount, r.line_total, r.cost_amount, r.profit, r._batch_id
    FROM _wh_resolved r
    ORDER BY r.date_key, r.item_id
    ON CONFLICT (item_id) DO UPDATE
    SET date_key = EXCLUDED.date_key,
        customer_key = EXCLUDED.customer_key,
        product_key = EXCLUDED.product_key,
        payment_method_key = EXCLUDED.payment_method_key,
        transaction_id = EXCLUDED.transaction_id,
        quantity = EXCLUDED.quantity,
        unit_price = EXCLUDED.unit_price,
        discount_percentage = EXCLUDED.discount_percentage,
        discount_amount = EXCLUDED.discount_amount,
        gross_amount = EXCLUDED.gross_amount,
        line_total = EXCLUDED.line_total,
        cost_amount = EXCLUDED.cost_amount,
        profit = EXCLUDED.profit,
        _batch_id = EXCLUDED._batch_id,
        _loaded_at = now()
    WHERE (fact_sales.date_key, fact_sales.customer_key, fact_sales.product_key,
           fact_sales.payment_method_key, fact_sales.transaction_id, fact_sales.quantity,
           fact_sales.unit_price, fact_sales.discount_percentage, fact_sales.line_total,
           fact_sales.cost_amount)
          IS DISTINCT FROM
          (EXCLUDED.date_key, EXCLUDED.customer_key, EXCLUDED.product_key,
           EXCLUDED.payment_method_key, EXCLUDED.transaction_id, EXCLUDED.quantity,
           EXCLUDED.unit_price, EXCLUDED.discount_percentage, EXCLUDED.line_total,
           EXCLUDED.cost_amount)
    RETURNING item_id, (xmax = 0) AS inserted
),
queued AS (
    INSERT INTO ops.warehouse_refresh_queue (date_key, customer_id, product_id)
    SELECT k.date_key, k.customer_id, k.product_id
    FROM (
        SELECT r.date_key, r.customer_id, r.product_id
        FROM upserted u JOIN _wh_resolved r ON r.item_id = u.item_id
        UNION
        SELECT p.date_key, p.customer_id, p.product_id
        FROM upserted u JOIN previous p ON p.item_id = u.item_id
    ) k
    WHERE NOT %(full_refresh)s
    RETURNING 1
)
SELECT
    count(*) FILTER (WHERE inserted)                                  AS inserted,
    count(*) FILTER (WHERE NOT inserted)                              AS updated,
    (SELECT count(*) FROM _wh_inferred WHERE kind = 'customer')       AS inferred_customers,
    (SELECT count(*) FROM _wh_inferred WHERE kind = 'product')        AS inferred_products,
    (SELECT count(*) FROM queued)                                     AS queued_keys
FROM upserted;
