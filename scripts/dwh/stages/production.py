"""Production stage: clean, validate, deduplicate and promote staged batches into `production`.

For every table batch in ops.ingested_files not yet promoted (no row in ops.reconciliation), in
batch order and parents before children, ONE transaction runs
sql/transform/production/<table>.sql (build `_promote`, upsert the accepted rows) and
sql/transform/production/_finish.sql (quarantine the rejected rows, count), checks the identity
staged = accepted + quarantined + duplicates, and writes the ops.reconciliation row that marks
the batch promoted. A kill at any point leaves each table batch either fully promoted or not at
all; the next run finishes the rest. The promotion of a table holds its advisory lock
(dwh.promote.<table>), so `change` in _promote says exactly which rows are new and which
changed: new rows take a plain INSERT (one WAL record fewer per row than the speculative insert
of ON CONFLICT) and changed rows an UPDATE.

Then rows quarantined for a missing parent (retryable) are tried again, every reconciliation row
is re-verified, <data_dir>/processed/transformation_summary.json is written, and the production
checks run through dwh.quality with the quality gate (exit code 5) before the warehouse.
Rules, reason codes and defaults: docs/data_quality.md.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg2
import yaml

from dwh import db, quality
from dwh.contract import SOURCE_FILES
from dwh.exceptions import ConfigError, QualityGateFailed
from dwh.settings import PROJECT_ROOT, Settings
from dwh.stage import RunContext, StageResult
from dwh.stages.ingest import restore_lost_staging

STAGE = "production"
TABLES: tuple[str, ...] = tuple(f.table for f in SOURCE_FILES)  # parents before children
RETRYABLE_TABLES: tuple[str, ...] = ("transactions", "transaction_items")
LOOKUPS: tuple[str, ...] = ("categories", "payment_methods")
# Tables whose versions are logged for the warehouse's SCD2 dimensions (docs/warehouse.md).
VERSIONED_TABLES: dict[str, str] = {
    "customers": "customer_versions",
    "products": "product_versions",
}

# Rules that have a default and may be switched to critical in production.rules.
CONFIGURABLE_RULES: dict[str, str] = {
    "invalid_email": "email NULL, is_email_valid false",
    "unknown_category": "category 'unknown'",
    "unknown_payment_method": "payment_method 'unknown'",
    "unparseable_time": "transaction_time NULL, transaction_at at midnight",
    "future_date": "kept as sent",
    "line_total_mismatch": "the source line_total kept",
}
# Always critical: no sensible default exists.
CRITICAL_RULES: tuple[str, ...] = (
    "missing_id",
    "missing_value",
    "unparseable_number",
    "unparseable_date",
    "invalid_quantity",
    "invalid_amount",
    "invalid_discount",
    "missing_parent",
)
RETRYABLE_REASONS: tuple[str, ...] = ("missing_parent",)
# Cleaning applied to every accepted row (also listed in docs/data_quality.md).
CLEANING_RULES: tuple[str, ...] = (
    "trim every text field; empty text is NULL",
    "names in title case when sent all lower or all upper case",
    "emails trimmed, lowercased and validated against production.email_pattern",
    "phones reduced to digits with an optional leading + (extension dropped)",
    "categories and payment methods mapped to canonical values (config/lookups)",
    "transaction date + time in production.source_timezone stored as UTC timestamptz",
    "money rounded to 2 decimals; quantities integer",
    "deduplicated by natural key: latest batch, then latest line, wins",
)


def critical_rules(settings: Settings) -> list[str]:
    """Every rule that quarantines a row under the current settings."""
    rules = dict(settings.production.rules or {})
    unknown = sorted(set(rules) - set(CONFIGURABLE_RULES))
    if unknown:
        raise ConfigError(
            f"setting production.rules.{unknown[0]}: not a configurable rule; configurable: "
            f"{', '.join(CONFIGURABLE_RULES)}"
        )
    bad = {k: v for k, v in rules.items() if v not in ("critical", "default")}
    if bad:
        name, value = next(iter(bad.items()))
        raise ConfigError(
            f"setting production.rules.{name}: {value!r} must be 'critical' or 'default'"
        )
    defaults = {"future_date": "critical", "line_total_mismatch": "critical"}
    chosen = {rule: rules.get(rule, defaults.get(rule, "default")) for rule in CONFIGURABLE_RULES}
    return [*CRITICAL_RULES, *(r for r, v in chosen.items() if v == "critical")]


def _lookup_key(value: str) -> str:
    """Python twin of production.lookup_key (used only to validate the YAML)."""
    return re.sub(r"\s+", " ", value.strip()).lower()


def read_lookup(path: Path) -> dict[str, str]:
    """variant key → canonical from a lookup YAML (canonical: [variants]); canonicals map to
    themselves. A variant claimed by two canonical values is a ConfigError."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read lookup {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"lookup {path} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"lookup {path}: expected 'canonical: [variant, ...]' entries")
    mapping: dict[str, str] = {}
    for canonical, variants in document.items():
        if variants is None:
            variants = []
        if not isinstance(variants, list):
            raise ConfigError(f"lookup {path}: the variants of {canonical!r} must be a list")
        for variant in [canonical, *variants]:
            key = _lookup_key(str(variant))
            if not key:
                continue
            if mapping.get(key, canonical) != canonical:
                raise ConfigError(
                    f"lookup {path}: {variant!r} maps to both {mapping[key]!r} and {canonical!r}"
                )
            mapping[key] = str(canonical)
    return mapping


