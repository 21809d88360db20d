#!/usr/bin/env python
"""Benchmark the pipeline against the physical floor of loading the same files.

For each size (order lines), in one process and one database, on the same files:

1. generate   the dataset with the built-in generator (timed: the pipeline's generate stage);
2. floor      a bare COPY of every raw file into UNLOGGED tables of text columns, nothing else;
3. pipeline   ingest, quality, production, warehouse, aggregates, analytics (run_pipeline), with
              the seconds and rows per second of each stage and the peak RSS of this process;
4. increment  a batch of about 1 % new order lines (--next-batch) after a VACUUM and a
              CHECKPOINT (untimed: the state a day's batch finds), then a rerun with nothing new;
5. queries    p50 / p95 latency of every analytics query (sql/queries/*.sql) and every dashboard
              query (dashboards/queries.py, when present) over repeated runs; then the other
              batches (3 in all, --batches), settled the same way: the median is reported;
6. naive      a sample of the same files loaded with pandas DataFrame.to_sql (SQLAlchemy, from
              requirements-bench.txt), or row-by-row INSERTs when SQLAlchemy is not installed.

Writes bench/results/<timestamp>.json, <timestamp>.md and latest.md; with --update-docs also the
table between the markers of docs/performance.md. Ratios are reported beside absolute times.

    .venv/bin/python bench/run_benchmark.py                  # 100k and 1M order lines
    .venv/bin/python bench/run_benchmark.py --large          # and 10M
    .venv/bin/python bench/run_benchmark.py --sizes 20000 --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import importlib
import json
import logging
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

import psycopg2  # noqa: E402
from psycopg2 import sql  # noqa: E402

from dwh.contract import SOURCE_FILES  # noqa: E402
from dwh.exceptions import AlreadyRunning  # noqa: E402
from dwh.orchestrator import STAGES, run_pipeline  # noqa: E402
from dwh.settings import Settings, load_settings, mask_url  # noqa: E402
from dwh.stage import RunOptions  # noqa: E402
from dwh.stages.ingest import sha256_of  # noqa: E402

log = logging.getLogger("bench")

DEFAULT_SIZES = (100_000, 1_000_000)
LARGE_SIZE = 10_000_000
# Order lines per unit of --scale with the default generator settings (10,000 transactions of
# 1..5 lines): measured, so a size is approximate; the results report the lines generated.
LINES_PER_SCALE = 23_240
FLOOR_SCHEMA = "bench_floor"
NAIVE_SCHEMA = "bench_naive"
LOAD_STAGES = ("ingest", "quality", "production", "warehouse", "aggregates")
PG_SETTINGS = (
    "server_version",
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "max_wal_size",
    "checkpoint_timeout",
    "synchronous_commit",
    "fsync",
    "wal_level",
    "jit",
    "max_parallel_workers_per_gather",
    "effective_cache_size",
    "bgwriter_delay",
    "bgwriter_lru_maxpages",
)
TARGETS = {
    "end_to_end_x_floor": 8.0,
    "generate_lines_per_s": 500_000,
    "incremental_share": 0.05,
    "rerun_seconds": 2.0,
    "query_p95_ms": 200.0,
    "peak_rss_mb_10m": 200.0,
}
DOCS_BEGIN = "<!-- bench:begin -->"
DOCS_END = "<!-- bench:end -->"


# ─── memory ──────────────────────────────────────────────────────────────────────────────────
def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak RSS since the last reset (VmHWM), else since the process started (ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ─── the server and its databases ────────────────────────────────────────────────────────────
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@contextlib.contextmanager
def server(database_url: str | None, work_dir: Path, port: int | None) -> Iterator[str]:
    """A maintenance URL: the given server, or an embedded one with its own data dir and port."""
    if database_url:
        yield database_url
        return
    from dwh.embedded import EmbeddedServer

    settings = load_settings(
        data_dir=work_dir / "server",
        environ={},
        overrides={"embedded": {"port": port or _free_port(), "database": "postgres"}},
    )
    embedded = EmbeddedServer(settings)
    embedded.start()
    try:
        yield embedded.url("postgres")
    finally:
        embedded.stop()


@contextlib.contextmanager
def fresh_database(admin_url: str, name: str, keep: bool) -> Iterator[str]:
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield _with_database(admin_url, name)
        if not keep:
            with admin.cursor() as cur:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    finally:
        admin.close()


def _rows(url: str, query: str, params: Any = None) -> list[tuple]:
    """The rows of one query on a short-lived connection."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        conn.close()


def database_identity(url: str) -> dict[str, Any]:
    """Which server and database a URL reaches (what the floor and the pipeline must share)."""
    ((name, system_id, port),) = _rows(
        url,
        "SELECT current_database(), (SELECT system_identifier FROM pg_control_system()),"
        " inet_server_port()",
    )
    return {"database": name, "system_identifier": str(system_id), "port": port}


