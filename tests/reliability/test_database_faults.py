"""Database faults: the server restarted mid-run, the pipeline's connections terminated, the
server unreachable at start, a statement timeout, a server that stays down.

Each ends in a completed run (the stage's retry on a fresh connection, the ledger reconnecting
and taking the lock again) or a clean failure (one `error:` line, a documented exit code, no
traceback) followed by a successful rerun; then every table equals the uninterrupted reference.
Restarts use a private embedded server, never the session's shared one.
"""

from __future__ import annotations

import shutil
import threading

import pytest
from reliability_support import (
    Cli,
    admin,
    checksums,
    cli_env,
    create_database,
    database_of,
    diff,
    install_pause,
    pipeline_backends,
    query,
    remove_pause,
    rows_lost,
    run_cli,
    wait_for_pause,
    wait_until_gone,
)

pytestmark = pytest.mark.reliability
FAMILY = "database faults"

FACT_PAUSE = ("warehouse.fact_sales", "AFTER", "INSERT", "NEW.item_id IS NOT NULL")


def _load_base(url, dataset, tmp_path):
    """batch_0001 loaded by an uninterrupted run, then batch_0002 put in place."""
    data = dataset.data_dir(tmp_path, batches=1)
    first = run_cli(["run", "--database-url", url, "--data-dir", str(data)], cli_env(), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(dataset.raw / "batch_0002", data / "raw" / "batch_0002")
    return data


def _pause(url, table, timing, events, when, seconds=120):
    install_pause(url, table, timing=timing, events=events, row_when=when, seconds=seconds)


def _assert_equal(url, reference, outcome):
    outcome.rows_lost = rows_lost(url)
    assert diff(reference, checksums(url)) == []
    assert outcome.rows_lost == 0
    assert query(url, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'running'") == [(0,)]


def _no_traceback(result):
    assert "Traceback" not in result.stderr
    assert len(result.error_lines()) == 1, result.stderr[-2000:]


def test_server_restarted_mid_run_the_run_completes(
    private_server, dataset, tmp_path, outcome
) -> None:
    outcome.expected = "stage retried on a new connection, ledger reconnects: exit 0, equal"
    url = create_database(private_server.url)
    data = _load_base(url, dataset, tmp_path)
    _pause(url, *FACT_PAUSE)
    env = cli_env(DWH_PIPELINE__RETRY__ATTEMPTS="12", DWH_PIPELINE__RETRY__BASE_DELAY_S="0.5")
    cli = Cli(["run", "--database-url", url, "--data-dir", str(data)], env, tmp_path)
    try:
        wait_for_pause(url, cli)
        private_server.restart()
        result = cli.wait()
    finally:
        cli.kill()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transient error (attempt 1 of 12)" in result.stderr
    assert "run ledger connection lost" in result.stderr
    remove_pause(url, FACT_PAUSE[0])
    _assert_equal(url, dataset.full, outcome)
    assert query(url, "SELECT status FROM ops.pipeline_runs ORDER BY run_id") == [
        ("success",),
        ("success",),
    ]
    outcome.observed = "exit 0 after the restart; warehouse stage retried; ledger reconnected"


@pytest.mark.parametrize(
    "which", ["work connection", "every pipeline connection (ledger and lock too)"]
)
def test_backend_terminated_mid_stage_the_run_completes(
    private_server, dataset, tmp_path, outcome, which
) -> None:
    outcome.expected = "pg_terminate_backend mid-stage: retried, exit 0, equal"
    url = create_database(private_server.url)
    data = _load_base(url, dataset, tmp_path)
    _pause(url, *FACT_PAUSE)
    cli = Cli(["run", "--database-url", url, "--data-dir", str(data)], cli_env(), tmp_path)
    try:
        sleeper = wait_for_pause(url, cli)
        conn = admin(url)
        try:
            targets = [sleeper]
            if which.startswith("every"):
                targets = pipeline_backends(conn, database_of(url))
                assert len(targets) == 2  # the work and the ledger connection
            with conn.cursor() as cur:
                for pid in targets:
                    cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        finally:
            conn.close()
        result = cli.wait()
    finally:
        cli.kill()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transient error (attempt 1 of" in result.stderr
    remove_pause(url, FACT_PAUSE[0])
    _assert_equal(url, dataset.full, outcome)
    outcome.observed = f"terminated {len(targets)} backend(s); exit 0; equal"


def test_server_crash_before_promotion_staging_is_reloaded_from_the_files(
    private_server, dataset, tmp_path, outcome
) -> None:
    outcome.expected = (
        "server crash after batch_0002 is staged, before its promotion: recovery empties the "
        "unlogged staging; the rerun reloads it from the files: exit 0, equal, staging as before"
    )
    url = create_database(private_server.url)
    data = _load_base(url, dataset, tmp_path)
    args = ["--database-url", url, "--data-dir", str(data)]
    staged = run_cli(["run", "--stages", "ingest", *args], cli_env(), tmp_path)
    assert staged.returncode == 0, staged.stderr[-3000:]
    lines = "SELECT count(*) FROM staging.transaction_items WHERE _batch_id = 'batch_0002'"
    assert query(url, lines)[0][0] > 0
    private_server.crash()
    assert query(url, lines) == [(0,)]  # what the recovery did to the unlogged table
    result = run_cli(["run", *args], cli_env(), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # the four files of each batch: batch_0002 to promote, batch_0001 for staging as it was
    assert result.stderr.count("reloaded them from") == 8
    _assert_equal(url, dataset.full, outcome)
    outcome.observed = "staging empty after the crash; rerun reloaded 8 files; exit 0; equal"


def test_server_unreachable_at_start_then_rerun(
    dataset, pg_server_url, scratch_dbs, tmp_path, outcome
) -> None:
    outcome.expected = "exit 3, one error line, nothing written; the rerun loads everything"
    url = create_database(pg_server_url, template=dataset.base_db)
    scratch_dbs.append(url)
    data = dataset.data_dir(tmp_path)
    before = checksums(url)
    dead = "postgresql://postgres@127.0.0.1:9/nowhere"
    result = run_cli(["run", "--database-url", dead, "--data-dir", str(data)], cli_env(), tmp_path)
    assert result.returncode == 3
    _no_traceback(result)
    assert result.error_lines()[0].startswith("error: cannot connect to postgresql://")
    assert checksums(url) == before
    assert not (data / "processed").exists()
    rerun = run_cli(["run", "--database-url", url, "--data-dir", str(data)], cli_env(), tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_equal(url, dataset.full, outcome)
    outcome.observed = "exit 3 `cannot connect`, nothing written; rerun exit 0; equal"


def test_statement_timeout_fails_cleanly_then_rerun(
    dataset, pg_server_url, scratch_dbs, tmp_path, outcome
) -> None:
    outcome.expected = "exit 3, one error line, warehouse untouched; rerun (timeout lifted) equal"
    url = create_database(pg_server_url, template=dataset.base_db)
    scratch_dbs.append(url)
    data = dataset.data_dir(tmp_path)
    db = database_of(url)
    _pause(url, *FACT_PAUSE, seconds=5)
    query_admin = admin(pg_server_url)
    try:
        with query_admin.cursor() as cur:
            cur.execute(f"ALTER DATABASE \"{db}\" SET statement_timeout = '1500ms'")
        result = run_cli(
            ["run", "--database-url", url, "--data-dir", str(data)], cli_env(), tmp_path
        )
        assert result.returncode == 3, result.stderr[-3000:]
        _no_traceback(result)
        assert "canceling statement due to statement timeout" in result.error_lines()[0]
        status = query(
            url,
            "SELECT s.stage, s.status FROM ops.stage_runs s WHERE s.run_id ="
            " (SELECT max(run_id) FROM ops.pipeline_runs) ORDER BY s.started_at",
        )
        assert status[-1] == ("warehouse", "failed")
        # The warehouse is still batch_0001's; production holds both batches (committed).
        now = checksums(url)
        for table, digest in dataset.base.items():
            if table.startswith("warehouse."):
                assert now[table] == digest, table
        for table, digest in dataset.full.items():
            if table.startswith("production."):
                assert now[table] == digest, table
        with query_admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{db}" RESET statement_timeout')
    finally:
        query_admin.close()
    remove_pause(url, FACT_PAUSE[0])
    rerun = run_cli(["run", "--database-url", url, "--data-dir", str(data)], cli_env(), tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_equal(url, dataset.full, outcome)
    outcome.observed = (
        "exit 3 naming the statement timeout; warehouse unchanged; rerun exit 0; equal"
    )


def test_server_down_longer_than_the_retries_then_rerun(
    private_server, dataset, tmp_path, outcome
) -> None:
    outcome.expected = "retries exhausted: exit 3, one error line; server back, rerun equal"
    url = create_database(private_server.url)
    data = _load_base(url, dataset, tmp_path)
    _pause(url, *FACT_PAUSE)
    env = cli_env(DWH_PIPELINE__RETRY__ATTEMPTS="2", DWH_PIPELINE__RETRY__BASE_DELAY_S="0.1")
    cli = Cli(["run", "--database-url", url, "--data-dir", str(data)], env, tmp_path)
    stopped = threading.Event()
    try:
        wait_for_pause(url, cli)
        private_server.server.stop()
        stopped.set()
        result = cli.wait()
    finally:
        cli.kill()
        if stopped.is_set():
            private_server.server.start()
    assert result.returncode == 3, result.stderr[-3000:]
    _no_traceback(result)
    wait_until_gone(url)
    remove_pause(url, FACT_PAUSE[0])
    rerun = run_cli(["run", "--database-url", url, "--data-dir", str(data)], cli_env(), tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_equal(url, dataset.full, outcome)
    reason = "cannot connect" if "cannot connect" in result.error_lines()[0] else "database failed"
    outcome.observed = f"exit 3 `{reason}` after 2 attempts; server back: rerun exit 0; equal"
