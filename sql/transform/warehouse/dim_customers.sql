-- dim_customers: SCD type 2 merge of production.customers (rules: docs/warehouse.md).
-- Parameters: full_refresh (compare every production row, not only those changed since the
-- last merge), first_from (effective_from of a customer's first version).
-- Returns one row: new, changed (new version), overwritten (same-day change or inferred member
-- completed in place), unchanged candidates.

-- ── import: production rows written since the last merge (all on --full-refresh) ─────────────
DROP TABLE IF EXISTS _wh_src_customers;
CREATE TEMP TABLE _wh_src_customers ON COMMIT DROP AS
SELECT
    p.customer_id,
    concat_ws(' ', p.first_name, p.last_name)  AS full_name,
    p.email,
    p.phone,
    p.city,
    p.state,
    p.country,
    p.age_group,
    p.registration_date,
    p._batch_id,
    p.updated_at
FROM production.customers p
WHERE %(full_refresh)s
   OR p.updated_at > coalesce(
        (SELECT w.updated_at FROM ops.warehouse_watermarks w
          WHERE w.source_table = 'production.customers'),
        '-infinity');

-- ── logic: what differs from the current version, and the day the change takes effect ──────
DROP TABLE IF EXISTS _wh_chg_customers;
CREATE TEMP TABLE _wh_chg_customers ON COMMIT DROP AS
SELECT
    s.*,
    h.row_hash,
    d.customer_key    AS current_key,
    d.effective_from  AS current_from,
    d.is_inferred     AS current_inferred,
    -- the batch's business date; else the last order date of that batch; else the load date
    coalesce(
        b.business_date,
        (SELECT max(t.transaction_date) FROM production.transactions t
          WHERE t._batch_id = s._batch_id),
        (s.updated_at AT TIME ZONE 'UTC')::date
    )                 AS change_date
FROM _wh_src_customers s
CROSS JOIN LATERAL (
    SELECT md5(row(s.full_name, s.email, s.phone, s.city, s.state, s.country, s.age_group,
                   s.registration_date)::text) AS row_hash
) h
LEFT JOIN warehouse.dim_customers d ON d.customer_id = s.customer_id AND d.is_current
LEFT JOIN ops.batches b ON b.batch_id = s._batch_id
WHERE d.customer_key IS NULL OR d._row_hash <> h.row_hash;

-- ── overwrite in place: an inferred member completed, a second change on the same day, or a
--    batch older than the current version (type 1 inside one day: ranges never overlap) ───────
UPDATE warehouse.dim_customers d
SET full_name = c.full_name,
    email = c.email,
    phone = c.phone,
    city = c.city,
    state = c.state,
    country = c.country,
    age_group = c.age_group,
    registration_date = c.registration_date,
    is_inferred = false,
    _row_hash = c.row_hash,
    _batch_id = c._batch_id,
    _loaded_at = now()
FROM _wh_chg_customers c
WHERE d.customer_key = c.current_key
  AND (c.current_inferred OR c.change_date <= c.current_from);

-- ── close the current version on the day the change takes effect ───────────────────────────
UPDATE warehouse.dim_customers d
SET effective_to = c.change_date,
    is_current = false
FROM _wh_chg_customers c
WHERE d.customer_key = c.current_key
  AND NOT c.current_inferred
  AND c.change_date > c.current_from;

-- ── open the new version (a new customer's first version starts at first_from) ─────────────
INSERT INTO warehouse.dim_customers (
    customer_id, full_name, email, phone, city, state, country, age_group, registration_date,
    effective_from, effective_to, is_current, is_inferred, _row_hash, _batch_id
)
SELECT
    c.customer_id, c.full_name, c.email, c.phone, c.city, c.state, c.country, c.age_group,
    c.registration_date,
    CASE WHEN c.current_key IS NULL THEN %(first_from)s::date ELSE c.change_date END,
    DATE '9999-12-31', true, false, c.row_hash, c._batch_id
FROM _wh_chg_customers c
WHERE c.current_key IS NULL
   OR (NOT c.current_inferred AND c.change_date > c.current_from)
ORDER BY c.customer_id;

-- ── watermark: the production rows looked at ────────────────────────────────────────────────
INSERT INTO ops.warehouse_watermarks (source_table, updated_at)
SELECT 'production.customers', max(updated_at) FROM _wh_src_customers
HAVING max(updated_at) IS NOT NULL
ON CONFLICT (source_table) DO UPDATE
SET updated_at = greatest(ops.warehouse_watermarks.updated_at, EXCLUDED.updated_at);

SELECT
    count(*) FILTER (WHERE current_key IS NULL)                                        AS new,
    count(*) FILTER (WHERE NOT current_inferred AND change_date > current_from)        AS changed,
    count(*) FILTER (WHERE current_inferred OR change_date <= current_from)            AS overwritten,
    (SELECT count(*) FROM _wh_src_customers)                                           AS candidates
FROM _wh_chg_customers;
