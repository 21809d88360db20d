-- Customers by lifetime spend band (total_spent of agg_customer_metrics; a band holds
-- lower <= total_spent < upper): customers and revenue, with their shares, the average spend and
-- the average order value of the band (band revenue / band orders). Empty bands are listed.
-- The bands are contiguous: each upper bound is the next band's lower bound.
WITH bands (band_order, spend_band, lower_bound, upper_bound) AS (
    VALUES
        (1, 'under 100',         0::numeric,    100::numeric),
        (2, '100 to 500',        100,           500),
        (3, '500 to 1000',       500,           1000),
        (4, '1000 to 2500',      1000,          2500),
        (5, '2500 to 5000',      2500,          5000),
        (6, '5000 and over',     5000,          NULL)
),
-- one pass over the customers: width_bucket gives the band whose lower bound is the greatest one
-- not above total_spent (0 = below every band: not listed)
per_customer_band AS (
    SELECT
        width_bucket(m.total_spent,
                     (SELECT array_agg(lower_bound ORDER BY band_order) FROM bands))
                                            AS band_order,
        count(*)                            AS customers,
        sum(m.total_spent)                  AS revenue,
        sum(m.transactions)                 AS orders
    FROM warehouse.agg_customer_metrics m
    GROUP BY 1
),
per_band AS (
    SELECT
        b.band_order,
        b.spend_band,
        coalesce(c.customers, 0)            AS customers,
        coalesce(c.revenue, 0)              AS revenue,
        coalesce(c.orders, 0)               AS orders
    FROM bands b
    LEFT JOIN per_customer_band c ON c.band_order = b.band_order
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
