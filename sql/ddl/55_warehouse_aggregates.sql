-- Warehouse: the slice aggregates the dashboard's filters (category, state, customer segment)
-- read instead of fact_sales. Filled by sql/transform/warehouse/agg_sales_slices.sql and
-- agg_customer_slices.sql (stage aggregates). Idempotent. Design notes: docs/warehouse.md.

-- Text keys are COLLATE "C" (byte order): equality is the same as under any deterministic
-- collation, and building their indexes from millions of rows compares bytes, not locale rules.

-- A warehouse that has aggregates but not yet one of the tables this file creates gets them
-- filled by a queued full rebuild of the aggregates (the queue is read by the next run).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM warehouse.agg_daily_sales)
       AND EXISTS (SELECT 1
                   FROM unnest(ARRAY['agg_sales_slices', 'agg_customer_slices',
                                     'agg_customer_slices_any_category', 'agg_product_slices',
                                     'agg_product_slicer_totals',
                                     'agg_order_category_sets', 'agg_sales_slices_any_state',
                                     'agg_order_category_sets_any_state',
                                     'agg_sales_slices_all_dates',
                                     'agg_order_category_sets_all_dates',
                                     'agg_customer_categories',
                                     'agg_category_orders']) AS t (name)
                   WHERE to_regclass('warehouse.' || t.name) IS NULL) THEN
        INSERT INTO ops.warehouse_refresh_queue (is_full_refresh) VALUES (true);
    END IF;
END $$;

-- ─── agg_sales_slices: per day x category x state x segment x payment method ───────────────
CREATE TABLE IF NOT EXISTS warehouse.agg_sales_slices (
    date_key            integer       NOT NULL,
    category            text COLLATE "C",
    state               text COLLATE "C",
    customer_segment    text COLLATE "C",
    payment_method_key  bigint        NOT NULL,
    lines               integer       NOT NULL,
    quantity            bigint        NOT NULL,
    revenue             numeric(14,2) NOT NULL,
    profit              numeric(14,2) NOT NULL,
    orders              integer       NOT NULL,
    orders_first        integer       NOT NULL
);
-- a batch's segment moves add to rows of every date in place: the room left on every page keeps
-- those updates on their page, without index entries (HOT)
ALTER TABLE warehouse.agg_sales_slices SET (fillfactor = 90);
-- one row per key (GROUP BY); not a unique index, so a full rebuild builds it once by a sort
CREATE INDEX IF NOT EXISTS agg_sales_slices_key_idx
    ON warehouse.agg_sales_slices (date_key, category, state, customer_segment, payment_method_key);
CREATE INDEX IF NOT EXISTS agg_sales_slices_state_idx
    ON warehouse.agg_sales_slices (state, date_key);
CREATE INDEX IF NOT EXISTS agg_sales_slices_category_idx
    ON warehouse.agg_sales_slices (category, date_key);

COMMENT ON TABLE warehouse.agg_sales_slices IS 'Sales per order date x category x state x customer segment x payment method: what the dashboard''s filters read instead of fact_sales. Category and state are those of the dimension versions the lines point at (valid on the order date; NULL when the version has none, as in fact_sales joins); the segment is the customer''s current one (agg_customer_metrics).';
COMMENT ON COLUMN warehouse.agg_sales_slices.date_key IS 'Order date (dim_date.date_key).';
COMMENT ON COLUMN warehouse.agg_sales_slices.category IS 'Category of the product version on the order date (NULL when unknown).';
COMMENT ON COLUMN warehouse.agg_sales_slices.state IS 'State of the customer version on the order date (NULL when unknown).';
COMMENT ON COLUMN warehouse.agg_sales_slices.customer_segment IS 'Current segment of the customer (agg_customer_metrics.customer_segment); NULL when it has no metrics row.';
COMMENT ON COLUMN warehouse.agg_sales_slices.payment_method_key IS 'Payment method (dim_payment_method.payment_method_key).';
COMMENT ON COLUMN warehouse.agg_sales_slices.lines IS 'Order lines.';
COMMENT ON COLUMN warehouse.agg_sales_slices.quantity IS 'Units sold.';
COMMENT ON COLUMN warehouse.agg_sales_slices.revenue IS 'Sum of line_total.';
COMMENT ON COLUMN warehouse.agg_sales_slices.profit IS 'Sum of profit.';
COMMENT ON COLUMN warehouse.agg_sales_slices.orders IS 'Distinct orders with a line of this category in the slice: adds up over days, states, segments and methods, not over categories (an order can hold several).';
COMMENT ON COLUMN warehouse.agg_sales_slices.orders_first IS 'Orders counted only in the slice of their first category (alphabetical): summed over categories, the distinct orders.';

