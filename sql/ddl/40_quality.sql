-- Data-quality results: one row per check per run (config/quality_checks.yaml and
-- sql/checks/assert_*.sql). Scoring and the gate: docs/data_quality.md. Idempotent.

CREATE TABLE IF NOT EXISTS ops.dq_results (
    result_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id         bigint      REFERENCES ops.pipeline_runs (run_id) ON DELETE CASCADE,
    layer          text        NOT NULL,            -- staging | production | warehouse
    check_name     text        NOT NULL,            -- e.g. not_null:production.customers.customer_id
    check_type     text        NOT NULL,            -- not_null, unique, …, assert (bespoke SQL)
    table_name     text        NOT NULL,            -- schema.table
    column_name    text,                            -- column(s), comma separated; NULL for table checks
    dimension      text        NOT NULL
                   CHECK (dimension IN ('completeness', 'uniqueness', 'validity', 'consistency',
                                        'referential_integrity', 'timeliness')),
    severity       text        NOT NULL CHECK (severity IN ('warn', 'error')),
    mostly         numeric     NOT NULL DEFAULT 1,  -- share of rows that must pass
    total_rows     bigint      NOT NULL,
    failing_rows   bigint      NOT NULL,
    passed         boolean     NOT NULL,            -- failing share within 1 - mostly
    sample         jsonb       NOT NULL DEFAULT '[]'::jsonb,   -- a few offending keys
    query          text        NOT NULL,            -- the SQL that was run
    checked_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS dq_results_run_idx ON ops.dq_results (run_id, layer);
COMMENT ON TABLE ops.dq_results IS 'Every data-quality check result, per run: failing rows and a sample of offending keys.';
