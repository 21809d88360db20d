-- The run ledger. Idempotent.

CREATE TABLE IF NOT EXISTS ops.pipeline_runs (
    run_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status        text        NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'success', 'failed', 'cancelled')),
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz,
    stages        text[]      NOT NULL,
    options       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    exit_code     integer,
    error         text,
    host          text,
    pid           integer
);
COMMENT ON TABLE ops.pipeline_runs IS 'One row per pipeline run.';

CREATE TABLE IF NOT EXISTS ops.stage_runs (
    run_id        bigint      NOT NULL REFERENCES ops.pipeline_runs (run_id) ON DELETE CASCADE,
    stage         text        NOT NULL,
    status        text        NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'success', 'failed', 'cancelled', 'skipped')),
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz,
    rows_in       bigint,
    rows_out      bigint,
    error         text,
    details       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (run_id, stage)
);
COMMENT ON TABLE ops.stage_runs IS 'One row per stage of a run, with timings and row counts.';

CREATE TABLE IF NOT EXISTS ops.ingested_files (
    file_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id      text        NOT NULL,
    file_name     text        NOT NULL,
    table_name    text        NOT NULL,
    source_path   text        NOT NULL,
    sha256        text        NOT NULL,
    bytes         bigint      NOT NULL,
    row_count     bigint      NOT NULL,
    run_id        bigint      REFERENCES ops.pipeline_runs (run_id) ON DELETE SET NULL,
    loaded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (batch_id, file_name)
);
-- The same content is never loaded twice (header-only files are alike by nature, so not them).
CREATE UNIQUE INDEX IF NOT EXISTS ingested_files_sha256_uq
    ON ops.ingested_files (sha256) WHERE row_count > 0;
-- The file's modification time (ns) when it was loaded, recorded only when it was written well
-- before the load (else NULL): a later run trusts an unchanged size and time instead of hashing.
ALTER TABLE ops.ingested_files ADD COLUMN IF NOT EXISTS mtime_ns bigint;
COMMENT ON TABLE ops.ingested_files IS 'Every source file loaded into staging: one row per file, written in the same transaction as its rows.';

CREATE TABLE IF NOT EXISTS ops.batches (
    batch_id       text        PRIMARY KEY,
    business_date  date,        -- from the batch's manifest.json; NULL for a batch without one
    manifest       jsonb,
    registered_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE ops.batches IS 'Every batch folder seen by the ingest stage, in name order = load order.';

-- What the last application of sql/ddl/*.sql left (db.apply_ddl): the checksum of the files and a
-- signature of the catalog of the loader's schemas. A run whose files and catalog match skips the
-- DDL, whose locks would wait for (and cancel) autovacuum on every large table.
CREATE TABLE IF NOT EXISTS ops.ddl_applied (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    checksum    text        NOT NULL,
    catalog     text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE ops.ddl_applied IS 'The checksum of sql/ddl/*.sql and the catalog signature the last DDL application left; a run skips the DDL when both match.';