def load_lookups(conn: psycopg2.extensions.connection, settings: Settings) -> dict[str, int]:
    """Replace production.lookup_values with config/lookups/*.yaml (small config, one statement
    per lookup)."""
    folder = Path(settings.production.lookups_dir)
    folder = folder if folder.is_absolute() else PROJECT_ROOT / folder
    sizes = {}
    with conn.cursor() as cur:
        cur.execute("DELETE FROM production.lookup_values")
        for name in LOOKUPS:
            mapping = read_lookup(folder / f"{name}.yaml")
            cur.execute(
                "INSERT INTO production.lookup_values (lookup, variant_key, canonical)"
                " SELECT %s, production.lookup_key(v), c FROM unnest(%s::text[], %s::text[]) AS x(v, c)",
                (name, list(mapping), list(mapping.values())),
            )
            sizes[name] = len(mapping)
        # statistics of what was just written: planned on stale ones (a few rows per lookup), a
        # batch's promotion joins it in a nested loop that runs lookup_key once per pair of rows
        cur.execute("ANALYZE production.lookup_values")
    return sizes


def pending_batches(conn: psycopg2.extensions.connection) -> list[tuple[str, str]]:
    """(batch_id, table) of every ingested file not yet promoted, in promotion order."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT f.batch_id, f.table_name FROM ops.ingested_files AS f"
            " LEFT JOIN ops.reconciliation AS r"
            "   ON r.table_name = f.table_name AND r.batch_id = f.batch_id"
            " WHERE r.batch_id IS NULL AND f.table_name = ANY(%s)"
            " ORDER BY f.batch_id, array_position(%s::text[], f.table_name)",
            (list(TABLES), list(TABLES)),
        )
        return [(b, t) for b, t in cur.fetchall()]


def _params(settings: Settings, table: str, batch_id: str | None, run_id: int | None,
            critical: list[str], retry: bool) -> dict[str, Any]:  # fmt: skip
    p = settings.production
    return {
        "table_name": table,
        "batch_id": batch_id,
        "run_id": run_id,
        "retry": retry,
        "critical_rules": critical,
        "email_pattern": p.email_pattern,
        "source_timezone": p.source_timezone,
        "budget_below": p.price_category.budget_below,
        "premium_from": p.price_category.premium_from,
        "line_total_tolerance": p.line_total_tolerance,
    }


# The rows a promotion file inserted or updated (sql/transform/production/<table>.sql: _promote).
PROMOTED_ROWS = "SELECT * FROM _promote WHERE change IN ('insert', 'update')"


def _run_promotion(conn: psycopg2.extensions.connection, params: dict[str, Any]) -> dict:
    table = params["table_name"]
    # the file writes the table from _promote; its foreign keys are checked for the rows it wrote
    with db.foreign_keys_checked_as_a_set(conn, f"production.{table}", PROMOTED_ROWS):
        db.run_sql_file(conn, f"transform/production/{table}.sql", params)
    if table in VERSIONED_TABLES:  # the SCD2 version log, in the same transaction
        db.run_sql_file(conn, f"transform/production/{VERSIONED_TABLES[table]}.sql", params)
    text = db.sql_path("transform/production/_finish.sql").read_text(encoding="utf-8")
    with conn.cursor() as cur:
        cur.execute(text, params)
        return dict(cur.fetchone()[0])


def promote_batch(
    conn: psycopg2.extensions.connection,
    settings: Settings,
    table: str,
    batch_id: str,
    run_id: int | None,
    critical: list[str],
) -> dict:
    """Promote one table batch in one transaction (committed); returns its counts."""
    params = _params(settings, table, batch_id, run_id, critical, retry=False)
    try:
        with conn.cursor() as cur:
            # Two promoters of the same table batch wait for each other; the second finds the
            # reconciliation row and does nothing.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"dwh.promote.{table}",))
            db.use_bulk_work_mem(conn)
            cur.execute(
                "SELECT 1 FROM ops.reconciliation WHERE table_name = %s AND batch_id = %s",
                (table, batch_id),
            )
            if cur.fetchone():
                conn.rollback()
                return {}
            cur.execute(
                "SELECT row_count FROM ops.ingested_files WHERE table_name = %s AND batch_id = %s",
                (table, batch_id),
            )
            row = cur.fetchone()
            ingested = int(row[0]) if row else None
        # A first load into an empty table defers its foreign keys and secondary indexes to
        # one set-based pass each (db.bulk_load); later batches use the indexes as they are.
        first_load = db.table_is_empty(conn, f"production.{table}")
        with db.bulk_load(conn, f"production.{table}", first_load):
            counts = _run_promotion(conn, params)
        identity = counts["accepted"] + counts["quarantined"] + counts["duplicates"]
        if counts["staged"] != identity or (ingested is not None and ingested != counts["staged"]):
            raise QualityGateFailed(
                f"reconciliation of {table} batch {batch_id} does not add up: staged "
                f"{counts['staged']} (ingested {ingested}) != accepted {counts['accepted']} + "
                f"quarantined {counts['quarantined']} + duplicates {counts['duplicates']}. "
                "Nothing of this batch was promoted; this is a pipeline bug, please report it.",
                stage=STAGE,
                table=table,
            )
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO ops.reconciliation (table_name, batch_id, run_id, staged, accepted,"
                " quarantined, duplicates, quarantined_by_reason, duplicates_by_kind, defaults,"
                " inserted, updated, unchanged) VALUES (%(table)s, %(batch)s, %(run)s,"
                " %(staged)s, %(accepted)s, %(quarantined)s, %(duplicates)s, %(by_reason)s,"
                " %(by_kind)s, %(defaults)s, %(inserted)s, %(updated)s, %(unchanged)s)",
                {
                    "table": table,
                    "batch": batch_id,
                    "run": run_id,
                    **counts,
                    "by_reason": json.dumps(counts["quarantined_by_reason"]),
                    "by_kind": json.dumps(counts["duplicates_by_kind"]),
                    "defaults": json.dumps(counts["defaults"]),
                },
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return counts


def retry_quarantine(
    conn: psycopg2.extensions.connection,
    settings: Settings,
    table: str,
    run_id: int | None,
    critical: list[str],
) -> int:
    """Try the open retryable quarantine rows of a table again (one transaction); returns how
    many were promoted (and marked resolved)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM ops.quarantine"
            " WHERE table_name = %s AND is_retryable AND resolved_at IS NULL",
            (table,),
        )
        if cur.fetchone()[0] == 0:
            conn.rollback()
            return 0
    try:
        counts = _run_promotion(conn, _params(settings, table, None, run_id, critical, retry=True))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return int(counts["resolved"])


