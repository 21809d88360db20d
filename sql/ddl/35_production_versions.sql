-- Version logs of the SCD2-tracked entities: production keeps only the latest row of a customer
-- or product, these tables keep every version that a promoted batch brought, so the warehouse
-- dimensions can be merged (and rebuilt by --full-refresh) with the full history however many
-- batches were promoted before the warehouse stage ran. Written by
-- sql/transform/production/<entity>_versions.sql in the transaction that promotes the batch;
-- read by sql/transform/warehouse/dim_<entity>_scd2.sql. Rules: docs/warehouse.md. Idempotent.

CREATE TABLE IF NOT EXISTS production.customer_versions (
    customer_id        text        NOT NULL,
    _batch_id          text        NOT NULL,
    change_date        date        NOT NULL,
    full_name          text,
    email              text,
    phone              text,
    city               text,
    state              text,
    country            text,
    age_group          text,
    registration_date  date,
    row_hash           text        NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, _batch_id)
);
CREATE INDEX IF NOT EXISTS customer_versions_recorded_idx
    ON production.customer_versions (recorded_at);

COMMENT ON TABLE production.customer_versions IS 'Every version of a customer that a promoted batch brought (a row only when the tracked attributes differ from the customer''s latest logged version): the source of the SCD2 merge of warehouse.dim_customers.';
COMMENT ON COLUMN production.customer_versions.customer_id IS 'Natural key (production.customers.customer_id).';
COMMENT ON COLUMN production.customer_versions._batch_id IS 'Batch that brought this version; one version per customer and batch (a rerun logs nothing).';
COMMENT ON COLUMN production.customer_versions.change_date IS 'Day the version takes effect: the batch''s business date; else the last order date of the batch; else the load date (docs/warehouse.md). Versions logged from an existing warehouse at upgrade carry their dimension row''s effective_from.';
COMMENT ON COLUMN production.customer_versions.full_name IS 'First and last name, as warehouse.dim_customers.full_name. Tracked.';
COMMENT ON COLUMN production.customer_versions.email IS 'Email (NULL when invalid). Tracked.';
COMMENT ON COLUMN production.customer_versions.phone IS 'Normalised phone. Tracked.';
COMMENT ON COLUMN production.customer_versions.city IS 'City. Tracked.';
COMMENT ON COLUMN production.customer_versions.state IS 'State. Tracked.';
COMMENT ON COLUMN production.customer_versions.country IS 'Country. Tracked.';
COMMENT ON COLUMN production.customer_versions.age_group IS 'Age band. Tracked.';
COMMENT ON COLUMN production.customer_versions.registration_date IS 'Registration date. Tracked.';
COMMENT ON COLUMN production.customer_versions.row_hash IS 'md5 of the tracked attributes, the same expression as warehouse.dim_customers._row_hash.';
COMMENT ON COLUMN production.customer_versions.recorded_at IS 'When the version was logged (the promotion''s transaction time): the warehouse merges the versions recorded after its watermark.';

CREATE TABLE IF NOT EXISTS production.product_versions (
    product_id      text          NOT NULL,
    _batch_id       text          NOT NULL,
    change_date     date          NOT NULL,
    product_name    text,
    category        text,
    sub_category    text,
    brand           text,
    price           numeric(12,2),
    cost            numeric(12,2),
    price_category  text,
    row_hash        text          NOT NULL,
    recorded_at     timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, _batch_id)
);
CREATE INDEX IF NOT EXISTS product_versions_recorded_idx
    ON production.product_versions (recorded_at);

COMMENT ON TABLE production.product_versions IS 'Every version of a product that a promoted batch brought (a row only when the tracked attributes differ from the product''s latest logged version): the source of the SCD2 merge of warehouse.dim_products.';
COMMENT ON COLUMN production.product_versions.product_id IS 'Natural key (production.products.product_id).';
COMMENT ON COLUMN production.product_versions._batch_id IS 'Batch that brought this version; one version per product and batch (a rerun logs nothing).';
COMMENT ON COLUMN production.product_versions.change_date IS 'Day the version takes effect: the batch''s business date; else the last order date of the batch; else the load date (docs/warehouse.md). Versions logged from an existing warehouse at upgrade carry their dimension row''s effective_from.';
COMMENT ON COLUMN production.product_versions.product_name IS 'Product name. Tracked.';
COMMENT ON COLUMN production.product_versions.category IS 'Canonical category. Tracked.';
COMMENT ON COLUMN production.product_versions.sub_category IS 'Sub-category. Tracked.';
COMMENT ON COLUMN production.product_versions.brand IS 'Brand. Tracked.';
COMMENT ON COLUMN production.product_versions.price IS 'List price. Tracked.';
COMMENT ON COLUMN production.product_versions.cost IS 'Unit cost (the cost of the facts dated in this version). Tracked.';
COMMENT ON COLUMN production.product_versions.price_category IS 'Budget, Mid-range or Premium. Tracked.';
COMMENT ON COLUMN production.product_versions.row_hash IS 'md5 of the tracked attributes, the same expression as warehouse.dim_products._row_hash.';
COMMENT ON COLUMN production.product_versions.recorded_at IS 'When the version was logged (the promotion''s transaction time): the warehouse merges the versions recorded after its watermark.';

