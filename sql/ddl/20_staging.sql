-- Staging: source rows exactly as received. Every source column is text; nothing is cast here.
-- The pipeline columns are filled by defaults during COPY: the loader sets dwh.batch_id and
-- dwh.source_file for its transaction and restarts the table's line sequence at the header line,
-- so one COPY per file is all it takes (see scripts/dwh/stages/ingest.py). Idempotent.
--
-- The tables are UNLOGGED: a COPY into them writes no WAL, and they can always be reloaded from
-- the raw files. PostgreSQL empties every unlogged table when it recovers from a crash (and a
-- promoted standby or a restored physical backup has them empty); staging.unlogged_canary, empty
-- then too, tells the pipeline so, and before reading staging the ingest, quality and production
-- stages reload the lost batches from their files (ingest.restore_lost_staging).

CREATE SEQUENCE IF NOT EXISTS staging.customers_line_seq;
CREATE UNLOGGED TABLE IF NOT EXISTS staging.customers (
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
CREATE UNLOGGED TABLE IF NOT EXISTS staging.products (
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
CREATE UNLOGGED TABLE IF NOT EXISTS staging.transactions (
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
CREATE UNLOGGED TABLE IF NOT EXISTS staging.transaction_items (
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

CREATE UNLOGGED TABLE IF NOT EXISTS staging.unlogged_canary (
    intact boolean PRIMARY KEY DEFAULT true CHECK (intact)
);
COMMENT ON TABLE staging.unlogged_canary IS 'One row while the unlogged staging tables hold what was loaded into them; empty after PostgreSQL''s recovery from a crash emptied them all, until the pipeline has reloaded them from the raw files.';

-- The line sequences hand out 1,000 numbers at a time to the session that loads a file, which
-- numbers its rows from its own cache: a nextval without the sequence's lock and buffer per row
-- (0.30 → 0.15 s per million rows). Only the loader draws from them, one file per table at a
-- time (its advisory lock), after a setval that empties its cache, so the lines stay consecutive.
-- Set here, for the sequences created above and those of older databases alike.
ALTER SEQUENCE staging.customers_line_seq CACHE 1000;
ALTER SEQUENCE staging.products_line_seq CACHE 1000;
ALTER SEQUENCE staging.transactions_line_seq CACHE 1000;
ALTER SEQUENCE staging.transaction_items_line_seq CACHE 1000;

-- Databases from before kept staging logged: made unlogged here, once (a rewrite of each table),
-- with their rows intact.
DO $$
DECLARE
    name text;
BEGIN
    FOR name IN
        SELECT c.relname FROM pg_class AS c
        WHERE c.relnamespace = 'staging'::regnamespace AND c.relkind = 'r'
          AND c.relpersistence = 'p'
          AND c.relname IN ('customers', 'products', 'transactions', 'transaction_items')
    LOOP
        EXECUTE format('ALTER TABLE staging.%I SET UNLOGGED', name);
        INSERT INTO staging.unlogged_canary DEFAULT VALUES ON CONFLICT DO NOTHING;
    END LOOP;
END $$;
