"""Logging set-up: one line per event with run id and stage, to stderr and to a log file."""

from __future__ import annotations

import logging
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s run=%(run_id)s stage=%(stage)s %(message)s"


class _ContextDefaults(logging.Filter):
    """Give records logged outside a run the run_id/stage fields the format needs."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in ("run_id", "stage"):
            if not hasattr(record, name):
                setattr(record, name, "-")
        return True


def setup_logging(verbosity: int = 0, log_dir: Path | None = None) -> None:
    """verbosity: -1 quiet (warnings), 0 info, 1 debug. Idempotent."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    root = logging.getLogger("dwh")
    root.setLevel(logging.DEBUG)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
    console = logging.StreamHandler()
    console.setLevel(level)
    console.setFormatter(formatter)
    console.addFilter(_ContextDefaults())
    root.addHandler(console)
    if log_dir is not None:
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(log_dir / "pipeline.log", encoding="utf-8")
        except OSError:
            return
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(formatter)
        file_handler.addFilter(_ContextDefaults())
        root.addHandler(file_handler)
