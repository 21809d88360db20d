-- production.customers from one batch of staging.customers (or, with retry, from the open
-- retryable rows of ops.quarantine). Builds the temp table _promote: every source row with its
-- cleaned values, reason codes, defaults applied and outcome; then upserts the accepted rows.
-- sql/transform/production/_finish.sql writes the quarantine and the counts afterwards.
-- Parameters: batch_id, retry, critical_rules (text[]), email_pattern.
-- Rules: docs/data_quality.md.

CREATE TEMP TABLE _promote ON COMMIT DROP AS
WITH

-- import ---------------------------------------------------------------------------------------
source AS (
    SELECT s.ctid AS staging_row, s.* FROM staging.customers AS s
    WHERE NOT %(retry)s AND s._batch_id = %(batch_id)s
    UNION ALL
    SELECT NULL::tid, r.* FROM ops.quarantine AS q
    CROSS JOIN LATERAL jsonb_populate_record(NULL::staging.customers, q.raw) AS r
    WHERE %(retry)s AND q.table_name = 'customers' AND q.is_retryable AND q.resolved_at IS NULL
),

-- logic: trim and type -------------------------------------------------------------------------
trimmed AS (
    SELECT
        s.staging_row, s._batch_id, s._source_line,
        hash_record_extended(ROW(s.customer_id, s.first_name, s.last_name, s.email, s.phone,
            s.registration_date, s.city, s.state, s.country, s.age_group), 0) AS raw_hash,
        -- ids and text: trimmed, empty = NULL
        nullif(btrim(s.customer_id), '') AS customer_id,
        nullif(btrim(s.first_name), '') AS first_name,
        nullif(btrim(s.last_name), '') AS last_name,
        lower(nullif(btrim(s.email), '')) AS email,
        nullif(btrim(s.phone), '') AS phone,
        s.registration_date AS registration_date_raw,
        nullif(btrim(s.city), '') AS city,
        nullif(btrim(s.state), '') AS state,
        nullif(btrim(s.country), '') AS country,
        nullif(btrim(s.age_group), '') AS age_group,
        -- stray whitespace on any text field (email counts only when the email is kept)
        (s.customer_id <> btrim(s.customer_id) OR s.first_name <> btrim(s.first_name)
            OR s.last_name <> btrim(s.last_name) OR s.phone <> btrim(s.phone)
            OR s.registration_date <> btrim(s.registration_date) OR s.city <> btrim(s.city)
            OR s.state <> btrim(s.state) OR s.country <> btrim(s.country)
            OR s.age_group <> btrim(s.age_group)) IS TRUE AS had_whitespace,
        (s.email <> btrim(s.email)) IS TRUE AS email_had_whitespace
    FROM source AS s
),

typed AS MATERIALIZED (
    SELECT
        t.*,
        production.try_date(t.registration_date_raw) AS registration_date,
        t.email ~ %(email_pattern)s AS email_ok,
        -- phone: drop an extension (x123 / ext. 123), keep a leading + and the digits
        nullif(
            CASE WHEN t.phone LIKE '+%%' THEN '+' ELSE '' END
            || regexp_replace(regexp_replace(t.phone, '\s*(x|ext\.?)\s*[0-9]+$', '', 'i'), '[^0-9]', '', 'g'),
            ''
        ) AS phone_normalised
    FROM trimmed AS t
),

checked AS (
    SELECT
        t.*,
        -- critical reasons, most specific first (reason_codes[1] is the primary reason)
        array_remove(ARRAY[
            CASE WHEN t.customer_id IS NULL THEN 'missing_id' END,
            CASE WHEN t.registration_date IS NULL THEN 'unparseable_date' END,
            CASE WHEN t.email IS NOT NULL AND NOT t.email_ok
                  AND 'invalid_email' = ANY(%(critical_rules)s::text[]) THEN 'invalid_email' END
        ], NULL) AS reason_codes,
        -- defaults applied to an accepted row
        array_remove(ARRAY[
            CASE WHEN t.email IS NOT NULL AND NOT t.email_ok THEN 'invalid_email' END,
            CASE WHEN t.had_whitespace OR (t.email_had_whitespace AND t.email_ok) THEN 'trimmed' END,
            CASE WHEN t.phone IS NOT NULL
                  AND length(regexp_replace(t.phone_normalised, '[^0-9]', '', 'g')) NOT BETWEEN 7 AND 15
                 THEN 'invalid_phone' END
        ], NULL) AS defaults
    FROM typed AS t
),

