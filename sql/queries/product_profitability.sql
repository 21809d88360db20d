-- Every product sold, most profitable first: revenue, cost (cost of each line's product version
-- x quantity), profit, margin (profit / revenue x 100) and profit per unit. Ties: product_id.
SELECT
    a.product_id,
    p.product_name,
    p.category,
    a.quantity_sold,
    a.revenue,
    a.cost,
    a.profit,
    a.margin_pct,
    round(a.profit / nullif(a.quantity_sold, 0), 2)  AS profit_per_unit
FROM warehouse.agg_product_performance a
JOIN warehouse.dim_products p ON p.product_id = a.product_id AND p.is_current
ORDER BY a.profit DESC, a.product_id
