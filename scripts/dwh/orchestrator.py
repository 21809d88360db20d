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
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extras import Json

from dwh import db
from dwh.exceptions import (
    AlreadyRunning,
    ConfigError,
    DatabaseUnavailable,
    PipelineError,
    first_line,
)
from dwh.progress import Progress
from dwh.settings import Settings, mask_url
from dwh.stage import RunContext, RunOptions, StageResult

# The stages, in the order they run. Each is a module dwh.stages.<name> with run(conn, settings, ctx).
STAGES: tuple[str, ...] = (
    "generate",
    "ingest",
    "quality",
    "production",
    "warehouse",
    "aggregates",
    "analytics",
)

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
    layer_rows_estimated: list[str] = field(default_factory=list)
    """The tables of layer_rows over EXACT_COUNT_LIMIT rows: the server's live-row counter."""
    error: str | None = None
    exit_code: int = 0


def select_stages(only: list[str] | None = None, start: str | None = None) -> tuple[str, ...]:
    """The stages to run: all, a subset (kept in pipeline order), or from one onwards."""
    unknown = [s for s in (only or []) + ([start] if start else []) if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r}; stages are: {', '.join(STAGES)}")
    chosen = STAGES[STAGES.index(start) :] if start else STAGES
    return tuple(s for s in chosen if not only or s in only)


# Rows per table: a table of up to EXACT_COUNT_LIMIT rows is counted; a larger one takes the
# server's live-row counter (pg_stat_user_tables.n_live_tup: the rows inserted minus those deleted,
# reset to ANALYZE's figure, which reads every page of a table under 30,000 pages), after this
# session's counters are flushed. Counting every table read every row of every layer after each
# run: 0.5 s at 1M order lines, about ten times that at 10M, for the summary.
EXACT_COUNT_LIMIT = 100_000
_LAYER_ROWS_SQL = """
SELECT t.table_schema, t.table_name, s.n_live_tup
FROM information_schema.tables t
LEFT JOIN pg_stat_user_tables s ON s.schemaname = t.table_schema AND s.relname = t.table_name
WHERE t.table_schema IN ('staging', 'production', 'warehouse') AND t.table_type = 'BASE TABLE'
ORDER BY 1, 2
"""


def layer_row_counts(
    conn: psycopg2.extensions.connection,
) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Rows per table of each layer that exists (for the summary and the report), and the tables
    whose figure is the server's live-row counter rather than a count."""
    db.flush_table_statistics(conn)
    with conn.cursor() as cur:
        cur.execute(_LAYER_ROWS_SQL)
        counts: dict[str, dict[str, int]] = {}
        estimated = []
        for schema, table, live in cur.fetchall():
            if live is None or live <= EXACT_COUNT_LIMIT:
                cur.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
                )
                live = cur.fetchone()[0]
            else:
                estimated.append(f"{schema}.{table}")
            counts.setdefault(schema, {})[table] = live
    conn.rollback()
    return counts, estimated


