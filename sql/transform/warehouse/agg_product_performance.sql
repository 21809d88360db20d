-- agg_product_performance: delete the touched products, insert them again from fact_sales (all
-- versions of a product_id together), then re-rank every product by revenue (one row per
-- product: no fact scan). Parameter: full (every product). Returns the ranks changed.

DELETE FROM warehouse.agg_product_performance
WHERE %(full)s OR product_id IN (SELECT product_id FROM _agg_products);

INSERT INTO warehouse.agg_product_performance (
    product_id, quantity_sold, revenue, cost, profit, margin_pct, avg_discount_pct,
    transactions, revenue_rank
)
SELECT
    p.product_id,
    sum(f.quantity),
    sum(f.line_total),
    sum(f.cost_amount),
    sum(f.profit),
    round(sum(f.profit) / nullif(sum(f.line_total), 0) * 100, 2),
    round(avg(f.discount_percentage), 2),
    count(DISTINCT f.transaction_id),
    NULL
FROM warehouse.fact_sales f
JOIN warehouse.dim_products p ON p.product_key = f.product_key
WHERE %(full)s OR p.product_id IN (SELECT product_id FROM _agg_products)
GROUP BY p.product_id;

UPDATE warehouse.agg_product_performance a
SET revenue_rank = r.revenue_rank
FROM (
    SELECT product_id, rank() OVER (ORDER BY revenue DESC)::integer AS revenue_rank
    FROM warehouse.agg_product_performance
) r
WHERE a.product_id = r.product_id
  AND a.revenue_rank IS DISTINCT FROM r.revenue_rank;
