"""Run the stages in one explicit order, with a run ledger in `ops` and a JSON report.

Every run is a row in ops.pipeline_runs and every stage a row in ops.stage_runs, written on a
separate autocommit connection so the ledger survives a stage's rollback. One run at a time per
database: a session advisory lock, released by PostgreSQL itself if the process dies.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extras import Json

from dwh import db
from dwh.exceptions import AlreadyRunning, ConfigError, PipelineError
from dwh.settings import Settings, mask_url
from dwh.stage import RunContext, RunOptions, StageResult

# The stages, in the order they run. Each is a module dwh.stages.<name> with run(conn, settings, ctx).
STAGES: tuple[str, ...] = ("generate", "ingest")

PIPELINE_LOCK_KEY = "dwh.pipeline"
log = logging.getLogger("dwh")


@dataclass
class StageReport:
    stage: str
    status: str
    seconds: float
    rows_in: int = 0
    rows_out: int = 0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunReport:
    run_id: int
    status: str
    started_at: str
    finished_at: str | None
    seconds: float
    database: str
    stages: list[StageReport]
    layer_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    error: str | None = None
    exit_code: int = 0


def select_stages(only: list[str] | None = None, start: str | None = None) -> tuple[str, ...]:
    """The stages to run: all, a subset (kept in pipeline order), or from one onwards."""
    unknown = [s for s in (only or []) + ([start] if start else []) if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r}; stages are: {', '.join(STAGES)}")
    chosen = STAGES[STAGES.index(start) :] if start else STAGES
    return tuple(s for s in chosen if not only or s in only)


def layer_row_counts(conn: psycopg2.extensions.connection) -> dict[str, dict[str, int]]:
    """Rows per table of each layer that exists (for the summary and the report)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('staging', 'production', 'warehouse')"
            " AND table_type = 'BASE TABLE' ORDER BY 1, 2"
        )
        tables = cur.fetchall()
        counts: dict[str, dict[str, int]] = {}
        for schema, table in tables:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
            counts.setdefault(schema, {})[table] = cur.fetchone()[0]
    conn.rollback()
    return counts


class _Ledger:
    """Writes ops.pipeline_runs / ops.stage_runs on its own autocommit connection."""

    def __init__(self, conn: psycopg2.extensions.connection):
        self.conn = conn

    def _exec(self, query: str, params: tuple) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchone() if cur.description else None

    def start_run(self, stages: tuple[str, ...], options: RunOptions) -> int:
        row = self._exec(
            "INSERT INTO ops.pipeline_runs (stages, options, host, pid)"
            " VALUES (%s, %s, %s, %s) RETURNING run_id",
            (list(stages), Json(asdict(options)), socket.gethostname(), os.getpid()),
        )
        return int(row[0])

    def finish_run(self, run_id: int, status: str, exit_code: int, error: str | None) -> None:
        self._exec(
            "UPDATE ops.pipeline_runs SET status = %s, exit_code = %s, error = %s,"
            " finished_at = clock_timestamp() WHERE run_id = %s",
            (status, exit_code, error, run_id),
        )

    def start_stage(self, run_id: int, stage: str) -> None:
        self._exec("INSERT INTO ops.stage_runs (run_id, stage) VALUES (%s, %s)", (run_id, stage))

    def finish_stage(self, run_id: int, report: StageReport) -> None:
        self._exec(
            "UPDATE ops.stage_runs SET status = %s, finished_at = clock_timestamp(),"
            " rows_in = %s, rows_out = %s, error = %s, details = %s"
            " WHERE run_id = %s AND stage = %s",
            (
                report.status,
                report.rows_in,
                report.rows_out,
                report.error,
                Json(report.details),
                run_id,
                report.stage,
            ),
        )


def _acquire_lock(conn: psycopg2.extensions.connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (PIPELINE_LOCK_KEY,))
        if not cur.fetchone()[0]:
            cur.execute(
                "SELECT run_id, started_at, pid, host FROM ops.pipeline_runs"
                " WHERE status = 'running' ORDER BY run_id DESC LIMIT 1"
            )
            other = cur.fetchone()
            detail = (
                f" (run {other[0]} started {other[1]:%Y-%m-%d %H:%M:%S} UTC by pid {other[2]} on {other[3]})"
                if other
                else ""
            )
            raise AlreadyRunning(
                f"another pipeline run is in progress on this database{detail}; wait for it to "
                "finish, or check `pipeline_orchestrator.py status`"
            )


def write_report(settings: Settings, report: RunReport) -> None:
    settings.processed_dir.mkdir(parents=True, exist_ok=True)
    path = settings.processed_dir / "pipeline_execution_report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(report), indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_pipeline(
    settings: Settings,
    options: RunOptions | None = None,
    stages: tuple[str, ...] = STAGES,
) -> RunReport:
    """Run `stages` in order; raises the first stage's PipelineError after recording it."""
    options = options or RunOptions()
    url = db.resolve_url(settings)
    ledger_conn = db.connect(url, autocommit=True)
    work = None
    try:
        work = db.connect(url)
        db.apply_ddl(work)
        _acquire_lock(ledger_conn)
        ledger = _Ledger(ledger_conn)
        run_id = ledger.start_run(stages, options)
        adapter = logging.LoggerAdapter(log, {"run_id": run_id, "stage": "-"})
        started = time.monotonic()
        report = RunReport(
            run_id=run_id,
            status="running",
            started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            finished_at=None,
            seconds=0.0,
            database=mask_url(url),
            stages=[],
        )
        adapter.info("run %d started: stages %s", run_id, ",".join(stages))
        failure: BaseException | None = None
        for stage in stages:
            stage_log = logging.LoggerAdapter(log, {"run_id": run_id, "stage": stage})
            ctx = RunContext(run_id=run_id, options=options, log=stage_log)
            ledger.start_stage(run_id, stage)
            t0 = time.monotonic()
            try:
                module = importlib.import_module(f"dwh.stages.{stage}")
                result: StageResult = module.run(work, settings, ctx)
                work.commit()
                stage_report = StageReport(
                    stage,
                    "success",
                    round(time.monotonic() - t0, 3),
                    result.rows_in,
                    result.rows_out,
                    None,
                    result.details,
                )
            except BaseException as exc:
                work.rollback()
                status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
                message = str(exc) or type(exc).__name__
                if isinstance(exc, PipelineError) and exc.stage is None:
                    exc.stage = stage
                stage_report = StageReport(
                    stage, status, round(time.monotonic() - t0, 3), error=message
                )
                failure = exc
            ledger.finish_stage(run_id, stage_report)
            report.stages.append(stage_report)
            stage_log.info(
                "%s in %.2fs (rows in %d, out %d)",
                stage_report.status,
                stage_report.seconds,
                stage_report.rows_in,
                stage_report.rows_out,
            )
            if failure is not None:
                break

        report.seconds = round(time.monotonic() - started, 3)
        report.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        report.layer_rows = layer_row_counts(work)
        if failure is None:
            report.status = "success"
        else:
            report.status = "cancelled" if isinstance(failure, KeyboardInterrupt) else "failed"
            report.error = str(failure) or type(failure).__name__
            report.exit_code = getattr(
                failure, "exit_code", 130 if isinstance(failure, KeyboardInterrupt) else 1
            )
        ledger.finish_run(run_id, report.status, report.exit_code, report.error)
        write_report(settings, report)
        adapter.info("run %d %s in %.2fs", run_id, report.status, report.seconds)
        if failure is not None:
            raise failure
        return report
    finally:
        if work is not None:
            work.close()
        ledger_conn.close()