class _Ledger:
    """Writes ops.pipeline_runs / ops.stage_runs on its own autocommit connection.

    The connection also holds the pipeline lock. When it is lost (the server restarted, the
    backend was terminated), a write reconnects once and takes the lock again before retrying,
    so a stage that survived the outage by its own retry is still recorded.
    """

    def __init__(self, conn: psycopg2.extensions.connection, url: str | None = None):
        self.conn = conn
        self.url = url

    def _reconnect(self) -> None:
        with suppress(psycopg2.Error):
            self.conn.close()
        self.conn = db.connect(self.url or "", autocommit=True)
        _acquire_lock(self.conn)

    def _exec(self, query: str, params: tuple) -> Any:
        for attempt in (1, 2):
            try:
                with self.conn.cursor() as cur:
                    cur.execute(query, params)
                    return cur.fetchone() if cur.description else None
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                if attempt == 2 or self.url is None or not is_transient(exc):
                    raise
                log.warning(
                    "run ledger connection lost (%s): reconnecting",
                    first_line(exc),
                )
                self._reconnect()
        return None

    def close_abandoned_runs(self) -> list[int]:
        """Mark runs left 'running' by a process that died (we hold the lock, so none runs)."""
        rows = self._exec(
            "WITH dead AS (UPDATE ops.pipeline_runs SET status = 'failed', exit_code = 1,"
            " finished_at = clock_timestamp(), error = 'abandoned: the process ended without"
            " finishing the run (killed, or lost its database); the next run redid the work'"
            " WHERE status = 'running' RETURNING run_id),"
            " stages AS (UPDATE ops.stage_runs SET status = 'failed',"
            " finished_at = clock_timestamp(), error = 'abandoned'"
            " WHERE status = 'running' AND run_id IN (SELECT run_id FROM dead))"
            " SELECT coalesce(array_agg(run_id ORDER BY run_id), '{}') FROM dead",
            (),
        )
        return list(rows[0]) if rows else []

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
        self._exec(
            "INSERT INTO ops.stage_runs (run_id, stage) VALUES (%s, %s)"
            " ON CONFLICT (run_id, stage) DO NOTHING",
            (run_id, stage),
        )

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


LOCK_GRACE_S = 1.0
"""How long a refused lock is tried again: a run that just ended releases its lock when its
server process exits, a few milliseconds after the client closed the connection."""


def _try_lock(cur: psycopg2.extensions.cursor) -> bool:
    deadline = time.monotonic() + LOCK_GRACE_S
    while True:
        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (PIPELINE_LOCK_KEY,))
        if cur.fetchone()[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _acquire_lock(conn: psycopg2.extensions.connection) -> None:
    with conn.cursor() as cur:
        if not _try_lock(cur):
            other = None
            cur.execute("SELECT to_regclass('ops.pipeline_runs') IS NOT NULL")
            if cur.fetchone()[0]:  # absent while the other run applies the first DDL
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


TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "57P01",  # admin_shutdown (server restarting, or the backend was terminated)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (server starting up)
    "08000",
    "08003",
    "08006",
    "08001",
    "08004",  # connection exceptions
}


def exit_code_of(failure: BaseException) -> int:
    """The process exit code of a run that ended with `failure`."""
    if isinstance(failure, (KeyboardInterrupt, RunCancelled)):
        return 130
    if isinstance(failure, PipelineError):
        return failure.exit_code
    if isinstance(failure, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        # Lost connection after every retry, a statement timeout, the server shutting down:
        # the database failed the run (exit 3), not a bug in the pipeline.
        return DatabaseUnavailable.exit_code
    return 1


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: lost connections, restarts, serialization failures, deadlocks."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    if isinstance(exc, psycopg2.Error):
        if exc.pgcode in TRANSIENT_SQLSTATES:
            return True
        # A connection that died mid-statement has no SQLSTATE.
        return (
            isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)) and not exc.pgcode
        )
    return False


def backoff_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Full-jitter exponential back-off: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return rand() * min(cap, base * (2 ** (attempt - 1)))


class StopRequest:
    """Set by SIGINT/SIGTERM: the run stops at the next safe point (between stages or batches)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __call__(self) -> bool:
        return self.signal_name is not None

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, _frame: object) -> None:
            if self.signal_name is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            self.signal_name = signal.Signals(signum).name
            log.warning(
                "%s received: stopping at the next safe point (send again to stop now)",
                self.signal_name,
            )

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class RunCancelled(PipelineError):
    exit_code = 130


def last_unfinished_run(
    conn: psycopg2.extensions.connection,
) -> tuple[int, tuple[str, ...], RunOptions] | None:
    """(run_id, stages still to run, options) of the latest run if it failed or was cancelled."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT run_id, status, stages, options FROM ops.pipeline_runs"
            " WHERE status <> 'running' ORDER BY run_id DESC LIMIT 1"
        )
        row = cur.fetchone()
        if row is None or row[1] == "success":
            return None
        run_id, _status, stages, options = row
        cur.execute(
            "SELECT stage FROM ops.stage_runs WHERE run_id = %s AND status = 'success'", (run_id,)
        )
        done = {r[0] for r in cur.fetchall()}
    remaining = tuple(s for s in stages if s not in done and s in STAGES)
    known = {f.name for f in fields(RunOptions)}
    opts = RunOptions(**{k: v for k, v in (options or {}).items() if k in known})
    # Resuming must not write yet another batch: the failed run already wrote its own.
    return run_id, remaining, replace(opts, next_batch=False)


