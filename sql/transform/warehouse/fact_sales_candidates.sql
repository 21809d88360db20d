-- The order lines the fact load looks at: production lines, or their orders, written since the
-- last load (every line on --full-refresh). Feeds dim_payment_method.sql, dim_date.sql and
-- fact_sales.sql in the same transaction. Parameters: full_refresh, and the watermarks
-- items_after and transactions_after (ops.warehouse_watermarks, read by the stage first, so the
-- planner sees their values: a few new rows are range scans of the updated_at indexes and
-- index lookups of their order lines, not a hash join over every line).
-- Returns one row: candidate lines.

DROP TABLE IF EXISTS _wh_items;
CREATE TEMP TABLE _wh_items ON COMMIT DROP AS
SELECT
    i.item_id, i.transaction_id, i.product_id, i.quantity, i.unit_price, i.discount_percentage,
    i.line_total, i._batch_id, t.customer_id, t.transaction_date, t.payment_method,
    i.updated_at AS item_updated_at, t.updated_at AS transaction_updated_at
FROM production.transaction_items i
JOIN production.transactions t ON t.transaction_id = i.transaction_id
WHERE %(full_refresh)s OR i.updated_at > %(items_after)s::timestamptz
-- disjoint from the branch above (and a line has one order), so no de-duplication
UNION ALL
SELECT
    i.item_id, i.transaction_id, i.product_id, i.quantity, i.unit_price, i.discount_percentage,
    i.line_total, i._batch_id, t.customer_id, t.transaction_date, t.payment_method,
    i.updated_at, t.updated_at
FROM production.transactions t
JOIN production.transaction_items i ON i.transaction_id = t.transaction_id
WHERE NOT %(full_refresh)s AND t.updated_at > %(transactions_after)s::timestamptz
  AND i.updated_at <= %(items_after)s::timestamptz;

ANALYZE _wh_items (item_id, transaction_id, product_id, customer_id, transaction_date,
                   payment_method);

SELECT count(*) AS candidates FROM _wh_items;
