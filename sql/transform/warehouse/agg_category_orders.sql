-- agg_category_orders: delete the touched dates, insert them again from the per-order rows
-- agg_daily_sales.sql built from fact_sales (_agg_order_cat: one row per order x category, in
-- date order). The rows of an unknown category are left out: the table serves category filters.
-- Parameter: full (every date).

DELETE FROM warehouse.agg_category_orders
WHERE %(full)s OR date_key = ANY (ARRAY(SELECT date_key FROM _agg_dates));

INSERT INTO warehouse.agg_category_orders (date_key, category, state, customer_id)
SELECT date_key, category, state, customer_id
FROM _agg_order_cat
WHERE category IS NOT NULL;
