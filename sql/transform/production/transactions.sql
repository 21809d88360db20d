-- production.transactions from one batch of staging.transactions (or, with retry, from the open
-- retryable rows of ops.quarantine). Builds _promote (every source row with its cleaned values,
-- reason codes, defaults and outcome) and upserts the accepted rows; _finish.sql follows.
-- Parameters: batch_id, retry, critical_rules (text[]), source_timezone.
-- Rules: docs/data_quality.md.

CREATE TEMP TABLE _promote ON COMMIT DROP AS
WITH

-- import ---------------------------------------------------------------------------------------
source AS (
    SELECT s.ctid AS staging_row, s.* FROM staging.transactions AS s
    WHERE NOT %(retry)s AND s._batch_id = %(batch_id)s
    UNION ALL
    SELECT NULL::tid, r.* FROM ops.quarantine AS q
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
-- (OFFSET 0 keeps typed and checked apart, so each parse and each reason runs once per row,
-- not once per reference after the planner inlines the expressions; below typed the planner
-- may still scan, trim and join in parallel workers.)
trimmed AS (
    SELECT
        s.staging_row, s._batch_id, s._source_line,
        hash_record_extended(ROW(s.transaction_id, s.customer_id, s.transaction_date,
            s.transaction_time, s.payment_method, s.shipping_address, s.total_amount),
            0) AS raw_hash,
        s.transaction_id AS transaction_id_raw, btrim(s.transaction_id) AS transaction_id_t,
        s.customer_id AS customer_id_raw, btrim(s.customer_id) AS customer_id_t,
        s.transaction_date AS date_raw, btrim(s.transaction_date) AS date_t,
        s.transaction_time AS time_raw, btrim(s.transaction_time) AS time_t,
        s.payment_method AS payment_method_raw,
        s.shipping_address AS shipping_address_raw, btrim(s.shipping_address) AS shipping_address_t,
        s.total_amount AS total_raw, btrim(s.total_amount) AS total_t,
        -- the batch's business date; a batch without one is checked against its load date
        coalesce(b.business_date, s._loaded_at::date) AS business_date
    FROM source AS s
    LEFT JOIN batches AS b ON b.batch_id = s._batch_id
),

texts AS (
    SELECT
        t.staging_row, t._batch_id, t._source_line, t.raw_hash, t.business_date,
        t.payment_method_raw,
        nullif(t.transaction_id_t, '') AS transaction_id,
        nullif(t.customer_id_t, '') AS customer_id,
        nullif(t.date_t, '') AS date_text,
        nullif(t.time_t, '') AS time_text,
        nullif(t.shipping_address_t, '') AS shipping_address,
        nullif(t.total_t, '') AS total_text,
        (t.transaction_id_raw <> t.transaction_id_t OR t.customer_id_raw <> t.customer_id_t
            OR t.date_raw <> t.date_t OR t.time_raw <> t.time_t
            OR t.shipping_address_raw <> t.shipping_address_t
            OR t.total_raw <> t.total_t) IS TRUE AS had_whitespace
    FROM trimmed AS t
),

typed AS (
    SELECT
        t.*,
        production.try_date(t.date_text) AS transaction_date,
        production.try_time(t.time_text) AS transaction_time,
        production.try_numeric(t.total_text) AS total_amount,
        pm.canonical AS payment_method_canonical,
        c.customer_id IS NOT NULL AS customer_exists
    FROM texts AS t
    LEFT JOIN payment_methods AS pm ON pm.variant_key = production.lookup_key(t.payment_method_raw)
    LEFT JOIN production.customers AS c ON c.customer_id = t.customer_id
    OFFSET 0
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
    OFFSET 0
),

cleaned AS (
    SELECT
        c.staging_row, c._batch_id, c._source_line, c.raw_hash, c.reason_codes, c.defaults,
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

-- final ----------------------------------------------------------------------------------------
final AS (
    SELECT
        r.*,
        r.transaction_id AS natural_key,
        -- duplicates among the accepted rows: production.mark_duplicates, below
        CASE WHEN cardinality(r.reason_codes) > 0 THEN 'quarantined' ELSE 'accepted' END AS outcome,
        r.reason_codes = ARRAY['missing_parent'] AS is_retryable
    FROM cleaned AS r
)

SELECT
    f.*,
    -- the row as received, for the rows quarantined from a staged batch only
    CASE WHEN f.outcome = 'quarantined' AND f.staging_row IS NOT NULL THEN
        (SELECT to_jsonb(s) FROM staging.transactions AS s WHERE s.ctid = f.staging_row)
    END AS raw,
    CASE WHEN f.outcome <> 'accepted' THEN NULL
         WHEN p.transaction_id IS NULL THEN 'insert'
         WHEN (p.customer_id, p.transaction_date, p.transaction_time, p.transaction_at,
               p.payment_method, p.shipping_address, p.total_amount)
               IS DISTINCT FROM (f.customer_id, f.transaction_date, f.transaction_time,
                                 f.transaction_at, f.payment_method, f.shipping_address,
                                 f.total_amount)
               AND f._batch_id >= p._batch_id THEN 'update'
         ELSE 'unchanged'
    END AS change
FROM final AS f
LEFT JOIN production.transactions AS p
    ON p.transaction_id = f.transaction_id AND f.outcome = 'accepted';

SELECT production.mark_duplicates();

-- new rows inserted, changed rows updated (no ON CONFLICT: see dwh/stages/production.py)
INSERT INTO production.transactions (
    transaction_id, customer_id, transaction_date, transaction_time, transaction_at,
    payment_method, shipping_address, total_amount, _batch_id, _source_line
)
SELECT
    transaction_id, customer_id, transaction_date, transaction_time, transaction_at,
    payment_method, shipping_address, total_amount, _batch_id, _source_line
FROM _promote
WHERE change = 'insert';

UPDATE production.transactions AS p SET
    customer_id = f.customer_id,
    transaction_date = f.transaction_date,
    transaction_time = f.transaction_time,
    transaction_at = f.transaction_at,
    payment_method = f.payment_method,
    shipping_address = f.shipping_address,
    total_amount = f.total_amount,
    _batch_id = f._batch_id,
    _source_line = f._source_line,
    updated_at = now()
FROM _promote AS f
WHERE f.change = 'update' AND p.transaction_id = f.transaction_id;
