-- Staging: source rows exactly as received. Every source column is text; nothing is cast here.
-- The pipeline columns are filled by defaults during COPY: the loader sets dwh.batch_id and
-- dwh.source_file for its transaction and restarts the table's line sequence at the header line,
-- so one COPY per file is all it takes (see scripts/dwh/stages/ingest.py). Idempotent.

CREATE SEQUENCE IF NOT EXISTS staging.customers_line_seq;
CREATE TABLE IF NOT EXISTS staging.customers (
    customer_id            text,
    first_name             text,
    last_name              text,
    email                  text,
    phone                  text,
    registration_date      text,
    city                   text,
    state                  text,
    country                text,
    age_group              text,
    _batch_id              text        NOT NULL DEFAULT current_setting('dwh.batch_id'),
    _source_file           text        NOT NULL DEFAULT current_setting('dwh.source_file'),
    _source_line           bigint      NOT NULL DEFAULT nextval('staging.customers_line_seq'),
    _loaded_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS customers_batch_idx ON staging.customers (_batch_id);
COMMENT ON TABLE staging.customers IS 'Rows of customers.csv as received, one per data line.';
COMMENT ON COLUMN staging.customers._source_line IS 'Line of the row in its file (the header is line 1).';

CREATE SEQUENCE IF NOT EXISTS staging.products_line_seq;
CREATE TABLE IF NOT EXISTS staging.products (
    product_id             text,
    product_name           text,
    category               text,
    sub_category           text,
    price                  text,
    cost                   text,
    brand                  text,
    stock_quantity         text,
    supplier_id            text,
    _batch_id              text        NOT NULL DEFAULT current_setting('dwh.batch_id'),
    _source_file           text        NOT NULL DEFAULT current_setting('dwh.source_file'),
    _source_line           bigint      NOT NULL DEFAULT nextval('staging.products_line_seq'),
    _loaded_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS products_batch_idx ON staging.products (_batch_id);
COMMENT ON TABLE staging.products IS 'Rows of products.csv as received, one per data line.';
COMMENT ON COLUMN staging.products._source_line IS 'Line of the row in its file (the header is line 1).';

CREATE SEQUENCE IF NOT EXISTS staging.transactions_line_seq;
CREATE TABLE IF NOT EXISTS staging.transactions (
    transaction_id         text,
    customer_id            text,
    transaction_date       text,
    transaction_time       text,
    payment_method         text,
    shipping_address       text,
    total_amount           text,
    _batch_id              text        NOT NULL DEFAULT current_setting('dwh.batch_id'),
    _source_file           text        NOT NULL DEFAULT current_setting('dwh.source_file'),
    _source_line           bigint      NOT NULL DEFAULT nextval('staging.transactions_line_seq'),
    _loaded_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS transactions_batch_idx ON staging.transactions (_batch_id);
COMMENT ON TABLE staging.transactions IS 'Rows of transactions.csv as received, one per data line.';
COMMENT ON COLUMN staging.transactions._source_line IS 'Line of the row in its file (the header is line 1).';

CREATE SEQUENCE IF NOT EXISTS staging.transaction_items_line_seq;
CREATE TABLE IF NOT EXISTS staging.transaction_items (
    item_id                text,
    transaction_id         text,
    product_id             text,
    quantity               text,
    unit_price             text,
    discount_percentage    text,
    line_total             text,
    _batch_id              text        NOT NULL DEFAULT current_setting('dwh.batch_id'),
    _source_file           text        NOT NULL DEFAULT current_setting('dwh.source_file'),
    _source_line           bigint      NOT NULL DEFAULT nextval('staging.transaction_items_line_seq'),
    _loaded_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS transaction_items_batch_idx ON staging.transaction_items (_batch_id);
COMMENT ON TABLE staging.transaction_items IS 'Rows of transaction_items.csv as received, one per data line.';
COMMENT ON COLUMN staging.transaction_items._source_line IS 'Line of the row in its file (the header is line 1).';
