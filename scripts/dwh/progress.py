"""A one-line progress display on a terminal: the running stage and its elapsed time, redrawn
twice a second by a thread (or drawn once, for a stage that forks and so must run no other
thread); nothing at all when stderr is not a terminal (logs carry the same facts)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled

    @contextmanager
    def stage(self, name: str, position: int, total: int, ticking: bool = True) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        done = threading.Event()
        started = time.monotonic()

        def draw() -> None:
            while not done.wait(0.5):
                elapsed = time.monotonic() - started
                self.stream.write(f"\r[{position}/{total}] {name} … {elapsed:6.1f}s ")
                self.stream.flush()

        ticker = None
        if ticking:
            ticker = threading.Thread(target=draw, name="progress", daemon=True)
            ticker.start()
        else:
            self.stream.write(f"\r[{position}/{total}] {name} …")
            self.stream.flush()
        try:
            yield
        finally:
            done.set()
            if ticker is not None:
                ticker.join()
            self.stream.write("\r\033[K")  # clear the line; the log line that follows says it all
            self.stream.flush()
