-- BI access: the flat sales view and the read-only role bi_reader. Idempotent.
-- See docs/bi_guide.md. The role's password is set by the warehouse stage from the environment
-- variable DWH_BI_READER_PASSWORD (LOGIN only then); without it the role stays NOLOGIN and can
-- be used with SET ROLE or granted to a login role by a DBA.

-- ─── v_sales: one row per order line with the attributes valid on the order date (at_order)
--     and the current ones (current_*) ───────────────────────────────────────────────────────
CREATE OR REPLACE VIEW warehouse.v_sales AS
SELECT
    -- keys and ids
    f.sales_key,
    f.item_id,
    f.transaction_id,
    f.date_key,
    f.customer_key,
    f.product_key,
    f.payment_method_key,
    -- order date
    d.full_date                 AS order_date,
    d.year                      AS order_year,
    d.quarter                   AS order_quarter,
    d.month                     AS order_month,
    d.month_name                AS order_month_name,
    d.week_of_year              AS order_week,
    d.day_name                  AS order_day_name,
    d.day_of_week               AS order_day_of_week,
    d.is_weekend,
    d.is_holiday,
    d.fiscal_year,
    d.fiscal_quarter,
    -- customer as on the order date
    c.customer_id,
    c.full_name                 AS customer_name,
    c.city                      AS customer_city,
    c.state                     AS customer_state,
    c.country                   AS customer_country,
    c.age_group                 AS customer_age_group,
    -- customer now
    cc.city                     AS current_customer_city,
    cc.state                    AS current_customer_state,
    cc.country                  AS current_customer_country,
    -- product as on the order date
    p.product_id,
    p.product_name,
    p.category,
    p.sub_category,
    p.brand,
    p.price_category,
    -- product now
    cp.product_name             AS current_product_name,
    cp.category                 AS current_category,
    cp.price_category           AS current_price_category,
    -- payment
    pm.payment_method_name      AS payment_method,
    pm.payment_type,
    -- measures
    f.quantity,
    f.unit_price,
    f.discount_percentage,
    f.discount_amount,
    f.gross_amount,
    f.line_total,
    f.cost_amount,
    f.profit
FROM warehouse.fact_sales f
JOIN warehouse.dim_date d ON d.date_key = f.date_key
JOIN warehouse.dim_customers c ON c.customer_key = f.customer_key
JOIN warehouse.dim_products p ON p.product_key = f.product_key
JOIN warehouse.dim_payment_method pm ON pm.payment_method_key = f.payment_method_key
LEFT JOIN warehouse.dim_customers cc ON cc.customer_id = c.customer_id AND cc.is_current
LEFT JOIN warehouse.dim_products cp ON cp.product_id = p.product_id AND cp.is_current;

