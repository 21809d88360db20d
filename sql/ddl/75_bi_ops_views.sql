-- Operations for BI: what BI users and the dashboard may see of the run ledger, published as
-- views in the warehouse schema. Idempotent. See docs/bi_guide.md and docs/security.md.
--
-- bi_reader has no grant on the ops schema. These views are owned by the pipeline's role (the
-- role that applies the DDL) and, like every view that is not security_invoker, read ops with
-- their owner's rights: bi_reader reads them through its SELECT on the warehouse schema (the
-- grants and default privileges of 60_bi.sql, repeated explicitly at the end of this file) and
-- still cannot select from ops itself.
--
-- What is left out on purpose: the raw values of quarantined rows (ops.quarantine.raw, which
-- can hold personal data) and their natural keys, source files and lines; the offending keys
-- (ops.dq_results.sample) and SQL of data-quality checks; run options, hosts and pids. Error
-- texts are cut to their first line, at most 300 characters.
--
-- Named 75_ so that it runs after 70_operations.sql (DDL files apply in name order): the ops
-- tables it reads must exist first.

-- ─── v_pipeline_runs: one row per pipeline run ───────────────────────────────────────────────
CREATE OR REPLACE VIEW warehouse.v_pipeline_runs AS
SELECT
    r.run_id,
    r.status,
    r.started_at,
    r.finished_at,
    round(extract(epoch FROM coalesce(r.finished_at, clock_timestamp()) - r.started_at)::numeric,
          1)                                                   AS seconds,
    array_to_string(r.stages, ', ')                            AS stages,
    r.exit_code,
    left(split_part(r.error, E'\n', 1), 300)                   AS error
FROM ops.pipeline_runs AS r;

COMMENT ON VIEW warehouse.v_pipeline_runs IS 'One row per pipeline run (from ops.pipeline_runs): status, timings, stages and exit code. Read-only for BI; no run options, host or pid.';
COMMENT ON COLUMN warehouse.v_pipeline_runs.run_id IS 'Run id (ops.pipeline_runs.run_id); increases with every run.';
COMMENT ON COLUMN warehouse.v_pipeline_runs.status IS 'running, success, failed or cancelled.';
COMMENT ON COLUMN warehouse.v_pipeline_runs.started_at IS 'When the run started (UTC).';
COMMENT ON COLUMN warehouse.v_pipeline_runs.finished_at IS 'When the run ended (UTC); NULL while it runs.';
COMMENT ON COLUMN warehouse.v_pipeline_runs.seconds IS 'Duration in seconds (so far, while it runs).';
COMMENT ON COLUMN warehouse.v_pipeline_runs.stages IS 'The stages the run was asked to run, comma separated, in order.';
COMMENT ON COLUMN warehouse.v_pipeline_runs.exit_code IS 'Exit code of the run (0 = success; docs/operations.md lists the others); NULL while it runs.';
COMMENT ON COLUMN warehouse.v_pipeline_runs.error IS 'First line of the error of a failed run, at most 300 characters; NULL otherwise.';

-- ─── v_stage_runs: one row per stage of a run ────────────────────────────────────────────────
CREATE OR REPLACE VIEW warehouse.v_stage_runs AS
SELECT
    s.run_id,
    s.stage,
    s.status,
    s.started_at,
    s.finished_at,
    round(extract(epoch FROM coalesce(s.finished_at, clock_timestamp()) - s.started_at)::numeric,
          2)                                                   AS seconds,
    s.rows_in,
    s.rows_out,
    left(split_part(s.error, E'\n', 1), 300)                   AS error
FROM ops.stage_runs AS s;

COMMENT ON VIEW warehouse.v_stage_runs IS 'One row per stage of a run (from ops.stage_runs): status, timings and row counts.';
COMMENT ON COLUMN warehouse.v_stage_runs.run_id IS 'The run (v_pipeline_runs.run_id).';
COMMENT ON COLUMN warehouse.v_stage_runs.stage IS 'Stage name: generate, ingest, quality, production, warehouse, aggregates, analytics.';
COMMENT ON COLUMN warehouse.v_stage_runs.status IS 'running, success, failed, cancelled or skipped.';
COMMENT ON COLUMN warehouse.v_stage_runs.started_at IS 'When the stage started (UTC).';
COMMENT ON COLUMN warehouse.v_stage_runs.finished_at IS 'When the stage ended (UTC); NULL while it runs.';
COMMENT ON COLUMN warehouse.v_stage_runs.seconds IS 'Duration in seconds (so far, while it runs).';
COMMENT ON COLUMN warehouse.v_stage_runs.rows_in IS 'Rows the stage read, where it counts them.';
COMMENT ON COLUMN warehouse.v_stage_runs.rows_out IS 'Rows the stage wrote, where it counts them.';
COMMENT ON COLUMN warehouse.v_stage_runs.error IS 'First line of the error of a failed stage, at most 300 characters; NULL otherwise.';

