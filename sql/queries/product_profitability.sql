-- The most and the least profitable products: the top and the bottom N by profit (N = 50, the
-- one value in `limits`; fewer than 2 x N products: every product once). Revenue, cost (cost of
-- each line's product version x quantity), profit, margin (profit / revenue x 100), profit per
-- unit, and profit_rank over all products (1 = most profitable; ties: product_id). Every
-- product: warehouse.agg_product_performance.
WITH limits (n) AS (VALUES (50)),
top_n AS (
    SELECT a.*, row_number() OVER (ORDER BY a.profit DESC, a.product_id) AS profit_rank
    FROM (SELECT product_id, quantity_sold, revenue, cost, profit, margin_pct
          FROM warehouse.agg_product_performance
          ORDER BY profit DESC, product_id
          LIMIT (SELECT n FROM limits)) a
),
bottom_n AS (
    SELECT a.*,
           (SELECT count(*) FROM warehouse.agg_product_performance) + 1
               - row_number() OVER (ORDER BY a.profit, a.product_id DESC) AS profit_rank
    FROM (SELECT product_id, quantity_sold, revenue, cost, profit, margin_pct
          FROM warehouse.agg_product_performance
          ORDER BY profit, product_id DESC
          LIMIT (SELECT n FROM limits)) a
),
ranked AS (
    SELECT * FROM top_n
    UNION
    SELECT * FROM bottom_n
)
SELECT
    r.profit_rank,
    r.product_id,
    p.product_name,
    p.category,
    r.quantity_sold,
    r.revenue,
    r.cost,
    r.profit,
    r.margin_pct,
    round(r.profit / nullif(r.quantity_sold, 0), 2)  AS profit_per_unit
FROM ranked r
JOIN warehouse.dim_products p ON p.product_id = r.product_id AND p.is_current
ORDER BY r.profit_rank
