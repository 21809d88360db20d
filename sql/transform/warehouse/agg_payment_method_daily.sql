-- agg_payment_method_daily: delete the touched dates, insert them again from fact_sales.
-- Parameter: full (every date). Returns the rows inserted.

DELETE FROM warehouse.agg_payment_method_daily
WHERE %(full)s OR date_key IN (SELECT date_key FROM _agg_dates);

INSERT INTO warehouse.agg_payment_method_daily (
    date_key, payment_method_key, transactions, items, revenue, profit
)
SELECT
    f.date_key,
    f.payment_method_key,
    count(DISTINCT f.transaction_id),
    count(*),
    sum(f.line_total),
    sum(f.profit)
FROM warehouse.fact_sales f
WHERE %(full)s OR f.date_key IN (SELECT date_key FROM _agg_dates)
GROUP BY f.date_key, f.payment_method_key;