-- ─── agg_customer_slices: per customer x category x state ─────────────────────────────────
CREATE TABLE IF NOT EXISTS warehouse.agg_customer_slices (
    customer_id          text COLLATE "C" NOT NULL,
    category             text COLLATE "C",
    state                text COLLATE "C",
    customer_segment     text COLLATE "C",
    first_purchase_date  date          NOT NULL,
    last_purchase_date   date          NOT NULL,
    revenue              numeric(14,2) NOT NULL,
    active_days          datemultirange NOT NULL
);
-- a warehouse built before one of these columns of the customer slices (the one of
-- agg_customer_slices_any_category, created below): the column is added, and a queued full
-- rebuild of the aggregates fills it (until then it is empty)
DO $$
DECLARE
    added record;
BEGIN
    FOR added IN
        SELECT v.tbl, v.col, v.typ
        FROM (VALUES ('agg_customer_slices', 'active_days', 'datemultirange'),
                     ('agg_customer_slices_any_category', 'categories', 'text[] COLLATE "C"'))
             AS v (tbl, col, typ)
        WHERE to_regclass('warehouse.' || v.tbl) IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM information_schema.columns c
                          WHERE c.table_schema = 'warehouse' AND c.table_name = v.tbl
                            AND c.column_name = v.col)
    LOOP
        EXECUTE format('ALTER TABLE warehouse.%I ADD COLUMN %I %s NOT NULL DEFAULT ''{}''',
                       added.tbl, added.col, added.typ);
        EXECUTE format('ALTER TABLE warehouse.%I ALTER COLUMN %I DROP DEFAULT',
                       added.tbl, added.col);
        IF EXISTS (SELECT 1 FROM warehouse.agg_daily_sales) THEN
            INSERT INTO ops.warehouse_refresh_queue (is_full_refresh) VALUES (true);
        END IF;
    END LOOP;
END $$;
CREATE INDEX IF NOT EXISTS agg_customer_slices_key_idx
    ON warehouse.agg_customer_slices (customer_id, category, state);
CREATE INDEX IF NOT EXISTS agg_customer_slices_last_idx
    ON warehouse.agg_customer_slices (last_purchase_date);

COMMENT ON TABLE warehouse.agg_customer_slices IS 'Per customer x category x state (of the versions the lines point at): first and last order dates, the days with orders, and revenue. Distinct customers over any date range: count customers with active_days && the range; over a range that starts at the first or ends at the last order date, last_purchase_date >= start and first_purchase_date <= end says the same.';
COMMENT ON COLUMN warehouse.agg_customer_slices.customer_id IS 'Natural key of the customer.';
COMMENT ON COLUMN warehouse.agg_customer_slices.category IS 'Category of the product version on the order date (NULL when unknown).';
COMMENT ON COLUMN warehouse.agg_customer_slices.state IS 'State of the customer version on the order date (NULL when unknown).';
COMMENT ON COLUMN warehouse.agg_customer_slices.customer_segment IS 'Current segment of the customer (agg_customer_metrics.customer_segment); NULL when it has no metrics row.';
COMMENT ON COLUMN warehouse.agg_customer_slices.first_purchase_date IS 'First order date with a line in this category and state.';
COMMENT ON COLUMN warehouse.agg_customer_slices.last_purchase_date IS 'Last order date with a line in this category and state.';
COMMENT ON COLUMN warehouse.agg_customer_slices.revenue IS 'Sum of line_total.';
COMMENT ON COLUMN warehouse.agg_customer_slices.active_days IS 'The order dates with a line in this category and state (adjacent days merged into ranges).';

-- ─── agg_customer_slices_any_category: the same per customer x state ────────────────────────
-- what the dashboard's distinct customers read when no category is selected (a quarter of the
-- rows: 0.32 million for 1.4 million at 10M order lines).
CREATE TABLE IF NOT EXISTS warehouse.agg_customer_slices_any_category (
    customer_id          text COLLATE "C" NOT NULL,
    state                text COLLATE "C",
    customer_segment     text COLLATE "C",
    first_purchase_date  date          NOT NULL,
    last_purchase_date   date          NOT NULL,
    revenue              numeric(14,2) NOT NULL,
    active_days          datemultirange NOT NULL,
    categories           text[] COLLATE "C" NOT NULL
);
CREATE INDEX IF NOT EXISTS agg_customer_slices_any_category_key_idx
    ON warehouse.agg_customer_slices_any_category (customer_id, state);
