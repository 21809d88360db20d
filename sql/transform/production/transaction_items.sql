-- production.transaction_items from one batch of staging.transaction_items (or, with retry, from
-- the open retryable rows of ops.quarantine). Builds _promote (every source row with its cleaned
-- values, reason codes, defaults and outcome) and upserts the accepted rows; _finish.sql follows.
-- (The sum of the lines per transaction is the view production.transaction_totals.)
-- Parameters: batch_id, retry, critical_rules (text[]), line_total_tolerance.
-- Rules: docs/data_quality.md.

CREATE TEMP TABLE _promote ON COMMIT DROP AS
WITH

-- import ---------------------------------------------------------------------------------------
source AS (
    SELECT s.ctid AS staging_row, s.* FROM staging.transaction_items AS s
    WHERE NOT %(retry)s AND s._batch_id = %(batch_id)s
    UNION ALL
    SELECT NULL::tid, r.* FROM ops.quarantine AS q
    CROSS JOIN LATERAL jsonb_populate_record(NULL::staging.transaction_items, q.raw) AS r
    WHERE %(retry)s AND q.table_name = 'transaction_items' AND q.is_retryable
      AND q.resolved_at IS NULL
),

-- logic: trim and type -------------------------------------------------------------------------
-- (OFFSET 0 keeps typed and checked apart, so each parse and each reason runs once per row,
-- not once per reference after the planner inlines the expressions; below typed the planner
-- may still scan, trim and join in parallel workers.)
trimmed AS (
    SELECT
        s.staging_row, s._batch_id, s._source_line,
        hash_record_extended(ROW(s.item_id, s.transaction_id, s.product_id, s.quantity,
            s.unit_price, s.discount_percentage, s.line_total), 0) AS raw_hash,
        s.item_id AS item_id_raw, btrim(s.item_id) AS item_id_t,
        s.transaction_id AS transaction_id_raw, btrim(s.transaction_id) AS transaction_id_t,
        s.product_id AS product_id_raw, btrim(s.product_id) AS product_id_t,
        s.quantity AS quantity_raw, btrim(s.quantity) AS quantity_t,
        s.unit_price AS unit_price_raw, btrim(s.unit_price) AS unit_price_t,
        s.discount_percentage AS discount_raw, btrim(s.discount_percentage) AS discount_t,
        s.line_total AS line_total_raw, btrim(s.line_total) AS line_total_t
    FROM source AS s
),

texts AS (
    SELECT
        t.staging_row, t._batch_id, t._source_line, t.raw_hash,
        nullif(t.item_id_t, '') AS item_id,
        nullif(t.transaction_id_t, '') AS transaction_id,
        nullif(t.product_id_t, '') AS product_id,
        nullif(t.quantity_t, '') AS quantity_text,
        nullif(t.unit_price_t, '') AS unit_price_text,
        nullif(t.discount_t, '') AS discount_text,
        nullif(t.line_total_t, '') AS line_total_text,
        (t.item_id_raw <> t.item_id_t OR t.transaction_id_raw <> t.transaction_id_t
            OR t.product_id_raw <> t.product_id_t OR t.quantity_raw <> t.quantity_t
            OR t.unit_price_raw <> t.unit_price_t OR t.discount_raw <> t.discount_t
            OR t.line_total_raw <> t.line_total_t) IS TRUE AS had_whitespace
    FROM trimmed AS t
),

typed AS (
    SELECT
        t.*,
        production.try_numeric(t.quantity_text) AS quantity_number,
        production.try_numeric(t.unit_price_text) AS unit_price,
        production.try_numeric(t.discount_text) AS discount_percentage,
        production.try_numeric(t.line_total_text) AS line_total,
        tr.transaction_id IS NOT NULL AS transaction_exists,
        pr.product_id IS NOT NULL AS product_exists
    FROM texts AS t
    LEFT JOIN production.transactions AS tr ON tr.transaction_id = t.transaction_id
    LEFT JOIN production.products AS pr ON pr.product_id = t.product_id
    OFFSET 0
),

measured AS (
    SELECT
        t.*,
        abs(t.line_total
            - round(t.quantity_number * t.unit_price * (1 - t.discount_percentage / 100), 2))
            > %(line_total_tolerance)s AS line_total_off
    FROM typed AS t
),

