-- Revenue, cost, profit and margin (profit / revenue x 100) per product category (the products'
-- current category), with each category's share of all revenue.
SELECT
    p.category,
    count(*)                                                            AS products_sold,
    sum(a.quantity_sold)                                                AS quantity,
    sum(a.revenue)                                                      AS revenue,
    sum(a.cost)                                                         AS cost,
    sum(a.profit)                                                       AS profit,
    round(sum(a.profit) * 100 / nullif(sum(a.revenue), 0), 2)           AS margin_pct,
    round(sum(a.revenue) * 100 / nullif(sum(sum(a.revenue)) OVER (), 0), 2) AS revenue_share_pct
FROM warehouse.agg_product_performance a
JOIN warehouse.dim_products p ON p.product_id = a.product_id AND p.is_current
GROUP BY p.category
ORDER BY revenue DESC, p.category
