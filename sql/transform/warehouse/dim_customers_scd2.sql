-- dim_customers: SCD type 2 merge from the version log production.customer_versions (rules:
-- docs/warehouse.md). Every version logged since the last merge is placed in the customer's
-- chain, ordered by change_date: several promoted batches give the same versions whether the
-- warehouse ran after each of them or once after all, and --full-refresh (which empties the
-- dimension) replays the whole log into the same rows.
-- Parameters: full_refresh (replay every logged version), first_from (effective_from of a
-- customer's first version).
-- Returns one row: new, changed (new version), overwritten (in place), candidates (versions).

-- ── import: versions logged since the last merge (all of them on --full-refresh) ─────────────
DROP TABLE IF EXISTS _wh_src_customers;
CREATE TEMP TABLE _wh_src_customers ON COMMIT DROP AS
SELECT v.*
FROM production.customer_versions v
WHERE %(full_refresh)s
   OR v.recorded_at > coalesce(
        (SELECT w.updated_at FROM ops.warehouse_watermarks w
          WHERE w.source_table = 'production.customer_versions'),
        '-infinity');

-- ── logic: place each version in its customer's chain ───────────────────────────────────────
DROP TABLE IF EXISTS _wh_chg_customers;
CREATE TEMP TABLE _wh_chg_customers ON COMMIT DROP AS
WITH
daily AS (
    -- several versions of one customer on one day: the latest batch wins (type 1 within a day)
    SELECT DISTINCT ON (s.customer_id, s.change_date) s.*
    FROM _wh_src_customers s
    ORDER BY s.customer_id, s.change_date, s._batch_id DESC
),
against AS (
    SELECT
        v.*,
        d.customer_key    AS current_key,
        d.effective_from  AS current_from,
        d.is_inferred     AS current_inferred,
        d._row_hash       AS current_hash,
        row_number() OVER (PARTITION BY v.customer_id ORDER BY v.change_date) AS n
    FROM daily v
    LEFT JOIN warehouse.dim_customers d ON d.customer_id = v.customer_id AND d.is_current
),
kept AS (
    -- is_base: the version that becomes (or overwrites) the row before the new chain: a new
    -- customer's first version, the one completing an inferred member, or the last one dated on
    -- or before the current version's start (a same-day change, or a batch loaded out of order)
    SELECT
        a.*,
        CASE WHEN a.current_key IS NULL OR a.current_inferred THEN a.n = 1
             ELSE a.change_date <= a.current_from END AS is_base
    FROM against a
    -- unchanged: a first version equal to the current one changes nothing
    WHERE a.current_hash IS NULL OR a.n > 1 OR a.row_hash <> a.current_hash
),
placed AS (
    SELECT
        k.*,
        row_number() OVER (PARTITION BY k.customer_id, k.is_base ORDER BY k.change_date DESC)
            AS base_rank,
        lead(k.change_date) OVER (PARTITION BY k.customer_id, k.is_base ORDER BY k.change_date)
            AS next_date,
        min(k.change_date) FILTER (WHERE NOT k.is_base) OVER (PARTITION BY k.customer_id)
            AS first_chain_date
    FROM kept k
)
SELECT
    p.*,
    CASE WHEN NOT p.is_base THEN 'chain'
         WHEN p.current_key IS NULL THEN 'first'
         ELSE 'in_place' END AS action,
    CASE WHEN NOT p.is_base THEN p.change_date
         WHEN p.current_key IS NULL THEN %(first_from)s::date
         ELSE p.current_from END AS effective_from,
    coalesce(CASE WHEN p.is_base THEN p.first_chain_date ELSE p.next_date END,
             DATE '9999-12-31') AS effective_to
FROM placed p
WHERE NOT p.is_base OR p.base_rank = 1;

-- ── overwrite in place: an inferred member completed, a same-day change, an older batch;
--    the facts of that version are queued (the aggregates group by its state and more) ─────
WITH overwritten AS (
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
      AND c.action = 'in_place'
    RETURNING d.customer_key, d.customer_id
)
INSERT INTO ops.warehouse_refresh_queue (date_key, customer_id, product_id)
SELECT DISTINCT f.date_key, o.customer_id, dp.product_id
FROM overwritten o
JOIN warehouse.fact_sales f ON f.customer_key = o.customer_key
JOIN warehouse.dim_products dp ON dp.product_key = f.product_key;

-- ── close the current version on the day the first new version takes effect ────────────────
UPDATE warehouse.dim_customers d
SET effective_to = c.first_chain_date,
    is_current = false
FROM (SELECT DISTINCT current_key, first_chain_date FROM _wh_chg_customers
      WHERE current_key IS NOT NULL AND first_chain_date IS NOT NULL) c
WHERE d.customer_key = c.current_key;

-- ── open the new versions (a new customer's first version starts at first_from) ────────────
INSERT INTO warehouse.dim_customers (
    customer_id, full_name, email, phone, city, state, country, age_group, registration_date,
    effective_from, effective_to, is_current, is_inferred, _row_hash, _batch_id
)
SELECT
    c.customer_id, c.full_name, c.email, c.phone, c.city, c.state, c.country, c.age_group,
    c.registration_date, c.effective_from, c.effective_to, c.effective_to = DATE '9999-12-31',
    false, c.row_hash, c._batch_id
FROM _wh_chg_customers c
WHERE c.action IN ('first', 'chain')
ORDER BY c.customer_id, c.effective_from;

-- ── facts of a closed version dated on or after its new end move to the version of their date
WITH closed AS (
    SELECT DISTINCT customer_id, current_key, first_chain_date FROM _wh_chg_customers
    WHERE current_key IS NOT NULL AND first_chain_date IS NOT NULL
),
moved AS (
    UPDATE warehouse.fact_sales f
    SET customer_key = d.customer_key,
        _loaded_at = now()
    FROM closed c
    JOIN warehouse.dim_date dd ON dd.full_date >= c.first_chain_date
    JOIN warehouse.dim_customers d
      ON d.customer_id = c.customer_id
     AND dd.full_date >= d.effective_from AND dd.full_date < d.effective_to
    -- the lines of the closed versions dated on or after the earliest new end, found by
    -- both fact indexes together (a bitmap AND): a day's changes take effect on that day,
    -- so there are few such lines or none, where either index alone finds thousands
    WHERE f.customer_key = ANY (ARRAY(SELECT current_key FROM closed))
      AND f.date_key = ANY (ARRAY(SELECT d2.date_key FROM warehouse.dim_date d2
                                  WHERE d2.full_date >= (SELECT min(first_chain_date)
                                                         FROM closed)))
      AND f.customer_key = c.current_key
      AND f.date_key = dd.date_key
    RETURNING f.date_key, c.customer_id, f.product_key
)
INSERT INTO ops.warehouse_refresh_queue (date_key, customer_id, product_id)
SELECT DISTINCT m.date_key, m.customer_id, p.product_id
FROM moved m
JOIN warehouse.dim_products p ON p.product_key = m.product_key;

-- ── customers whose current state or country now differs from the one agg_customer_totals
-- keeps (a new version, an overwrite, a completed inferred member) are queued by their id
-- alone (agg_customer_totals.sql takes the new state; nothing is recomputed for it), unless the
-- aggregates are rebuilt anyway ─────────────────────────────────────────────────────────────
INSERT INTO ops.warehouse_refresh_queue (customer_id)
SELECT m.customer_id
FROM warehouse.agg_customer_totals m
JOIN warehouse.dim_customers d ON d.customer_id = m.customer_id AND d.is_current
WHERE NOT %(full_refresh)s
  AND m.customer_id = ANY (ARRAY(SELECT customer_id FROM _wh_chg_customers
                                 WHERE current_key IS NOT NULL))
  AND (m.state, m.country) IS DISTINCT FROM (d.state, d.country);

-- ── watermark: the versions looked at ───────────────────────────────────────────────────────
INSERT INTO ops.warehouse_watermarks (source_table, updated_at)
SELECT 'production.customer_versions', max(recorded_at) FROM _wh_src_customers
HAVING max(recorded_at) IS NOT NULL
ON CONFLICT (source_table) DO UPDATE
SET updated_at = greatest(ops.warehouse_watermarks.updated_at, EXCLUDED.updated_at);

SELECT
    count(*) FILTER (WHERE action = 'first')                    AS new,
    count(*) FILTER (WHERE action = 'chain')                    AS changed,
    count(*) FILTER (WHERE action = 'in_place')                 AS overwritten,
    (SELECT count(*) FROM _wh_src_customers)                    AS candidates
FROM _wh_chg_customers;
