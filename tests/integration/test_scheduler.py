"""The scheduler daemon on a real PostgreSQL: overlap, failures, catch-up, SIGTERM, --once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import pytest

from dwh import db
from dwh.exceptions import BadInputError
from dwh.orchestrator import PIPELINE_LOCK_KEY
from dwh.scheduler import HEARTBEAT_FILE, Scheduler
from dwh.settings import PROJECT_ROOT, Settings, load_settings

pytestmark = pytest.mark.integration
UTC = timezone.utc


class FakeClock:
    def __init__(self, now: datetime):
        self.moment = now

    def now(self) -> datetime:
        return self.moment


class FakeRun:
    run_id = 41


class Runner:
    """Records calls; raises the queued exceptions first."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, settings, options):
        self.calls += 1
        assert options.next_batch is True
        if self.errors:
            raise self.errors.pop(0)
        return FakeRun()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        environ={},
        overrides={
            "scheduler": {
                "daily_at": "02:00",
                "timezone": "UTC",
                "cleanup_after_run": False,
                "monitor_after_run": False,
            }
        },
    )


def _state(db_url: str) -> dict:
    conn = psycopg2.connect(db_url)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT last_status, last_slot_at, last_run_id, last_error, next_due_at"
            " FROM ops.scheduler_state"
        )
        row = cur.fetchone()
        cur.execute("SELECT state, pid FROM ops.scheduler_heartbeat")
        beat = cur.fetchone()
    conn.close()
    keys = ("status", "slot", "run_id", "error", "next_due")
    return {**dict(zip(keys, row, strict=True)), "beat": beat}


def test_once_runs_one_tick_and_records_state_and_heartbeat(settings, db_url) -> None:
    clock = FakeClock(datetime(2025, 5, 1, 9, 0, tzinfo=UTC))
    runner = Runner()
    result = Scheduler(settings, clock=clock, runner=runner).once()
    assert (result.status, result.run_id, result.exit_code, runner.calls) == ("success", 41, 0, 1)
    state = _state(db_url)
    assert state["status"] == "success" and state["run_id"] == 41
    assert state["next_due"] == datetime(2025, 5, 2, 2, 0, tzinfo=UTC)
    assert state["beat"] == ("stopped", os.getpid())
    beat = json.loads((settings.data_dir / HEARTBEAT_FILE).read_text())
    assert beat["state"] == "stopped" and beat["next_due_at"] == "2025-05-02T02:00:00+00:00"


def test_a_tick_while_a_run_holds_the_lock_is_skipped(settings, db_url) -> None:
    conn = db.connect(db_url)
    db.apply_ddl(conn)
    holder = psycopg2.connect(db_url)
    holder.autocommit = True
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (PIPELINE_LOCK_KEY,))
        # The real run_pipeline: it finds the lock taken and raises AlreadyRunning.
        result = Scheduler(settings).once()
    finally:
        holder.close()
        conn.close()
    assert result.status == "skipped" and result.exit_code == 6
    assert "another pipeline run is in progress" in result.message
    assert _state(db_url)["status"] == "skipped"
    # A skip is not a failure: no alert.
    assert not (settings.log_dir / "alerts.log").exists()


def test_an_exception_in_a_job_is_alerted_and_the_loop_goes_on(settings, db_url) -> None:
    runner = Runner(RuntimeError("boom"), BadInputError("bad file x.csv line 3"))
    clock = FakeClock(datetime(2025, 5, 1, 9, 0, tzinfo=UTC))
    hourly = load_settings(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        environ={},
        overrides={"scheduler": {"daily_at": "", "every_minutes": 60, "monitor_after_run": False}},
    )
    daemon = Scheduler(hourly, runner=runner, clock=clock)
    daemon.prepare()
    daemon._arm(daemon.slots[0])
    for expected in ("failed", "failed", "success"):
        # Fire every armed job now, exactly as the loop's run_pending does when they are due.
        clock.moment += timedelta(hours=1)
        daemon._sched.run_all()
        assert len(daemon._sched.jobs) == 1, "the slot must be re-armed after the tick"
        assert _state(db_url)["status"] == expected
    assert runner.calls == 3
    events = [
        json.loads(line) for line in (settings.log_dir / "alerts.log").read_text().splitlines()
    ]
    # Opened once (the second failure is the same open alert), then recovered.
    assert [(e["check"], e["kind"]) for e in events] == [
        ("scheduler.job", "open"),
        ("scheduler.job", "recovered"),
    ]
    assert "boom" in events[0]["message"]


def test_a_missed_slot_is_caught_up_once(settings, db_url) -> None:
    clock = FakeClock(datetime(2025, 5, 1, 9, 0, tzinfo=UTC))
    runner = Runner()
    first = Scheduler(settings, clock=clock, runner=runner)
    first.prepare()
    assert first.catch_up() is None  # no state yet: nothing was missed
    first.tick(datetime(2025, 5, 1, 2, 0, tzinfo=UTC))
    assert runner.calls == 1

    # Down for three days: three daily slots missed, caught up once, for the latest one.
    clock.moment = datetime(2025, 5, 4, 10, 0, tzinfo=UTC)
    second = Scheduler(settings, clock=clock, runner=runner)
    second.prepare()
    result = second.catch_up()
    assert result is not None and result.reason == "catch-up"
    assert result.slot == datetime(2025, 5, 4, 2, 0, tzinfo=UTC)
    assert runner.calls == 2

    # Restarted again before the next slot: nothing to catch up.
    clock.moment += timedelta(hours=1)
    third = Scheduler(settings, clock=clock, runner=runner)
    third.prepare()
    assert third.catch_up() is None
    assert runner.calls == 2

    # catch_up: false turns it off.
    clock.moment = datetime(2025, 5, 9, 10, 0, tzinfo=UTC)
    off = load_settings(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        environ={},
        overrides={"scheduler": {"catch_up": False, "monitor_after_run": False}},
    )
    assert Scheduler(off, clock=clock, runner=runner).catch_up() is None
    assert runner.calls == 2


def test_sigterm_stops_the_daemon_cleanly(db_url, tmp_path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DWH_", "PG", "DATABASE_"))}
    env["DWH_SCHEDULER__HEARTBEAT_SECONDS"] = "1"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(PROJECT_ROOT / "scripts" / "scheduler.py"),
            "--database-url",
            db_url,
            "--data-dir",
            str(data),
            "--daily-at",
            "03:00",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    heartbeat = data / HEARTBEAT_FILE
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if heartbeat.exists() and json.loads(heartbeat.read_text())["state"] == "idle":
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        else:
            pytest.fail("the daemon never became idle")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "SIGTERM received" in stderr
    assert stderr.strip().splitlines()[-1].endswith("scheduler default stopped")
    assert json.loads(heartbeat.read_text())["state"] == "stopped"
    assert _state_beat(db_url) == ("stopped", proc.pid)


def _state_beat(db_url: str) -> tuple:
    conn = psycopg2.connect(db_url)
    with conn.cursor() as cur:
        cur.execute("SELECT state, pid FROM ops.scheduler_heartbeat")
        row = cur.fetchone()
    conn.close()
    return row
