-- layer: production
-- table: ops.reconciliation
-- severity: error
-- dimension: consistency
-- scope: batch_id
-- Promoted table batches whose counts do not add up: staged = accepted + quarantined +
-- duplicates, staged equal to the rows ingested from the file, quarantined equal to the rows of
-- that batch in ops.quarantine. Any row here means a row was lost or counted twice.
-- Scope (quality.scope new): the reconciliation rows of the batches checked in this run, by
-- batch_id; the production stage also re-verifies every row with this file on each run.
SELECT r.table_name, r.batch_id, r.staged, r.accepted, r.quarantined, r.duplicates,
       f.row_count AS ingested, q.n AS in_quarantine
FROM ops.reconciliation AS r
LEFT JOIN ops.ingested_files AS f ON f.batch_id = r.batch_id AND f.table_name = r.table_name
LEFT JOIN (
    SELECT table_name, batch_id, count(*) AS n FROM ops.quarantine GROUP BY 1, 2
) AS q ON q.table_name = r.table_name AND q.batch_id = r.batch_id
WHERE r.staged <> r.accepted + r.quarantined + r.duplicates
   OR r.staged IS DISTINCT FROM f.row_count
   OR r.quarantined <> coalesce(q.n, 0)
