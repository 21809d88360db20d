"""The benchmark harness (bench/run_benchmark.py) at a tiny size: the floor and the pipeline
are measured on the same files and in the same database. Not a timed test: no figure is
asserted, only where the figures come from."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import psycopg2
import pytest

from dwh import citus
from dwh.settings import CitusSettings

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run_benchmark.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("run_benchmark", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_floor_and_pipeline_use_the_same_files_and_database(db_url, tmp_path):
    bench = _bench_module()
    args = bench.parse_args(
        [
            "--sizes", "1500",
            "--database-url", db_url,
            "--in-place",
            "--work-dir", str(tmp_path / "work"),
            "--output-dir", str(tmp_path / "results"),
            "--repeats", "2",
            "--naive", "insert_rows",
            "--naive-rows", "50",
        ]
    )  # fmt: skip
    report = bench.run(args)

    written = json.loads(Path(report["output"]).read_text())
    (result,) = written["results"]
    files = {f["file"]: f["sha256"] for f in result["files"]}
    assert set(files) == {
        "customers.csv",
        "products.csv",
        "transactions.csv",
        "transaction_items.csv",
    }
    # the same bytes: what the floor copied is what the pipeline recorded in ops.ingested_files
    assert result["floor"]["sha256"] == files
    assert result["pipeline"]["sha256"] == files
    # the same database of the same server
    assert result["floor"]["database"] == result["pipeline"]["database"]
    assert result["floor"]["database"]["database"] == db_url.rsplit("/", 1)[1]
    # every figure the report promises is there
    stages = result["pipeline"]["stages"]
    assert set(stages) == {
        "ingest",
        "quality",
        "production",
        "warehouse",
        "aggregates",
        "analytics",
    }
    assert result["floor"]["rows"] == sum(f["rows"] for f in result["files"])
    assert result["order_lines"] == result["floor"]["files"]["transaction_items.csv"]["rows"]
    # three batches (the default), each on a settled database (test_settle_… below) and timed
    # apart from it; the middle one by time is the reported figure
    batches = result["incremental"]["batches"]
    assert len(batches) == 3
    assert all(b["order_lines"] > 0 for b in batches)
    assert all(
        set(b["settled_before"]) == {"vacuum_seconds", "checkpoint_seconds"} for b in batches
    )
    seconds = sorted(b["seconds"] for b in batches)
    assert result["incremental"]["seconds"] == seconds[1]
    middle = next(b for b in batches if b["seconds"] == seconds[1])
    assert result["incremental"]["share_of_full_load"] == middle["share_of_full_load"]
    # what autovacuum was doing around the batches: listed, and flagged in the table when any
    busy = [w for b in batches for w in b["autovacuum_at_start"] + b["autovacuum_at_end"]]
    assert all(isinstance(work, str) and work for work in busy)
    latest = (tmp_path / "results" / "latest.md").read_text()
    assert ("† autovacuum was working during a 1% batch" in latest) == bool(busy)
    target = next(t for t in written["targets"] if t["target"].startswith("1% incremental"))
    assert target["measured"].startswith(f"{result['incremental']['share_of_full_load']:.1%}")
    assert "median of 3" in target["measured"]
    assert result["rerun"]["seconds"] > 0
    assert result["pipeline"]["peak_rss_mb"] > 0
    assert set(result["queries"]["analytics"]) >= {"top_products_by_revenue", "cohort_retention"}
    assert all("p95_ms" in q for q in result["queries"]["analytics"].values())
    assert result["naive"]["method"] == "insert_rows" and result["naive"]["rows"] > 0
    assert {t["target"] for t in written["targets"]}
    assert (tmp_path / "results" / "latest.md").read_text().startswith("Run ")

    # the bench's own tables are gone; the pipeline's facts are all there
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname IN ('bench_floor', 'bench_naive')"
            )
            assert cur.fetchone()[0] == 0
            cur.execute("SELECT count(*) FROM warehouse.fact_sales")
            assert cur.fetchone()[0] == result["order_lines"] + sum(
                b["order_lines"] for b in batches
            )
            # the full load's files and each batch's own
            cur.execute(
                "SELECT array_agg(DISTINCT _batch_id ORDER BY _batch_id) FROM production.transactions"
            )
            assert cur.fetchone()[0] == ["batch_0001", "batch_0002", "batch_0003", "batch_0004"]
            cur.execute(
                "SELECT details->'citus' FROM ops.stage_runs WHERE stage = 'warehouse'"
                " ORDER BY run_id DESC LIMIT 1"
            )
            assert cur.fetchone()[0] == {"enabled": False}
    finally:
        conn.close()


def test_citus_opt_in_is_inert_on_plain_postgresql(db_url, caplog):
    conn = psycopg2.connect(db_url)
    try:
        assert not citus.citus_installed(conn)
        with caplog.at_level(logging.INFO):
            result = citus.apply(conn, CitusSettings(enabled=True), logging.getLogger("test"))
        assert result == {"enabled": True, "skipped": "citus extension not installed"}
        assert "skipped" in caplog.text
        assert conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_INERROR
    finally:
        conn.close()


def test_settle_vacuums_and_writes_a_checkpoint_before_the_batch(db_url):
    """The 1 % batch is timed on a database in the state a next-day batch finds: its tables
    vacuumed (all-visible pages) and analyzed, and a checkpoint behind it."""
    bench = _bench_module()
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS bench_settle_probe")
            cur.execute(
                "CREATE TABLE bench_settle_probe WITH (autovacuum_enabled = off) AS"
                " SELECT g AS id FROM generate_series(1, 10000) AS g"
            )
            cur.execute("SELECT checkpoint_lsn FROM pg_control_checkpoint()")
            checkpoint_before = cur.fetchone()[0]
            cur.execute("SELECT relallvisible FROM pg_class WHERE relname = 'bench_settle_probe'")
            assert cur.fetchone()[0] == 0

            cur.execute("SELECT reltuples FROM pg_class WHERE relname = 'bench_settle_probe'")
            assert cur.fetchone()[0] < 0  # never analyzed

            settled = bench.settle(db_url)

            assert set(settled) == {"vacuum_seconds", "checkpoint_seconds"}
            cur.execute(
                "SELECT relallvisible, reltuples FROM pg_class WHERE relname = 'bench_settle_probe'"
            )
            all_visible, tuples = cur.fetchone()
            assert all_visible > 0
            # analyzed too (what autovacuum would do after a load before the next day's batch)
            cur.execute(
                "SELECT count(*) FROM pg_stats"
                " WHERE tablename = 'bench_settle_probe' AND attname = 'id'"
            )
            assert cur.fetchone()[0] == 1
            assert tuples == 10000
            cur.execute("SELECT checkpoint_lsn FROM pg_control_checkpoint()")
            assert cur.fetchone()[0] != checkpoint_before
            cur.execute("DROP TABLE bench_settle_probe")
    finally:
        conn.close()
