-- Second half of every promotion (after sql/transform/production/<table>.sql built _promote and
-- upserted the accepted rows): quarantine the rejected rows (a batch) or mark the promoted ones
-- resolved (a retry), then return the counts of this promotion as one JSON object.
-- Parameters: table_name, run_id, retry.

INSERT INTO ops.quarantine (
    run_id, batch_id, table_name, source_file, source_line, natural_key, reason_codes,
    is_retryable, raw
)
SELECT
    %(run_id)s, _batch_id, %(table_name)s, raw->>'_source_file', _source_line, natural_key,
    reason_codes, is_retryable, raw   -- raw: the staging row as jsonb, built for these rows only
FROM _promote
WHERE NOT %(retry)s AND outcome = 'quarantined'
ON CONFLICT (table_name, batch_id, source_line) DO NOTHING;

-- A retried row leaves quarantine once it is accepted (or superseded by a later version of its
-- key that was accepted in the same retry).
WITH resolved AS (
    UPDATE ops.quarantine AS q
    SET resolved_at = now(), resolved_run_id = %(run_id)s
    FROM _promote AS p
    WHERE %(retry)s
      AND p.outcome IN ('accepted', 'exact_duplicate', 'conflicting_duplicate')
      AND q.table_name = %(table_name)s
      AND q.batch_id = p._batch_id
      AND q.source_line = p._source_line
      AND q.resolved_at IS NULL
    RETURNING q.batch_id
),
resolved_by_batch AS (
    SELECT batch_id, count(*) AS n FROM resolved GROUP BY batch_id
),
bumped AS (
    UPDATE ops.reconciliation AS r
    SET resolved_later = r.resolved_later + b.n
    FROM resolved_by_batch AS b
    WHERE r.table_name = %(table_name)s AND r.batch_id = b.batch_id
    RETURNING b.n
),
counts AS (
    SELECT
        count(*) AS staged,
        count(*) FILTER (WHERE outcome = 'accepted') AS accepted,
        count(*) FILTER (WHERE outcome = 'quarantined') AS quarantined,
        count(*) FILTER (WHERE outcome LIKE '%%duplicate') AS duplicates,
        count(*) FILTER (WHERE change = 'insert') AS inserted,
        count(*) FILTER (WHERE change = 'update') AS updated,
        count(*) FILTER (WHERE change = 'unchanged') AS unchanged
    FROM _promote
),
by_reason AS (
    SELECT coalesce(jsonb_object_agg(reason, n), '{}'::jsonb) AS j
    FROM (SELECT reason_codes[1] AS reason, count(*) AS n FROM _promote
          WHERE outcome = 'quarantined' GROUP BY 1) AS x
),
by_kind AS (
    SELECT coalesce(jsonb_object_agg(outcome, n), '{}'::jsonb) AS j
    FROM (SELECT outcome, count(*) AS n FROM _promote
          WHERE outcome LIKE '%%duplicate' GROUP BY 1) AS x
),
by_default AS (
    SELECT coalesce(jsonb_object_agg(rule, n), '{}'::jsonb) AS j
    FROM (SELECT rule, count(*) AS n FROM _promote CROSS JOIN LATERAL unnest(defaults) AS rule
          WHERE outcome = 'accepted' AND cardinality(defaults) > 0 GROUP BY 1) AS x
)
SELECT jsonb_build_object(
    'staged', c.staged, 'accepted', c.accepted, 'quarantined', c.quarantined,
    'duplicates', c.duplicates, 'inserted', c.inserted, 'updated', c.updated,
    'unchanged', c.unchanged,
    'quarantined_by_reason', r.j, 'duplicates_by_kind', k.j, 'defaults', d.j,
    'resolved', (SELECT coalesce(sum(n), 0) FROM bumped)
)
FROM counts AS c, by_reason AS r, by_kind AS k, by_default AS d;
