"""What every stage receives and returns."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunOptions:
    """Per-run choices from the command line."""

    scale: float = 1.0
    """Multiplier of the generator's volumes."""
    seed: int | None = None
    """Generator seed; None = the configured one."""
    dirty_rate: float | None = None
    """Injected defect share; None = the configured one."""
    next_batch: bool = False
    """Generate the next business day's batch before loading."""
    full_refresh: bool = False
    """Rebuild derived layers from scratch."""


@dataclass
class RunContext:
    """The run a stage is part of."""

    run_id: int
    options: RunOptions
    log: logging.LoggerAdapter
    stop_requested: Callable[[], bool] = lambda: False
    """True once SIGINT/SIGTERM asked the run to stop: a long stage may check it between batches
    and return early (its committed work stays; the run is then marked cancelled)."""


@dataclass
class StageResult:
    """What a stage reports to the run ledger."""

    rows_in: int = 0
    rows_out: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    """Free-form, JSON-serialisable facts for the report (per table counts, files …)."""
    vacuum: tuple[str, ...] = ()
    """Tables to VACUUM once the stage's work is committed (VACUUM cannot run inside it)."""
    analyze: tuple[str, ...] = ()
    """Tables to ANALYZE again once the stage's work is committed: those the stage wrote and
    then analyzed in its transaction. The server counts the rows written before that ANALYZE as
    changed since it, so without a second one the next run would find them stale again."""
