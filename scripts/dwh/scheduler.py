"""The scheduler daemon: run the pipeline on a schedule, survive failures, catch up, stop cleanly.

Built on `schedule` for the waiting and firing; this module adds what it leaves to us:

- slots from config (`scheduler.daily_at` in an IANA `timezone`, `scheduler.every_minutes`),
  computed with zoneinfo, so daylight-saving changes are right; each slot is armed as a one-shot
  `schedule` job and re-armed after it fires;
- each tick runs dwh.orchestrator.run_pipeline (with `next_batch` so the generator writes the
  next business day first: a running daemon simulates a live shop); an exception is logged and
  alerted (check `scheduler.job`) and the daemon goes on; a tick while another run holds the
  pipeline lock (AlreadyRunning) is skipped and logged;
- the last tick and the next due slot persist in ops.scheduler_state; at start a slot missed
  while the daemon was down is run once (`scheduler.catch_up`);
- a heartbeat thread updates ops.scheduler_heartbeat and <data_dir>/scheduler.heartbeat;
- retention (dwh.cleanup) after each successful run, monitoring after each tick;
- SIGTERM/SIGINT stop it cleanly (during a run the orchestrator's own handler stops the run at
  its next safe point, then the daemon stops); `--once` runs one tick and exits.

Every collaborator that touches time or the pipeline is injectable (`clock`, `runner`) for tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg2
import psycopg2.extensions
import schedule

from dwh import alerts, db
from dwh.exceptions import AlreadyRunning, ConfigError, ExitCode, PipelineError
from dwh.settings import SchedulerSettings, Settings
from dwh.stage import RunOptions

log = logging.getLogger("dwh.scheduler")

HEARTBEAT_FILE = "scheduler.heartbeat"
JOB_CHECK = "scheduler.job"
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


# -- time ------------------------------------------------------------------------------------


class Clock:
    """The real clock; tests pass an object with the same now()."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Slot:
    """One configured schedule: daily at a wall-clock time in a zone, or every N minutes."""

    kind: str  # daily | every
    at: time | None = None
    zone: str = "UTC"
    minutes: int = 0

    def describe(self) -> str:
        if self.kind == "daily":
            return f"daily at {self.at:%H:%M} {self.zone}"
        return f"every {self.minutes} min"

    def _daily(self, day: date) -> datetime:
        assert self.at is not None
        return datetime.combine(day, self.at, tzinfo=ZoneInfo(self.zone)).astimezone(timezone.utc)

    def latest(self, now: datetime) -> datetime:
        """The latest slot at or before `now` (UTC)."""
        if self.kind == "every":
            step = self.minutes * 60
            return datetime.fromtimestamp(math.floor(now.timestamp() / step) * step, timezone.utc)
        local_day = now.astimezone(ZoneInfo(self.zone)).date()
        for back in range(0, 3):
            candidate = self._daily(local_day - timedelta(days=back))
            if candidate <= now:
                return candidate
        raise AssertionError("unreachable")

    def next(self, now: datetime) -> datetime:
        """The first slot strictly after `now` (UTC)."""
        if self.kind == "every":
            return self.latest(now) + timedelta(minutes=self.minutes)
        local_day = now.astimezone(ZoneInfo(self.zone)).date()
        for ahead in range(0, 3):
            candidate = self._daily(local_day + timedelta(days=ahead))
            if candidate > now:
                return candidate
        raise AssertionError("unreachable")


def parse_slots(cfg: SchedulerSettings) -> list[Slot]:
    """The configured schedules; a ConfigError names the bad setting."""
    slots: list[Slot] = []
    try:
        ZoneInfo(cfg.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"setting scheduler.timezone: {cfg.timezone!r} is not an IANA time zone "
            "(e.g. UTC, Europe/Berlin, America/New_York)"
        ) from None
    if cfg.daily_at.strip():
        match = _HHMM.match(cfg.daily_at.strip())
        if not match:
            raise ConfigError(
                f"setting scheduler.daily_at: {cfg.daily_at!r} is not a time HH:MM; "
                'quote it in YAML (daily_at: "02:00"), which otherwise reads 02:00 as a number'
            )
        at = time(int(match.group(1)), int(match.group(2)))
        slots.append(Slot("daily", at=at, zone=cfg.timezone))
    if cfg.every_minutes < 0:
        raise ConfigError("setting scheduler.every_minutes: must be 0 (off) or more")
    if cfg.every_minutes > 0:
        slots.append(Slot("every", minutes=cfg.every_minutes))
    if not slots:
        raise ConfigError(
            "no schedule configured: set scheduler.daily_at and/or scheduler.every_minutes"
        )
    return slots


# -- the daemon ------------------------------------------------------------------------------