-- ─── v_quality_runs: the quality score and grade of every run that scored one ───────────────
-- The production stage records the overall score of the run's checks; a run that stopped
-- before it has the staging score of the quality stage.
CREATE OR REPLACE VIEW warehouse.v_quality_runs AS
SELECT
    r.run_id,
    r.started_at,
    r.status,
    coalesce(
        CASE WHEN jsonb_typeof(p.details -> 'quality_score') = 'number'
             THEN (p.details ->> 'quality_score')::numeric END,
        CASE WHEN jsonb_typeof(q.details -> 'score') = 'number'
             THEN (q.details ->> 'score')::numeric END
    )                                                          AS score,
    coalesce(p.details ->> 'quality_grade', q.details ->> 'grade') AS grade,
    CASE WHEN p.run_id IS NOT NULL THEN 'production' ELSE 'staging' END AS scored_by,
    coalesce(d.checks, 0)                                      AS checks,
    coalesce(d.failed_checks, 0)                               AS failed_checks
FROM ops.pipeline_runs AS r
LEFT JOIN ops.stage_runs AS p
       ON p.run_id = r.run_id AND p.stage = 'production' AND p.status = 'success'
LEFT JOIN ops.stage_runs AS q
       ON q.run_id = r.run_id AND q.stage = 'quality' AND q.status = 'success'
LEFT JOIN (
    SELECT run_id, count(*) AS checks, count(*) FILTER (WHERE NOT passed) AS failed_checks
    FROM ops.dq_results
    GROUP BY run_id
) AS d ON d.run_id = r.run_id
WHERE p.run_id IS NOT NULL OR q.run_id IS NOT NULL;

COMMENT ON VIEW warehouse.v_quality_runs IS 'One row per run with a data-quality score: the score and grade (docs/data_quality.md) and how many checks ran and failed.';
COMMENT ON COLUMN warehouse.v_quality_runs.run_id IS 'The run (v_pipeline_runs.run_id).';
COMMENT ON COLUMN warehouse.v_quality_runs.started_at IS 'When the run started (UTC).';
COMMENT ON COLUMN warehouse.v_quality_runs.status IS 'Status of the run: running, success, failed or cancelled.';
COMMENT ON COLUMN warehouse.v_quality_runs.score IS 'Overall quality score, 0-100: of all the run''s checks when the production stage succeeded, else of the staging checks.';
COMMENT ON COLUMN warehouse.v_quality_runs.grade IS 'Letter grade of the score.';
COMMENT ON COLUMN warehouse.v_quality_runs.scored_by IS 'production (all checks) or staging (the quality stage only: production did not succeed).';
COMMENT ON COLUMN warehouse.v_quality_runs.checks IS 'Check results recorded for the run (v_data_quality rows).';
COMMENT ON COLUMN warehouse.v_quality_runs.failed_checks IS 'Checks of the run that did not pass.';

-- ─── v_data_quality: one row per data-quality check result of a run ────────────────────────
CREATE OR REPLACE VIEW warehouse.v_data_quality AS
SELECT
    d.result_id,
    d.run_id,
    d.checked_at,
    d.layer,
    d.check_name,
    d.check_type,
    d.table_name,
    d.column_name,
    d.dimension,
    d.severity,
    CASE WHEN d.passed THEN 'pass' WHEN d.severity = 'error' THEN 'fail' ELSE 'warn' END AS status,
    d.passed,
    d.mostly,
    d.total_rows,
    d.failing_rows,
    round(100 * (d.total_rows - d.failing_rows)::numeric / nullif(d.total_rows, 0), 2)
                                                               AS passing_pct
FROM ops.dq_results AS d;

