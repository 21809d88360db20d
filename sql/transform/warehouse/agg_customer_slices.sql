-- agg_customer_slices: per customer x category x state (of the versions the lines point at),
-- the first and last order dates and the revenue; segment: the customer's current one.
-- Touched customers are deleted and inserted again: a customer to recompute from its lines
-- (through the fact's customer index), a customer with only inserted lines from its stored rows
-- plus those lines (agg_refresh_keys.sql); a full rebuild sums the per-order rows of every date
-- agg_daily_sales.sql built (_agg_order_cat). Parameter: full. Runs after agg_customer_metrics.

DROP TABLE IF EXISTS _agg_customer_slices_old;

CREATE TEMP TABLE _agg_customer_slices_old ON COMMIT DROP AS
SELECT s.customer_id, s.category, s.state, s.first_purchase_date, s.last_purchase_date,
       s.revenue
FROM warehouse.agg_customer_slices s
WHERE NOT %(full)s
  AND s.customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers WHERE NOT recompute));

DELETE FROM warehouse.agg_customer_slices
WHERE %(full)s OR customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers));

INSERT INTO warehouse.agg_customer_slices (
    customer_id, category, state, customer_segment, first_purchase_date, last_purchase_date,
    revenue
)
SELECT y.customer_id, y.category, y.state, m.customer_segment, y.first_purchase_date,
       y.last_purchase_date, y.revenue
FROM (
    SELECT s.customer_id, s.category, s.state,
           to_date(min(s.date_key)::text, 'YYYYMMDD') AS first_purchase_date,
           to_date(max(s.date_key)::text, 'YYYYMMDD') AS last_purchase_date,
           sum(s.revenue) AS revenue
    FROM _agg_order_cat s
    WHERE %(full)s
    GROUP BY s.customer_id, s.category, s.state
    UNION ALL
    SELECT x.customer_id, x.category, x.state, min(x.first_purchase_date),
           max(x.last_purchase_date), sum(x.revenue)
    FROM (
        SELECT c.customer_id, p.category COLLATE "C" AS category, c.state COLLATE "C" AS state,
               to_date(min(f.date_key)::text, 'YYYYMMDD') AS first_purchase_date,
               to_date(max(f.date_key)::text, 'YYYYMMDD') AS last_purchase_date,
               sum(f.line_total) AS revenue
        FROM _agg_customers k
        JOIN warehouse.dim_customers c ON c.customer_id = k.customer_id
        JOIN warehouse.fact_sales f ON f.customer_key = c.customer_key
        JOIN warehouse.dim_products p ON p.product_key = f.product_key
        WHERE NOT %(full)s AND k.recompute
        GROUP BY 1, 2, 3
        UNION ALL
        SELECT customer_id, category, state, first_purchase_date, last_purchase_date, revenue
        FROM _agg_customer_slices_old
        UNION ALL
        SELECT a.customer_id, a.category, a.state,
               to_date(min(a.date_key)::text, 'YYYYMMDD'),
               to_date(max(a.date_key)::text, 'YYYYMMDD'), sum(a.line_total)
        FROM _agg_added a
        JOIN _agg_customers k ON k.customer_id = a.customer_id AND NOT k.recompute
        WHERE NOT %(full)s
        GROUP BY 1, 2, 3
    ) x
    GROUP BY x.customer_id, x.category, x.state
) y
LEFT JOIN warehouse.agg_customer_metrics m ON m.customer_id = y.customer_id;

SELECT count(*) AS customers FROM _agg_customers;