-- ── upgrade: a database loaded before the logs existed gets them filled once ─────────────────
-- from the dimensions' history (already merged: the warehouse watermark is set past it), then
-- from the production rows the dimensions do not hold yet (merged by the next warehouse run).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM production.customer_versions)
       AND EXISTS (SELECT 1 FROM production.customers) THEN
        IF to_regclass('warehouse.dim_customers') IS NOT NULL THEN
            EXECUTE $q$
                INSERT INTO production.customer_versions (customer_id, _batch_id, change_date,
                    full_name, email, phone, city, state, country, age_group, registration_date,
                    row_hash, recorded_at)
                SELECT customer_id, _batch_id, effective_from, full_name, email, phone, city,
                       state, country, age_group, registration_date, _row_hash, _loaded_at
                FROM warehouse.dim_customers
                WHERE customer_key <> -1 AND NOT is_inferred AND _batch_id IS NOT NULL
                ON CONFLICT DO NOTHING;
                INSERT INTO ops.warehouse_watermarks (source_table, updated_at)
                SELECT 'production.customer_versions', max(recorded_at)
                FROM production.customer_versions HAVING max(recorded_at) IS NOT NULL
                ON CONFLICT (source_table) DO NOTHING;
            $q$;
        END IF;
        INSERT INTO production.customer_versions (customer_id, _batch_id, change_date,
            full_name, email, phone, city, state, country, age_group, registration_date, row_hash)
        SELECT p.customer_id, p._batch_id,
               coalesce(b.business_date,
                        (SELECT max(t.transaction_date) FROM production.transactions t
                          WHERE t._batch_id = p._batch_id),
                        (p.updated_at AT TIME ZONE 'UTC')::date),
               concat_ws(' ', p.first_name, p.last_name), p.email, p.phone, p.city, p.state,
               p.country, p.age_group, p.registration_date,
               md5(row(concat_ws(' ', p.first_name, p.last_name), p.email, p.phone, p.city,
                       p.state, p.country, p.age_group, p.registration_date)::text)
        FROM production.customers p
        LEFT JOIN ops.batches b ON b.batch_id = p._batch_id
        WHERE md5(row(concat_ws(' ', p.first_name, p.last_name), p.email, p.phone, p.city,
                      p.state, p.country, p.age_group, p.registration_date)::text)
              IS DISTINCT FROM (SELECT v.row_hash FROM production.customer_versions v
                                WHERE v.customer_id = p.customer_id
                                ORDER BY v._batch_id DESC LIMIT 1)
        ON CONFLICT DO NOTHING;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM production.product_versions)
       AND EXISTS (SELECT 1 FROM production.products) THEN
        IF to_regclass('warehouse.dim_products') IS NOT NULL THEN
            EXECUTE $q$
                INSERT INTO production.product_versions (product_id, _batch_id, change_date,
                    product_name, category, sub_category, brand, price, cost, price_category,
                    row_hash, recorded_at)
                SELECT product_id, _batch_id, effective_from, product_name, category,
                       sub_category, brand, price, cost, price_category, _row_hash, _loaded_at
                FROM warehouse.dim_products
                WHERE product_key <> -1 AND NOT is_inferred AND _batch_id IS NOT NULL
                ON CONFLICT DO NOTHING;
                INSERT INTO ops.warehouse_watermarks (source_table, updated_at)
                SELECT 'production.product_versions', max(recorded_at)
                FROM production.product_versions HAVING max(recorded_at) IS NOT NULL
                ON CONFLICT (source_table) DO NOTHING;
            $q$;
        END IF;
        INSERT INTO production.product_versions (product_id, _batch_id, change_date,
            product_name, category, sub_category, brand, price, cost, price_category, row_hash)
        SELECT p.product_id, p._batch_id,
               coalesce(b.business_date,
                        (SELECT max(t.transaction_date) FROM production.transactions t
                          WHERE t._batch_id = p._batch_id),
                        (p.updated_at AT TIME ZONE 'UTC')::date),
               p.product_name, p.category, p.sub_category, p.brand, p.price, p.cost,
               p.price_category,
               md5(row(p.product_name, p.category, p.sub_category, p.brand, p.price, p.cost,
                       p.price_category)::text)
        FROM production.products p
        LEFT JOIN ops.batches b ON b.batch_id = p._batch_id
        WHERE md5(row(p.product_name, p.category, p.sub_category, p.brand, p.price, p.cost,
                      p.price_category)::text)
              IS DISTINCT FROM (SELECT v.row_hash FROM production.product_versions v
                                WHERE v.product_id = p.product_id
                                ORDER BY v._batch_id DESC LIMIT 1)
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;
