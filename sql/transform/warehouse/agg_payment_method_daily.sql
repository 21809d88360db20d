-- agg_payment_method_daily: delete the touched dates, insert them again from the per-order rows
-- agg_daily_sales.sql built from fact_sales (_agg_order_cat: one is_first row per order).
-- Parameter: full (every date). Returns the rows inserted.

DELETE FROM warehouse.agg_payment_method_daily
WHERE %(full)s OR date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates));

INSERT INTO warehouse.agg_payment_method_daily (
    date_key, payment_method_key, transactions, items, revenue, profit
)
SELECT
    date_key,
    payment_method_key,
    count(*) FILTER (WHERE is_first),
    sum(lines),
    sum(revenue),
    sum(profit)
FROM _agg_order_cat
GROUP BY date_key, payment_method_key;