@dataclass
class TickResult:
    status: str  # success | failed | skipped | cancelled
    slot: datetime
    reason: str  # schedule | catch-up | once
    message: str
    exit_code: int
    run_id: int | None = None


Runner = Callable[[Settings, RunOptions], Any]


def _run_pipeline(settings: Settings, options: RunOptions) -> Any:
    from dwh.orchestrator import run_pipeline

    return run_pipeline(settings, options)


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        runner: Runner | None = None,
        url: str | None = None,
        name: str = "default",
    ):
        self.settings = settings
        self.cfg = settings.scheduler
        self.slots = parse_slots(self.cfg)
        self.clock = clock or Clock()
        self.runner = runner or _run_pipeline
        self.name = name
        self._url = url
        self.state = "starting"
        self.started_at = self.clock.now()
        self.next_due: datetime | None = None
        self.last_slot: datetime | None = None
        self.stop_event = threading.Event()
        self._beat_lock = threading.Lock()
        self._sched = schedule.Scheduler()

    # -- database --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = db.resolve_url(self.settings)
        return self._url

    @contextmanager
    def _db(self) -> Iterator[psycopg2.extensions.connection]:
        conn = db.connect(self.url, autocommit=True)
        try:
            yield conn
        finally:
            conn.close()

    def _try_db(self, what: str, action: Callable[[psycopg2.extensions.connection], Any]) -> Any:
        """Run `action` on a fresh connection; a database problem is logged, never raised."""
        try:
            with self._db() as conn:
                return action(conn)
        except (PipelineError, psycopg2.Error) as exc:
            log.warning("scheduler: could not %s: %s", what, str(exc).strip())
            return None

    def prepare(self) -> None:
        """Create the ops tables (db.apply_ddl) and write the first heartbeat."""
        from dwh.monitoring import ensure_ddl

        def _ddl(conn: psycopg2.extensions.connection) -> None:
            conn.autocommit = False
            ensure_ddl(conn)

        self._try_db("apply the DDL", _ddl)
        self.next_due = min(s.next(self.clock.now()) for s in self.slots)
        self.beat("starting")

    def load_state(self) -> dict[str, Any] | None:
        def _load(conn: psycopg2.extensions.connection) -> dict[str, Any] | None:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT last_tick_at, last_slot_at, last_status, last_success_at, next_due_at"
                    " FROM ops.scheduler_state WHERE scheduler_name = %s",
                    (self.name,),
                )
                row = cur.fetchone()
            keys = ("last_tick_at", "last_slot_at", "last_status", "last_success_at", "next_due_at")
            return dict(zip(keys, row, strict=False)) if row else None

        return self._try_db("read ops.scheduler_state", _load)

    def _save_state(self, result: TickResult, tick_at: datetime) -> None:
        def _save(conn: psycopg2.extensions.connection) -> None:
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO ops.scheduler_state AS s (scheduler_name, last_tick_at,"
                    " last_slot_at, last_status, last_run_id, last_error, last_success_at,"
                    " next_due_at, updated_at)"
                    " VALUES (%(name)s, %(tick)s, %(slot)s, %(status)s, %(run_id)s, %(error)s,"
                    "  %(success)s, %(due)s, clock_timestamp())"
                    " ON CONFLICT (scheduler_name) DO UPDATE SET"
                    "  last_tick_at = EXCLUDED.last_tick_at, last_slot_at = EXCLUDED.last_slot_at,"
                    "  last_status = EXCLUDED.last_status, last_run_id = EXCLUDED.last_run_id,"
                    "  last_error = EXCLUDED.last_error,"
                    "  last_success_at = coalesce(EXCLUDED.last_success_at, s.last_success_at),"
                    "  next_due_at = EXCLUDED.next_due_at, updated_at = clock_timestamp()",
                    {
                        "name": self.name,
                        "tick": tick_at,
                        "slot": result.slot,
                        "status": result.status,
                        "run_id": result.run_id,
                        "error": None if result.status == "success" else result.message[:2000],
                        "success": tick_at if result.status == "success" else None,
                        "due": self.next_due,
                    },
                )

        self._try_db("write ops.scheduler_state", _save)

    # -- heartbeat -------------------------------------------------------------------------

    def beat(self, state: str | None = None) -> None:
        """Write the heartbeat file and row now (optionally with a new state)."""
        with self._beat_lock:
            if state is not None:
                self.state = state
            now = self.clock.now()
            payload = {
                "scheduler": self.name,
                "state": self.state,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": self.started_at.isoformat(timespec="seconds"),
                "beat_at": now.isoformat(timespec="seconds"),
                "interval_s": self.cfg.heartbeat_seconds,
                "next_due_at": self.next_due.isoformat(timespec="seconds")
                if self.next_due
                else None,
            }
            path = self.settings.data_dir / HEARTBEAT_FILE
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(payload) + "\n", encoding="utf-8")
                tmp.replace(path)
            except OSError as exc:
                log.warning("scheduler: cannot write %s: %s", path, exc)

        def _row(conn: psycopg2.extensions.connection) -> None:
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO ops.scheduler_heartbeat (scheduler_name, state, host, pid,"
                    " started_at, beat_at, interval_s, next_due_at)"
                    " VALUES (%(scheduler)s, %(state)s, %(host)s, %(pid)s, %(started_at)s,"
                    "  %(beat_at)s, %(interval_s)s, %(next_due_at)s)"
                    " ON CONFLICT (scheduler_name) DO UPDATE SET state = EXCLUDED.state,"
                    "  host = EXCLUDED.host, pid = EXCLUDED.pid, started_at = EXCLUDED.started_at,"
                    "  beat_at = EXCLUDED.beat_at, interval_s = EXCLUDED.interval_s,"
                    "  next_due_at = EXCLUDED.next_due_at",
                    payload,
                )

        self._try_db("write the heartbeat", _row)

    def _heartbeat_loop(self, stopped: threading.Event) -> None:
        while not stopped.wait(self.cfg.heartbeat_seconds):
            self.beat()

    # -- ticks -----------------------------------------------------------------------------

    def _options(self) -> RunOptions:
        return RunOptions(next_batch=self.cfg.next_batch)

    def tick(self, slot: datetime | None = None, reason: str = "schedule") -> TickResult:
        """Run the pipeline once; never raises (except for a programming error in here)."""
        tick_at = self.clock.now()
        slot = slot or tick_at
        self.beat("running")
        log.info("tick (%s) for slot %s: running the pipeline", reason, slot.isoformat())
        try:
            report = self.runner(self.settings, self._options())
            run_id = getattr(report, "run_id", None)
            result = TickResult(
                "success", slot, reason, f"run {run_id} succeeded", ExitCode.OK, run_id
            )
            log.info("tick (%s): run %s succeeded", reason, run_id)
        except AlreadyRunning as exc:
            result = TickResult("skipped", slot, reason, str(exc), exc.exit_code)
            log.warning("tick (%s) skipped: %s", reason, exc)
        except KeyboardInterrupt:
            result = TickResult("cancelled", slot, reason, "interrupted", ExitCode.INTERRUPTED)
            self.stop_event.set()
            log.warning("tick (%s) interrupted: the scheduler stops", reason)
        except Exception as exc:
            from dwh.orchestrator import exit_code_of

            code = exit_code_of(exc)  # a database lost after the retries: 3, as the CLI
            if code == ExitCode.INTERRUPTED:  # the run was stopped by SIGTERM/SIGINT
                result = TickResult("cancelled", slot, reason, str(exc), code)
                self.stop_event.set()
                log.warning("tick (%s) cancelled: %s; the scheduler stops", reason, exc)
            else:
                message = str(exc) or type(exc).__name__
                result = TickResult("failed", slot, reason, message, code)
                if isinstance(exc, PipelineError):
                    log.error("tick (%s) failed (exit %d): %s", reason, code, message)
                else:
                    log.exception("tick (%s) failed with an internal error", reason)
        self.last_slot = slot
        self.next_due = min(s.next(self.clock.now()) for s in self.slots)
        self._save_state(result, tick_at)
        self._alert(result)
        if result.status == "success" and self.cfg.cleanup_after_run:
            self._cleanup()
        if self.cfg.monitor_after_run and result.status != "cancelled":
            self._monitor()
        self.beat("idle")
        return result

    def _alert(self, result: TickResult) -> None:
        if result.status == "success":
            finding = alerts.Finding(None, "")
        elif result.status == "failed":
            finding = alerts.Finding(
                "critical", f"scheduled run failed (exit {result.exit_code}): {result.message}"
            )
        else:
            return
        try:
            conn = None
            with suppress(PipelineError):
                conn = db.connect(self.url)
            try:
                alerts.process(self.settings, {JOB_CHECK: finding}, now=self.clock.now(), conn=conn)
            finally:
                if conn is not None:
                    conn.close()
        except Exception:
            log.exception("scheduler: alerting failed")

    def _cleanup(self) -> None:
        from dwh.cleanup import run_cleanup

        try:
            run_cleanup(self.settings, url=self.url)  # logs what it freed
        except Exception as exc:
            log.error("retention after the run failed: %s", exc)

    def _monitor(self) -> None:
        from dwh.monitoring import run_checks

        try:
            run_checks(self.settings, self.url)
        except Exception as exc:
            log.error("monitoring after the tick failed: %s", exc)

    def catch_up(self) -> TickResult | None:
        """Run once if a slot passed since the last recorded tick (None: nothing missed)."""
        if not self.cfg.catch_up:
            return None
        state = self.load_state()
        if not state:
            return None
        reference = state["last_slot_at"] or state["last_tick_at"]
        latest = max(s.latest(self.clock.now()) for s in self.slots)
        if reference is not None and latest <= reference:
            return None
        log.info(
            "slot %s was missed while the scheduler was down (last tick %s): catching up once",
            latest.isoformat(),
            reference.isoformat() if reference else "never",
        )
        return self.tick(latest, reason="catch-up")

    # -- the loop --------------------------------------------------------------------------

    def _arm(self, slot: Slot) -> None:
        due = slot.next(self.clock.now())
        delay = max(1, math.ceil((due - self.clock.now()).total_seconds()))
        self._sched.every(delay).seconds.do(self._fire, slot, due)
        self.next_due = min(s.next(self.clock.now()) for s in self.slots)
        log.info("next %s run at %s", slot.describe(), due.isoformat())

    def _fire(self, slot: Slot, due: datetime) -> type[schedule.CancelJob]:
        if self.stop_event.is_set():
            return schedule.CancelJob
        if self.last_slot is not None and self.last_slot >= due:
            log.info("slot %s already served by another schedule", due.isoformat())
        else:
            self.tick(due)
        if not self.stop_event.is_set():
            self._arm(slot)
        return schedule.CancelJob

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("%s received: the scheduler stops", signal.Signals(signum).name)
        self.stop_event.set()

    def run_forever(self, *, install_signals: bool = True) -> int:
        """Catch up, then fire the slots until SIGTERM/SIGINT (or stop_event). Returns 0."""
        previous = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                previous[s] = signal.signal(s, self._on_signal)
        stopped = threading.Event()
        beats = threading.Thread(
            target=self._heartbeat_loop, args=(stopped,), name="heartbeat", daemon=True
        )
        try:
            self.prepare()
            log.info(
                "scheduler %s started (pid %d): %s",
                self.name,
                os.getpid(),
                "; ".join(s.describe() for s in self.slots),
            )
            beats.start()
            self.catch_up()
            for slot in self.slots:
                if not self.stop_event.is_set():
                    self._arm(slot)
            self.beat("idle")
            while not self.stop_event.is_set():
                self._sched.run_pending()
                idle = self._sched.idle_seconds
                self.stop_event.wait(1.0 if idle is None else min(max(idle, 0.05), 1.0))
        finally:
            stopped.set()
            self._sched.clear()
            self.beat("stopped")
            for s, handler in previous.items():
                signal.signal(s, handler)
            log.info("scheduler %s stopped", self.name)
        return ExitCode.OK

    def once(self) -> TickResult:
        """One tick now (for cron and tests): prepare, tick, heartbeat stopped."""
        self.prepare()
        try:
            return self.tick(reason="once")
        finally:
            self.beat("stopped")


