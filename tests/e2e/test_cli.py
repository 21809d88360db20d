"""The command line as a user runs it: subprocesses, exit codes, messages, staging counts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "scripts" / "pipeline_orchestrator.py")
SMALL = {
    "DWH_GENERATOR__CUSTOMERS": "100",
    "DWH_GENERATOR__PRODUCTS": "40",
    "DWH_GENERATOR__TRANSACTIONS": "500",
    "DWH_GENERATOR__NEXT_BATCH__TRANSACTIONS": "30",
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DWH_", "PG", "DATABASE_URL"))}
    return {**env, **SMALL, **extra}


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        capture_output=True,
        text=True,
        env=env or _env(),
        cwd=cwd or ROOT,
        timeout=300,
    )


def _staging_counts(url: str) -> dict[str, int]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            out = {}
            for table in ("customers", "products", "transactions", "transaction_items"):
                cur.execute(f"SELECT count(*) FROM staging.{table}")
                out[f"{table}.csv"] = cur.fetchone()[0]
            return out
    finally:
        conn.close()


def _execute(url: str, statement: str) -> object:
    """Run a statement by hand (as a user would) and commit; returns its first value, if any."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            value = cur.fetchone()[0] if cur.description else None
        conn.commit()
        return value
    finally:
        conn.close()


def _loaded_then(url: str, data: Path, statement: str) -> None:
    """A first run into `data`, then `statement` run by hand."""
    first = _cli("run", "--database-url", url, "--data-dir", str(data))
    assert first.returncode == 0, first.stderr[-3000:]
    _execute(url, statement)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _manifest_rows(batch: Path) -> dict[str, int]:
    manifest = json.loads((batch / "manifest.json").read_text())
    return {name: info["rows"] for name, info in manifest["files"].items()}


def test_help_lists_every_subcommand_and_exit_codes() -> None:
    result = _cli("--help")
    assert result.returncode == 0
    for word in (
        "run",
        "generate",
        "db",
        "status",
        "--data-dir",
        "--database-url",
        "--config",
        "exit codes",
    ):
        assert word in result.stdout
    run_help = _cli("run", "--help").stdout
    for flag in (
        "--stages",
        "--from",
        "--resume",
        "--dry-run",
        "--full-refresh",
        "--next-batch",
        "--json",
    ):
        assert flag in run_help


