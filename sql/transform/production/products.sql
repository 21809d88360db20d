-- production.products from one batch of staging.products (or, with retry, from the open
-- retryable rows of ops.quarantine). Builds _promote (every source row with its cleaned values,
-- reason codes, defaults and outcome) and upserts the accepted rows; _finish.sql follows.
-- Parameters: batch_id, retry, critical_rules (text[]), budget_below, premium_from.
-- Rules: docs/data_quality.md.

CREATE TEMP TABLE _promote ON COMMIT DROP AS
WITH

-- import ---------------------------------------------------------------------------------------
source AS (
    SELECT s.ctid AS staging_row, s.* FROM staging.products AS s
    WHERE NOT %(retry)s AND s._batch_id = %(batch_id)s
    UNION ALL
    SELECT NULL::tid, r.* FROM ops.quarantine AS q
    CROSS JOIN LATERAL jsonb_populate_record(NULL::staging.products, q.raw) AS r
    WHERE %(retry)s AND q.table_name = 'products' AND q.is_retryable AND q.resolved_at IS NULL
),

categories AS (
    SELECT variant_key, canonical FROM production.lookup_values WHERE lookup = 'categories'
),

-- logic: trim and type -------------------------------------------------------------------------
trimmed AS (
    SELECT
        s.staging_row, s._batch_id, s._source_line,
        hash_record_extended(ROW(s.product_id, s.product_name, s.category, s.sub_category,
            s.price, s.cost, s.brand, s.stock_quantity, s.supplier_id), 0) AS raw_hash,
        nullif(btrim(s.product_id), '') AS product_id,
        nullif(btrim(s.product_name), '') AS product_name,
        s.category AS category_raw,
        nullif(btrim(s.sub_category), '') AS sub_category,
        nullif(btrim(s.price), '') AS price_text,
        nullif(btrim(s.cost), '') AS cost_text,
        nullif(btrim(s.brand), '') AS brand,
        nullif(btrim(s.stock_quantity), '') AS stock_text,
        nullif(btrim(s.supplier_id), '') AS supplier_id,
        (s.product_id <> btrim(s.product_id) OR s.product_name <> btrim(s.product_name)
            OR s.sub_category <> btrim(s.sub_category) OR s.price <> btrim(s.price)
            OR s.cost <> btrim(s.cost) OR s.brand <> btrim(s.brand)
            OR s.stock_quantity <> btrim(s.stock_quantity)
            OR s.supplier_id <> btrim(s.supplier_id)) IS TRUE AS had_whitespace
    FROM source AS s
),

typed AS MATERIALIZED (
    SELECT
        t.*,
        production.try_numeric(t.price_text) AS price,
        production.try_numeric(t.cost_text) AS cost,
        production.try_numeric(t.stock_text) AS stock_number,
        c.canonical AS category_canonical
    FROM trimmed AS t
    LEFT JOIN categories AS c ON c.variant_key = production.lookup_key(t.category_raw)
),

checked AS (
    SELECT
        t.*,
        -- critical reasons, most specific first (reason_codes[1] is the primary reason)
        array_remove(ARRAY[
            CASE WHEN t.product_id IS NULL THEN 'missing_id' END,
            CASE WHEN t.product_name IS NULL OR t.price_text IS NULL OR t.cost_text IS NULL
                 THEN 'missing_value' END,
            CASE WHEN (t.price_text IS NOT NULL AND t.price IS NULL)
                   OR (t.cost_text IS NOT NULL AND t.cost IS NULL)
                   OR (t.stock_text IS NOT NULL
                       AND (t.stock_number IS NULL OR t.stock_number <> trunc(t.stock_number)
                            OR abs(t.stock_number) > 2147483647))
                 THEN 'unparseable_number' END,
            CASE WHEN t.price < 0 OR t.cost < 0 OR t.stock_number < 0 THEN 'invalid_amount' END,
            CASE WHEN t.category_canonical IS NULL
                  AND 'unknown_category' = ANY(%(critical_rules)s::text[]) THEN 'unknown_category' END
        ], NULL) AS reason_codes,
        -- defaults applied to an accepted row
        array_remove(ARRAY[
            CASE WHEN t.category_canonical IS NULL THEN 'unknown_category' END,
            CASE WHEN t.category_canonical IS NOT NULL
                  AND btrim(t.category_raw) <> t.category_canonical THEN 'category_normalised' END,
            CASE WHEN t.had_whitespace
                   OR (t.category_raw <> btrim(t.category_raw)
                       AND btrim(t.category_raw) = t.category_canonical) THEN 'trimmed' END
        ], NULL) AS defaults
    FROM typed AS t
),

