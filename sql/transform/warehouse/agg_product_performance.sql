-- agg_product_performance: delete the touched products, insert them again from fact_sales (all
-- versions of a product_id together), then re-rank every product by revenue (one row per
-- product: no fact scan). Parameter: full (every product). Returns the ranks changed.

DELETE FROM warehouse.agg_product_performance
WHERE %(full)s OR product_id = ANY (ARRAY(SELECT product_id FROM _agg_products));

INSERT INTO warehouse.agg_product_performance (
    product_id, quantity_sold, revenue, cost, profit, margin_pct, avg_discount_pct,
    transactions, revenue_rank
)
SELECT
    p.product_id,
    sum(x.quantity),
    sum(x.line_total),
    sum(x.cost_amount),
    sum(x.profit),
    round(sum(x.profit) / nullif(sum(x.line_total), 0) * 100, 2),
    round(sum(x.discount_sum) / sum(x.lines), 2),  -- = avg over the lines (numeric_avg: sum / n)
    sum(x.transactions),  -- versions of a product add up: an order has one date, one version
    -- a full rebuild ranks here (each row written once); a refresh re-ranks all below
    CASE WHEN %(full)s THEN rank() OVER (ORDER BY sum(x.line_total) DESC)::integer END
FROM (
    -- per version first (a bigint key), orders compared as bytes; product_key + 0: a full
    -- rebuild sorts a sequential scan instead of walking the product index (a random heap read
    -- per line)
    SELECT f.product_key + 0 AS product_key, sum(f.quantity) AS quantity, sum(f.line_total) AS line_total,
           sum(f.cost_amount) AS cost_amount, sum(f.profit) AS profit,
           sum(f.discount_percentage) AS discount_sum, count(*) AS lines,
           count(DISTINCT f.transaction_id COLLATE "C") AS transactions
    FROM warehouse.fact_sales f
    WHERE %(full)s
       OR f.product_key = ANY (ARRAY(SELECT d.product_key FROM warehouse.dim_products d
                                     JOIN _agg_products t ON t.product_id = d.product_id))
    GROUP BY 1
) x
JOIN warehouse.dim_products p ON p.product_key = x.product_key
GROUP BY p.product_id;

UPDATE warehouse.agg_product_performance a
SET revenue_rank = r.revenue_rank
FROM (
    SELECT product_id, rank() OVER (ORDER BY revenue DESC)::integer AS revenue_rank
    FROM warehouse.agg_product_performance
) r
WHERE a.product_id = r.product_id
  AND a.revenue_rank IS DISTINCT FROM r.revenue_rank;
