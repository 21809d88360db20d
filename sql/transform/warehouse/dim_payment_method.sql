-- dim_payment_method: the canonical methods (parameter methods, from dwh.contract) and any other
-- method seen in the candidate order lines. Type 1: a name never changes; only Cash on Delivery
-- is Offline. 'unknown' maps to the unknown member -1 in fact_sales.sql.
-- Returns one row: methods added.

WITH added AS (
    INSERT INTO warehouse.dim_payment_method (payment_method_name, payment_type)
    SELECT m.name, CASE WHEN m.name = 'Cash on Delivery' THEN 'Offline' ELSE 'Online' END
    FROM (
        SELECT name, ordinality AS position
        FROM unnest(%(methods)s::text[]) WITH ORDINALITY AS u(name, ordinality)
        UNION ALL
        SELECT DISTINCT payment_method, 1000000 FROM _wh_items
    ) m
    WHERE m.name IS NOT NULL
      AND lower(m.name) <> 'unknown'
      AND NOT EXISTS (SELECT 1 FROM warehouse.dim_payment_method d
                       WHERE d.payment_method_name = m.name)
    GROUP BY m.name
    ORDER BY min(m.position), m.name
    ON CONFLICT (payment_method_name) DO NOTHING
    RETURNING 1
)
SELECT count(*) AS added FROM added;
