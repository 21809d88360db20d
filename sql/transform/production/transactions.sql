-- production.transactions from one batch of staging.transactions (or, with retry, from the open
-- retryable rows of ops.quarantine). Builds _promote (every source row with its cleaned values,
-- reason codes, defaults and outcome) and upserts the accepted rows; _finish.sql follows.
-- Parameters: batch_id, retry, critical_rules (text[]), source_timezone.
-- Rules: docs/data_quality.md.

CREATE TEMP TABLE _promote ON COMMIT DROP AS
WITH

-- import ---------------------------------------------------------------------------------------
source AS (
    SELECT s.* FROM staging.transactions AS s
    WHERE NOT %(retry)s AND s._batch_id = %(batch_id)s
    UNION ALL
    SELECT r.* FROM ops.quarantine AS q
    CROSS JOIN LATERAL jsonb_populate_record(NULL::staging.transactions, q.raw) AS r
    WHERE %(retry)s AND q.table_name = 'transactions' AND q.is_retryable AND q.resolved_at IS NULL
),

batches AS (
    SELECT batch_id, business_date FROM ops.batches
),

payment_methods AS (
    SELECT variant_key, canonical FROM production.lookup_values WHERE lookup = 'payment_methods'
),

-- logic: trim and type -------------------------------------------------------------------------
trimmed AS (
    SELECT
        s._batch_id, s._source_file, s._source_line,
        ROW(s.*)::staging.transactions AS raw,  -- the row as received; to jsonb only if quarantined
        md5(ROW(s.transaction_id, s.customer_id, s.transaction_date, s.transaction_time,
                s.payment_method, s.shipping_address, s.total_amount)::text) AS raw_hash,
        nullif(btrim(s.transaction_id), '') AS transaction_id,
        nullif(btrim(s.customer_id), '') AS customer_id,
        nullif(btrim(s.transaction_date), '') AS date_text,
        nullif(btrim(s.transaction_time), '') AS time_text,
        s.payment_method AS payment_method_raw,
        nullif(btrim(s.shipping_address), '') AS shipping_address,
        nullif(btrim(s.total_amount), '') AS total_text,
        -- the batch's business date; a batch without one is checked against its load date
        coalesce(b.business_date, s._loaded_at::date) AS business_date,
        (s.transaction_id <> btrim(s.transaction_id) OR s.customer_id <> btrim(s.customer_id)
            OR s.transaction_date <> btrim(s.transaction_date)
            OR s.transaction_time <> btrim(s.transaction_time)
            OR s.shipping_address <> btrim(s.shipping_address)
            OR s.total_amount <> btrim(s.total_amount)) IS TRUE AS had_whitespace
    FROM source AS s
    LEFT JOIN batches AS b ON b.batch_id = s._batch_id
),

typed AS MATERIALIZED (
    SELECT
        t.*,
        production.try_date(t.date_text) AS transaction_date,
        production.try_time(t.time_text) AS transaction_time,
        production.try_numeric(t.total_text) AS total_amount,
        pm.canonical AS payment_method_canonical,
        c.customer_id IS NOT NULL AS customer_exists
    FROM trimmed AS t
    LEFT JOIN payment_methods AS pm ON pm.variant_key = production.lookup_key(t.payment_method_raw)
    LEFT JOIN production.customers AS c ON c.customer_id = t.customer_id
),

