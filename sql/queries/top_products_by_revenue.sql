-- Top 10 products by revenue (sum of line_total over all their sales, all versions of the
-- product together; name, category and brand as they are now). Ties share a rank; order
-- within a tie: product_id. The rank is taken at read time from the revenue index (the first
-- rows of agg_product_performance_revenue_idx), not stored.
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
FROM (
    SELECT rank() OVER (ORDER BY revenue DESC)::integer AS revenue_rank, *
    FROM warehouse.agg_product_performance
    ORDER BY revenue DESC, product_id
    LIMIT 10
) a
JOIN warehouse.dim_products p ON p.product_id = a.product_id AND p.is_current
ORDER BY a.revenue_rank, a.product_id
