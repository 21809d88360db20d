-- agg_discount_daily: delete the touched dates, insert them again from fact_sales.
-- Parameter: full (every date). Returns the rows inserted.

DELETE FROM warehouse.agg_discount_daily
WHERE %(full)s OR date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates));

INSERT INTO warehouse.agg_discount_daily (
    date_key, discount_percentage, items, quantity, gross_amount, discount_amount, revenue, profit
)
SELECT
    f.date_key,
    f.discount_percentage,
    count(*),
    sum(f.quantity),
    sum(f.gross_amount),
    sum(f.discount_amount),
    sum(f.line_total),
    sum(f.profit)
FROM warehouse.fact_sales f
WHERE %(full)s OR f.date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates))
GROUP BY f.date_key, f.discount_percentage;