def test_run_twice_then_next_batch(db_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = _cli("--database-url", db_url, "--data-dir", str(data))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "BI connection URL" in first.stdout
    batch1 = data / "raw" / "batch_0001"
    assert _staging_counts(db_url) == _manifest_rows(batch1)

    again = _cli("run", "--database-url", db_url, "--data-dir", str(data))
    assert again.returncode == 0, again.stderr[-3000:]
    assert _staging_counts(db_url) == _manifest_rows(batch1)
    assert sorted(p.name for p in (data / "raw").iterdir()) == ["batch_0001"]

    nxt = _cli("run", "--next-batch", "--database-url", db_url, "--data-dir", str(data))
    assert nxt.returncode == 0, nxt.stderr[-3000:]
    rows1, rows2 = _manifest_rows(batch1), _manifest_rows(data / "raw" / "batch_0002")
    assert _staging_counts(db_url) == {k: rows1[k] + rows2[k] for k in rows1}
    report = json.loads((data / "processed" / "pipeline_execution_report.json").read_text())
    assert report["status"] == "success"


def test_bad_input_exits_4_with_one_line_and_no_traceback(db_url: str, tmp_path: Path) -> None:
    batch = tmp_path / "data" / "raw" / "batch_0001"
    batch.mkdir(parents=True)
    (batch / "customers.csv").write_text("customer_id,first_name\nC1,Ann\n")
    result = _cli(
        "run", "--stages", "ingest", "--database-url", db_url, "--data-dir", str(tmp_path / "data")
    )
    assert result.returncode == 4
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and "customers.csv: line 1 (header): missing column(s)" in errors[0]
    assert "Traceback" not in result.stderr


def test_a_statement_the_database_refuses_exits_1_with_one_line_and_the_traceback_logged(
    db_url: str, tmp_path: Path
) -> None:
    """A column of the warehouse dropped by hand: the next run's DDL refers to it and the database
    refuses. Exit 1 (not a lost connection, not bad input) with one `error:` line quoting the
    database's message, no traceback on the console, the traceback in the log file."""
    data = tmp_path / "data"
    _loaded_then(db_url, data, "ALTER TABLE warehouse.agg_daily_sales DROP COLUMN profit CASCADE")
    result = _cli("run", "--next-batch", "--database-url", db_url, "--data-dir", str(data))
    assert result.returncode == 1
    errors = _error_lines(result.stderr)
    assert len(errors) == 1
    assert 'column "profit" of relation "warehouse.agg_daily_sales" does not exist' in errors[0]
    assert "Traceback" not in result.stderr
    assert "Traceback" in (tmp_path / "logs" / "pipeline.log").read_text(encoding="utf-8")


def test_a_view_of_the_user_on_columns_the_ddl_drops_is_named_in_the_error(
    db_url: str, tmp_path: Path
) -> None:
    """A database from before recency moved to read time (agg_customer_metrics a table with
    rfm_segment) with a view of the user's on that column: the DDL's upgrade cannot drop the
    column, changes nothing, and the one error line names the view (PostgreSQL's detail)."""
    data = tmp_path / "data"
    _loaded_then(
        db_url,
        data,
        "DROP VIEW warehouse.agg_customer_metrics;"
        " ALTER TABLE warehouse.agg_customer_totals RENAME TO agg_customer_metrics;"
        " ALTER TABLE warehouse.agg_customer_metrics ADD COLUMN as_of_date date,"
        " ADD COLUMN days_since_last_purchase integer, ADD COLUMN recency_score smallint,"
        " ADD COLUMN rfm_segment text;"
        " CREATE VIEW public.my_rfm AS"
        " SELECT customer_id, rfm_segment FROM warehouse.agg_customer_metrics",
    )
    result = _cli("run", "--database-url", db_url, "--data-dir", str(data))
    assert result.returncode == 1
    errors = _error_lines(result.stderr)
    assert len(errors) == 1
    assert "cannot drop column rfm_segment" in errors[0]
    assert "view my_rfm depends on column rfm_segment" in errors[0]
    # nothing renamed: the DDL rolled back whole
    assert _execute(db_url, "SELECT to_regclass('warehouse.agg_customer_totals')") is None
    _execute(db_url, "DROP VIEW public.my_rfm")
    again = _cli("run", "--database-url", db_url, "--data-dir", str(data))
    assert again.returncode == 0, again.stderr[-3000:]


def test_usage_and_connection_errors_have_their_exit_codes(tmp_path: Path) -> None:
    bad_flag = _cli("run", "--stages", "nope", "--data-dir", str(tmp_path))
    assert bad_flag.returncode == 2 and "unknown stage 'nope'" in bad_flag.stderr
    bad_setting = _cli("run", "--data-dir", str(tmp_path), env=_env(DWH_GENERATOR__SEED="x"))
    assert bad_setting.returncode == 2 and "generator.seed" in bad_setting.stderr
    unreachable = _cli("status", "--database-url", "postgresql://nobody:s3cret@127.0.0.1:9/x")
    assert unreachable.returncode == 3
    assert "s3cret" not in unreachable.stderr and "cannot connect" in unreachable.stderr


def test_sigterm_stops_at_the_next_stage_boundary(db_url: str, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            SCRIPT,
            "run",
            "--scale",
            "40",
            "--database-url",
            db_url,
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the generate stage is under way
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('ops.stage_runs') IS NOT NULL")
                if cur.fetchone()[0]:
                    cur.execute("SELECT count(*) FROM ops.stage_runs WHERE stage = 'generate'")
                    if cur.fetchone()[0]:
                        break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr[-2000:]
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM ops.pipeline_runs")
            assert cur.fetchall() == [("cancelled",)]
            cur.execute("SELECT stage, status FROM ops.stage_runs ORDER BY started_at")
            assert cur.fetchall() == [("generate", "success")]
            cur.execute("SELECT count(*) FROM staging.customers")
            assert cur.fetchone()[0] == 0  # ingest never started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # a failure here must not leak the process or its pipes
        proc.stderr.close()
        conn.close()
