"""The orchestrator against a real PostgreSQL: ledger, failures, retries, resume, the lock."""

from __future__ import annotations

import json

import psycopg2
import pytest

from dwh.exceptions import AlreadyRunning, BadInputError, ConfigError
from dwh.orchestrator import PIPELINE_LOCK_KEY, run_pipeline
from dwh.stage import StageResult

pytestmark = pytest.mark.integration
TWO = ("generate", "ingest")


@pytest.fixture
def settings(db_url, make_settings):
    from dataclasses import replace

    base = make_settings(db_url)
    retry = replace(base.pipeline.retry, base_delay_s=0.0, max_delay_s=0.0)
    return replace(base, pipeline=replace(base.pipeline, retry=retry))


@pytest.fixture
def fake_stages(monkeypatch):
    """Replace the stages by recorders; a stage's behaviour can be set per test."""
    calls: list[str] = []
    behaviour: dict[str, object] = {}

    def make(name):
        def run(conn, settings, ctx):
            calls.append(name)
            action = behaviour.get(name)
            if callable(action):
                action()
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE IF NOT EXISTS ops.fake_marks (stage text)")
                cur.execute("INSERT INTO ops.fake_marks VALUES (%s)", (name,))
            return StageResult(rows_in=1, rows_out=len(calls))

        return run

    import importlib

    for name in TWO:
        module = importlib.import_module(f"dwh.stages.{name}")
        monkeypatch.setattr(module, "run", make(name))
    return calls, behaviour


def _ledger(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT run_id, status, exit_code FROM ops.pipeline_runs ORDER BY run_id")
        runs = cur.fetchall()
        cur.execute("SELECT run_id, stage, status FROM ops.stage_runs ORDER BY run_id, started_at")
        stages = cur.fetchall()
    conn.rollback()
    return runs, stages


def test_success_is_recorded_and_reported(settings, conn, fake_stages) -> None:
    calls, _ = fake_stages
    report = run_pipeline(settings, stages=TWO)
    assert calls == list(TWO)
    assert report.status == "success"
    runs, stages = _ledger(conn)
    assert runs == [(report.run_id, "success", 0)]
    assert stages == [(report.run_id, "generate", "success"), (report.run_id, "ingest", "success")]
    saved = json.loads((settings.processed_dir / "pipeline_execution_report.json").read_text())
    assert saved["run_id"] == report.run_id and saved["status"] == "success"
    assert [s["stage"] for s in saved["stages"]] == list(TWO)


def test_a_failing_stage_stops_the_run_and_resume_finishes_it(settings, conn, fake_stages) -> None:
    calls, behaviour = fake_stages

    def bad():
        raise BadInputError("customers.csv: line 7: broken")

    behaviour["generate"] = bad
    with pytest.raises(BadInputError, match="line 7"):
        run_pipeline(settings, stages=TWO)
    assert calls == ["generate"]  # ingest never ran
    runs, stages = _ledger(conn)
    assert runs[-1][1:] == ("failed", 4)
    assert stages == [(runs[-1][0], "generate", "failed")]
    saved = json.loads((settings.processed_dir / "pipeline_execution_report.json").read_text())
    assert "line 7" in saved["error"] and saved["stages"][0]["status"] == "failed"
    with conn.cursor() as cur:  # the failed stage's writes were rolled back
        cur.execute("SELECT to_regclass('ops.fake_marks')")
        assert cur.fetchone()[0] is None
    conn.rollback()

    behaviour.clear()
    resumed = run_pipeline(settings, resume=True)
    assert resumed.status == "success"
    assert [s.stage for s in resumed.stages] == ["generate", "ingest"]
    with pytest.raises(ConfigError, match="nothing to resume"):
        run_pipeline(settings, resume=True)


def test_resume_skips_stages_that_succeeded(settings, conn, fake_stages) -> None:
    calls, behaviour = fake_stages
    behaviour["ingest"] = lambda: (_ for _ in ()).throw(BadInputError("bad"))
    with pytest.raises(BadInputError):
        run_pipeline(settings, stages=TWO)
    behaviour.clear()
    calls.clear()
    report = run_pipeline(settings, resume=True)
    assert calls == ["ingest"]
    assert [s.stage for s in report.stages] == ["ingest"]


def test_transient_errors_are_retried_and_deterministic_ones_are_not(
    settings, conn, fake_stages
) -> None:
    calls, behaviour = fake_stages
    failures = iter([psycopg2.OperationalError("server closed the connection unexpectedly")] * 2)

    def flaky():
        exc = next(failures, None)
        if exc is not None:
            raise exc

    behaviour["generate"] = flaky
    report = run_pipeline(settings, stages=TWO)
    assert report.status == "success"
    assert calls == ["generate", "generate", "generate", "ingest"]

    calls.clear()
    behaviour["generate"] = lambda: (_ for _ in ()).throw(ValueError("a bug"))
    with pytest.raises(ValueError):
        run_pipeline(settings, stages=TWO)
    assert calls == ["generate"]


def test_transient_error_gives_up_after_the_configured_attempts(settings, fake_stages) -> None:
    calls, behaviour = fake_stages
    behaviour["generate"] = lambda: (_ for _ in ()).throw(psycopg2.OperationalError("gone"))
    with pytest.raises(psycopg2.OperationalError):
        run_pipeline(settings, stages=TWO)
    assert calls == ["generate"] * settings.pipeline.retry.attempts


def test_a_second_run_is_refused_while_one_holds_the_lock(
    settings, db_url, conn, fake_stages
) -> None:
    holder = psycopg2.connect(db_url)
    holder.autocommit = True
    try:
        run_pipeline(settings, stages=TWO)  # creates ops tables
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (PIPELINE_LOCK_KEY,))
        runs_before, _ = _ledger(conn)
        with pytest.raises(AlreadyRunning, match="another pipeline run is in progress") as info:
            run_pipeline(settings, stages=TWO)
        assert info.value.exit_code == 6
        runs_after, _ = _ledger(conn)
        assert runs_after == runs_before  # the refused run wrote nothing
    finally:
        holder.close()  # a dead holder releases the lock: no stale lock
    assert run_pipeline(settings, stages=TWO).status == "success"


def test_layer_rows_count_small_tables_and_read_the_live_row_counter_of_large_ones(
    conn, monkeypatch
) -> None:
    from dwh import db, orchestrator

    db.apply_ddl(conn)
    monkeypatch.setattr(orchestrator, "EXACT_COUNT_LIMIT", 10)
    with conn.cursor() as cur:
        cur.execute("SET dwh.batch_id = 'b1'; SET dwh.source_file = 'f.csv'")
        cur.execute(
            "INSERT INTO staging.customers (customer_id) SELECT 'C' || g FROM generate_series(1, 40) g"
        )
        cur.execute("INSERT INTO staging.products (product_id) VALUES ('P1'), ('P2'), ('P3')")
    conn.commit()
    counts, estimated = orchestrator.layer_row_counts(conn)
    assert counts["staging"]["customers"] == 40  # the counter of this session's own inserts
    assert counts["staging"]["products"] == 3
    assert counts["warehouse"]["fact_sales"] == 0
    assert estimated == ["staging.customers"]

    with conn.cursor() as cur:
        cur.execute("DELETE FROM staging.customers WHERE customer_id LIKE 'C1%'")  # 11 rows
    conn.commit()
    counts, estimated = orchestrator.layer_row_counts(conn)
    assert counts["staging"]["customers"] == 29
    assert estimated == ["staging.customers"]
