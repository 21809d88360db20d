-- Schemas of the warehouse loader. Idempotent: safe to apply on every run.
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS production;
CREATE SCHEMA IF NOT EXISTS warehouse;
CREATE SCHEMA IF NOT EXISTS ops;

COMMENT ON SCHEMA staging IS 'Source rows as received: every column text, plus _batch_id, _source_file, _source_line, _loaded_at.';
COMMENT ON SCHEMA production IS 'Typed, cleaned, validated, deduplicated rows.';
COMMENT ON SCHEMA warehouse IS 'Kimball star schema read by BI tools.';
COMMENT ON SCHEMA ops IS 'Run ledger: runs, stages, ingested files, quality results, quarantine.';
