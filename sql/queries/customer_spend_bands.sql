-- Customers by lifetime spend band (total_spent of agg_customer_metrics; a band holds
-- lower <= total_spent < upper): customers and revenue, with their shares, the average spend and
-- the average order value of the band (band revenue / band orders). Empty bands are listed.
WITH bands (band_order, spend_band, lower_bound, upper_bound) AS (
    VALUES
        (1, 'under 100',         0::numeric,    100::numeric),
        (2, '100 to 500',        100,           500),
        (3, '500 to 1000',       500,           1000),
        (4, '1000 to 2500',      1000,          2500),
        (5, '2500 to 5000',      2500,          5000),
        (6, '5000 and over',     5000,          NULL)
),
per_band AS (
    SELECT
        b.band_order,
        b.spend_band,
        count(m.customer_id)                AS customers,
        coalesce(sum(m.total_spent), 0)     AS revenue,
        coalesce(sum(m.transactions), 0)    AS orders
    FROM bands b
    LEFT JOIN warehouse.agg_customer_metrics m
           ON m.total_spent >= b.lower_bound
          AND (b.upper_bound IS NULL OR m.total_spent < b.upper_bound)
    GROUP BY b.band_order, b.spend_band
)
SELECT
    band_order,
    spend_band,
    customers,
    round(customers * 100.0 / nullif(sum(customers) OVER (), 0), 2)  AS customers_pct,
    revenue,
    round(revenue * 100 / nullif(sum(revenue) OVER (), 0), 2)        AS revenue_pct,
    round(revenue / nullif(customers, 0), 2)                         AS avg_spent,
    round(revenue / nullif(orders, 0), 2)                            AS avg_order_value
FROM per_band
ORDER BY band_order