def plan(settings: Settings, stages: tuple[str, ...], options: RunOptions) -> dict[str, Any]:
    """What a run would do, without connecting or writing anything (--dry-run)."""
    from dwh.embedded import EmbeddedServer
    from dwh.stages.ingest import list_batches

    return {
        "database": mask_url(settings.database_url)
        if settings.database_url
        else f"embedded PostgreSQL in {settings.pgdata_dir} on 127.0.0.1:{EmbeddedServer(settings).port}",
        "data_dir": str(settings.data_dir),
        "stages": list(stages),
        "options": asdict(options),
        "batches_on_disk": [p.name for p in list_batches(settings.raw_dir)],
    }


def run_pipeline(
    settings: Settings,
    options: RunOptions | None = None,
    stages: tuple[str, ...] = STAGES,
    *,
    resume: bool = False,
) -> RunReport:
    """Run `stages` in order; raises the first stage's PipelineError after recording it.

    resume=True continues the latest failed or cancelled run from its first unfinished stage.
    """
    options = options or RunOptions()
    url = db.resolve_url(settings)
    ledger_conn = db.connect(url, autocommit=True)
    work = None
    ledger: _Ledger | None = None
    stop = StopRequest()
    try:
        # The lock first: a refused run must not wait behind (or hold locks against) the running
        # one, as its DDL would (CREATE INDEX IF NOT EXISTS waits for the other's transaction).
        _acquire_lock(ledger_conn)
        work = db.connect(url)
        db.apply_ddl(work)
        ledger = _Ledger(ledger_conn, url)
        abandoned = ledger.close_abandoned_runs()
        if abandoned:
            log.warning(
                "run(s) %s were left running by a process that ended: marked failed",
                ", ".join(map(str, abandoned)),
            )
        resumed_from = None
        if resume:
            unfinished = last_unfinished_run(ledger_conn)
            if unfinished is None:
                raise ConfigError("--resume: the latest run did not fail; nothing to resume")
            resumed_from, stages, options = unfinished
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
        adapter.info(
            "run %d started: stages %s%s",
            run_id,
            ",".join(stages),
            f" (resuming run {resumed_from})" if resumed_from else "",
        )
        failure: BaseException | None = None
        with stop.installed():
            progress = Progress()
            for position, stage in enumerate(stages, start=1):
                if stop():
                    failure = RunCancelled(f"stopped by {stop.signal_name} before stage {stage}")
                    break
                # no ticker thread while generating: the generator forks worker processes only
                # when the process runs no other thread (dwh/generator/workers.py)
                ticking = stage != "generate"
                with progress.stage(stage, position, len(stages), ticking):
                    stage_report, failure, work = _run_stage(
                        settings, url, work, ledger, run_id, stage, options, stop
                    )
                report.stages.append(stage_report)
                if failure is not None:
                    break

        report.seconds = round(time.monotonic() - started, 3)
        report.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            report.layer_rows, report.layer_rows_estimated = layer_row_counts(work)
        except psycopg2.Error as exc:  # the work connection died with the failure
            log.warning("row counts per layer unavailable: %s", str(exc).strip() or exc)
        if failure is None:
            report.status = "success"
        else:
            cancelled = isinstance(failure, (KeyboardInterrupt, RunCancelled))
            report.status = "cancelled" if cancelled else "failed"
            report.error = str(failure).strip() or type(failure).__name__
            report.exit_code = exit_code_of(failure)
        try:
            ledger.finish_run(run_id, report.status, report.exit_code, report.error)
        except (psycopg2.Error, DatabaseUnavailable):
            if failure is None:
                raise
            # The ledger is unreachable too: report the run's own failure; the next run marks
            # this one as abandoned.
            log.warning("cannot record the end of run %d in the ledger", run_id)
        write_report(settings, report)
        adapter.info("run %d %s in %.2fs", run_id, report.status, report.seconds)
        if failure is not None:
            raise failure
        return report
    finally:
        if work is not None:
            work.close()
        ledger_conn.close()
        if ledger is not None:
            ledger.conn.close()  # a reconnected ledger has a connection of its own


