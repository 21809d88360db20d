"""Crashes: the pipeline process SIGKILLed at many points, then run again.

Each case starts from a database that holds batch_0001 (loaded by an uninterrupted run), adds
batch_0002, pauses the pipeline's own statement at the chosen point (a one-shot trigger, see
reliability_support), SIGKILLs the process while its backend is inside that statement, and runs
the pipeline again. The warehouse, production and the ledger's file/reconciliation/quarantine
tables must then equal those of a reference database that loaded the same files without
interruption, and no row may be lost.
"""

from __future__ import annotations

import hashlib

import pytest
from reliability_support import (
    Cli,
    admin,
    checksums,
    cli_env,
    create_database,
    diff,
    install_pause,
    query,
    remove_pause,
    rows_lost,
    run_cli,
    wait_for_ledger,
    wait_for_pause,
    wait_until_gone,
    with_database,
)

pytestmark = pytest.mark.reliability
FAMILY = "crash"

# (case id, table the pause is on, trigger timing/events, row condition, what is killed)
POINTS = [
    (
        "ingest: during COPY of transaction_items.csv (row 20 of the file)",
        "staging.transaction_items", "BEFORE", "INSERT", "NEW._source_line = 20", "ingest",
    ),
    (
        "ingest: between files (transactions.csv copied, not committed)",
        "ops.ingested_files", "AFTER", "INSERT", "NEW.file_name = 'transactions.csv'", "ingest",
    ),
    (
        "quality: while storing check results",
        "ops.dq_results", "AFTER", "INSERT", None, "quality",
    ),
    (
        "production: promoting the transactions batch (parents committed)",
        "production.transactions", "AFTER", "INSERT OR UPDATE", None, "production",
    ),
    (
        "production: writing the last reconciliation row",
        "ops.reconciliation", "AFTER", "INSERT",
        "NEW.table_name = 'transaction_items' AND NEW.batch_id = 'batch_0002'", "production",
    ),
    (
        "between stages: production recorded, warehouse not started",
        "ops.stage_runs", "AFTER", "INSERT", "NEW.stage = 'warehouse'", "production",
    ),
    (
        "warehouse: SCD2 merge of dim_customers (a version closed, its successor not inserted)",
        "warehouse.dim_customers", "AFTER", "UPDATE",
        "OLD.is_current AND NOT NEW.is_current", "warehouse",
    ),
    (
        "warehouse: SCD2 merge of dim_products (a version closed, its successor not inserted)",
        "warehouse.dim_products", "AFTER", "UPDATE",
        "OLD.is_current AND NOT NEW.is_current", "warehouse",
    ),
    (
        "warehouse: fact_sales upsert",
        "warehouse.fact_sales", "AFTER", "INSERT", "NEW.item_id IS NOT NULL", "warehouse",
    ),
    (
        "warehouse: refresh queue written, before commit",
        "ops.warehouse_refresh_queue", "AFTER", "INSERT", None, "warehouse",
    ),
    (
        "aggregates: agg_customer_totals recomputed, before commit",
        "warehouse.agg_customer_totals", "AFTER", "INSERT", None, "aggregates",
    ),
    (
        "between stages: aggregates recorded, analytics not started",
        "ops.stage_runs", "AFTER", "INSERT", "NEW.stage = 'analytics'", "aggregates",
    ),
    (
        "ledger: while recording the run as successful",
        "ops.pipeline_runs", "AFTER", "UPDATE", "NEW.status = 'success'", "analytics",
    ),
    (
        "start: inside the DDL transaction, before the run is recorded",
        "warehouse.dim_customers", "AFTER", "INSERT", None, None,
    ),
]  # fmt: skip


def _prepare(dataset, pg_server_url, scratch_dbs, tmp_path):
    url = create_database(pg_server_url, template=dataset.base_db)
    scratch_dbs.append(url)
    data = dataset.data_dir(tmp_path)
    return url, data