CREATE INDEX IF NOT EXISTS agg_customer_slices_any_category_state_idx
    ON warehouse.agg_customer_slices_any_category (state, customer_id)
    INCLUDE (customer_segment, first_purchase_date, last_purchase_date);

COMMENT ON TABLE warehouse.agg_customer_slices_any_category IS 'agg_customer_slices summed over categories: per customer x state (of the versions the lines point at), first and last order dates, the days with orders, revenue and the categories bought; read by the dashboard when no category is selected, and for the customers of two or more categories over every order date. Same columns and meaning as there.';
COMMENT ON COLUMN warehouse.agg_customer_slices_any_category.customer_id IS 'Natural key of the customer.';
COMMENT ON COLUMN warehouse.agg_customer_slices_any_category.state IS 'State of the customer version on the order date (NULL when unknown).';
COMMENT ON COLUMN warehouse.agg_customer_slices_any_category.customer_segment IS 'Current segment of the customer (agg_customer_metrics.customer_segment); NULL when it has no metrics row.';
COMMENT ON COLUMN warehouse.agg_customer_slices_any_category.first_purchase_date IS 'First order date in this state.';
COMMENT ON COLUMN warehouse.agg_customer_slices_any_category.last_purchase_date IS 'Last order date in this state.';
COMMENT ON COLUMN warehouse.agg_customer_slices_any_category.revenue IS 'Sum of line_total.';
COMMENT ON COLUMN warehouse.agg_customer_slices_any_category.active_days IS 'The order dates in this state (adjacent days merged into ranges).';
COMMENT ON COLUMN warehouse.agg_customer_slices_any_category.categories IS 'The distinct non-NULL categories of the customer''s lines in this state, sorted in byte order: the customers of a set of categories over every order date are the rows whose categories overlap it.';