# -- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from dwh.cli import EPILOG

    parser = argparse.ArgumentParser(
        prog="scheduler.py",
        description="Run the pipeline on the schedule of config/config.yaml (section scheduler) "
        "until SIGTERM or Ctrl-C; --once runs one tick and exits (for cron).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="PATH", help="YAML settings file")
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL URL")
    parser.add_argument("--data-dir", metavar="DIR", help="data folder (default ./data)")
    parser.add_argument(
        "--once", action="store_true", help="run one tick now and exit with the run's exit code"
    )
    parser.add_argument("--daily-at", metavar="HH:MM", help="override scheduler.daily_at")
    parser.add_argument("--timezone", metavar="ZONE", help="override scheduler.timezone")
    parser.add_argument(
        "--every-minutes", type=int, metavar="N", help="override scheduler.every_minutes"
    )
    parser.add_argument(
        "--no-catch-up", action="store_true", help="do not run a slot missed while down"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from dwh.cli import run_guarded
    from dwh.logs import setup_logging
    from dwh.settings import load_settings

    args = build_parser().parse_args(argv)
    verbosity = -1 if args.quiet else args.verbose
    setup_logging(verbosity)

    def command() -> int:
        overrides: dict[str, Any] = {}
        if args.daily_at is not None:
            overrides["daily_at"] = args.daily_at
        if args.timezone is not None:
            overrides["timezone"] = args.timezone
        if args.every_minutes is not None:
            overrides["every_minutes"] = args.every_minutes
        if args.no_catch_up:
            overrides["catch_up"] = False
        settings = load_settings(
            args.config,
            database_url=args.database_url,
            data_dir=args.data_dir,
            overrides={"scheduler": overrides} if overrides else None,
        )
        setup_logging(verbosity, settings.log_dir)
        daemon = Scheduler(settings)
        if args.once:
            result = daemon.once()
            print(json.dumps({**asdict(result), "slot": result.slot.isoformat()}))
            return result.exit_code
        return daemon.run_forever()

    return run_guarded(command)