COMMENT ON VIEW warehouse.v_data_quality IS 'One row per data-quality check result of a run (from ops.dq_results; checks: config/quality_checks.yaml and sql/checks/). Without the sample of offending keys and the SQL.';
COMMENT ON COLUMN warehouse.v_data_quality.result_id IS 'Result id (ops.dq_results.result_id).';
COMMENT ON COLUMN warehouse.v_data_quality.run_id IS 'The run (v_pipeline_runs.run_id).';
COMMENT ON COLUMN warehouse.v_data_quality.checked_at IS 'When the check ran (UTC).';
COMMENT ON COLUMN warehouse.v_data_quality.layer IS 'staging, production or warehouse.';
COMMENT ON COLUMN warehouse.v_data_quality.check_name IS 'Check name, e.g. not_null:production.customers.customer_id.';
COMMENT ON COLUMN warehouse.v_data_quality.check_type IS 'A check type of config/quality_checks.yaml (not_null, unique, accepted_values, range, regex, expression, relationships, freshness, row_count_min), or assert (bespoke SQL of sql/checks/).';
COMMENT ON COLUMN warehouse.v_data_quality.table_name IS 'The checked table (schema.table).';
COMMENT ON COLUMN warehouse.v_data_quality.column_name IS 'The checked column(s), comma separated; NULL for a table check.';
COMMENT ON COLUMN warehouse.v_data_quality.dimension IS 'Quality dimension: completeness, uniqueness, validity, consistency, referential_integrity or timeliness.';
COMMENT ON COLUMN warehouse.v_data_quality.severity IS 'warn or error: what a failure of the check means.';
COMMENT ON COLUMN warehouse.v_data_quality.status IS 'pass; fail (an error-severity check did not pass); warn (a warn-severity check did not pass).';
COMMENT ON COLUMN warehouse.v_data_quality.passed IS 'The failing share of rows was within 1 - mostly.';
COMMENT ON COLUMN warehouse.v_data_quality.mostly IS 'Share of rows that must pass (1 = every row).';
COMMENT ON COLUMN warehouse.v_data_quality.total_rows IS 'Rows checked.';
COMMENT ON COLUMN warehouse.v_data_quality.failing_rows IS 'Rows that broke the rule.';
COMMENT ON COLUMN warehouse.v_data_quality.passing_pct IS 'Percentage of rows that passed (100 x (total_rows - failing_rows) / total_rows); NULL when no row was checked.';

-- ─── v_quarantine_summary: rejected rows counted by batch, table and reason ─────────────────
-- Counts only: no raw values, natural keys, files or lines (they can hold personal data).
CREATE OR REPLACE VIEW warehouse.v_quarantine_summary AS
SELECT
    q.batch_id,
    q.table_name,
    r.reason,
    count(*)                                                   AS rows,
    count(*) FILTER (WHERE r.position = 1)                     AS primary_rows,
    count(*) FILTER (WHERE q.resolved_at IS NULL)              AS open_rows,
    count(*) FILTER (WHERE q.resolved_at IS NOT NULL)          AS resolved_rows,
    count(*) FILTER (WHERE q.resolved_at IS NULL AND q.is_retryable) AS retryable_open_rows,
    min(q.quarantined_at)                                      AS first_quarantined_at,
    max(q.quarantined_at)                                      AS last_quarantined_at
FROM ops.quarantine AS q
CROSS JOIN LATERAL unnest(q.reason_codes) WITH ORDINALITY AS r (reason, position)
GROUP BY q.batch_id, q.table_name, r.reason;

COMMENT ON VIEW warehouse.v_quarantine_summary IS 'Rows rejected into ops.quarantine, counted per batch, table and reason code. Counts only: the raw values, keys, files and lines of the rows stay in ops (they can hold personal data). A row with several reasons counts under each; sum primary_rows for the number of rows.';
COMMENT ON COLUMN warehouse.v_quarantine_summary.batch_id IS 'Source batch (folder under data/raw/).';
COMMENT ON COLUMN warehouse.v_quarantine_summary.table_name IS 'Source table: customers, products, transactions or transaction_items.';
COMMENT ON COLUMN warehouse.v_quarantine_summary.reason IS 'Reason code of the rejection (docs/data_quality.md).';
COMMENT ON COLUMN warehouse.v_quarantine_summary.rows IS 'Rejected rows with this reason among their reasons.';
COMMENT ON COLUMN warehouse.v_quarantine_summary.primary_rows IS 'Rejected rows with this reason as their first (primary) reason: these add up to the number of rejected rows.';
COMMENT ON COLUMN warehouse.v_quarantine_summary.open_rows IS 'Of rows: still in quarantine (not promoted by a later run).';
COMMENT ON COLUMN warehouse.v_quarantine_summary.resolved_rows IS 'Of rows: promoted by a later run (resolved).';
COMMENT ON COLUMN warehouse.v_quarantine_summary.retryable_open_rows IS 'Of open_rows: retried by later runs (rejected only because the customer, order or product it refers to had not arrived: missing_parent).';
COMMENT ON COLUMN warehouse.v_quarantine_summary.first_quarantined_at IS 'When the first of these rows was rejected (UTC).';
COMMENT ON COLUMN warehouse.v_quarantine_summary.last_quarantined_at IS 'When the last of these rows was rejected (UTC).';

-- ─── v_freshness: when each layer was last loaded ───────────────────────────────────────────
CREATE OR REPLACE VIEW warehouse.v_freshness AS
WITH layers (layer, layer_order, measured_by) AS (
    VALUES ('staging', 1, 'last file ingested'),
           ('production', 2, 'last successful production stage'),
           ('warehouse', 3, 'last successful warehouse stage'),
           ('aggregates', 4, 'last successful aggregates stage')
),
loads AS (
    SELECT 'staging' AS layer, max(f.loaded_at) AS last_loaded_at
    FROM ops.ingested_files AS f
    UNION ALL
    SELECT s.stage, max(s.finished_at)
    FROM ops.stage_runs AS s
    WHERE s.status = 'success' AND s.stage IN ('production', 'warehouse', 'aggregates')
    GROUP BY s.stage
)
SELECT
    l.layer,
    l.layer_order,
    l.measured_by,
    x.last_loaded_at,
    round((extract(epoch FROM clock_timestamp() - x.last_loaded_at) / 3600)::numeric, 1)
                                                               AS hours_since_load