-- ─── agg_customer_categories: the categories each customer bought ──────────────────────────
-- the dashboard's customers of two or more categories over every order date with no state
-- selected: a count of these rows (at 10M order lines, a distinct count over the customer x
-- state rows of agg_customer_slices_any_category took 180-250 ms)
CREATE TABLE IF NOT EXISTS warehouse.agg_customer_categories (
    customer_id  text COLLATE "C" NOT NULL,
    categories   text[] COLLATE "C" NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS agg_customer_categories_key_idx
    ON warehouse.agg_customer_categories (customer_id);

COMMENT ON TABLE warehouse.agg_customer_categories IS 'Per customer with a line of a known category: the categories of its lines, over every order date and state (agg_customer_slices_any_category.categories of its rows together).';
COMMENT ON COLUMN warehouse.agg_customer_categories.customer_id IS 'Natural key of the customer.';
COMMENT ON COLUMN warehouse.agg_customer_categories.categories IS 'The distinct non-NULL categories (of the product versions the lines point at) of the customer''s lines, sorted in byte order.';

-- ─── agg_category_orders: per order x category, its date, customer and state ─────────────────
-- the dashboard's customers of one or more categories over a range touching neither end of the
-- data, with no segment selected: a distinct count of these rows in the range (two categories
-- at 10M order lines: 70-100 ms against 180-320 ms for agg_customer_slices' days with orders,
-- which most of their rows there would need read: their first and last order dates span such a
-- range). Written in date order (a full rebuild reads the per-order rows in date order; a batch
-- adds its dates at the end), so a range's rows lie on adjacent pages.
CREATE TABLE IF NOT EXISTS warehouse.agg_category_orders (
    date_key     integer          NOT NULL,
    category     text COLLATE "C" NOT NULL,
    state        text COLLATE "C",
    customer_id  text COLLATE "C" NOT NULL
);
CREATE INDEX IF NOT EXISTS agg_category_orders_date_idx
    ON warehouse.agg_category_orders (date_key, category);

COMMENT ON TABLE warehouse.agg_category_orders IS 'One row per order and known category of its lines: the order date, the customer and its state. Distinct customers of categories over any date range: count the distinct customer_id of the rows in the range.';
COMMENT ON COLUMN warehouse.agg_category_orders.date_key IS 'Order date (dim_date.date_key).';
COMMENT ON COLUMN warehouse.agg_category_orders.category IS 'Category of the product versions the order''s lines point at (lines of an unknown category have no row).';
COMMENT ON COLUMN warehouse.agg_category_orders.state IS 'State of the customer version on the order date (NULL when unknown).';
COMMENT ON COLUMN warehouse.agg_category_orders.customer_id IS 'Natural key of the customer.';

-- the recency filter of the dashboard's customer counts
CREATE INDEX IF NOT EXISTS agg_customer_totals_last_idx
    ON warehouse.agg_customer_totals (last_purchase_date);

-- the top and bottom products by profit (sql/queries/product_profitability.sql): a scan of
-- either end of this index, and the rank of a product as a count of the index entries before it
CREATE INDEX IF NOT EXISTS agg_product_performance_profit_idx
    ON warehouse.agg_product_performance (profit DESC, product_id);

-- the top 10 products by revenue (ranked at read time) and the top 100 customers by lifetime
-- value (sql/queries/top_products_by_revenue.sql, customer_lifetime_value.sql): read in index
-- order
CREATE INDEX IF NOT EXISTS agg_product_performance_revenue_idx
    ON warehouse.agg_product_performance (revenue DESC, product_id);
CREATE INDEX IF NOT EXISTS agg_customer_totals_spent_idx
    ON warehouse.agg_customer_totals (total_spent DESC, customer_id);

-- ─── agg_product_slices: per product x category x customer segment, over all dates ────────
-- what the dashboard's top products read over the whole range with a category or segment filter
-- (0.48 million rows at 10M order lines, for the 10 million lines they would group).
CREATE TABLE IF NOT EXISTS warehouse.agg_product_slices (
    product_id        text COLLATE "C" NOT NULL,
    category          text COLLATE "C",
    customer_segment  text COLLATE "C",
    lines             integer       NOT NULL,
    quantity          bigint        NOT NULL,
    revenue           numeric(14,2) NOT NULL,
    profit            numeric(14,2) NOT NULL
);
-- a 1 % batch updates about a fifth of the rows in place: room left on every page keeps those
-- updates on their page, without index entries (HOT)
ALTER TABLE warehouse.agg_product_slices SET (fillfactor = 70);
CREATE INDEX IF NOT EXISTS agg_product_slices_key_idx
    ON warehouse.agg_product_slices (product_id, category, customer_segment);

COMMENT ON TABLE warehouse.agg_product_slices IS 'Sales per product x category x customer segment over all dates: the top products over the whole range with a category or segment filter. Category: of the product version the lines point at (valid on the order date); segment: the customer''s current one. Attributes: join dim_products on product_id where is_current.';
COMMENT ON COLUMN warehouse.agg_product_slices.product_id IS 'Natural key of the product.';
COMMENT ON COLUMN warehouse.agg_product_slices.category IS 'Category of the product version on the order date (NULL when unknown).';
COMMENT ON COLUMN warehouse.agg_product_slices.customer_segment IS 'Current segment of the customer (agg_customer_metrics.customer_segment); NULL when it has no metrics row.';
COMMENT ON COLUMN warehouse.agg_product_slices.lines IS 'Order lines.';
COMMENT ON COLUMN warehouse.agg_product_slices.quantity IS 'Units sold.';
COMMENT ON COLUMN warehouse.agg_product_slices.revenue IS 'Sum of line_total.';
COMMENT ON COLUMN warehouse.agg_product_slices.profit IS 'Sum of profit.';

-- ─── agg_product_slicer_totals: agg_product_slices per product and one category or segment ──
-- summed over the other slicer, so the top products of one category or one segment over the
-- whole range are a top-N of its rows, one per product, not a grouping of every product's rows.
-- No index on revenue: a 1 % batch changes the sums of a quarter of the rows, and at 10M lines
-- keeping such an index cost more (1.8 s per batch) than the top-N it saves (40-70 ms).
CREATE TABLE IF NOT EXISTS warehouse.agg_product_slicer_totals (
    slicer        text COLLATE "C" NOT NULL CHECK (slicer IN ('category', 'segment')),
    slicer_value  text COLLATE "C",
    product_id    text COLLATE "C" NOT NULL,
    lines         integer       NOT NULL,
    quantity      bigint        NOT NULL,
    revenue       numeric(14,2) NOT NULL,
    profit        numeric(14,2) NOT NULL
);
-- a 1 % batch updates about a quarter of the rows in place: room left on every page keeps those
-- updates on their page, without index entries (HOT)
ALTER TABLE warehouse.agg_product_slicer_totals SET (fillfactor = 70);
CREATE INDEX IF NOT EXISTS agg_product_slicer_totals_key_idx
    ON warehouse.agg_product_slicer_totals (product_id, slicer, slicer_value);

COMMENT ON TABLE warehouse.agg_product_slicer_totals IS 'agg_product_slices summed per product x category (over segments: slicer = ''category'') and per product x customer segment (over categories: slicer = ''segment''), over all dates: the top products of one category or one segment, one row per product. Attributes: join dim_products on product_id where is_current.';
COMMENT ON COLUMN warehouse.agg_product_slicer_totals.slicer IS '''category'': the row sums one category of the product over every segment; ''segment'': one customer segment over every category.';
COMMENT ON COLUMN warehouse.agg_product_slicer_totals.slicer_value IS 'The category (of the product version on the order date) or the customer''s current segment; NULL when unknown.';
COMMENT ON COLUMN warehouse.agg_product_slicer_totals.product_id IS 'Natural key of the product.';
COMMENT ON COLUMN warehouse.agg_product_slicer_totals.lines IS 'Order lines.';
COMMENT ON COLUMN warehouse.agg_product_slicer_totals.quantity IS 'Units sold.';
COMMENT ON COLUMN warehouse.agg_product_slicer_totals.revenue IS 'Sum of line_total.';
COMMENT ON COLUMN warehouse.agg_product_slicer_totals.profit IS 'Sum of profit.';

-- ─── agg_order_category_sets: orders with several categories, per day x category set x … ──
CREATE TABLE IF NOT EXISTS warehouse.agg_order_category_sets (
    date_key            integer       NOT NULL,
    categories          text[] COLLATE "C" NOT NULL,
    state               text COLLATE "C",
    customer_segment    text COLLATE "C",
    payment_method_key  bigint        NOT NULL,
    orders              integer       NOT NULL
);
-- segment moves update rows in place, as in agg_sales_slices (HOT)
ALTER TABLE warehouse.agg_order_category_sets SET (fillfactor = 90);
-- a range of days (the dashboard), and the rows a segment move changes, by the whole key (by
-- date alone, a batch's moved rows were looked up with a scan of the whole table; without state
-- and segment, each probe read the ~20 rows of its date, method and set at 10M order lines)
DROP INDEX IF EXISTS warehouse.agg_order_category_sets_date_idx;
DO $$
BEGIN
    IF (SELECT indnatts FROM pg_index
        WHERE indexrelid = to_regclass('warehouse.agg_order_category_sets_key_idx')) < 5 THEN
        DROP INDEX warehouse.agg_order_category_sets_key_idx;  -- built without state and segment
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS agg_order_category_sets_key_idx
    ON warehouse.agg_order_category_sets
    (date_key, payment_method_key, categories, state, customer_segment);

COMMENT ON TABLE warehouse.agg_order_category_sets IS 'Orders with lines in two or more categories, per order date x set of categories x state x customer segment x payment method (keys as in agg_sales_slices). With several categories selected, distinct orders = sum of agg_sales_slices.orders over the selected categories - sum here of orders x (selected categories in the set - 1), for the sets holding two or more of them.';
COMMENT ON COLUMN warehouse.agg_order_category_sets.date_key IS 'Order date (dim_date.date_key).';
COMMENT ON COLUMN warehouse.agg_order_category_sets.categories IS 'The order''s distinct non-NULL categories (of the product versions its lines point at), sorted in byte order; at least two.';
COMMENT ON COLUMN warehouse.agg_order_category_sets.state IS 'State of the customer version on the order date (NULL when unknown).';
COMMENT ON COLUMN warehouse.agg_order_category_sets.customer_segment IS 'Current segment of the customer (agg_customer_metrics.customer_segment); NULL when it has no metrics row.';
COMMENT ON COLUMN warehouse.agg_order_category_sets.payment_method_key IS 'Payment method (dim_payment_method.payment_method_key).';
COMMENT ON COLUMN warehouse.agg_order_category_sets.orders IS 'Orders with exactly this set of categories.';

-- ─── the same two summed over states: what the dashboard reads when no state is selected ────
-- (per day x category x segment x method: 64 thousand rows for agg_sales_slices' 1.7 million at
-- 10M order lines; sets: 0.4 million for 2 million).
CREATE TABLE IF NOT EXISTS warehouse.agg_sales_slices_any_state (
    date_key            integer       NOT NULL,
    category            text COLLATE "C",
    customer_segment    text COLLATE "C",
    payment_method_key  bigint        NOT NULL,
    lines               integer       NOT NULL,
    quantity            bigint        NOT NULL,
    revenue             numeric(14,2) NOT NULL,
    profit              numeric(14,2) NOT NULL,
    orders              integer       NOT NULL,
    orders_first        integer       NOT NULL
);
-- one row per key; a refresh finds a key by date and method, then compares category and
-- segment (either may be NULL)
CREATE INDEX IF NOT EXISTS agg_sales_slices_any_state_key_idx
    ON warehouse.agg_sales_slices_any_state (date_key, payment_method_key, category, customer_segment);

COMMENT ON TABLE warehouse.agg_sales_slices_any_state IS 'agg_sales_slices summed over states: sales per order date x category x customer segment x payment method, read by the dashboard when no state is selected. Same columns and meaning as there.';
COMMENT ON COLUMN warehouse.agg_sales_slices_any_state.date_key IS 'Order date (dim_date.date_key).';
COMMENT ON COLUMN warehouse.agg_sales_slices_any_state.category IS 'Category of the product version on the order date (NULL when unknown).';
COMMENT ON COLUMN warehouse.agg_sales_slices_any_state.customer_segment IS 'Current segment of the customer (agg_customer_metrics.customer_segment); NULL when it has no metrics row.';
COMMENT ON COLUMN warehouse.agg_sales_slices_any_state.payment_method_key IS 'Payment method (dim_payment_method.payment_method_key).';
COMMENT ON COLUMN warehouse.agg_sales_slices_any_state.lines IS 'Order lines.';
COMMENT ON COLUMN warehouse.agg_sales_slices_any_state.quantity IS 'Units sold.';
COMMENT ON COLUMN warehouse.agg_sales_slices_any_state.revenue IS 'Sum of line_total.';
COMMENT ON COLUMN warehouse.agg_sales_slices_any_state.profit IS 'Sum of profit.';
COMMENT ON COLUMN warehouse.agg_sales_slices_any_state.orders IS 'Distinct orders with a line of this category (see agg_sales_slices.orders).';
COMMENT ON COLUMN warehouse.agg_sales_slices_any_state.orders_first IS 'Orders counted only under their first category (see agg_sales_slices.orders_first).';

CREATE TABLE IF NOT EXISTS warehouse.agg_order_category_sets_any_state (
    date_key            integer       NOT NULL,
    categories          text[] COLLATE "C" NOT NULL,
    customer_segment    text COLLATE "C",
    payment_method_key  bigint        NOT NULL,
    orders              integer       NOT NULL
);
-- segment moves update rows in place (HOT, as in agg_sales_slices), found by the whole key
ALTER TABLE warehouse.agg_order_category_sets_any_state SET (fillfactor = 90);
DO $$
BEGIN
    IF (SELECT indnatts FROM pg_index
        WHERE indexrelid = to_regclass('warehouse.agg_order_category_sets_any_state_key_idx')) < 4
    THEN
        DROP INDEX warehouse.agg_order_category_sets_any_state_key_idx;  -- built without segment
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS agg_order_category_sets_any_state_key_idx
    ON warehouse.agg_order_category_sets_any_state
    (date_key, payment_method_key, categories, customer_segment);

COMMENT ON TABLE warehouse.agg_order_category_sets_any_state IS 'agg_order_category_sets summed over states: orders with lines in two or more categories per order date x set of categories x customer segment x payment method, read by the dashboard when no state is selected.';
COMMENT ON COLUMN warehouse.agg_order_category_sets_any_state.date_key IS 'Order date (dim_date.date_key).';
COMMENT ON COLUMN warehouse.agg_order_category_sets_any_state.categories IS 'The order''s distinct non-NULL categories, sorted in byte order; at least two.';
COMMENT ON COLUMN warehouse.agg_order_category_sets_any_state.customer_segment IS 'Current segment of the customer (agg_customer_metrics.customer_segment); NULL when it has no metrics row.';
COMMENT ON COLUMN warehouse.agg_order_category_sets_any_state.payment_method_key IS 'Payment method (dim_payment_method.payment_method_key).';
COMMENT ON COLUMN warehouse.agg_order_category_sets_any_state.orders IS 'Orders with exactly this set of categories.';

-- ─── the same two summed over every order date: what the dashboard reads over the whole range ──
-- (per category x state x segment: under a thousand rows, kept as the slices change, for the 1.7
-- million of agg_sales_slices at 10M order lines; sets: a few thousand for 2 million). No payment
-- method: the payments page reads the slices per day. Sums in wider types than per day.
CREATE TABLE IF NOT EXISTS warehouse.agg_sales_slices_all_dates (
    category            text COLLATE "C",
    state               text COLLATE "C",
    customer_segment    text COLLATE "C",
    lines               bigint        NOT NULL,
    quantity            bigint        NOT NULL,
    revenue             numeric(16,2) NOT NULL,
    profit              numeric(16,2) NOT NULL,
    orders              bigint        NOT NULL,
    orders_first        bigint        NOT NULL
);

COMMENT ON TABLE warehouse.agg_sales_slices_all_dates IS 'agg_sales_slices summed over every order date: sales per category x state x customer segment, read by the dashboard when the date range covers every order date. Same columns and meaning as there.';
COMMENT ON COLUMN warehouse.agg_sales_slices_all_dates.category IS 'Category of the product version on the order date (NULL when unknown).';
COMMENT ON COLUMN warehouse.agg_sales_slices_all_dates.state IS 'State of the customer version on the order date (NULL when unknown).';
COMMENT ON COLUMN warehouse.agg_sales_slices_all_dates.customer_segment IS 'Current segment of the customer (agg_customer_metrics.customer_segment); NULL when it has no metrics row.';
COMMENT ON COLUMN warehouse.agg_sales_slices_all_dates.lines IS 'Order lines.';
COMMENT ON COLUMN warehouse.agg_sales_slices_all_dates.quantity IS 'Units sold.';
COMMENT ON COLUMN warehouse.agg_sales_slices_all_dates.revenue IS 'Sum of line_total.';
COMMENT ON COLUMN warehouse.agg_sales_slices_all_dates.profit IS 'Sum of profit.';
COMMENT ON COLUMN warehouse.agg_sales_slices_all_dates.orders IS 'Distinct orders with a line of this category (see agg_sales_slices.orders).';
COMMENT ON COLUMN warehouse.agg_sales_slices_all_dates.orders_first IS 'Orders counted only under their first category (see agg_sales_slices.orders_first).';

CREATE TABLE IF NOT EXISTS warehouse.agg_order_category_sets_all_dates (
    categories          text[] COLLATE "C" NOT NULL,
    state               text COLLATE "C",
    customer_segment    text COLLATE "C",
    orders              bigint        NOT NULL
);

COMMENT ON TABLE warehouse.agg_order_category_sets_all_dates IS 'agg_order_category_sets summed over every order date: orders with lines in two or more categories per set of categories x state x customer segment, read by the dashboard when the date range covers every order date.';
COMMENT ON COLUMN warehouse.agg_order_category_sets_all_dates.categories IS 'The order''s distinct non-NULL categories, sorted in byte order; at least two.';
COMMENT ON COLUMN warehouse.agg_order_category_sets_all_dates.state IS 'State of the customer version on the order date (NULL when unknown).';
COMMENT ON COLUMN warehouse.agg_order_category_sets_all_dates.customer_segment IS 'Current segment of the customer (agg_customer_metrics.customer_segment); NULL when it has no metrics row.';
COMMENT ON COLUMN warehouse.agg_order_category_sets_all_dates.orders IS 'Orders with exactly this set of categories.';

-- distinct customers of one or more categories or states (the dashboard's customer counts with
-- a category or state filter): an index-only scan of the selected values, in customer order,
-- instead of the whole table
CREATE INDEX IF NOT EXISTS agg_customer_slices_category_idx
    ON warehouse.agg_customer_slices (category, customer_id)
    INCLUDE (state, customer_segment, first_purchase_date, last_purchase_date);
CREATE INDEX IF NOT EXISTS agg_customer_slices_state_idx
    ON warehouse.agg_customer_slices (state, customer_id)
    INCLUDE (category, customer_segment, first_purchase_date, last_purchase_date);
