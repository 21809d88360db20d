"""Analytics stage: run every sql/queries/*.sql and write its result as a CSV file.

Each query is streamed by the server (COPY (query) TO STDOUT WITH CSV HEADER) into
<data-dir>/processed/analytics/<name>.csv, written to a temporary file and renamed, so a reader
never sees half a file. analytics_summary.json lists, per query, the rows and columns written
and the milliseconds it took. The queries read the agg_* tables where they can, so they stay
fast as fact_sales grows.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import psycopg2.extensions

from dwh.db import SQL_DIR
from dwh.settings import Settings
from dwh.stage import RunContext, StageResult

STAGE = "analytics"
QUERIES_DIR = SQL_DIR / "queries"
SUMMARY_NAME = "analytics_summary.json"


def query_files(directory: Path = QUERIES_DIR) -> list[Path]:
    """The analytics queries, in name order."""
    return sorted(directory.glob("*.sql"))


def query_text(path: Path) -> str:
    """The SELECT of a query file, without a trailing semicolon (it goes inside COPY (…))."""
    return path.read_text(encoding="utf-8").strip().rstrip(";").strip()


def export_query(cur: psycopg2.extensions.cursor, path: Path, target: Path) -> dict[str, Any]:
    """COPY one query's result into target (atomically); returns rows, columns, milliseconds."""
    tmp = target.with_name(f".{target.name}.tmp")
    started = time.perf_counter()
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        cur.copy_expert(f"COPY ({query_text(path)}) TO STDOUT WITH (FORMAT csv, HEADER)", handle)
    milliseconds = round((time.perf_counter() - started) * 1000, 1)
    rows = cur.rowcount
    with tmp.open(encoding="utf-8", newline="") as handle:
        columns = next(csv.reader(handle), [])
    tmp.replace(target)
    return {"rows": rows, "columns": columns, "milliseconds": milliseconds, "file": target.name}


def run(conn: psycopg2.extensions.connection, settings: Settings, ctx: RunContext) -> StageResult:
    out_dir = settings.processed_dir / "analytics"
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[str, Any]] = {}
    with conn.cursor() as cur:
        for path in query_files():
            summary[path.stem] = export_query(cur, path, out_dir / f"{path.stem}.csv")
            ctx.log.debug(
                "%s: %d rows in %.1f ms",
                path.stem,
                summary[path.stem]["rows"],
                summary[path.stem]["milliseconds"],
            )
    summary_path = out_dir / SUMMARY_NAME
    tmp = summary_path.with_name(f".{SUMMARY_NAME}.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(summary_path)
    total_rows = sum(item["rows"] for item in summary.values())
    ctx.log.info("%d queries, %d rows written to %s", len(summary), total_rows, out_dir)
    return StageResult(
        rows_out=total_rows,
        details={
            "queries": len(summary),
            "directory": str(out_dir),
            "milliseconds": {name: item["milliseconds"] for name, item in summary.items()},
        },
    )
