-- dim_products: SCD type 2 merge from the version log production.product_versions (rules:
-- docs/warehouse.md). Every version logged since the last merge is placed in the product's
-- chain, ordered by change_date: several promoted batches give the same versions whether the
-- warehouse ran after each of them or once after all, and --full-refresh (which empties the
-- dimension) replays the whole log into the same rows.
-- Parameters: full_refresh (replay every logged version), first_from (effective_from of a
-- product's first version).
-- Facts whose version is overwritten in place are re-costed; facts of a closed version dated on
-- or after its new end are re-pointed (and re-costed); their keys are queued for the aggregates.
-- Returns one row: new, changed (new version), overwritten (in place), candidates (versions).

-- ── import: versions logged since the last merge (all of them on --full-refresh) ─────────────
DROP TABLE IF EXISTS _wh_src_products;
CREATE TEMP TABLE _wh_src_products ON COMMIT DROP AS
SELECT v.*
FROM production.product_versions v
WHERE %(full_refresh)s
   OR v.recorded_at > coalesce(
        (SELECT w.updated_at FROM ops.warehouse_watermarks w
          WHERE w.source_table = 'production.product_versions'),
        '-infinity');

-- ── logic: place each version in its product's chain ───────────────────────────────────────
DROP TABLE IF EXISTS _wh_chg_products;
CREATE TEMP TABLE _wh_chg_products ON COMMIT DROP AS
WITH
daily AS (
    -- several versions of one product on one day: the latest batch wins (type 1 within a day)
    SELECT DISTINCT ON (s.product_id, s.change_date) s.*
    FROM _wh_src_products s
    ORDER BY s.product_id, s.change_date, s._batch_id DESC
),
against AS (
    SELECT
        v.*,
        d.product_key    AS current_key,
        d.effective_from  AS current_from,
        d.is_inferred     AS current_inferred,
        d._row_hash       AS current_hash,
        row_number() OVER (PARTITION BY v.product_id ORDER BY v.change_date) AS n
    FROM daily v
    LEFT JOIN warehouse.dim_products d ON d.product_id = v.product_id AND d.is_current
),
kept AS (
    -- is_base: the version that becomes (or overwrites) the row before the new chain: a new
    -- product's first version, the one completing an inferred member, or the last one dated on
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
        row_number() OVER (PARTITION BY k.product_id, k.is_base ORDER BY k.change_date DESC)
            AS base_rank,
        lead(k.change_date) OVER (PARTITION BY k.product_id, k.is_base ORDER BY k.change_date)
            AS next_date,
        min(k.change_date) FILTER (WHERE NOT k.is_base) OVER (PARTITION BY k.product_id)
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
--    facts of that version get its (new) cost ──────────────────────────────────────────────
WITH overwritten AS (
    UPDATE warehouse.dim_products d
    SET product_name = c.product_name,
        category = c.category,
        sub_category = c.sub_category,
        brand = c.brand,
        price = c.price,
        cost = c.cost,
        price_category = c.price_category,
        is_inferred = false,
        _row_hash = c.row_hash,
        _batch_id = c._batch_id,
        _loaded_at = now()
    FROM _wh_chg_products c
    WHERE d.product_key = c.current_key
      AND c.action = 'in_place'
    RETURNING d.product_key, d.product_id, d.cost
),
recosted AS (
    UPDATE warehouse.fact_sales f
    SET cost_amount = f.quantity * o.cost,
        profit = f.line_total - f.quantity * o.cost
    FROM overwritten o
    WHERE f.product_key = o.product_key
      AND f.cost_amount <> f.quantity * o.cost
    RETURNING f.date_key, f.customer_key, o.product_id
)
-- every fact of an overwritten version is queued, re-costed or not: its category or other
-- attributes may have changed too, and the aggregates group by them (recosted runs regardless)
INSERT INTO ops.warehouse_refresh_queue (date_key, customer_id, product_id)
SELECT DISTINCT f.date_key, dc.customer_id, o.product_id
FROM overwritten o
JOIN warehouse.fact_sales f ON f.product_key = o.product_key
JOIN warehouse.dim_customers dc ON dc.customer_key = f.customer_key;

-- ── close the current version on the day the first new version takes effect ────────────────
UPDATE warehouse.dim_products d
SET effective_to = c.first_chain_date,
    is_current = false
FROM (SELECT DISTINCT current_key, first_chain_date FROM _wh_chg_products
      WHERE current_key IS NOT NULL AND first_chain_date IS NOT NULL) c
WHERE d.product_key = c.current_key;

-- ── open the new versions (a new product's first version starts at first_from) ────────────
INSERT INTO warehouse.dim_products (
    product_id, product_name, category, sub_category, brand, price, cost, price_category,
    effective_from, effective_to, is_current, is_inferred, _row_hash, _batch_id
)
SELECT
    c.product_id, c.product_name, c.category, c.sub_category, c.brand, c.price, c.cost,
    c.price_category, c.effective_from, c.effective_to, c.effective_to = DATE '9999-12-31',
    false, c.row_hash, c._batch_id
FROM _wh_chg_products c
WHERE c.action IN ('first', 'chain')
ORDER BY c.product_id, c.effective_from;

-- ── facts of a closed version dated on or after its new end move to the version of their date
--    and take its cost ─────────────────────────────────────────────────────────────────────
WITH closed AS (
    SELECT DISTINCT product_id, current_key, first_chain_date FROM _wh_chg_products
    WHERE current_key IS NOT NULL AND first_chain_date IS NOT NULL
),
moved AS (
    UPDATE warehouse.fact_sales f
    SET product_key = d.product_key,
        cost_amount = f.quantity * coalesce(d.cost, 0),
        profit = f.line_total - f.quantity * coalesce(d.cost, 0),
        _loaded_at = now()
    FROM closed c
    JOIN warehouse.dim_date dd ON dd.full_date >= c.first_chain_date
    JOIN warehouse.dim_products d
      ON d.product_id = c.product_id
     AND dd.full_date >= d.effective_from AND dd.full_date < d.effective_to
    -- the lines of the closed versions dated on or after the earliest new end, found by
    -- both fact indexes together (a bitmap AND): a day's changes take effect on that day,
    -- so there are few such lines or none, where either index alone finds thousands
    WHERE f.product_key = ANY (ARRAY(SELECT current_key FROM closed))
      AND f.date_key = ANY (ARRAY(SELECT d2.date_key FROM warehouse.dim_date d2
                                  WHERE d2.full_date >= (SELECT min(first_chain_date)
                                                         FROM closed)))
      AND f.product_key = c.current_key
      AND f.date_key = dd.date_key
    RETURNING f.date_key, f.customer_key, c.product_id
)
INSERT INTO ops.warehouse_refresh_queue (date_key, customer_id, product_id)
SELECT DISTINCT m.date_key, dc.customer_id, m.product_id
FROM moved m
JOIN warehouse.dim_customers dc ON dc.customer_key = m.customer_key;

-- ── watermark: the versions looked at ───────────────────────────────────────────────────────
INSERT INTO ops.warehouse_watermarks (source_table, updated_at)
SELECT 'production.product_versions', max(recorded_at) FROM _wh_src_products
HAVING max(recorded_at) IS NOT NULL
ON CONFLICT (source_table) DO UPDATE
SET updated_at = greatest(ops.warehouse_watermarks.updated_at, EXCLUDED.updated_at);

SELECT
    count(*) FILTER (WHERE action = 'first')                    AS new,
    count(*) FILTER (WHERE action = 'chain')                    AS changed,
    count(*) FILTER (WHERE action = 'in_place')                 AS overwritten,
    (SELECT count(*) FROM _wh_src_products)                     AS candidates
FROM _wh_chg_products;
