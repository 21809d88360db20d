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
    SELECT s.* FROM staging.transaction_items AS s
    WHERE NOT %(retry)s AND s._batch_id = %(batch_id)s
    UNION ALL
    SELECT r.* FROM ops.quarantine AS q
    CROSS JOIN LATERAL jsonb_populate_record(NULL::staging.transaction_items, q.raw) AS r
    WHERE %(retry)s AND q.table_name = 'transaction_items' AND q.is_retryable
      AND q.resolved_at IS NULL
),

-- logic: trim and type -------------------------------------------------------------------------
trimmed AS (
    SELECT
        s._batch_id, s._source_file, s._source_line,
        ROW(s.*)::staging.transaction_items AS raw,  -- the row as received; to jsonb only if quarantined
        md5(ROW(s.item_id, s.transaction_id, s.product_id, s.quantity, s.unit_price,
                s.discount_percentage, s.line_total)::text) AS raw_hash,
        nullif(btrim(s.item_id), '') AS item_id,
        nullif(btrim(s.transaction_id), '') AS transaction_id,
        nullif(btrim(s.product_id), '') AS product_id,
        nullif(btrim(s.quantity), '') AS quantity_text,
        nullif(btrim(s.unit_price), '') AS unit_price_text,
        nullif(btrim(s.discount_percentage), '') AS discount_text,
        nullif(btrim(s.line_total), '') AS line_total_text,
        (s.item_id <> btrim(s.item_id) OR s.transaction_id <> btrim(s.transaction_id)
            OR s.product_id <> btrim(s.product_id) OR s.quantity <> btrim(s.quantity)
            OR s.unit_price <> btrim(s.unit_price)
            OR s.discount_percentage <> btrim(s.discount_percentage)
            OR s.line_total <> btrim(s.line_total)) IS TRUE AS had_whitespace
    FROM source AS s
),

typed AS MATERIALIZED (
    SELECT
        t.*,
        production.try_numeric(t.quantity_text) AS quantity_number,
        production.try_numeric(t.unit_price_text) AS unit_price,
        production.try_numeric(t.discount_text) AS discount_percentage,
        production.try_numeric(t.line_total_text) AS line_total,
        tr.transaction_id IS NOT NULL AS transaction_exists,
        pr.product_id IS NOT NULL AS product_exists
    FROM trimmed AS t
    LEFT JOIN production.transactions AS tr ON tr.transaction_id = t.transaction_id
    LEFT JOIN production.products AS pr ON pr.product_id = t.product_id
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
),

cleaned AS (
    SELECT
        c._batch_id, c._source_file, c._source_line, c.raw, c.raw_hash, c.reason_codes, c.defaults,
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

-- logic: deduplicate by natural key (latest batch, then latest line, wins) ---------------------
ranked AS (
    SELECT
        c.*,
        row_number() OVER w AS key_rank,
        first_value(c.raw_hash) OVER w AS winner_raw_hash
    FROM cleaned AS c
    WINDOW w AS (
        PARTITION BY c.item_id, cardinality(c.reason_codes) = 0
        ORDER BY c._batch_id DESC, c._source_line DESC
    )
),

-- final ----------------------------------------------------------------------------------------
final AS (
    SELECT
        r.*,
        r.item_id AS natural_key,
        md5(ROW(r.transaction_id, r.product_id, r.quantity, r.unit_price, r.discount_percentage,
                r.line_total)::text) AS _row_hash,
        CASE
            WHEN cardinality(r.reason_codes) > 0 THEN 'quarantined'
            WHEN r.key_rank = 1 THEN 'accepted'
            WHEN r.raw_hash = r.winner_raw_hash THEN 'exact_duplicate'
            ELSE 'conflicting_duplicate'
        END AS outcome,
        r.reason_codes = ARRAY['missing_parent'] AS is_retryable
    FROM ranked AS r
)

SELECT
    f.*,
    p.transaction_id AS previous_transaction_id,
    CASE WHEN f.outcome <> 'accepted' THEN NULL
         WHEN p.item_id IS NULL THEN 'insert'
         WHEN p._row_hash IS DISTINCT FROM f._row_hash AND f._batch_id >= p._batch_id THEN 'update'
         ELSE 'unchanged'
    END AS change
FROM final AS f
LEFT JOIN production.transaction_items AS p
    ON p.item_id = f.item_id AND f.outcome = 'accepted';

INSERT INTO production.transaction_items AS p (
    item_id, transaction_id, product_id, quantity, unit_price, discount_percentage, line_total,
    _row_hash, _batch_id, _source_line
)
SELECT
    item_id, transaction_id, product_id, quantity, unit_price, discount_percentage, line_total,
    _row_hash, _batch_id, _source_line
FROM _promote
WHERE change IN ('insert', 'update')
ON CONFLICT (item_id) DO UPDATE SET
    transaction_id = EXCLUDED.transaction_id,
    product_id = EXCLUDED.product_id,
    quantity = EXCLUDED.quantity,
    unit_price = EXCLUDED.unit_price,
    discount_percentage = EXCLUDED.discount_percentage,
    line_total = EXCLUDED.line_total,
    _row_hash = EXCLUDED._row_hash,
    _batch_id = EXCLUDED._batch_id,
    _source_line = EXCLUDED._source_line,
    updated_at = now()
WHERE p._row_hash IS DISTINCT FROM EXCLUDED._row_hash
  AND EXCLUDED._batch_id >= p._batch_id;
