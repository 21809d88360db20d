-- agg_customer_slices_any_category: agg_customer_slices summed over categories (per customer x
-- state), what the dashboard's distinct customers read when no category is selected. Runs after
-- agg_customer_slices.sql, from what it left: the rows of every touched customer (_agg_customers,
-- agg_refresh_keys.sql; a segment moves only with them) are deleted and grouped again from its
-- rows there, read through its key index. Parameter: full (every customer).

DELETE FROM warehouse.agg_customer_slices_any_category
WHERE %(full)s OR customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers));

INSERT INTO warehouse.agg_customer_slices_any_category (
    customer_id, state, customer_segment, first_purchase_date, last_purchase_date, revenue,
    active_days
)
SELECT customer_id, state, customer_segment, min(first_purchase_date),
       max(last_purchase_date), sum(revenue), range_agg(active_days)
FROM warehouse.agg_customer_slices
WHERE %(full)s OR customer_id = ANY (ARRAY(SELECT customer_id FROM _agg_customers))
GROUP BY customer_id, state, customer_segment;

SELECT count(*) AS customers FROM _agg_customers;