FROM layers AS l
LEFT JOIN loads AS x ON x.layer = l.layer;

COMMENT ON VIEW warehouse.v_freshness IS 'One row per layer (staging, production, warehouse, aggregates): when it was last loaded, and how long ago.';
COMMENT ON COLUMN warehouse.v_freshness.layer IS 'staging, production, warehouse or aggregates.';
COMMENT ON COLUMN warehouse.v_freshness.layer_order IS 'Position of the layer in the pipeline (1 = staging): sort by it.';
COMMENT ON COLUMN warehouse.v_freshness.measured_by IS 'What last_loaded_at is: the last file ingested (staging) or the end of the last successful stage.';
COMMENT ON COLUMN warehouse.v_freshness.last_loaded_at IS 'When the layer was last loaded (UTC); NULL if never.';
COMMENT ON COLUMN warehouse.v_freshness.hours_since_load IS 'Hours from last_loaded_at to the moment of the query, one decimal.';

-- ─── v_health: the health reports of monitoring ─────────────────────────────────────────────
CREATE OR REPLACE VIEW warehouse.v_health AS
SELECT
    h.report_id,
    h.checked_at,
    h.health,
    h.score,
    h.checks,
    h.report_id = max(h.report_id) OVER ()                     AS is_latest
FROM ops.health_reports AS h;

COMMENT ON VIEW warehouse.v_health IS 'One row per monitoring run (from ops.health_reports; `monitor` and the end of every run): overall health, score and every check. is_latest marks the current one.';
COMMENT ON COLUMN warehouse.v_health.report_id IS 'Report id (ops.health_reports.report_id); increases with every report.';
COMMENT ON COLUMN warehouse.v_health.checked_at IS 'When monitoring ran (UTC).';
COMMENT ON COLUMN warehouse.v_health.health IS 'healthy, degraded or critical.';
COMMENT ON COLUMN warehouse.v_health.score IS 'Health score 0-100: the mean over evaluated checks of ok = 100, warning = 50, critical = 0.';
COMMENT ON COLUMN warehouse.v_health.checks IS 'Every check as JSON: name, status, message, value, details (docs/operations.md).';
COMMENT ON COLUMN warehouse.v_health.is_latest IS 'The most recent report.';

-- ─── v_open_alerts: alerts not resolved yet ─────────────────────────────────────────────────
CREATE OR REPLACE VIEW warehouse.v_open_alerts AS
SELECT
    a.alert_id,
    a.check_name,
    a.severity,
    a.message,
    a.opened_at,
    a.last_seen_at,
    a.notified_at
FROM ops.alerts AS a
WHERE a.resolved_at IS NULL;

COMMENT ON VIEW warehouse.v_open_alerts IS 'Open alerts raised by monitoring and the scheduler (from ops.alerts, not yet resolved): at most one per check.';
COMMENT ON COLUMN warehouse.v_open_alerts.alert_id IS 'Alert id (ops.alerts.alert_id).';
COMMENT ON COLUMN warehouse.v_open_alerts.check_name IS 'The health check that raised it (v_health checks).';
COMMENT ON COLUMN warehouse.v_open_alerts.severity IS 'warning or critical.';
COMMENT ON COLUMN warehouse.v_open_alerts.message IS 'What is wrong, as last seen.';
COMMENT ON COLUMN warehouse.v_open_alerts.opened_at IS 'When the alert was raised (UTC).';
COMMENT ON COLUMN warehouse.v_open_alerts.last_seen_at IS 'When the condition was last seen (UTC).';
COMMENT ON COLUMN warehouse.v_open_alerts.notified_at IS 'When a notification was sent (UTC); NULL if none yet.';

-- ─── grants ─────────────────────────────────────────────────────────────────────────────────
-- 60_bi.sql's default privileges already cover views that this role creates in warehouse; the
-- explicit grant also covers views created earlier by another role or before bi_reader existed.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'bi_reader') THEN
        EXECUTE 'GRANT SELECT ON warehouse.v_pipeline_runs, warehouse.v_stage_runs,'
             || ' warehouse.v_quality_runs, warehouse.v_data_quality,'
             || ' warehouse.v_quarantine_summary, warehouse.v_freshness, warehouse.v_health,'
             || ' warehouse.v_open_alerts TO bi_reader';
    END IF;
END
$$;
