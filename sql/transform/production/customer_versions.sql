-- production.customer_versions: log the versions that this batch's promotion brought, in the
-- same transaction, right after sql/transform/production/customers.sql upserted the accepted rows.
-- A customer row written by this batch is logged when its tracked attributes (as
-- warehouse.dim_customers holds them) differ from the customer's latest logged version; the
-- first appearance always logs; a rerun of the batch logs nothing (one version per key and
-- batch). Rules: docs/warehouse.md ("Which date a change takes effect").
-- Parameter: batch_id (a retry passes NULL and logs nothing: customers are never retried).

WITH

-- the day the batch's changes take effect: its business date; else its last order date
-- (the orders production accepted from it; before they are promoted, its staged orders with a
-- valid date not after the load date, the ones the future_date rule keeps); else the load date
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

written AS (
    SELECT
        p.customer_id,
        p._batch_id,
        concat_ws(' ', p.first_name, p.last_name) AS full_name,
        p.email, p.phone, p.city, p.state, p.country, p.age_group, p.registration_date
    FROM production.customers AS p
    WHERE p._batch_id = %(batch_id)s
),

hashed AS (
    SELECT
        w.*,
        md5(row(w.full_name, w.email, w.phone, w.city, w.state, w.country, w.age_group,
                w.registration_date)::text) AS row_hash
    FROM written AS w
)

INSERT INTO production.customer_versions (
    customer_id, _batch_id, change_date, full_name, email, phone, city, state, country,
    age_group, registration_date, row_hash
)
SELECT
    h.customer_id, h._batch_id, b.change_date, h.full_name, h.email, h.phone, h.city, h.state,
    h.country, h.age_group, h.registration_date, h.row_hash
FROM hashed AS h
CROSS JOIN batch AS b
WHERE h.row_hash IS DISTINCT FROM (
    SELECT v.row_hash FROM production.customer_versions AS v
    WHERE v.customer_id = h.customer_id
    ORDER BY v._batch_id DESC
    LIMIT 1
)
ON CONFLICT (customer_id, _batch_id) DO NOTHING;