COMMENT ON VIEW warehouse.v_sales IS 'Flat sales for BI tools: fact_sales with the date, the customer and product as they were on the order date, their current attributes (current_*), and the payment method.';
COMMENT ON COLUMN warehouse.v_sales.sales_key IS 'fact_sales.sales_key.';
COMMENT ON COLUMN warehouse.v_sales.item_id IS 'Order line id.';
COMMENT ON COLUMN warehouse.v_sales.transaction_id IS 'Order id: count distinct for orders.';
COMMENT ON COLUMN warehouse.v_sales.date_key IS 'Order date key (yyyymmdd).';
COMMENT ON COLUMN warehouse.v_sales.customer_key IS 'Customer version valid on the order date.';
COMMENT ON COLUMN warehouse.v_sales.product_key IS 'Product version valid on the order date.';
COMMENT ON COLUMN warehouse.v_sales.payment_method_key IS 'Payment method key.';
COMMENT ON COLUMN warehouse.v_sales.order_date IS 'Order date.';
COMMENT ON COLUMN warehouse.v_sales.order_year IS 'Calendar year of the order.';
COMMENT ON COLUMN warehouse.v_sales.order_quarter IS 'Calendar quarter of the order.';
COMMENT ON COLUMN warehouse.v_sales.order_month IS 'Calendar month of the order, 1-12.';
COMMENT ON COLUMN warehouse.v_sales.order_month_name IS 'Month name of the order.';
COMMENT ON COLUMN warehouse.v_sales.order_week IS 'ISO week of the order.';
COMMENT ON COLUMN warehouse.v_sales.order_day_name IS 'Day name of the order.';
COMMENT ON COLUMN warehouse.v_sales.order_day_of_week IS 'ISO day of week of the order (1 = Monday).';
COMMENT ON COLUMN warehouse.v_sales.is_weekend IS 'Ordered on a Saturday or Sunday.';
COMMENT ON COLUMN warehouse.v_sales.is_holiday IS 'Ordered on a configured holiday.';
COMMENT ON COLUMN warehouse.v_sales.fiscal_year IS 'Fiscal year of the order.';
COMMENT ON COLUMN warehouse.v_sales.fiscal_quarter IS 'Fiscal quarter of the order.';
COMMENT ON COLUMN warehouse.v_sales.customer_id IS 'Customer natural key.';
COMMENT ON COLUMN warehouse.v_sales.customer_name IS 'Customer name on the order date.';
COMMENT ON COLUMN warehouse.v_sales.customer_city IS 'Customer city on the order date.';
COMMENT ON COLUMN warehouse.v_sales.customer_state IS 'Customer state on the order date.';
COMMENT ON COLUMN warehouse.v_sales.customer_country IS 'Customer country on the order date.';
COMMENT ON COLUMN warehouse.v_sales.customer_age_group IS 'Customer age group on the order date.';
COMMENT ON COLUMN warehouse.v_sales.current_customer_city IS 'Customer city now.';
COMMENT ON COLUMN warehouse.v_sales.current_customer_state IS 'Customer state now.';
COMMENT ON COLUMN warehouse.v_sales.current_customer_country IS 'Customer country now.';
COMMENT ON COLUMN warehouse.v_sales.product_id IS 'Product natural key.';
COMMENT ON COLUMN warehouse.v_sales.product_name IS 'Product name on the order date.';
COMMENT ON COLUMN warehouse.v_sales.category IS 'Product category on the order date.';
COMMENT ON COLUMN warehouse.v_sales.sub_category IS 'Product sub-category on the order date.';
COMMENT ON COLUMN warehouse.v_sales.brand IS 'Product brand on the order date.';
COMMENT ON COLUMN warehouse.v_sales.price_category IS 'Product price category on the order date.';
COMMENT ON COLUMN warehouse.v_sales.current_product_name IS 'Product name now.';
COMMENT ON COLUMN warehouse.v_sales.current_category IS 'Product category now.';
COMMENT ON COLUMN warehouse.v_sales.current_price_category IS 'Product price category now.';
COMMENT ON COLUMN warehouse.v_sales.payment_method IS 'Payment method name.';
COMMENT ON COLUMN warehouse.v_sales.payment_type IS 'Online or Offline.';
COMMENT ON COLUMN warehouse.v_sales.quantity IS 'Units ordered.';
COMMENT ON COLUMN warehouse.v_sales.unit_price IS 'Price per unit before discount.';
COMMENT ON COLUMN warehouse.v_sales.discount_percentage IS 'Discount in percent.';
COMMENT ON COLUMN warehouse.v_sales.discount_amount IS 'Money discounted.';
COMMENT ON COLUMN warehouse.v_sales.gross_amount IS 'quantity x unit_price.';
COMMENT ON COLUMN warehouse.v_sales.line_total IS 'Revenue after discount.';
COMMENT ON COLUMN warehouse.v_sales.cost_amount IS 'Cost of the units sold.';
COMMENT ON COLUMN warehouse.v_sales.profit IS 'line_total - cost_amount.';

-- ─── bi_reader: read-only access to the warehouse schema ────────────────────────────────────
-- Roles are cluster-wide and several databases may apply this at once: create it only if
-- missing, and treat "already exists" from a concurrent creator as success. A user without
-- CREATEROLE gets a notice instead of a failure (a DBA then creates the role).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'bi_reader') THEN
        BEGIN
            CREATE ROLE bi_reader NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by another session
            WHEN insufficient_privilege THEN
                RAISE WARNING 'cannot create role bi_reader (the pipeline''s role has no CREATEROLE): BI grants skipped; a DBA creates it once, see docs/security.md';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'bi_reader') THEN
        EXECUTE 'GRANT USAGE ON SCHEMA warehouse TO bi_reader';
        EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA warehouse TO bi_reader';
        -- Tables and views created later in warehouse (a rebuild) are readable too.
        EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA warehouse GRANT SELECT ON TABLES TO bi_reader';
    END IF;
END
$$;
