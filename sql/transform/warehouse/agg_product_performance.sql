-- agg_product_performance: refresh the touched products (all versions of a product_id
-- together; agg_refresh_keys.sql says how each is refreshed): a product to recompute is summed
-- again from its lines in fact_sales, a product with only inserted lines gets their sums (and
-- the orders they add) added to its stored row. No rank is stored: a rank depends on every
-- product, so the queries rank at read time (agg_product_performance_revenue_idx).
-- Parameter: full (every product, from the fact).

DROP TABLE IF EXISTS _agg_product_old;

CREATE TEMP TABLE _agg_product_old ON COMMIT DROP AS
SELECT a.*
FROM warehouse.agg_product_performance a
WHERE NOT %(full)s
  AND a.product_id = ANY (ARRAY(SELECT product_id FROM _agg_products WHERE NOT recompute));

DELETE FROM warehouse.agg_product_performance
WHERE %(full)s OR product_id = ANY (ARRAY(SELECT product_id FROM _agg_products));

INSERT INTO warehouse.agg_product_performance (
    product_id, quantity_sold, revenue, cost, profit, margin_pct, avg_discount_pct,
    transactions, lines, discount_sum
)
SELECT
    s.product_id,
    sum(s.quantity),
    sum(s.line_total),
    sum(s.cost_amount),
    sum(s.profit),
    round(sum(s.profit) / nullif(sum(s.line_total), 0) * 100, 2),
    round(sum(s.discount_sum) / sum(s.lines), 2),  -- = avg over the lines (numeric_avg: sum / n)
    sum(s.transactions),  -- versions of a product add up: an order has one date, one version
    sum(s.lines),
    sum(s.discount_sum)
FROM (
    -- full, or a product to recompute: its lines, per version first (a bigint key), orders
    -- compared as bytes; product_key + 0: a full rebuild sorts a sequential scan instead of
    -- walking the product index (a random heap read per line)
    SELECT p.product_id, x.quantity, x.line_total, x.cost_amount, x.profit, x.discount_sum,
           x.lines, x.transactions
    FROM (
        SELECT f.product_key + 0 AS product_key, sum(f.quantity) AS quantity,
               sum(f.line_total) AS line_total, sum(f.cost_amount) AS cost_amount,
               sum(f.profit) AS profit, sum(f.discount_percentage) AS discount_sum,
               count(*) AS lines, count(DISTINCT f.transaction_id COLLATE "C") AS transactions
        FROM warehouse.fact_sales f
        WHERE %(full)s
           OR f.product_key = ANY (ARRAY(SELECT d.product_key FROM warehouse.dim_products d
                                         JOIN _agg_products t ON t.product_id = d.product_id
                                         WHERE t.recompute))
        GROUP BY 1
    ) x
    JOIN warehouse.dim_products p ON p.product_key = x.product_key
    UNION ALL
    -- a product with only inserted lines: its stored sums ...
    SELECT product_id, quantity_sold, revenue, cost, profit, discount_sum, lines, transactions
    FROM _agg_product_old
    UNION ALL
    -- ... plus those of the inserted lines
    SELECT a.product_id, sum(a.quantity), sum(a.line_total), sum(a.cost_amount), sum(a.profit),
           sum(a.discount_percentage), count(*), count(*) FILTER (WHERE a.new_product_order)
    FROM _agg_added a
    JOIN _agg_products t ON t.product_id = a.product_id AND NOT t.recompute
    WHERE NOT %(full)s
    GROUP BY a.product_id
) s
GROUP BY s.product_id;
