-- The keys whose aggregates the aggregates stage recomputes, read from the queue the warehouse
-- stage fills in the same transaction as the facts. The queue is locked until the stage commits
-- (and empties it), so nothing queued meanwhile is lost.
-- Returns one row: dates, products, customers, cells (customer x month), full_refresh_queued.
-- The aggregate files filter on these keys as `<full> OR key = ANY (ARRAY(SELECT …))`: unlike
-- `OR key IN (SELECT …)`, which stays a filter over a scan of the whole table, the array is
-- computed once and the refresh reads only those keys through the table's index.

LOCK TABLE ops.warehouse_refresh_queue IN EXCLUSIVE MODE;

DROP TABLE IF EXISTS _agg_dates, _agg_products, _agg_customers, _agg_cells;

CREATE TEMP TABLE _agg_dates ON COMMIT DROP AS
SELECT DISTINCT date_key FROM ops.warehouse_refresh_queue WHERE date_key IS NOT NULL;

CREATE TEMP TABLE _agg_products ON COMMIT DROP AS
SELECT DISTINCT product_id FROM ops.warehouse_refresh_queue WHERE product_id IS NOT NULL;

-- touched customers, with the cohort and segment they were in before this refresh
CREATE TEMP TABLE _agg_customers ON COMMIT DROP AS
SELECT q.customer_id, date_trunc('month', m.first_purchase_date)::date AS old_cohort,
       m.customer_segment AS old_segment
FROM (SELECT DISTINCT customer_id FROM ops.warehouse_refresh_queue
       WHERE customer_id IS NOT NULL) q
LEFT JOIN warehouse.agg_customer_metrics m ON m.customer_id = q.customer_id;

-- months in which a touched customer's activity changed
CREATE TEMP TABLE _agg_cells ON COMMIT DROP AS
SELECT DISTINCT customer_id,
       date_trunc('month', to_date(date_key::text, 'YYYYMMDD'))::date AS activity_month
FROM ops.warehouse_refresh_queue
WHERE customer_id IS NOT NULL AND date_key > 0;

ANALYZE _agg_dates;
ANALYZE _agg_products;
ANALYZE _agg_customers;
ANALYZE _agg_cells;

SELECT
    (SELECT count(*) FROM _agg_dates)                                          AS dates,
    (SELECT count(*) FROM _agg_products)                                       AS products,
    (SELECT count(*) FROM _agg_customers)                                      AS customers,
    (SELECT count(*) FROM _agg_cells)                                          AS cells,
    EXISTS (SELECT 1 FROM ops.warehouse_refresh_queue WHERE is_full_refresh)   AS full_refresh_queued;
