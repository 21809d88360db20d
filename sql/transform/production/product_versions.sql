-- production.product_versions: log the versions that this batch's promotion brought, in the
-- same transaction, right after sql/transform/production/products.sql upserted the accepted rows.
-- A product row written by this batch is logged when its tracked attributes (as
-- warehouse.dim_products holds them; not stock_quantity or supplier_id) differ from the
-- product's latest logged version; the first appearance always logs; a rerun of the batch logs
-- nothing (one version per key and batch). Rules: docs/warehouse.md.
-- Parameter: batch_id (a retry passes NULL and logs nothing: products are never retried).

WITH

-- the day the batch's changes take effect: the same rule as customer_versions.sql
batch AS (
    SELECT coalesce(
        (SELECT b.business_date FROM ops.batches AS b WHERE b.batch_id = %(batch_id)s),
        (SELECT max(t.transaction_date) FROM production.transactions AS t
          WHERE t._batch_id = %(batch_id)s),
        (SELECT max(x.d) FROM (
            SELECT production.try_date(s.transaction_date) AS d, s._loaded_at
            FROM staging.transactions AS s WHERE s._batch_id = %(batch_id)s) AS x
          WHERE x.d <= x._loaded_at::date),
        (now() AT TIME ZONE 'UTC')::date
    ) AS change_date
),

hashed AS (
    SELECT
        p.product_id, p._batch_id, p.product_name, p.category, p.sub_category, p.brand,
        p.price, p.cost, p.price_category,
        md5(row(p.product_name, p.category, p.sub_category, p.brand, p.price, p.cost,
                p.price_category)::text) AS row_hash
    FROM production.products AS p
    WHERE p._batch_id = %(batch_id)s
)

INSERT INTO production.product_versions (
    product_id, _batch_id, change_date, product_name, category, sub_category, brand, price,
    cost, price_category, row_hash
)
SELECT
    h.product_id, h._batch_id, b.change_date, h.product_name, h.category, h.sub_category,
    h.brand, h.price, h.cost, h.price_category, h.row_hash
FROM hashed AS h
CROSS JOIN batch AS b
WHERE h.row_hash IS DISTINCT FROM (
    SELECT v.row_hash FROM production.product_versions AS v
    WHERE v.product_id = h.product_id
    ORDER BY v._batch_id DESC
    LIMIT 1
)
ON CONFLICT (product_id, _batch_id) DO NOTHING;
