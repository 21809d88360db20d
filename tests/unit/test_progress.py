"""The terminal progress line (no database)."""

from __future__ import annotations

import io
import threading
import time

from dwh.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_draws_the_stage_and_elapsed_time_on_a_terminal_then_clears_the_line() -> None:
    stream = _Tty()
    with Progress(stream).stage("ingest", 2, 7):
        time.sleep(1.2)
    text = stream.getvalue()
    assert "\r[2/7] ingest …" in text
    assert text.count("[2/7] ingest") >= 2  # redrawn while running
    assert text.endswith("\r\033[K")


def test_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress(stream).stage("ingest", 1, 1):
        time.sleep(0.6)
    assert stream.getvalue() == ""


def test_a_stage_without_ticking_runs_no_thread_and_draws_once() -> None:
    """The generate stage forks workers only when no other thread runs (workers.worker_count)."""
    stream = _Tty()
    before = threading.active_count()
    with Progress(stream).stage("generate", 1, 7, ticking=False):
        during = threading.active_count()
        time.sleep(0.6)
    assert during == before
    assert stream.getvalue() == "\r[1/7] generate …\r\033[K"
