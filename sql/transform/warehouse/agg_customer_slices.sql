-- agg_customer_slices: per customer x category x state (of the versions the lines point at),
-- the first and last order dates and the revenue; segment: the customer's current one.
-- Touched customers are deleted and inserted again (their lines, through the fact's customer
-- index); a full rebuild sums the per-order rows of every date agg_daily_sales.sql built
-- (_agg_order_cat). Parameter: full. Runs after agg_customer_metrics.

DELETE FROM warehouse.agg_customer_slices
WHERE %(full)s OR customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers));

INSERT INTO warehouse.agg_customer_slices (
    customer_id, category, state, customer_segment, first_purchase_date, last_purchase_date,
    revenue
)
SELECT y.customer_id, y.category, y.state, m.customer_segment, y.first_purchase_date,
       y.last_purchase_date, y.revenue
FROM (
    SELECT x.customer_id, x.category, x.state,
           to_date(min(x.date_key)::text, 'YYYYMMDD') AS first_purchase_date,
           to_date(max(x.date_key)::text, 'YYYYMMDD') AS last_purchase_date,
           sum(x.revenue) AS revenue
    FROM (
        SELECT s.customer_id, s.category, s.state, s.date_key, s.revenue
        FROM _agg_order_cat s
        WHERE %(full)s
        UNION ALL
        SELECT c.customer_id, p.category COLLATE "C", c.state COLLATE "C", f.date_key,
               f.line_total
        FROM _agg_customers k
        JOIN warehouse.dim_customers c ON c.customer_id = k.customer_id
        JOIN warehouse.fact_sales f ON f.customer_key = c.customer_key
        JOIN warehouse.dim_products p ON p.product_key = f.product_key
        WHERE NOT %(full)s
    ) x
    GROUP BY x.customer_id, x.category, x.state
) y
LEFT JOIN warehouse.agg_customer_metrics m ON m.customer_id = y.customer_id;

SELECT count(*) AS customers FROM _agg_customers;
