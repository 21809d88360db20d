-- agg_customer_totals (the stored columns of the agg_customer_metrics view): refresh the
-- touched customers (all versions of a customer_id together; agg_refresh_keys.sql says how each
-- is refreshed): a customer to recompute is summed again from its lines in fact_sales, a
-- customer with only inserted lines gets their orders, sums and dates added to its stored row.
-- Recency is not stored: the view computes it from agg_recency_as_of (agg_recency_as_of.sql), so
-- a new order date rewrites one row, not every customer's. Scores use fixed thresholds from
-- config (docs/warehouse.md). State and country: the customer's current dimension row.
-- Parameters: full; f1..f4 (orders), m1..m4 (money), vip_min_spent, regular_min_transactions.

DROP TABLE IF EXISTS _agg_customer_old;

CREATE TEMP TABLE _agg_customer_old ON COMMIT DROP AS
SELECT m.customer_id, m.transactions, m.total_spent, m.first_purchase_date, m.last_purchase_date
FROM warehouse.agg_customer_totals m
WHERE NOT %(full)s
  AND m.customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers WHERE NOT recompute));

DELETE FROM warehouse.agg_customer_totals
WHERE %(full)s OR customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers));

INSERT INTO warehouse.agg_customer_totals (
    customer_id, transactions, total_spent, avg_order_value, first_purchase_date,
    last_purchase_date, frequency_score, monetary_score, customer_segment, state, country
)
SELECT
    t.customer_id, t.transactions, t.total_spent, t.avg_order_value, t.first_purchase_date,
    t.last_purchase_date, t.frequency_score, t.monetary_score, t.customer_segment, cur.state,
    cur.country
FROM (
SELECT
    s.customer_id,
    s.transactions,
    s.total_spent,
    round(s.total_spent / s.transactions, 2) AS avg_order_value,
    s.first_purchase_date,
    s.last_purchase_date,
    1 + (s.transactions >= %(f1)s)::int + (s.transactions >= %(f2)s)::int
      + (s.transactions >= %(f3)s)::int + (s.transactions >= %(f4)s)::int AS frequency_score,
    1 + (s.total_spent >= %(m1)s)::int + (s.total_spent >= %(m2)s)::int
      + (s.total_spent >= %(m3)s)::int + (s.total_spent >= %(m4)s)::int AS monetary_score,
    CASE
        WHEN s.total_spent >= %(vip_min_spent)s THEN 'VIP'
        WHEN s.transactions >= %(regular_min_transactions)s THEN 'Regular'
        ELSE 'New'
    END AS customer_segment
FROM (
    -- full: from the per-order rows of every date (_agg_order_cat, agg_daily_sales.sql)
    SELECT
        o.customer_id,
        (count(*) FILTER (WHERE o.is_first))::bigint     AS transactions,
        sum(o.revenue)                                  AS total_spent,
        to_date(min(o.date_key)::text, 'YYYYMMDD')      AS first_purchase_date,
        to_date(max(o.date_key)::text, 'YYYYMMDD')      AS last_purchase_date
    FROM _agg_order_cat o
    WHERE %(full)s
    GROUP BY o.customer_id
    UNION ALL
    -- customers to recompute: their lines, through the fact's customer index
    SELECT
        c.customer_id,
        count(DISTINCT f.transaction_id)  AS transactions,
        sum(f.line_total)                 AS total_spent,
        min(d.full_date)                  AS first_purchase_date,
        max(d.full_date)                  AS last_purchase_date
    FROM warehouse.fact_sales f
    JOIN warehouse.dim_customers c ON c.customer_key = f.customer_key
    JOIN warehouse.dim_date d ON d.date_key = f.date_key
    WHERE NOT %(full)s AND c.customer_id IN (SELECT customer_id FROM _agg_customers
                                             WHERE recompute)
    GROUP BY c.customer_id
    UNION ALL
    -- customers with only inserted lines: the stored row plus those lines
    SELECT o.customer_id, sum(o.transactions)::bigint, sum(o.total_spent),
           min(o.first_purchase_date), max(o.last_purchase_date)
    FROM (
        SELECT customer_id, transactions, total_spent, first_purchase_date, last_purchase_date
        FROM _agg_customer_old
        UNION ALL
        SELECT a.customer_id, count(*) FILTER (WHERE a.new_customer_order), sum(a.line_total),
               min(d.full_date), max(d.full_date)
        FROM _agg_added a
        JOIN _agg_customers k ON k.customer_id = a.customer_id AND NOT k.recompute
        JOIN warehouse.dim_date d ON d.date_key = a.date_key
        GROUP BY a.customer_id
    ) o
    GROUP BY o.customer_id
) s
) t
-- the current dimension row (a change of it queues the customer: dim_customers_scd2.sql)
LEFT JOIN warehouse.dim_customers cur ON cur.customer_id = t.customer_id AND cur.is_current;