def verify_reconciliation(conn: psycopg2.extensions.connection) -> list[tuple]:
    """Every promoted table batch whose counts no longer add up (see assert_reconciliation_identity)."""
    text = db.sql_path("checks/assert_reconciliation_identity.sql").read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    with conn.cursor() as cur:
        cur.execute(body)
        rows = cur.fetchall()
    conn.rollback()
    return rows


def _totals(conn: psycopg2.extensions.connection) -> dict[str, dict]:
    """Per table, the sums over every promoted batch (the summary's cumulative part)."""
    with conn.cursor() as cur:
        cur.execute(
            """
            WITH r AS (SELECT * FROM ops.reconciliation),
            reasons AS (
                SELECT table_name, jsonb_object_agg(k, n) AS j FROM (
                    SELECT table_name, k, sum(v::bigint) AS n
                    FROM r, jsonb_each_text(quarantined_by_reason) AS e(k, v) GROUP BY 1, 2
                ) x GROUP BY 1),
            kinds AS (
                SELECT table_name, jsonb_object_agg(k, n) AS j FROM (
                    SELECT table_name, k, sum(v::bigint) AS n
                    FROM r, jsonb_each_text(duplicates_by_kind) AS e(k, v) GROUP BY 1, 2
                ) x GROUP BY 1),
            defaults AS (
                SELECT table_name, jsonb_object_agg(k, n) AS j FROM (
                    SELECT table_name, k, sum(v::bigint) AS n
                    FROM r, jsonb_each_text(defaults) AS e(k, v) GROUP BY 1, 2
                ) x GROUP BY 1)
            SELECT r.table_name, count(*), sum(staged), sum(accepted), sum(quarantined),
                   sum(duplicates), sum(resolved_later),
                   coalesce(max(reasons.j::text), '{}'), coalesce(max(kinds.j::text), '{}'),
                   coalesce(max(defaults.j::text), '{}')
            FROM r
            LEFT JOIN reasons USING (table_name)
            LEFT JOIN kinds USING (table_name)
            LEFT JOIN defaults USING (table_name)
            GROUP BY r.table_name
            """
        )
        rows = cur.fetchall()
    conn.rollback()
    out = {}
    for table, batches, staged, accepted, quarantined, dups, resolved, reasons, kinds, defs in rows:
        out[table] = {
            "batches": int(batches),
            "input": int(staged),
            "output": int(accepted),
            "rejected": int(quarantined),
            "rejected_by_reason": json.loads(reasons),
            "resolved_later": int(resolved),
            "duplicates": int(dups),
            "duplicates_by_kind": json.loads(kinds),
            "defaults": json.loads(defs),
        }
    return {t: out[t] for t in TABLES if t in out}


