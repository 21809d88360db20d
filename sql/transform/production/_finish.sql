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
-- one pass over _promote: its rows grouped by outcome, change, primary reason and defaults
-- (a few dozen groups), from which every count below is summed
grouped AS (
    SELECT outcome, change,
           CASE WHEN outcome = 'quarantined' THEN reason_codes[1] END AS reason,
           CASE WHEN outcome = 'accepted' THEN defaults END AS defaults,
           count(*) AS n
    FROM _promote
    GROUP BY 1, 2, 3, 4
),
counts AS (
    SELECT
        coalesce(sum(n), 0)::bigint AS staged,
        coalesce(sum(n) FILTER (WHERE outcome = 'accepted'), 0)::bigint AS accepted,
        coalesce(sum(n) FILTER (WHERE outcome = 'quarantined'), 0)::bigint AS quarantined,
        coalesce(sum(n) FILTER (WHERE outcome LIKE '%%duplicate'), 0)::bigint AS duplicates,
        coalesce(sum(n) FILTER (WHERE change = 'insert'), 0)::bigint AS inserted,
        coalesce(sum(n) FILTER (WHERE change = 'update'), 0)::bigint AS updated,
        coalesce(sum(n) FILTER (WHERE change = 'unchanged'), 0)::bigint AS unchanged
    FROM grouped
),
by_reason AS (
    SELECT coalesce(jsonb_object_agg(reason, n), '{}'::jsonb) AS j
    FROM (SELECT reason, sum(n)::bigint AS n FROM grouped WHERE outcome = 'quarantined'
          GROUP BY 1) AS x
),
by_kind AS (
    SELECT coalesce(jsonb_object_agg(outcome, n), '{}'::jsonb) AS j
    FROM (SELECT outcome, sum(n)::bigint AS n FROM grouped WHERE outcome LIKE '%%duplicate'
          GROUP BY 1) AS x
),
by_default AS (
    SELECT coalesce(jsonb_object_agg(rule, n), '{}'::jsonb) AS j
    FROM (SELECT rule, sum(n)::bigint AS n FROM grouped CROSS JOIN LATERAL unnest(defaults) AS rule
          WHERE outcome = 'accepted' GROUP BY 1) AS x
)
SELECT jsonb_build_object(
    'staged', c.staged, 'accepted', c.accepted, 'quarantined', c.quarantined,
    'duplicates', c.duplicates, 'inserted', c.inserted, 'updated', c.updated,
    'unchanged', c.unchanged,
    'quarantined_by_reason', r.j, 'duplicates_by_kind', k.j, 'defaults', d.j,
    'resolved', (SELECT coalesce(sum(n), 0)::bigint FROM bumped)
)
FROM counts AS c, by_reason AS r, by_kind AS k, by_default AS d;