cleaned AS (
    SELECT
        c.staging_row, c._batch_id, c._source_line, c.raw_hash, c.reason_codes, c.defaults,
        c.customer_id,
        CASE WHEN c.first_name IN (lower(c.first_name), upper(c.first_name))
             THEN initcap(c.first_name) ELSE c.first_name END AS first_name,
        CASE WHEN c.last_name IN (lower(c.last_name), upper(c.last_name))
             THEN initcap(c.last_name) ELSE c.last_name END AS last_name,
        CASE WHEN c.email_ok THEN c.email END AS email,
        coalesce(c.email_ok, false) AS is_email_valid,
        CASE WHEN 'invalid_phone' = ANY(c.defaults) THEN NULL ELSE c.phone_normalised END AS phone,
        c.registration_date,
        c.city, c.state, c.country,
        coalesce(c.age_group, 'unknown') AS age_group
    FROM checked AS c
),

-- final ----------------------------------------------------------------------------------------
final AS (
    SELECT
        r.*,
        r.customer_id AS natural_key,
        -- duplicates among the accepted rows: production.mark_duplicates, below
        CASE WHEN cardinality(r.reason_codes) > 0 THEN 'quarantined' ELSE 'accepted' END AS outcome,
        false AS is_retryable
    FROM cleaned AS r
)

SELECT
    f.*,
    -- the row as received, for the rows quarantined from a staged batch only
    CASE WHEN f.outcome = 'quarantined' AND f.staging_row IS NOT NULL THEN
        (SELECT to_jsonb(s) FROM staging.customers AS s WHERE s.ctid = f.staging_row)
    END AS raw,
    CASE WHEN f.outcome <> 'accepted' THEN NULL
         WHEN p.customer_id IS NULL THEN 'insert'
         WHEN (p.first_name, p.last_name, p.email, p.is_email_valid, p.phone,
               p.registration_date, p.city, p.state, p.country, p.age_group)
               IS DISTINCT FROM (f.first_name, f.last_name, f.email, f.is_email_valid, f.phone,
                                 f.registration_date, f.city, f.state, f.country, f.age_group)
               AND f._batch_id >= p._batch_id THEN 'update'
         ELSE 'unchanged'
    END AS change
FROM final AS f
LEFT JOIN production.customers AS p ON p.customer_id = f.customer_id AND f.outcome = 'accepted';

SELECT production.mark_duplicates();

-- new rows inserted, changed rows updated (no ON CONFLICT: see dwh/stages/production.py)
INSERT INTO production.customers (
    customer_id, first_name, last_name, email, is_email_valid, phone, registration_date,
    city, state, country, age_group, _batch_id, _source_line
)
SELECT
    customer_id, first_name, last_name, email, is_email_valid, phone, registration_date,
    city, state, country, age_group, _batch_id, _source_line
FROM _promote
WHERE change = 'insert';

UPDATE production.customers AS p SET
    first_name = f.first_name,
    last_name = f.last_name,
    email = f.email,
    is_email_valid = f.is_email_valid,
    phone = f.phone,
    registration_date = f.registration_date,
    city = f.city,
    state = f.state,
    country = f.country,
    age_group = f.age_group,
    _batch_id = f._batch_id,
    _source_line = f._source_line,
    updated_at = now()
FROM _promote AS f
WHERE f.change = 'update' AND p.customer_id = f.customer_id;