def _run_stage(
    settings: Settings,
    url: str,
    work: psycopg2.extensions.connection,
    ledger: _Ledger,
    run_id: int,
    stage: str,
    options: RunOptions,
    stop: StopRequest,
) -> tuple[StageReport, BaseException | None, psycopg2.extensions.connection]:
    """Run one stage, retrying transient errors on a fresh connection; record it in the ledger."""
    stage_log = logging.LoggerAdapter(log, {"run_id": run_id, "stage": stage})
    ctx = RunContext(run_id=run_id, options=options, log=stage_log, stop_requested=stop)
    retry = settings.pipeline.retry
    ledger.start_stage(run_id, stage)
    t0 = time.monotonic()
    failure: BaseException | None = None
    result = StageResult()
    for attempt in range(1, retry.attempts + 1):
        try:
            module = importlib.import_module(f"dwh.stages.{stage}")
            result = module.run(work, settings, ctx)
            if result.vacuum:  # VACUUM marks rows all-visible only once their commit is on disk
                with work.cursor() as cur:
                    cur.execute("SET LOCAL synchronous_commit = on")
            work.commit()
            failure = None
            break
        except BaseException as exc:
            failure = exc
            with suppress(psycopg2.Error):
                work.rollback()
            if not is_transient(exc) or attempt == retry.attempts or stop():
                break
            delay = backoff_delay(attempt, retry.base_delay_s, retry.max_delay_s)
            stage_log.warning(
                "transient error (attempt %d of %d), retrying in %.1fs: %s",
                attempt,
                retry.attempts,
                delay,
                first_line(exc),
            )
            time.sleep(delay)
            with suppress(psycopg2.Error):
                work.close()
            try:
                work = db.connect(url)
            except DatabaseUnavailable as reconnect_error:
                failure = reconnect_error
    for command, maintain, tables in (
        ("VACUUM", db.vacuum, result.vacuum),
        ("ANALYZE", db.analyze, result.analyze),
    ):
        if failure is not None or not tables:
            continue
        try:
            maintain(work, tables)
        except psycopg2.Error as exc:  # the stage's work is committed: a warning, not a failure
            with suppress(psycopg2.Error):
                work.rollback()
            stage_log.warning("%s after the stage failed: %s", command, str(exc).strip())
    seconds = round(time.monotonic() - t0, 3)
    if failure is None:
        report = StageReport(
            stage, "success", seconds, result.rows_in, result.rows_out, None, result.details
        )
    else:
        if isinstance(failure, PipelineError) and failure.stage is None:
            failure.stage = stage
        status = "cancelled" if isinstance(failure, (KeyboardInterrupt, RunCancelled)) else "failed"
        report = StageReport(stage, status, seconds, error=str(failure) or type(failure).__name__)
    ledger.finish_stage(run_id, report)
    stage_log.info(
        "%s in %.2fs (rows in %d, out %d)",
        report.status,
        report.seconds,
        report.rows_in,
        report.rows_out,
    )
    return report, failure, work