def _kill_at(url, data, tmp_path, table, timing, events, when, extra_args=()):
    install_pause(url, table, timing=timing, events=events, row_when=when)
    cli = Cli(
        ["run", *extra_args, "--database-url", url, "--data-dir", str(data)], cli_env(), tmp_path
    )
    try:
        wait_for_pause(url, cli)
        cli.kill()
        assert cli.proc.returncode == -9
    finally:
        cli.kill()
    wait_until_gone(url)
    remove_pause(url, table)


def _assert_equal_to_reference(url, reference, outcome, label="reference"):
    observed = checksums(url)
    lost = rows_lost(url)
    outcome.rows_lost = lost
    differing = diff(reference, observed)
    assert differing == [], f"tables differing from the {label}: {differing}"
    assert lost == 0
    running = query(url, "SELECT run_id FROM ops.pipeline_runs WHERE status = 'running'")
    assert running == [], "a killed run was left 'running' in the ledger"


@pytest.mark.parametrize(
    ("table", "timing", "events", "when", "stage"),
    [p[1:] for p in POINTS],
    ids=[p[0] for p in POINTS],
)
def test_sigkill_then_rerun_equals_an_uninterrupted_run(
    dataset, pg_server_url, scratch_dbs, tmp_path, outcome, table, timing, events, when, stage
) -> None:
    outcome.expected = "rerun exits 0; every table equals the uninterrupted run; 0 rows lost"
    url, data = _prepare(dataset, pg_server_url, scratch_dbs, tmp_path)
    if stage is None:  # a run applies the DDL only when sql/ddl changed since: an upgrade
        conn = admin(url)
        with conn.cursor() as cur:
            cur.execute("DELETE FROM ops.ddl_applied")
        conn.close()
    _kill_at(url, data, tmp_path, table, timing, events, when)
    # The kill hit the intended stage: the last stage the ledger shows for the killed run.
    last = query(
        url,
        "SELECT s.stage FROM ops.pipeline_runs r JOIN ops.stage_runs s USING (run_id)"
        " WHERE r.status = 'running' ORDER BY s.started_at DESC LIMIT 1",
    )
    assert (last[0][0] if last else None) == stage
    killed = query(url, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'running'")[0][0]

    rerun = run_cli(["run", "--database-url", url, "--data-dir", str(data)], cli_env(), tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_equal_to_reference(url, dataset.full, outcome)
    abandoned = query(
        url, "SELECT count(*) FROM ops.pipeline_runs WHERE error LIKE 'abandoned:%%'"
    )[0][0]
    assert abandoned == killed == (0 if stage is None else 1)
    outcome.observed = "killed (-9); rerun exit 0; all tables equal; " + (
        "killed run marked abandoned" if killed else "no run had been recorded yet"
    )


def test_killed_twice_then_third_run_equals_reference(
    dataset, pg_server_url, scratch_dbs, tmp_path, outcome
) -> None:
    outcome.expected = "two kills in a row (warehouse, then aggregates); third run equals reference"
    url, data = _prepare(dataset, pg_server_url, scratch_dbs, tmp_path)
    _kill_at(url, data, tmp_path, "warehouse.fact_sales", "AFTER", "INSERT OR UPDATE", None)
    _kill_at(url, data, tmp_path, "warehouse.agg_daily_sales", "AFTER", "INSERT", None)
    rerun = run_cli(["run", "--database-url", url, "--data-dir", str(data)], cli_env(), tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_equal_to_reference(url, dataset.full, outcome)
    outcome.observed = "killed twice, third run exit 0, all tables equal"


def test_killed_then_resume_continues_the_killed_run(
    dataset, pg_server_url, scratch_dbs, tmp_path, outcome
) -> None:
    outcome.expected = (
        "`run --resume` after SIGKILL continues from the killed stage; equals reference"
    )
    url, data = _prepare(dataset, pg_server_url, scratch_dbs, tmp_path)
    _kill_at(
        url, data, tmp_path, "warehouse.dim_customers", "AFTER", "UPDATE",
        "OLD.is_current AND NOT NEW.is_current",
    )  # fmt: skip
    resumed = run_cli(
        ["run", "--resume", "--database-url", url, "--data-dir", str(data)], cli_env(), tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming run" in resumed.stderr
    stages = query(
        url,
        "SELECT stage FROM ops.stage_runs WHERE run_id = (SELECT max(run_id)"
        " FROM ops.pipeline_runs) ORDER BY started_at",
    )
    assert [s for (s,) in stages] == ["warehouse", "aggregates", "analytics"]
    _assert_equal_to_reference(url, dataset.full, outcome)
    outcome.observed = "resume ran warehouse, aggregates, analytics; all tables equal"


def test_first_run_killed_during_copy_on_an_empty_database(
    dataset, pg_server_url, scratch_dbs, tmp_path, outcome
) -> None:
    outcome.expected = "first-ever run killed mid-COPY; rerun equals the reference of batch_0001"
    url = create_database(pg_server_url)
    scratch_dbs.append(url)
    data = dataset.data_dir(tmp_path, batches=1)
    # The tables exist only once the DDL ran: apply it as the pipeline would.
    from dwh import db

    conn = db.connect(url)
    db.apply_ddl(conn)
    conn.close()
    _kill_at(url, data, tmp_path, "staging.customers", "BEFORE", "INSERT", "NEW._source_line = 50")
    assert query(url, "SELECT count(*) FROM staging.customers")[0][0] == 0
    rerun = run_cli(["run", "--database-url", url, "--data-dir", str(data)], cli_env(), tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_equal_to_reference(url, dataset.base, outcome, "reference of batch_0001")
    outcome.observed = "nothing of the file staged after the kill; rerun exit 0; all tables equal"


def test_killed_while_generating_the_next_batch(
    dataset, pg_server_url, scratch_dbs, tmp_path, outcome
) -> None:
    outcome.expected = (
        "kill during `run --next-batch` generate: no half batch visible; rerun equals reference"
    )
    url = create_database(pg_server_url, template=dataset.base_db)
    scratch_dbs.append(url)
    data = dataset.data_dir(tmp_path, batches=1)
    env = cli_env()
    cli = Cli(
        ["run", "--next-batch", "--database-url", url, "--data-dir", str(data)], env, tmp_path
    )
    try:
        wait_for_ledger(
            url,
            "SELECT EXISTS (SELECT 1 FROM ops.stage_runs s JOIN ops.pipeline_runs r"
            " USING (run_id) WHERE r.status = 'running' AND s.stage = 'generate')",
            cli,
        )
        cli.kill()
    finally:
        cli.kill()
    wait_until_gone(url)
    batches = sorted(p.name for p in (data / "raw").iterdir() if not p.name.startswith("."))
    assert batches in (["batch_0001"], ["batch_0001", "batch_0002"])
    # A batch complete before the kill is loaded; otherwise it is generated again.
    args = ["run"] if batches[-1] == "batch_0002" else ["run", "--next-batch"]
    rerun = run_cli([*args, "--database-url", url, "--data-dir", str(data)], env, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for path in (dataset.raw / "batch_0002").iterdir():  # the generator is deterministic
        regenerated = data / "raw" / "batch_0002" / path.name
        assert (
            hashlib.sha256(regenerated.read_bytes()).digest()
            == hashlib.sha256(path.read_bytes()).digest()
        )
    _assert_equal_to_reference(url, dataset.full, outcome)
    outcome.observed = (
        f"killed with batches {batches} on disk; rerun `{' '.join(args)}` exit 0; equal"
    )


def test_reference_itself_is_reproducible(dataset, pg_server_url, scratch_dbs, tmp_path, outcome):
    """Control: two uninterrupted loads of the same files give the same checksums (so a
    difference in the cases above can only come from the fault)."""
    outcome.expected = "an uninterrupted second load of the same files has equal checksums"
    url = create_database(pg_server_url, template=dataset.base_db)
    scratch_dbs.append(url)
    data = dataset.data_dir(tmp_path)
    result = run_cli(["run", "--database-url", url, "--data-dir", str(data)], cli_env(), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_equal_to_reference(url, dataset.full, outcome)
    again = with_database(url, dataset.full_db)
    assert checksums(again) == dataset.full
    outcome.observed = "equal"
