"""Retention: remove old raw batch folders, staging rows, resolved quarantine rows, health
history, reports and logs (ages in the `retention` settings; 0 keeps forever).

Nothing of a batch goes before the batch is promoted: every staged row of it is in production
(its natural key is there: accepted, a duplicate, or superseded by a later version) or in
ops.quarantine, and every accepted order line of it is in warehouse.fact_sales. Until the
production tables, ops.quarantine and warehouse.fact_sales all exist, no batch is promoted and
nothing of any batch is removed. A raw folder also goes only when every CSV file in it is
recorded in ops.ingested_files, and the newest batch folder is always kept (the generator
continues from it). A batch's age is the time since its last file was loaded.

Database deletes are set-based (DELETE … WHERE _batch_id = ANY(…)) and commit in one
transaction before any file is removed. `dry_run` lists what would go and changes nothing.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from dwh import db
from dwh.contract import SOURCE_FILES
from dwh.settings import Settings

log = logging.getLogger("dwh.cleanup")


@dataclass
class Removal:
    kind: str  # raw_batch | staging_rows | quarantine_rows | health_reports | alerts | report | log
    target: str
    files: int = 0
    bytes: int = 0
    rows: int = 0


@dataclass
class CleanupReport:
    dry_run: bool
    removed: list[Removal] = field(default_factory=list)
    kept_unpromoted: list[str] = field(default_factory=list)
    """Batches old enough to go but kept because they are not promoted yet."""

    @property
    def files(self) -> int:
        return sum(r.files for r in self.removed)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removed)

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "totals": {"files": self.files, "bytes": self.bytes, "rows": self.rows},
        }

    def describe(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [
            f"{r.kind:<16} {r.target}: {verb} "
            + ", ".join(
                part
                for part in (
                    f"{r.files} files" if r.files else "",
                    f"{r.bytes:,} bytes" if r.bytes else "",
                    f"{r.rows:,} rows" if r.rows or not (r.files or r.bytes) else "",
                )
                if part
            )
            for r in self.removed
        ]
        for batch in self.kept_unpromoted:
            lines.append(f"kept             batch {batch}: expired but not promoted yet")
        lines.append(
            f"total: {verb} {self.files} files ({self.bytes:,} bytes) and {self.rows:,} rows"
        )
        return "\n".join(lines)


# -- promotion -------------------------------------------------------------------------------


def _exists(cur: psycopg2.extensions.cursor, table: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    return bool(cur.fetchone()[0])


def promoted_batches(cur: psycopg2.extensions.cursor, batches: list[str]) -> set[str]:
    """The subset of `batches` that is fully promoted (see the module docstring)."""
    if not batches:
        return set()
    needed = [f"production.{s.table}" for s in SOURCE_FILES] + [
        "ops.quarantine",
        "warehouse.fact_sales",
    ]
    if not all(_exists(cur, t) for t in needed):
        return set()
    cur.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'warehouse'"
        " AND table_name = 'fact_sales' AND column_name = 'item_id'"
    )
    if not cur.fetchone()[0]:
        return set()
    pending: set[str] = set()
    for source in SOURCE_FILES:
        if not _exists(cur, f"staging.{source.table}"):
            continue
        # Staged rows that are neither in production (by natural key) nor in quarantine.
        cur.execute(
            sql.SQL(
                "SELECT DISTINCT s._batch_id FROM {staging} AS s"
                " WHERE s._batch_id = ANY(%(batches)s)"
                " AND NOT EXISTS (SELECT 1 FROM {production} AS p"
                "                 WHERE p.{key} = nullif(btrim(s.{key}), ''))"
                " AND NOT EXISTS (SELECT 1 FROM ops.quarantine AS q"
                "                 WHERE q.batch_id = s._batch_id"
                "                   AND q.source_line = s._source_line"
                "                   AND q.table_name IN (%(table)s, %(qualified)s))"
            ).format(
                staging=sql.Identifier("staging", source.table),
                production=sql.Identifier("production", source.table),
                key=sql.Identifier(source.key),
            ),
            {
                "batches": batches,
                "table": source.table,
                "qualified": f"production.{source.table}",
            },
        )
        pending.update(r[0] for r in cur.fetchall())
    # Accepted order lines of the batch that are not in the fact table yet.
    if not _exists(cur, "staging.transaction_items"):
        return set(batches) - pending
    cur.execute(
        "SELECT DISTINCT s._batch_id FROM staging.transaction_items AS s"
        " JOIN production.transaction_items AS p ON p.item_id = nullif(btrim(s.item_id), '')"
        " WHERE s._batch_id = ANY(%(batches)s)"
        " AND NOT EXISTS (SELECT 1 FROM warehouse.fact_sales AS f WHERE f.item_id = p.item_id)",
        {"batches": batches},
    )
    pending.update(r[0] for r in cur.fetchall())
    return set(batches) - pending


# -- the clean-up ----------------------------------------------------------------------------


def _tree_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _old_files(folder: Path, cutoff: datetime) -> list[Path]:
    if not folder.is_dir():
        return []
    limit = cutoff.timestamp()
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_mtime < limit)


def run_cleanup(
    settings: Settings,
    *,
    dry_run: bool = False,
    url: str | None = None,
    now: datetime | None = None,
) -> CleanupReport:
    """Remove (or, with dry_run, list) everything past its retention age."""
    from dwh.monitoring import ensure_ddl

    now = now or datetime.now(timezone.utc)
    cfg = settings.retention
    report = CleanupReport(dry_run=dry_run)
    raw_to_remove: list[Path] = []

    conn = db.connect(url or db.resolve_url(settings))
    try:
        ensure_ddl(conn)
        with conn.cursor() as cur:
            # Batches by the time their last file was loaded.
            cur.execute(
                "SELECT batch_id, max(loaded_at), array_agg(file_name)"
                " FROM ops.ingested_files GROUP BY batch_id ORDER BY batch_id"
            )
            batches = {b: (loaded, set(files)) for b, loaded, files in cur.fetchall()}
            horizon = [d for d in (cfg.raw_batch_days, cfg.staging_days) if d > 0]
            expired_any = (
                [b for b, (t, _) in batches.items() if t < now - timedelta(days=min(horizon))]
                if horizon
                else []
            )
            promoted = promoted_batches(cur, expired_any)
            report.kept_unpromoted = sorted(set(expired_any) - promoted)

            if cfg.raw_batch_days > 0:
                cutoff = now - timedelta(days=cfg.raw_batch_days)
                folders = (
                    sorted(
                        p
                        for p in settings.raw_dir.iterdir()
                        if p.is_dir() and not p.name.startswith((".", "_", "tmp"))
                    )
                    if settings.raw_dir.is_dir()
                    else []
                )
                newest = folders[-1].name if folders else None
                for folder in folders:
                    name = folder.name
                    if name == newest or name not in promoted or batches[name][0] >= cutoff:
                        continue
                    csvs = {p.name for p in folder.iterdir() if p.suffix.lower() == ".csv"}
                    if not csvs <= batches[name][1]:
                        log.warning(
                            "raw batch %s kept: %s not loaded",
                            name,
                            ", ".join(sorted(csvs - batches[name][1])),
                        )
                        continue
                    files, size = _tree_size(folder)
                    report.removed.append(Removal("raw_batch", str(folder), files, size))
                    raw_to_remove.append(folder)

            if cfg.staging_days > 0:
                cutoff = now - timedelta(days=cfg.staging_days)
                gone = sorted(b for b in promoted if batches[b][0] < cutoff)
                for source in SOURCE_FILES if gone else ():
                    table = sql.Identifier("staging", source.table)
                    if not _exists(cur, f"staging.{source.table}"):
                        continue
                    verb = "SELECT count(*) FROM" if dry_run else "DELETE FROM"
                    cur.execute(
                        sql.SQL(verb + " {} WHERE _batch_id = ANY(%s)").format(table), (gone,)
                    )
                    rows = cur.fetchone()[0] if dry_run else cur.rowcount
                    if rows:
                        report.removed.append(
                            Removal("staging_rows", f"staging.{source.table}", rows=rows)
                        )

            deletes = [
                (
                    cfg.quarantine_resolved_days,
                    "quarantine_rows",
                    "ops.quarantine",
                    "resolved_at",
                ),
                (cfg.health_reports_days, "health_reports", "ops.health_reports", "checked_at"),
                (cfg.health_reports_days, "alerts", "ops.alerts", "resolved_at"),
            ]
            for days, kind, table, column in deletes:
                if days <= 0 or not _exists(cur, table):
                    continue
                verb = "SELECT count(*) FROM" if dry_run else "DELETE FROM"
                schema, name = table.split(".")
                cur.execute(
                    sql.SQL(verb + " {} WHERE {} < %s").format(
                        sql.Identifier(schema, name), sql.Identifier(column)
                    ),
                    (now - timedelta(days=days),),
                )
                rows = cur.fetchone()[0] if dry_run else cur.rowcount
                if rows:
                    report.removed.append(Removal(kind, table, rows=rows))
        if dry_run:
            conn.rollback()
        else:
            conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()

    old_files: list[Path] = []
    for days, kind, folder in (
        (cfg.reports_days, "report", settings.processed_dir),
        (cfg.logs_days, "log", settings.log_dir),
    ):
        if days <= 0:
            continue
        for path in _old_files(folder, now - timedelta(days=days)):
            report.removed.append(Removal(kind, str(path), 1, path.stat().st_size))
            old_files.append(path)

    if not dry_run:
        for folder in raw_to_remove:
            shutil.rmtree(folder)
        for path in old_files:
            path.unlink(missing_ok=True)
    log.info(
        "retention%s: %s %d files (%d bytes) and %d rows; %d expired batches kept (not promoted)",
        " (dry run)" if dry_run else "",
        "would remove" if dry_run else "removed",
        report.files,
        report.bytes,
        report.rows,
        len(report.kept_unpromoted),
    )
    return report


# -- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from dwh.cli import EPILOG, run_guarded
    from dwh.exceptions import ExitCode
    from dwh.logs import setup_logging
    from dwh.settings import load_settings

    parser = argparse.ArgumentParser(
        prog="cleanup_old_data.py",
        description="Remove raw batch folders, staging rows, resolved quarantine rows, health "
        "history, reports and logs older than the ages in config (section retention). Data of "
        "a batch that is not yet promoted to the warehouse is never removed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="PATH", help="YAML settings file")
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL URL")
    parser.add_argument("--data-dir", metavar="DIR", help="data folder (default ./data)")
    parser.add_argument("--dry-run", action="store_true", help="list what would go; change nothing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else 0)

    def command() -> int:
        settings = load_settings(
            args.config, database_url=args.database_url, data_dir=args.data_dir
        )
        setup_logging(-1 if args.quiet else 0, settings.log_dir)
        report = run_cleanup(settings, dry_run=args.dry_run)
        print(json.dumps(report.to_json(), indent=2) if args.json else report.describe())
        return ExitCode.OK

    return run_guarded(command)
