-- Order lines by discount band of their discount percentage (not money): (lower, upper] in
-- percent, 0 on its own. Lines, units, gross amount, discount given, revenue, profit, margin
-- (profit / revenue x 100) and share of all revenue. Empty bands are listed.
WITH bands (band_order, discount_band, lower_pct, upper_pct) AS (
    VALUES
        (1, 'none (0)',   NULL::numeric, 0::numeric),
        (2, '(0, 5]',     0,             5),
        (3, '(5, 10]',    5,             10),
        (4, '(10, 15]',   10,            15),
        (5, '(15, 25]',   15,            25),
        (6, 'over 25',    25,            NULL)
),
per_band AS (
    SELECT
        b.band_order,
        b.discount_band,
        coalesce(sum(a.items), 0)            AS items,
        coalesce(sum(a.quantity), 0)         AS quantity,
        coalesce(sum(a.gross_amount), 0)     AS gross_amount,
        coalesce(sum(a.discount_amount), 0)  AS discount_amount,
        coalesce(sum(a.revenue), 0)          AS revenue,
        coalesce(sum(a.profit), 0)           AS profit
    FROM bands b
    LEFT JOIN warehouse.agg_discount_daily a
           ON (b.lower_pct IS NULL AND a.discount_percentage = 0)
           OR (b.lower_pct IS NOT NULL AND a.discount_percentage > b.lower_pct
               AND (b.upper_pct IS NULL OR a.discount_percentage <= b.upper_pct))
    GROUP BY b.band_order, b.discount_band
)
SELECT
    band_order,
    discount_band,
    items,
    quantity,
    gross_amount,
    discount_amount,
    revenue,
    profit,
    round(profit * 100 / nullif(revenue, 0), 2)                 AS margin_pct,
    round(revenue * 100 / nullif(sum(revenue) OVER (), 0), 2)   AS revenue_share_pct
FROM per_band
ORDER BY band_order