checked AS (
    SELECT
        t.*,
        -- critical reasons, most specific first (reason_codes[1] is the primary reason)
        array_remove(ARRAY[
            CASE WHEN t.item_id IS NULL THEN 'missing_id' END,
            CASE WHEN t.transaction_id IS NULL OR t.product_id IS NULL OR t.quantity_text IS NULL
                   OR t.unit_price_text IS NULL OR t.discount_text IS NULL
                   OR t.line_total_text IS NULL THEN 'missing_value' END,
            CASE WHEN (t.quantity_text IS NOT NULL AND t.quantity_number IS NULL)
                   OR (t.unit_price_text IS NOT NULL AND t.unit_price IS NULL)
                   OR (t.discount_text IS NOT NULL AND t.discount_percentage IS NULL)
                   OR (t.line_total_text IS NOT NULL AND t.line_total IS NULL)
                 THEN 'unparseable_number' END,
            CASE WHEN t.quantity_number <= 0 OR t.quantity_number <> trunc(t.quantity_number)
                   OR t.quantity_number > 2147483647 THEN 'invalid_quantity' END,
            CASE WHEN t.unit_price < 0 OR t.line_total < 0 THEN 'invalid_amount' END,
            CASE WHEN t.discount_percentage NOT BETWEEN 0 AND 100 THEN 'invalid_discount' END,
            CASE WHEN t.line_total_off
                  AND 'line_total_mismatch' = ANY(%(critical_rules)s::text[])
                 THEN 'line_total_mismatch' END,
            CASE WHEN (t.transaction_id IS NOT NULL AND NOT t.transaction_exists)
                   OR (t.product_id IS NOT NULL AND NOT t.product_exists) THEN 'missing_parent' END
        ], NULL) AS reason_codes,
        -- defaults applied to an accepted row
        array_remove(ARRAY[
            CASE WHEN t.line_total_off THEN 'line_total_mismatch' END,
            CASE WHEN t.had_whitespace THEN 'trimmed' END
        ], NULL) AS defaults
    FROM measured AS t
    OFFSET 0
),

cleaned AS (
    SELECT
        c.staging_row, c._batch_id, c._source_line, c.raw_hash, c.reason_codes, c.defaults,
        c.item_id,
        c.transaction_id,
        c.product_id,
        CASE WHEN c.quantity_number BETWEEN 1 AND 2147483647
             THEN c.quantity_number::integer END AS quantity,
        round(c.unit_price, 2) AS unit_price,
        round(c.discount_percentage, 2) AS discount_percentage,
        round(c.line_total, 2) AS line_total
    FROM checked AS c
),

-- final ----------------------------------------------------------------------------------------
final AS (
    SELECT
        r.*,
        r.item_id AS natural_key,
        -- duplicates among the accepted rows: production.mark_duplicates, below
        CASE WHEN cardinality(r.reason_codes) > 0 THEN 'quarantined' ELSE 'accepted' END AS outcome,
        r.reason_codes = ARRAY['missing_parent'] AS is_retryable
    FROM cleaned AS r
)

SELECT
    f.*,
    -- the row as received, for the rows quarantined from a staged batch only
    CASE WHEN f.outcome = 'quarantined' AND f.staging_row IS NOT NULL THEN
        (SELECT to_jsonb(s) FROM staging.transaction_items AS s WHERE s.ctid = f.staging_row)
    END AS raw,
    CASE WHEN f.outcome <> 'accepted' THEN NULL
         WHEN p.item_id IS NULL THEN 'insert'
         WHEN (p.transaction_id, p.product_id, p.quantity, p.unit_price, p.discount_percentage,
               p.line_total)
               IS DISTINCT FROM (f.transaction_id, f.product_id, f.quantity, f.unit_price,
                                 f.discount_percentage, f.line_total)
               AND f._batch_id >= p._batch_id THEN 'update'
         ELSE 'unchanged'
    END AS change
FROM final AS f
LEFT JOIN production.transaction_items AS p
    ON p.item_id = f.item_id AND f.outcome = 'accepted';

SELECT production.mark_duplicates();

-- new rows inserted, changed rows updated (no ON CONFLICT: see dwh/stages/production.py)
INSERT INTO production.transaction_items (
    item_id, transaction_id, product_id, quantity, unit_price, discount_percentage, line_total,
    _batch_id, _source_line
)
SELECT
    item_id, transaction_id, product_id, quantity, unit_price, discount_percentage, line_total,
    _batch_id, _source_line
FROM _promote
WHERE change = 'insert';

UPDATE production.transaction_items AS p SET
    transaction_id = f.transaction_id,
    product_id = f.product_id,
    quantity = f.quantity,
    unit_price = f.unit_price,
    discount_percentage = f.discount_percentage,
    line_total = f.line_total,
    _batch_id = f._batch_id,
    _source_line = f._source_line,
    updated_at = now()
FROM _promote AS f
WHERE f.change = 'update' AND p.item_id = f.item_id;
