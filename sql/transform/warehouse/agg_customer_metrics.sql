-- agg_customer_metrics: refresh the touched customers (all versions of a customer_id
-- together; agg_refresh_keys.sql says how each is refreshed): a customer to recompute is summed
-- again from its lines in fact_sales, a customer with only inserted lines gets their orders,
-- sums and dates added to its stored row; then, for every customer whose as-of date moved (the
-- last order date in the data), recompute recency, its score and the RFM segment (one row per
-- customer: no fact scan). Scores use fixed thresholds from config (docs/warehouse.md). State
-- and country: the customer's current dimension row.
-- Parameters: full; r1..r4 (recency days), f1..f4 (orders), m1..m4 (money), vip_min_spent,
-- regular_min_transactions. Returns the rows whose recency was recomputed.

DROP TABLE IF EXISTS _agg_customer_old;

CREATE TEMP TABLE _agg_customer_old ON COMMIT DROP AS
SELECT m.customer_id, m.transactions, m.total_spent, m.first_purchase_date, m.last_purchase_date
FROM warehouse.agg_customer_metrics m
WHERE NOT %(full)s
  AND m.customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers WHERE NOT recompute));

DELETE FROM warehouse.agg_customer_metrics
WHERE %(full)s OR customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers));

-- recency is computed here too (the same rules as the UPDATE below), so inserted rows are
-- final: a full rebuild writes each row once instead of inserting then updating all of them
INSERT INTO warehouse.agg_customer_metrics (
    customer_id, transactions, total_spent, avg_order_value, first_purchase_date,
    last_purchase_date, as_of_date, days_since_last_purchase, recency_score, frequency_score,
    monetary_score, rfm_segment, customer_segment, state, country
)
SELECT
    t.customer_id, t.transactions, t.total_spent, t.avg_order_value, t.first_purchase_date,
    t.last_purchase_date, t.as_of_date, t.as_of_date - t.last_purchase_date, t.recency_score,
    t.frequency_score, t.monetary_score,
    CASE
        WHEN t.recency_score >= 4 AND t.frequency_score >= 4 AND t.monetary_score >= 4
            THEN 'Champions'
        WHEN t.recency_score >= 3 AND t.frequency_score >= 3 THEN 'Loyal'
        WHEN t.recency_score >= 4 THEN 'Promising'
        WHEN t.recency_score <= 2 AND t.frequency_score >= 3 THEN 'At Risk'
        WHEN t.recency_score <= 2 THEN 'Hibernating'
        ELSE 'Need Attention'
    END,
    t.customer_segment,
    cur.state,
    cur.country
FROM (
SELECT
    s.customer_id,
    s.transactions,
    s.total_spent,
    round(s.total_spent / s.transactions, 2) AS avg_order_value,
    s.first_purchase_date,
    s.last_purchase_date,
    a.as_of_date,
    CASE
        WHEN a.as_of_date - s.last_purchase_date <= %(r1)s THEN 5
        WHEN a.as_of_date - s.last_purchase_date <= %(r2)s THEN 4
        WHEN a.as_of_date - s.last_purchase_date <= %(r3)s THEN 3
        WHEN a.as_of_date - s.last_purchase_date <= %(r4)s THEN 2
        ELSE 1
    END AS recency_score,
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
CROSS JOIN (
    SELECT d.full_date AS as_of_date
    FROM warehouse.dim_date d
    WHERE d.date_key = (SELECT max(date_key) FROM warehouse.fact_sales)
) a
) t
-- the current dimension row (a change of it queues the customer: dim_customers_scd2.sql)
LEFT JOIN warehouse.dim_customers cur ON cur.customer_id = t.customer_id AND cur.is_current;

WITH as_of AS (
    SELECT d.full_date AS as_of_date
    FROM warehouse.dim_date d
    WHERE d.date_key = (SELECT max(date_key) FROM warehouse.fact_sales)
),
scored AS (
    SELECT
        m.customer_id,
        a.as_of_date,
        a.as_of_date - m.last_purchase_date AS days_since,
        CASE
            WHEN a.as_of_date - m.last_purchase_date <= %(r1)s THEN 5
            WHEN a.as_of_date - m.last_purchase_date <= %(r2)s THEN 4
            WHEN a.as_of_date - m.last_purchase_date <= %(r3)s THEN 3
            WHEN a.as_of_date - m.last_purchase_date <= %(r4)s THEN 2
            ELSE 1
        END AS recency_score
    FROM warehouse.agg_customer_metrics m
    CROSS JOIN as_of a
    WHERE m.as_of_date IS DISTINCT FROM a.as_of_date OR m.recency_score IS NULL
)
UPDATE warehouse.agg_customer_metrics m
SET as_of_date = s.as_of_date,
    days_since_last_purchase = s.days_since,
    recency_score = s.recency_score,
    rfm_segment = CASE
        WHEN s.recency_score >= 4 AND m.frequency_score >= 4 AND m.monetary_score >= 4
            THEN 'Champions'
        WHEN s.recency_score >= 3 AND m.frequency_score >= 3 THEN 'Loyal'
        WHEN s.recency_score >= 4 THEN 'Promising'
        WHEN s.recency_score <= 2 AND m.frequency_score >= 3 THEN 'At Risk'
        WHEN s.recency_score <= 2 THEN 'Hibernating'
        ELSE 'Need Attention'
    END
FROM scored s
WHERE m.customer_id = s.customer_id;