def write_summary(settings: Settings, summary: dict) -> Path:
    settings.processed_dir.mkdir(parents=True, exist_ok=True)
    path = settings.processed_dir / "transformation_summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def run(conn: psycopg2.extensions.connection, settings: Settings, ctx: RunContext) -> StageResult:
    restored = restore_lost_staging(conn, settings, ctx.log)
    critical = critical_rules(settings)
    lookups = load_lookups(conn, settings)
    conn.commit()

    promoted: list[dict] = []
    for batch_id, table in pending_batches(conn):
        counts = promote_batch(conn, settings, table, batch_id, ctx.run_id, critical)
        if not counts:
            continue
        ctx.log.info(
            "promoted %s batch %s: staged %d, accepted %d (new %d, changed %d), quarantined %d, "
            "duplicates %d",
            table,
            batch_id,
            counts["staged"],
            counts["accepted"],
            counts["inserted"],
            counts["updated"],
            counts["quarantined"],
            counts["duplicates"],
        )
        promoted.append({"table": table, "batch_id": batch_id, **counts})

    resolved = {}
    for table in RETRYABLE_TABLES:
        n = retry_quarantine(conn, settings, table, ctx.run_id, critical)
        if n:
            ctx.log.info("promoted %d late-arriving %s rows from quarantine", n, table)
        resolved[table] = n

    broken = verify_reconciliation(conn)
    if broken:
        first = broken[0]
        raise QualityGateFailed(
            f"reconciliation identity broken for {len(broken)} table batch(es), e.g. {first[0]} "
            f"batch {first[1]}: staged {first[2]} vs accepted {first[3]} + quarantined "
            f"{first[4]} + duplicates {first[5]} (ingested {first[6]}, in quarantine {first[7]})",
            stage=STAGE,
            table=first[0],
        )

    summary = {
        "run_id": ctx.run_id,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "identity": "staged = accepted + quarantined + duplicates",
        "reconciliation_ok": True,
        "this_run": {"promoted": promoted, "resolved_from_quarantine": resolved},
        "tables": _totals(conn),
        "rules_applied": {
            "cleaning": list(CLEANING_RULES),
            "critical": critical,
            "retryable": list(RETRYABLE_REASONS),
            "defaults": {
                rule: value for rule, value in CONFIGURABLE_RULES.items() if rule not in critical
            },
            "lookups": lookups,
        },
    }
    write_summary(settings, summary)

    rows_in = sum(p["staged"] for p in promoted)
    rows_out = sum(p["accepted"] for p in promoted) + sum(resolved.values())
    report = quality.check_layer(
        conn,
        settings,
        ctx.run_id,
        "production",
        stage=STAGE,
        full_refresh=ctx.options.full_refresh,
        logger=ctx.log,
    )
    return StageResult(
        rows_in=rows_in,
        rows_out=rows_out,
        details={
            "batches_promoted": len(promoted),
            "quarantined": sum(p["quarantined"] for p in promoted),
            "duplicates": sum(p["duplicates"] for p in promoted),
            "resolved_from_quarantine": resolved,
            "quality_score": report["overall_score"],
            "quality_grade": report["grade"],
            **({"staging_restored": restored} if restored else {}),
        },
    )
