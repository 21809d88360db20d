-- Top 10 products by revenue (sum of line_total over all their sales, all versions of the
-- product together; name, category and brand as they are now). Ties: product_id.
SELECT
    a.revenue_rank,
    a.product_id,
    p.product_name,
    p.category,
    p.brand,
    a.quantity_sold,
    a.revenue,
    a.profit,
    a.margin_pct,
    a.transactions
FROM warehouse.agg_product_performance a
JOIN warehouse.dim_products p ON p.product_id = a.product_id AND p.is_current
ORDER BY a.revenue_rank, a.product_id
LIMIT 10
