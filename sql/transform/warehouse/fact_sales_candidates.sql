-- The order lines the fact load looks at: production lines, or their orders, written since the
-- last load (every line on --full-refresh). Feeds dim_payment_method.sql, dim_date.sql and
-- fact_sales.sql in the same transaction. Parameter: full_refresh.
-- Returns one row: candidate lines.

DROP TABLE IF EXISTS _wh_items;
CREATE TEMP TABLE _wh_items ON COMMIT DROP AS
WITH
-- the watermarks as scalars, so each selection below is a range scan of an updated_at index
items_after AS (
    SELECT coalesce(max(updated_at), '-infinity') AS ts FROM ops.warehouse_watermarks
    WHERE source_table = 'production.transaction_items'
),
transactions_after AS (
    SELECT coalesce(max(updated_at), '-infinity') AS ts FROM ops.warehouse_watermarks
    WHERE source_table = 'production.transactions'
)
SELECT
    i.item_id, i.transaction_id, i.product_id, i.quantity, i.unit_price, i.discount_percentage,
    i.line_total, i._batch_id, t.customer_id, t.transaction_date, t.payment_method,
    i.updated_at AS item_updated_at, t.updated_at AS transaction_updated_at
FROM production.transaction_items i
JOIN production.transactions t ON t.transaction_id = i.transaction_id
WHERE %(full_refresh)s OR i.updated_at > (SELECT ts FROM items_after)
-- disjoint from the branch above (and a line has one order), so no de-duplication
UNION ALL
SELECT
    i.item_id, i.transaction_id, i.product_id, i.quantity, i.unit_price, i.discount_percentage,
    i.line_total, i._batch_id, t.customer_id, t.transaction_date, t.payment_method,
    i.updated_at, t.updated_at
FROM production.transactions t
JOIN production.transaction_items i ON i.transaction_id = t.transaction_id
WHERE NOT %(full_refresh)s AND t.updated_at > (SELECT ts FROM transactions_after)
  AND i.updated_at <= (SELECT ts FROM items_after);

ANALYZE _wh_items;

SELECT count(*) AS candidates FROM _wh_items;