checked AS (
    SELECT
        t.*,
        -- critical reasons, most specific first (reason_codes[1] is the primary reason)
        array_remove(ARRAY[
            CASE WHEN t.transaction_id IS NULL THEN 'missing_id' END,
            CASE WHEN t.customer_id IS NULL OR t.date_text IS NULL OR t.total_text IS NULL
                 THEN 'missing_value' END,
            CASE WHEN t.total_text IS NOT NULL AND t.total_amount IS NULL THEN 'unparseable_number' END,
            CASE WHEN t.date_text IS NOT NULL AND t.transaction_date IS NULL THEN 'unparseable_date' END,
            CASE WHEN t.total_amount < 0 THEN 'invalid_amount' END,
            CASE WHEN t.transaction_date > t.business_date
                  AND 'future_date' = ANY(%(critical_rules)s::text[]) THEN 'future_date' END,
            CASE WHEN t.time_text IS NOT NULL AND t.transaction_time IS NULL
                  AND 'unparseable_time' = ANY(%(critical_rules)s::text[]) THEN 'unparseable_time' END,
            CASE WHEN t.payment_method_canonical IS NULL
                  AND 'unknown_payment_method' = ANY(%(critical_rules)s::text[])
                 THEN 'unknown_payment_method' END,
            CASE WHEN t.customer_id IS NOT NULL AND NOT t.customer_exists THEN 'missing_parent' END
        ], NULL) AS reason_codes,
        -- defaults applied to an accepted row
        array_remove(ARRAY[
            CASE WHEN t.transaction_date > t.business_date THEN 'future_date' END,
            CASE WHEN t.time_text IS NOT NULL AND t.transaction_time IS NULL THEN 'unparseable_time' END,
            CASE WHEN t.payment_method_canonical IS NULL THEN 'unknown_payment_method' END,
            CASE WHEN t.payment_method_canonical IS NOT NULL
                  AND btrim(t.payment_method_raw) <> t.payment_method_canonical
                 THEN 'payment_method_normalised' END,
            CASE WHEN t.had_whitespace
                   OR (t.payment_method_raw <> btrim(t.payment_method_raw)
                       AND btrim(t.payment_method_raw) = t.payment_method_canonical) THEN 'trimmed' END
        ], NULL) AS defaults
    FROM typed AS t
),

cleaned AS (
    SELECT
        c._batch_id, c._source_file, c._source_line, c.raw, c.raw_hash, c.reason_codes, c.defaults,
        c.transaction_id,
        c.customer_id,
        c.transaction_date,
        c.transaction_time,
        (c.transaction_date + coalesce(c.transaction_time, time '00:00'))
            AT TIME ZONE %(source_timezone)s AS transaction_at,
        coalesce(c.payment_method_canonical, 'unknown') AS payment_method,
        c.shipping_address,
        round(c.total_amount, 2) AS total_amount
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
        PARTITION BY c.transaction_id, cardinality(c.reason_codes) = 0
        ORDER BY c._batch_id DESC, c._source_line DESC
    )
),

-- final ----------------------------------------------------------------------------------------
final AS (
    SELECT
        r.*,
        r.transaction_id AS natural_key,
        md5(ROW(r.customer_id, r.transaction_date, r.transaction_time, r.transaction_at,
                r.payment_method, r.shipping_address, r.total_amount)::text) AS _row_hash,
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
    CASE WHEN f.outcome <> 'accepted' THEN NULL
         WHEN p.transaction_id IS NULL THEN 'insert'
         WHEN p._row_hash IS DISTINCT FROM f._row_hash AND f._batch_id >= p._batch_id THEN 'update'
         ELSE 'unchanged'
    END AS change
FROM final AS f
LEFT JOIN production.transactions AS p
    ON p.transaction_id = f.transaction_id AND f.outcome = 'accepted';

INSERT INTO production.transactions AS p (
    transaction_id, customer_id, transaction_date, transaction_time, transaction_at,
    payment_method, shipping_address, total_amount, _row_hash, _batch_id, _source_line
)
SELECT
    transaction_id, customer_id, transaction_date, transaction_time, transaction_at,
    payment_method, shipping_address, total_amount, _row_hash, _batch_id, _source_line
FROM _promote
WHERE change IN ('insert', 'update')
ON CONFLICT (transaction_id) DO UPDATE SET
    customer_id = EXCLUDED.customer_id,
    transaction_date = EXCLUDED.transaction_date,
    transaction_time = EXCLUDED.transaction_time,
    transaction_at = EXCLUDED.transaction_at,
    payment_method = EXCLUDED.payment_method,
    shipping_address = EXCLUDED.shipping_address,
    total_amount = EXCLUDED.total_amount,
    _row_hash = EXCLUDED._row_hash,
    _batch_id = EXCLUDED._batch_id,
    _source_line = EXCLUDED._source_line,
    updated_at = now()
WHERE p._row_hash IS DISTINCT FROM EXCLUDED._row_hash
  AND EXCLUDED._batch_id >= p._batch_id;
