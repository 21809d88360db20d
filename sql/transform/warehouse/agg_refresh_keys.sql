-- The keys whose aggregates the aggregates stage refreshes, read from the queue the warehouse
-- stage fills in the same transaction as the facts. The queue is locked until the stage commits
-- (and empties it), so nothing queued meanwhile is lost.
-- A product or customer is refreshed one of two ways (column recompute):
--   * recompute: a queue row without item_id names it (a changed order line's old or new keys,
--     a dimension version overwritten in place) with a date or product: its aggregates are
--     recomputed from every line of it in fact_sales;
--   * add: only inserted lines name it (queued with their item_id): the sums of those lines
--     (_agg_added) are added to its stored aggregates, so a day's batch reads that day's lines,
--     not the whole history of every product and customer it touches.
-- Parameter: full (the caller's --full-refresh; nothing is prepared then).
-- Returns one row: dates, products, customers, cells (customer x month), added (lines),
-- full_refresh_queued.
-- The aggregate files filter on these keys as `<full> OR key = ANY (ARRAY(SELECT …))`: unlike
-- `OR key IN (SELECT …)`, which stays a filter over a scan of the whole table, the array is
-- computed once and the refresh reads only those keys through the table's index.

LOCK TABLE ops.warehouse_refresh_queue IN EXCLUSIVE MODE;

DROP TABLE IF EXISTS _agg_dates, _agg_added, _agg_products, _agg_customers, _agg_cells;

CREATE TEMP TABLE _agg_dates ON COMMIT DROP AS
SELECT DISTINCT date_key FROM ops.warehouse_refresh_queue WHERE date_key IS NOT NULL;

-- the inserted lines, with the ids and attributes of the dimension versions they point at.
-- An order has one date, so all its lines are among the lines of its date: new_customer_order
-- (new_product_order) is true on one inserted line of an order that had no line of that
-- customer (product) before, so counting them counts the orders the batch adds.
CREATE TEMP TABLE _agg_added ON COMMIT DROP AS
SELECT *
FROM (
    SELECT f.item_id, f.date_key, f.transaction_id, c.customer_id, p.product_id,
           p.category COLLATE "C" AS category, c.state COLLATE "C" AS state,
           f.quantity, f.line_total, f.cost_amount, f.profit, f.discount_percentage,
           q.item_id IS NOT NULL AS is_added,
           bool_and(q.item_id IS NOT NULL) OVER by_customer
               AND row_number() OVER (by_customer ORDER BY f.item_id) = 1 AS new_customer_order,
           bool_and(q.item_id IS NOT NULL) OVER by_product
               AND row_number() OVER (by_product ORDER BY f.item_id) = 1 AS new_product_order
    FROM warehouse.fact_sales f
    JOIN warehouse.dim_customers c ON c.customer_key = f.customer_key
    JOIN warehouse.dim_products p ON p.product_key = f.product_key
    LEFT JOIN (SELECT DISTINCT item_id FROM ops.warehouse_refresh_queue
               WHERE item_id IS NOT NULL) q ON q.item_id = f.item_id
    WHERE NOT %(full)s
      AND NOT EXISTS (SELECT 1 FROM ops.warehouse_refresh_queue WHERE is_full_refresh)
      AND f.date_key = ANY (ARRAY(SELECT DISTINCT date_key FROM ops.warehouse_refresh_queue
                                  WHERE item_id IS NOT NULL))
    WINDOW by_customer AS (PARTITION BY f.transaction_id, c.customer_id),
           by_product AS (PARTITION BY f.transaction_id, p.product_id)
) x
WHERE x.is_added;

CREATE TEMP TABLE _agg_products ON COMMIT DROP AS
SELECT k.product_id, bool_or(k.recompute) AS recompute
FROM (
    SELECT product_id, item_id IS NULL AS recompute FROM ops.warehouse_refresh_queue
    WHERE product_id IS NOT NULL
    UNION ALL
    SELECT product_id, false FROM _agg_added
) k
GROUP BY k.product_id;

-- touched customers, with their first and last purchase, cohort and segment before this refresh.
-- A queue row naming only a customer (its current state or country changed,
-- dim_customers_scd2.sql) does not make it recomputed: none of its lines changed, and
-- agg_customer_totals.sql takes every touched customer's state from its current dimension row
CREATE TEMP TABLE _agg_customers ON COMMIT DROP AS
SELECT q.customer_id, q.recompute,
       m.first_purchase_date AS old_first_purchase, m.last_purchase_date AS old_last_purchase,
       date_trunc('month', m.first_purchase_date)::date AS old_cohort,
       m.customer_segment AS old_segment
FROM (
    SELECT k.customer_id, bool_or(k.recompute) AS recompute
    FROM (
        SELECT customer_id,
               item_id IS NULL AND (date_key IS NOT NULL OR product_id IS NOT NULL) AS recompute
        FROM ops.warehouse_refresh_queue
        WHERE customer_id IS NOT NULL
        UNION ALL
        SELECT customer_id, false FROM _agg_added
    ) k
    GROUP BY k.customer_id
) q
LEFT JOIN warehouse.agg_customer_totals m ON m.customer_id = q.customer_id;

-- months in which a touched customer's activity changed; recompute: a row without item_id (a
-- changed line, a dimension overwrite) names it, not only inserted lines
CREATE TEMP TABLE _agg_cells ON COMMIT DROP AS
SELECT customer_id,
       date_trunc('month', to_date(date_key::text, 'YYYYMMDD'))::date AS activity_month,
       bool_or(item_id IS NULL) AS recompute
FROM ops.warehouse_refresh_queue
WHERE customer_id IS NOT NULL AND date_key > 0
GROUP BY 1, 2;

-- keyed, so a lookup by key stays cheap in a plan that misjudges how many rows probe it (an
-- anti join's estimate of one row once turned a probe per moved line into a scan each)
ALTER TABLE _agg_products ADD PRIMARY KEY (product_id);
ALTER TABLE _agg_customers ADD PRIMARY KEY (customer_id);

-- statistics of the columns later statements join, group or filter on (not of the sums: ANALYZE
-- costs about the same per column), here and for the other temporary tables of the stage
ANALYZE _agg_dates;
ANALYZE _agg_added (item_id, date_key, transaction_id, customer_id, product_id, category, state);
ANALYZE _agg_products;
ANALYZE _agg_customers;
ANALYZE _agg_cells;

SELECT
    (SELECT count(*) FROM _agg_dates)                                          AS dates,
    (SELECT count(*) FROM _agg_products)                                       AS products,
    (SELECT count(*) FROM _agg_customers)                                      AS customers,
    (SELECT count(*) FROM _agg_cells)                                          AS cells,
    (SELECT count(*) FROM _agg_added)                                          AS added,
    EXISTS (SELECT 1 FROM ops.warehouse_refresh_queue WHERE is_full_refresh)   AS full_refresh_queued;