def _autovacuum_during_batch(result: dict[str, Any]) -> list[str]:
    return [
        work
        for batch in result["incremental"]["batches"]
        for work in batch["autovacuum_at_start"] + batch["autovacuum_at_end"]
    ]


def _batch_range(result: dict[str, Any], key: str, form: str) -> str:
    """The smallest and largest `key` of the 1 % batches ("2.10–2.64 s"), or "" for one batch."""
    values = sorted(b[key] for b in result["incremental"]["batches"])
    return f"{values[0]:{form}}–{values[-1]:{form}}" if len(values) > 1 else ""


def autovacuum_work(url: str) -> list[str]:
    """What autovacuum workers are doing now ("VACUUM ANALYZE warehouse.fact_sales" …): after a
    full load they may still be working on its tables while the next batch is timed."""
    return [
        row[0]
        for row in _rows(
            url,
            "SELECT regexp_replace(query, '^autovacuum: ', '') FROM pg_stat_activity"
            " WHERE backend_type = 'autovacuum worker' AND query <> '' ORDER BY 1",
        )
    ]


def settle(url: str) -> dict[str, Any]:
    """Bring the database to where a day's batch finds it: the full load's tables vacuumed and
    analyzed (what autovacuum does in the hours between two batches, done here at once instead of
    racing the timed batch) and a checkpoint written (so the batch pays, as every batch after a
    checkpoint does, a full-page image for the first change of each page). Timed apart from the
    batch. The ANALYZE is needed although the load analyzed its tables: it did so inside its
    transactions, whose rows the statistics count as changed at commit, after that ANALYZE, so
    autovacuum analyzes every loaded table again about a minute after the load (at 1M lines
    about 3 s of work, which a batch started then would share the two cores with)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            started = time.perf_counter()
            cur.execute("VACUUM (ANALYZE)")
            vacuumed = time.perf_counter()
            cur.execute("CHECKPOINT")
            return {
                "vacuum_seconds": round(vacuumed - started, 3),
                "checkpoint_seconds": round(time.perf_counter() - vacuumed, 3),
            }
    finally:
        conn.close()


def server_settings(url: str) -> dict[str, str]:
    values = _rows(
        url,
        "SELECT s.name, current_setting(s.name, true)"
        " FROM unnest(%s::text[]) WITH ORDINALITY AS s (name, n) ORDER BY s.n",
        (list(PG_SETTINGS),),
    )
    return dict(values)


# ─── the files ───────────────────────────────────────────────────────────────────────────────
def dataset_files(batch_dir: Path) -> list[dict[str, Any]]:
    """The source files of a batch, in contract order, with rows, bytes and sha256."""
    files = []
    for source in SOURCE_FILES:
        path = batch_dir / source.name
        if not path.exists():
            continue
        with open(path, "rb") as handle:
            rows = sum(1 for _ in handle) - 1
        files.append(
            {
                "file": source.name,
                "path": str(path),
                "table": source.table,
                "rows": rows,
                "bytes": path.stat().st_size,
                "sha256": sha256_of(path),
            }
        )
    return files


# ─── 2. the floor ────────────────────────────────────────────────────────────────────────────
def measure_floor(url: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    """COPY every file into an UNLOGGED table of text columns; nothing else is done."""
    conn = psycopg2.connect(url)
    per_file = {}
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(FLOOR_SCHEMA))
            )
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(FLOOR_SCHEMA)))
            for f in files:
                with open(f["path"], encoding="utf-8-sig") as handle:
                    columns = next(csv.reader([handle.readline()]))
                table = sql.Identifier(FLOOR_SCHEMA, f["table"])
                cur.execute(
                    sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
                        table,
                        sql.SQL(", ").join(
                            sql.SQL("{} text").format(sql.Identifier(c)) for c in columns
                        ),
                    )
                )
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            for f in files:
                t0 = time.perf_counter()
                with open(f["path"], "rb") as handle:
                    cur.copy_expert(
                        sql.SQL("COPY {} FROM STDIN WITH (FORMAT csv, HEADER)")
                        .format(sql.Identifier(FLOOR_SCHEMA, f["table"]))
                        .as_string(conn),
                        handle,
                        size=1 << 20,
                    )
                    per_file[f["file"]] = {"rows": cur.rowcount}
                conn.commit()
                per_file[f["file"]]["seconds"] = round(time.perf_counter() - t0, 3)
        seconds = time.perf_counter() - started
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(FLOOR_SCHEMA)))
        conn.commit()
    finally:
        conn.close()
    rows = sum(v["rows"] for v in per_file.values())
    return {
        "what": "COPY of every raw file into UNLOGGED text tables (client-side COPY FROM STDIN)",
        "seconds": round(seconds, 3),
        "rows": rows,
        "rows_per_s": round(rows / seconds) if seconds else None,
        "files": per_file,
        "sha256": {f["file"]: f["sha256"] for f in files},
        "database": database_identity(url),
    }


# ─── 6. the naive baseline ───────────────────────────────────────────────────────────────────
def measure_naive(url: str, files: list[dict[str, Any]], sample_rows: int, method: str) -> dict:
    """Load the first `sample_rows` data lines of every file the naive way."""
    if method == "auto":
        try:
            importlib.import_module("sqlalchemy")
            method = "to_sql"
        except ImportError:
            method = "insert_rows"
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(NAIVE_SCHEMA))
        )
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(NAIVE_SCHEMA)))
    conn.commit()
    rows = 0
    seconds = 0.0
    try:
        if method == "to_sql":
            import pandas as pd
            from sqlalchemy import create_engine

            engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
            try:
                for f in files:
                    started = time.perf_counter()
                    frame = pd.read_csv(
                        f["path"], dtype=str, nrows=sample_rows, keep_default_na=False
                    )
                    frame.to_sql(
                        f["table"], engine, schema=NAIVE_SCHEMA, if_exists="replace", index=False
                    )
                    seconds += time.perf_counter() - started
                    rows += len(frame)
            finally:
                engine.dispose()
        elif method == "insert_rows":
            with conn.cursor() as cur:
                for f in files:
                    with open(f["path"], encoding="utf-8-sig", newline="") as handle:
                        reader = csv.reader(handle)
                        columns = next(reader)
                        table = sql.Identifier(NAIVE_SCHEMA, f["table"])
                        cur.execute(
                            sql.SQL("CREATE TABLE {} ({})").format(
                                table,
                                sql.SQL(", ").join(
                                    sql.SQL("{} text").format(sql.Identifier(c)) for c in columns
                                ),
                            )
                        )
                        conn.commit()
                        insert = sql.SQL("INSERT INTO {} VALUES ({})").format(
                            table, sql.SQL(", ").join(sql.Placeholder() * len(columns))
                        )
                        started = time.perf_counter()
                        for n, record in enumerate(reader):
                            if n >= sample_rows:
                                break
                            cur.execute(insert, record)
                            rows += 1
                        conn.commit()
                        seconds += time.perf_counter() - started
        else:
            raise ValueError(f"unknown naive baseline {method!r}")
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(NAIVE_SCHEMA)))
        conn.commit()
    finally:
        conn.close()
    return {
        "method": method,
        "what": (
            "pandas.read_csv + DataFrame.to_sql (SQLAlchemy, default method) of a sample"
            if method == "to_sql"
            else "one cursor.execute INSERT per row (psycopg2) of a sample"
        ),
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds) if seconds else None,
    }


# ─── 5. queries ──────────────────────────────────────────────────────────────────────────────
def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def _time_query(cur: Any, text: str, params: dict | None, repeats: int) -> dict[str, Any]:
    started = time.perf_counter()
    cur.execute(text, params)  # warm-up (plans, caches)
    cur.fetchall()
    warm = time.perf_counter() - started
    if warm > 0.5:  # a slow query: enough runs for a p95 within ~10 s, at least 3
        repeats = max(3, min(repeats, int(10 / warm)))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        cur.execute(text, params)
        rows = cur.fetchall()
        times.append((time.perf_counter() - started) * 1000)
    return {
        "runs": repeats,
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(_percentile(times, 0.95), 2),
        "max_ms": round(max(times), 2),
        "rows": len(rows),
    }


class _Params(dict):
    """Query parameters; one the benchmark does not know is NULL (the dashboard's "all")."""

    def __missing__(self, key: str) -> None:
        return None


def _slicer_values(cur: Any) -> dict[str, dict[str, list[str]]]:
    """The dashboard's filters as a user would set them: the largest category, state and customer
    segment (most order lines: the slowest single choice), and the two largest categories."""
    cur.execute(
        "SELECT p.category FROM warehouse.agg_sales_slices s"
        " JOIN (SELECT DISTINCT category FROM warehouse.dim_products"
        "       WHERE product_key > 0 AND category IS NOT NULL) p ON p.category = s.category"
        " GROUP BY 1 ORDER BY sum(s.lines) DESC, 1 LIMIT 2"
    )
    categories = [row[0] for row in cur.fetchall()]
    cur.execute(
        "SELECT state FROM warehouse.agg_sales_slices WHERE state IS NOT NULL"
        " GROUP BY 1 ORDER BY sum(lines) DESC, 1 LIMIT 1"
    )
    states = [row[0] for row in cur.fetchall()]
    cur.execute(
        "SELECT customer_segment FROM warehouse.agg_customer_metrics"
        " GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    )
    segments = [row[0] for row in cur.fetchall()]
    slicers = {
        "category": {"categories": categories[:1]},
        "state": {"states": states},
        "segment": {"segments": segments},
    }
    if len(categories) == 2:
        slicers["2_categories"] = {"categories": categories}
    slicers["category_and_segment"] = {"categories": categories[:1], "segments": segments}
    return {name: value for name, value in slicers.items() if all(value.values())}


def _dashboard_variants(name: str) -> list[tuple[str, str | None]]:
    """(window, slicer) pairs to time a statement with, the way the dashboard issues it
    (dashboards/queries.py picks the statement): *_SLICES_SQL with one filter set and with two
    categories, KPIS_SLICES_SQL and STATES_SLICES_SQL also over a range touching neither end of
    the data (the Overview's previous period: distinct customers from the days with orders;
    KPIS_SLICES_SQL there without a filter too); the top products over all dates from
    agg_product_slicer_totals with a category or a segment (one value) or two categories, from
    agg_product_slices with a category and a segment, by order lines with a state over all dates
    and with each filter or none (TOP_PRODUCTS_RANGE_SQL) over the last 30 days; the rest with no
    filter."""
    windows = ("all", "last_30_days")
    slicers = ("category", "state", "segment", "2_categories")
    if name in ("KPIS_SLICES_SQL", "STATES_SLICES_SQL"):
        windows += ("previous_30_days",)
    if name == "TOP_PRODUCTS_SLICER_SQL":
        return [("all", "category"), ("all", "segment")]
    if name == "TOP_PRODUCTS_SLICERS_SQL":
        return [("all", "2_categories")]
    if name == "TOP_PRODUCTS_SLICES_SQL":
        return [("all", "category_and_segment")]
    if name.endswith("_SLICES_SQL"):
        unfiltered = [("previous_30_days", None)] if name == "KPIS_SLICES_SQL" else []
        return unfiltered + [(w, s) for s in slicers for w in windows]
    if name == "TOP_PRODUCTS_LINES_SQL":
        return [("all", "state")] + [("last_30_days", s) for s in slicers[:3]]
    if name == "TOP_PRODUCTS_RANGE_SQL":
        return [("last_30_days", None)]
    return [(w, None) for w in windows]


def _dashboard_queries(url: str) -> dict[str, tuple[str, dict]]:
    """Every *_SQL statement of dashboards/queries.py with the filters the dashboard uses it with
    (_dashboard_variants), named <statement>[<window>] or <statement>[<window>,<filter>]."""
    try:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        module = importlib.import_module("dashboards.queries")
    except Exception as exc:  # the dashboard is optional for the benchmark
        log.warning("dashboard queries not timed: %s", exc)
        return {}
    first = last = None
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT min(full_date), max(full_date) FROM warehouse.dim_date d"
                " WHERE d.date_key IN (SELECT date_key FROM warehouse.agg_daily_sales)"
            )
            first, last = cur.fetchone()
            slicers = _slicer_values(cur) if first is not None else {}
    except psycopg2.Error as exc:  # a warehouse without the slice aggregates: no filters
        log.warning("dashboard filters not timed: %s", exc)
        conn.rollback()
        slicers = {}
    finally:
        conn.close()
    if first is None:
        return {}
    queries = {}
    filters_class = getattr(module, "Filters", None)
    windows = {
        "all": (first, last),
        "last_30_days": (last - dt.timedelta(days=29), last),
        "previous_30_days": (last - dt.timedelta(days=59), last - dt.timedelta(days=30)),
    }
    for name in sorted(vars(module)):
        text = getattr(module, name)
        if not (name.endswith("_SQL") and isinstance(text, str)):
            continue
        for window, slicer in _dashboard_variants(name):
            if slicer is not None and slicer not in slicers:
                continue
            start, end = windows[window]
            params: dict[str, Any] = {}
            if filters_class is not None:
                try:
                    chosen = {k: tuple(v) for k, v in slicers.get(slicer or "", {}).items()}
                    params = filters_class(
                        start=start, end=end, data_start=first, data_end=last, **chosen
                    ).params()
                except Exception:
                    params = {}
            label = window if slicer is None else f"{window},{slicer}"
            queries[f"{name.lower()[:-4]}[{label}]"] = (text, _Params({"limit": 10, **params}))
            if "%(" not in text:
                break
    return queries


def measure_queries(url: str, repeats: int) -> dict[str, Any]:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    out: dict[str, Any] = {"repeats": repeats, "analytics": {}, "dashboard": {}}
    try:
        with conn.cursor() as cur:
            for path in sorted((ROOT / "sql" / "queries").glob("*.sql")):
                text = path.read_text(encoding="utf-8").strip().rstrip(";")
                out["analytics"][path.stem] = _time_query(cur, text, None, repeats)
            for name, (text, params) in _dashboard_queries(url).items():
                try:
                    out["dashboard"][name] = _time_query(cur, text, params, repeats)
                except (psycopg2.Error, KeyError, TypeError, ValueError) as exc:
                    cur.connection.rollback()
                    out["dashboard"][name] = {
                        "error": (str(exc).strip() or repr(exc)).splitlines()[0]
                    }
    finally:
        conn.close()
    return out


# ─── 3, 4. the pipeline ──────────────────────────────────────────────────────────────────────
def bench_settings(data_dir: Path, url: str, lines: int) -> tuple[Settings, float]:
    """Settings for one size: the default generator, scaled; next batches of 1 % new lines."""
    scale = max(lines / LINES_PER_SCALE, 0.01)
    today = dt.date.today()
    end = min(dt.date(2025, 12, 31), today - dt.timedelta(days=3))
    settings = load_settings(
        data_dir=data_dir,
        database_url=url,
        environ={},
        overrides={
            "generator": {
                "end_date": end.isoformat(),
                "start_date": (end - dt.timedelta(days=730)).isoformat(),
                # --next-batch volumes are multiplied by the scale: 100 of 10,000 = 1 %
                "next_batch": {"transactions": 100},
            }
        },
    )
    return settings, scale


def _stage_table(report: Any, lines: int) -> dict[str, dict[str, Any]]:
    return {
        s.stage: {
            "seconds": s.seconds,
            "rows_in": s.rows_in,
            "rows_out": s.rows_out,
            "lines_per_s": round(lines / s.seconds) if s.seconds else None,
        }
        for s in report.stages
    }


def _load_seconds(stages: dict[str, dict[str, Any]]) -> float:
    return round(sum(stages[s]["seconds"] for s in LOAD_STAGES if s in stages), 3)


def pipeline_files(url: str) -> dict[str, str]:
    """sha256 of every file the pipeline loaded, as recorded by it in ops.ingested_files."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT file_name, sha256 FROM ops.ingested_files WHERE batch_id = 'batch_0001'"
            )
            return dict(cur.fetchall())
    finally:
        conn.close()


def bench_size(
    admin_url: str,
    lines: int,
    work_dir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    db_name = f"bench_{lines}"
    size_dir = work_dir / f"lines_{lines}"
    shutil.rmtree(size_dir, ignore_errors=True)
    database = (
        contextlib.nullcontext(admin_url)
        if args.in_place
        else fresh_database(admin_url, db_name, args.keep)
    )
    with database as url:
        settings, scale = bench_settings(size_dir, url, lines)
        result: dict[str, Any] = {"requested_lines": lines, "scale": round(scale, 4)}

        log.info("[%s lines] generate", f"{lines:,}")
        gen = generate_in_child(size_dir, url, lines)
        batch_dir = settings.raw_dir / "batch_0001"
        files = dataset_files(batch_dir)
        order_lines = next(f["rows"] for f in files if f["file"] == "transaction_items.csv")
        gen_seconds = gen["seconds"]
        result["order_lines"] = order_lines
        result["files"] = files
        result["generate"] = {
            "seconds": gen_seconds,
            "lines_per_s": round(order_lines / gen_seconds) if gen_seconds else None,
            "bytes": sum(f["bytes"] for f in files),
            "peak_rss_mb": gen["peak_rss_mb"],
            "process": "a child process, so the pipeline's memory below is its own",
        }

        log.info("[%s lines] floor", f"{order_lines:,}")
        floor = measure_floor(url, files)
        result["floor"] = floor

        log.info("[%s lines] pipeline", f"{order_lines:,}")
        _reset_peak_rss()
        full = _run_pipeline(settings, RunOptions(), stages=STAGES[1:])
        stages = _stage_table(full, order_lines)
        e2e = _load_seconds(stages)
        result["pipeline"] = {
            "stages": stages,
            "end_to_end_seconds": e2e,
            "end_to_end_lines_per_s": round(order_lines / e2e) if e2e else None,
            "x_floor": round(e2e / floor["seconds"], 2) if floor["seconds"] else None,
            "with_analytics_seconds": round(e2e + stages.get("analytics", {}).get("seconds", 0), 3),
            "peak_rss_mb": _peak_rss_mb(),
            "sha256": pipeline_files(url),
            "database": database_identity(db_url_of(settings)),
            "database_url": mask_url(db_url_of(settings)),
        }

        batches = [timed_batch(url, settings, scale, order_lines, e2e, 1)]
        started = time.perf_counter()
        rerun = _run_pipeline(settings, RunOptions(), stages=STAGES[1:])
        result["rerun"] = {
            "stages": _stage_table(rerun, order_lines),
            # the whole call, as a user waits for it: the DDL check, the ledger, the row counts
            # per layer and the report besides the stages (rerun.seconds)
            "seconds": round(time.perf_counter() - started, 3),
            "stages_seconds": rerun.seconds,
        }

        # the queries after one batch, as before there were more: the other batches each add
        # a day with 1 % of the lines, which the last 30 days would hold too
        log.info("[%s lines] queries", f"{order_lines:,}")
        result["queries"] = measure_queries(url, args.repeats)

        batches += [
            timed_batch(url, settings, scale, order_lines, e2e, number)
            for number in range(2, args.batches + 1)
        ]
        # the middle batch by time (of an even count, the slower of the two middle ones), its
        # figures at the top; every batch's in "batches"
        middle = sorted(batches, key=lambda b: b["seconds"])[len(batches) // 2]
        result["incremental"] = {**middle, "batches": batches}

        if args.naive_rows > 0:
            log.info("[%s lines] naive baseline", f"{order_lines:,}")
            naive = naive_in_child(url, files, args.naive_rows, args.naive)
            naive["floor_x"] = (
                round(floor["rows_per_s"] / naive["rows_per_s"], 1) if naive["rows_per_s"] else None
            )
            result["naive"] = naive
    if not args.keep:
        shutil.rmtree(size_dir, ignore_errors=True)
    return result


def timed_batch(
    url: str, settings: Settings, scale: float, order_lines: int, full_seconds: float, number: int
) -> dict[str, Any]:
    """One 1 % batch (`--next-batch`) on a settled database, timed like the full load."""
    log.info("[%s lines] settle, then 1%% batch %d", f"{order_lines:,}", number)
    settled = settle(url)
    autovacuum_before = autovacuum_work(url)
    inc = _run_pipeline(settings, RunOptions(next_batch=True, scale=scale), stages=STAGES)
    inc_stages = _stage_table(inc, order_lines)
    inc_files = dataset_files(sorted(settings.raw_dir.iterdir())[-1])
    inc_lines = next(f["rows"] for f in inc_files if f["file"] == "transaction_items.csv")
    inc_seconds = _load_seconds(inc_stages)
    return {
        "order_lines": inc_lines,
        "share_of_lines": round(inc_lines / order_lines, 4),
        "stages": inc_stages,
        "seconds": inc_seconds,
        "share_of_full_load": round(inc_seconds / full_seconds, 4) if full_seconds else None,
        # after settle(); autovacuum may still start on a table (listed, † in the table)
        "settled_before": settled,
        "autovacuum_at_start": autovacuum_before,
        "autovacuum_at_end": autovacuum_work(url),
    }


GENERATE_CHILD = "_generate"


def _run_pipeline(settings: Settings, options: RunOptions, stages: tuple[str, ...]) -> Any:
    """run_pipeline, waiting briefly when the previous run's session (this process's, just
    closed) still holds the pipeline lock: its backend releases it when it has exited."""
    for attempt in range(50):
        try:
            return run_pipeline(settings, options, stages=stages)
        except AlreadyRunning:
            if attempt == 49:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def generate_in_child(size_dir: Path, url: str, lines: int) -> dict[str, Any]:
    """Run the generate stage in a child process (its numpy arrays never inflate this
    process's memory); returns its seconds, lines and peak RSS."""
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            GENERATE_CHILD,
            str(size_dir),
            url,
            str(lines),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


NAIVE_CHILD = "_naive"


def naive_in_child(url: str, files: list[dict[str, Any]], sample_rows: int, method: str) -> dict:
    """The naive baseline in a child process: pandas frames never inflate the memory of the
    process whose pipeline peak RSS is measured (on the next size)."""
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            NAIVE_CHILD,
            url,
            json.dumps(files),
            str(sample_rows),
            method,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _generate_child(size_dir: str, url: str, lines: str) -> int:
    settings, scale = bench_settings(Path(size_dir), url, int(lines))
    report = _run_pipeline(settings, RunOptions(scale=scale), stages=("generate",))
    stage = report.stages[0]
    print(
        json.dumps(
            {"seconds": stage.seconds, "lines": stage.rows_out, "peak_rss_mb": _peak_rss_mb()}
        )
    )
    return 0


def db_url_of(settings: Settings) -> str:
    from dwh import db

    return db.resolve_url(settings, start_embedded=False)


# ─── the report ──────────────────────────────────────────────────────────────────────────────
def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": mem_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def evaluate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of docs/performance.md against the measured figures: met, not met, not run."""
    by_size = {r["requested_lines"]: r for r in results}
    main = by_size.get(1_000_000) or (results[-1] if results else None)
    large = by_size.get(LARGE_SIZE)
    checks: list[dict[str, Any]] = []

    def add(target: str, value: Any, met: bool | None, where: str) -> None:
        checks.append({"target": target, "measured": value, "met": met, "at": where})

    if main:
        at = f"{main['order_lines']:,} lines"
        x = main["pipeline"]["x_floor"]
        add(
            "end to end (ingest..aggregates) <= 8x the floor", f"{x}x", x is not None and x <= 8, at
        )
        rate = main["generate"]["lines_per_s"]
        add("generate >= 500,000 lines/s incl. CSV", f"{rate:,} lines/s", rate >= 500_000, at)
        share = main["incremental"]["share_of_full_load"]
        count = len(main["incremental"]["batches"])
        shares = _batch_range(main, "share_of_full_load", ".1%")
        measured = f"{share:.1%}" + (f" (median of {count}: {shares})" if count > 1 else "")
        add("1% incremental batch < 5% of the full load", measured, share < 0.05, at)
        rerun = main["rerun"]["seconds"]
        add("rerun with nothing new < 2 s", f"{rerun:.2f} s", rerun < 2, at)
    if large:
        at = f"{large['order_lines']:,} lines"
        rss = large["pipeline"]["peak_rss_mb"]
        add("10M lines: peak Python memory < 200 MB", f"{rss} MB", rss < 200, at)
        if main and main is not large:
            growth = (
                large["pipeline"]["end_to_end_seconds"] / main["pipeline"]["end_to_end_seconds"]
            ) / (large["order_lines"] / main["order_lines"])
            add(
                "10M lines: time grows no faster than linearly from 1M",
                f"{growth:.2f}x linear",
                growth <= 1.1,
                at,
            )
    else:
        add("10M lines: peak Python memory < 200 MB", "not run (--large)", None, "")
        add("10M lines: time grows no faster than linearly from 1M", "not run (--large)", None, "")
    query_size = large or main
    if query_size:
        q = query_size["queries"]
        worst = [
            (v["p95_ms"], f"{kind}:{name}")
            for kind in ("analytics", "dashboard")
            for name, v in q[kind].items()
            if "p95_ms" in v
        ]
        if worst:
            p95, name = max(worst)
            add(
                "every analytics and dashboard query p95 < 200 ms (at 10M)",
                f"worst {p95:.0f} ms ({name})",
                p95 < 200,
                f"{query_size['order_lines']:,} lines",
            )
    return checks


def markdown(report: dict[str, Any]) -> str:
    m, pg = report["machine"], report["postgres"]
    out = [
        f"Run {report['started_at']} on {m['cpus']} CPUs ({m['cpu'] or 'unknown CPU'}), "
        f"{m['memory_gb']} GB RAM, load average at start {m['load_average']} / at end "
        f"{report['load_average_end']}; PostgreSQL {pg['server_version']} ({report['server']}): "
        + ", ".join(f"{k} {v}" for k, v in pg.items() if k != "server_version")
        + ".",
        "",
        "| order lines | floor (COPY) | generate | ingest | quality | production | warehouse "
        "| aggregates | end to end | x floor | analytics | peak RSS | 1% batch (median, range) | rerun |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        st = r["pipeline"]["stages"]

        def cell(name: str, st: dict = st) -> str:
            s = st.get(name)
            if not s:
                return "–"
            rate = f"{s['lines_per_s'] / 1000:,.0f}k/s" if s["lines_per_s"] else "–"
            return f"{s['seconds']:.2f} s ({rate})"

        out.append(
            f"| {r['order_lines']:,} | {r['floor']['seconds']:.2f} s ({r['floor']['rows_per_s'] / 1e6:.2f}M rows/s) "
            f"| {r['generate']['seconds']:.2f} s ({r['generate']['lines_per_s'] / 1000:,.0f}k/s) "
            f"| {cell('ingest')} | {cell('quality')} | {cell('production')} | {cell('warehouse')} "
            f"| {cell('aggregates')} | {r['pipeline']['end_to_end_seconds']:.2f} s "
            f"| {r['pipeline']['x_floor']}x | {cell('analytics')} | {r['pipeline']['peak_rss_mb']} MB "
            f"| {r['incremental']['seconds']:.2f} s ({r['incremental']['share_of_full_load']:.1%})"
            f"{', ' + _batch_range(r, 'seconds', '.2f') + ' s' if len(r['incremental']['batches']) > 1 else ''}"
            f"{' †' if _autovacuum_during_batch(r) else ''} "
            f"| {r['rerun']['seconds']:.2f} s |"
        )
    busy = [r for r in report["results"] if _autovacuum_during_batch(r)]
    if busy:
        out += [
            "",
            "† autovacuum was working during a 1% batch ("
            + "; ".join(
                f"{r['order_lines']:,} lines: "
                + ", ".join(sorted(set(_autovacuum_during_batch(r))))
                for r in busy
            )
            + ").",
        ]
    out += [
        "",
        "| order lines | naive baseline | rows/s | floor rows/s | floor is x faster |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in report["results"]:
        n = r.get("naive")
        if n:
            out.append(
                f"| {r['order_lines']:,} | {n['method']} ({n['rows']:,} rows) | {n['rows_per_s']:,} "
                f"| {r['floor']['rows_per_s']:,} | {n['floor_x']}x |"
            )
    out += ["", "| order lines | query | p50 ms | p95 ms |", "|---:|---|---:|---:|"]
    # the largest size only (the JSON has every size)
    for r in report["results"][-1:]:
        for kind in ("analytics", "dashboard"):
            for name, v in r["queries"][kind].items():
                if "p95_ms" in v:
                    out.append(
                        f"| {r['order_lines']:,} | {kind}: {name} | {v['p50_ms']} | {v['p95_ms']} |"
                    )
                else:
                    out.append(
                        f"| {r['order_lines']:,} | {kind}: {name} | error | {v.get('error')} |"
                    )
    out += ["", "| target | measured | met | at |", "|---|---|---|---|"]
    for t in report["targets"]:
        met = {True: "met", False: "**not met**", None: "not run"}[t["met"]]
        out.append(f"| {t['target']} | {t['measured']} | {met} | {t['at']} |")
    return "\n".join(out) + "\n"


def update_docs(table: str, path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if DOCS_BEGIN not in text or DOCS_END not in text:
        log.warning("%s has no %s … %s markers: not updated", path, DOCS_BEGIN, DOCS_END)
        return
    head, rest = text.split(DOCS_BEGIN, 1)
    _, tail = rest.split(DOCS_END, 1)
    path.write_text(f"{head}{DOCS_BEGIN}\n{table}{DOCS_END}{tail}", encoding="utf-8")


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = list(args.sizes or DEFAULT_SIZES)
    if args.large and LARGE_SIZE not in sizes:
        sizes.append(LARGE_SIZE)
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="dwh-bench-")).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    report: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "sizes": sizes,
        "results": [],
    }
    try:
        with server(args.database_url, work_dir, args.port) as admin_url:
            report["server"] = "given --database-url" if args.database_url else "embedded"
            report["postgres"] = server_settings(admin_url)
            for lines in sizes:
                report["results"].append(bench_size(admin_url, lines, work_dir, args))
    finally:
        if not args.keep and not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    report["targets"] = evaluate(report["results"])
    table = markdown(report)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    (out_dir / f"{stamp}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / f"{stamp}.md").write_text(table)
    (out_dir / "latest.md").write_text(table)
    report["output"] = str(out_dir / f"{stamp}.json")
    if args.update_docs:
        update_docs(table, ROOT / "docs" / "performance.md")
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--sizes",
        type=lambda s: [int(float(x)) for x in s.split(",")],
        help="order lines, comma-separated (default 100000,1000000)",
    )
    p.add_argument("--large", action="store_true", help="add 10,000,000 order lines")
    p.add_argument(
        "--database-url",
        help="a server to use (its user must create databases); default: an embedded server with its own data dir and port",
    )
    p.add_argument(
        "--in-place",
        action="store_true",
        help="use the --database-url database itself (must be empty; one size) instead of creating bench_<size>",
    )
    p.add_argument("--port", type=int, help="port of the embedded server (default: a free one)")
    p.add_argument(
        "--work-dir", help="data and server folder (default: a temporary folder, removed)"
    )
    p.add_argument("--output-dir", default=str(ROOT / "bench" / "results"))
    p.add_argument("--repeats", type=int, default=20, help="runs of each query for p50/p95")
    p.add_argument(
        "--batches",
        type=int,
        default=3,
        help="1%% batches after the full load, each on a settled database (their median is reported)",
    )
    p.add_argument(
        "--naive",
        choices=("auto", "to_sql", "insert_rows"),
        default="auto",
        help="naive baseline: to_sql needs SQLAlchemy (requirements-bench.txt); auto falls back to row-by-row INSERTs",
    )
    p.add_argument(
        "--naive-rows", type=int, default=20_000, help="rows per file of the naive sample (0: skip)"
    )
    p.add_argument("--keep", action="store_true", help="keep the databases and files")
    p.add_argument(
        "--update-docs", action="store_true", help="write the table into docs/performance.md"
    )
    args = p.parse_args(argv)
    if args.batches < 1:
        p.error(f"--batches {args.batches}: give 1 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [GENERATE_CHILD]:
        logging.basicConfig(level=logging.WARNING)
        return _generate_child(*argv[1:4])
    if argv[:1] == [NAIVE_CHILD]:
        url, files, rows, method = argv[1:5]
        print(json.dumps(measure_naive(url, json.loads(files), int(rows), method)))
        return 0
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("dwh").setLevel(logging.WARNING)
    args = parse_args(argv)
    report = run(args)
    sys.stdout.write(markdown(report))
    sys.stdout.write(f"\nresults: {report['output']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
