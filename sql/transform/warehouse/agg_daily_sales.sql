-- agg_daily_sales: delete the touched dates, insert them again from fact_sales.
-- Parameter: full (every date). Returns the rows inserted.

DELETE FROM warehouse.agg_daily_sales
WHERE %(full)s OR date_key IN (SELECT date_key FROM _agg_dates);

INSERT INTO warehouse.agg_daily_sales (
    date_key, full_date, transactions, items, quantity, revenue, profit, unique_customers,
    avg_order_value
)
SELECT
    f.date_key,
    d.full_date,
    count(DISTINCT f.transaction_id),
    count(*),
    sum(f.quantity),
    sum(f.line_total),
    sum(f.profit),
    count(DISTINCT c.customer_id),
    round(sum(f.line_total) / count(DISTINCT f.transaction_id), 2)
FROM warehouse.fact_sales f
JOIN warehouse.dim_date d ON d.date_key = f.date_key
JOIN warehouse.dim_customers c ON c.customer_key = f.customer_key
WHERE %(full)s OR f.date_key IN (SELECT date_key FROM _agg_dates)
GROUP BY f.date_key, d.full_date;