cleaned AS (
    SELECT
        c.staging_row, c._batch_id, c._source_line, c.raw_hash, c.reason_codes, c.defaults,
        c.product_id,
        c.product_name,
        coalesce(c.category_canonical, 'unknown') AS category,
        c.sub_category,
        c.brand,
        round(c.price, 2) AS price,
        round(c.cost, 2) AS cost,
        c.stock_number::integer AS stock_quantity,
        c.supplier_id
    FROM checked AS c
),

derived AS (
    SELECT
        c.*,
        CASE WHEN c.price > 0 THEN round((c.price - c.cost) / c.price * 100, 2) END AS profit_margin,
        CASE
            WHEN c.price < %(budget_below)s THEN 'Budget'
            WHEN c.price >= %(premium_from)s THEN 'Premium'
            ELSE 'Mid-range'
        END AS price_category
    FROM cleaned AS c
),

-- final ----------------------------------------------------------------------------------------
final AS (
    SELECT
        r.*,
        r.product_id AS natural_key,
        -- duplicates among the accepted rows: production.mark_duplicates, below
        CASE WHEN cardinality(r.reason_codes) > 0 THEN 'quarantined' ELSE 'accepted' END AS outcome,
        false AS is_retryable
    FROM derived AS r
)

SELECT
    f.*,
    -- the row as received, for the rows quarantined from a staged batch only
    CASE WHEN f.outcome = 'quarantined' AND f.staging_row IS NOT NULL THEN
        (SELECT to_jsonb(s) FROM staging.products AS s WHERE s.ctid = f.staging_row)
    END AS raw,
    CASE WHEN f.outcome <> 'accepted' THEN NULL
         WHEN p.product_id IS NULL THEN 'insert'
         WHEN (p.product_name, p.category, p.sub_category, p.brand, p.price, p.cost,
               p.price_category, p.stock_quantity, p.supplier_id)
               IS DISTINCT FROM (f.product_name, f.category, f.sub_category, f.brand, f.price,
                                 f.cost, f.price_category, f.stock_quantity, f.supplier_id)
               AND f._batch_id >= p._batch_id THEN 'update'
         ELSE 'unchanged'
    END AS change
FROM final AS f
LEFT JOIN production.products AS p ON p.product_id = f.product_id AND f.outcome = 'accepted';

SELECT production.mark_duplicates();

-- new rows inserted, changed rows updated (no ON CONFLICT: see dwh/stages/production.py)
INSERT INTO production.products (
    product_id, product_name, category, sub_category, brand, price, cost, profit_margin,
    price_category, stock_quantity, supplier_id, _batch_id, _source_line
)
SELECT
    product_id, product_name, category, sub_category, brand, price, cost, profit_margin,
    price_category, stock_quantity, supplier_id, _batch_id, _source_line
FROM _promote
WHERE change = 'insert';

UPDATE production.products AS p SET
    product_name = f.product_name,
    category = f.category,
    sub_category = f.sub_category,
    brand = f.brand,
    price = f.price,
    cost = f.cost,
    profit_margin = f.profit_margin,
    price_category = f.price_category,
    stock_quantity = f.stock_quantity,
    supplier_id = f.supplier_id,
    _batch_id = f._batch_id,
    _source_line = f._source_line,
    updated_at = now()
FROM _promote AS f
WHERE f.change = 'update' AND p.product_id = f.product_id;
