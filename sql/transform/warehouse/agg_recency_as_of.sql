-- agg_recency_as_of: the one row the agg_customer_metrics view computes recency from: the last
-- order date in fact_sales (NULL while it has none) and the recency thresholds of config, so that
-- a change of them applies at the next run. Written only when one of them changed.
-- Parameters: r1..r4 (recency days). Returns the as-of date.

INSERT INTO warehouse.agg_recency_as_of AS r (id, as_of_date, recency_days)
SELECT 1,
       (SELECT d.full_date FROM warehouse.dim_date d
        WHERE d.date_key = (SELECT max(date_key) FROM warehouse.fact_sales)),
       ARRAY[%(r1)s, %(r2)s, %(r3)s, %(r4)s]::integer[]
ON CONFLICT (id) DO UPDATE
SET as_of_date = excluded.as_of_date, recency_days = excluded.recency_days
WHERE (r.as_of_date, r.recency_days) IS DISTINCT FROM (excluded.as_of_date, excluded.recency_days);

SELECT as_of_date FROM warehouse.agg_recency_as_of;
