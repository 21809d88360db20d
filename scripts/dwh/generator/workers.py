"""Jobs run in forked worker processes on the machine's other cores, results handed back in job
order, with only a few jobs under way at once (so memory stays flat).

Workers are forked, so they start at once and share the parent's data (the job function and
what it refers to are not copied through a pipe); only the jobs and their results are. Where
fork is not available, with one core, or when the process runs other threads (forking them is
unsafe), the jobs run one after the other in the calling process instead.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.pool import AsyncResult
from typing import Any, Generic, TypeVar

J = TypeVar("J")
R = TypeVar("R")

_job: Callable[[Any], Any] | None = None  # the job function, in a worker
# A worker's last result, kept until the next one is made: while it lives, the allocator keeps
# the memory the job used instead of returning it to the system (and faulting it back in, page
# by page, for the next job), which costs a fifth of a job's time.
_last: Any = None


def _install(function: Callable[[Any], Any]) -> None:
    global _job
    _job = function
    # A forked worker inherits the parent's signal handlers. The orchestrator's SIGTERM handler
    # only notes the request, so a worker would outlive the pool's terminate() (a SIGTERM) and
    # the parent would wait for it forever; Ctrl-C reaches the whole process group and is the
    # parent's to handle.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(job: Any) -> Any:
    global _last
    assert _job is not None
    _last = _job(job)
    return _last


def cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_count() -> int:
    """Worker processes to use: one per core, none (0) when forking is not possible or not
    safe (other threads running), or with a single core."""
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return 0
    cores = cpu_count()
    return min(cores, 8) if cores > 1 else 0


JOB_WAIT_S = 60  # at most, per running job, before terminate() when the caller stops early


class OrderedJobs(Generic[J, R]):
    """`function` applied to every job, in forked workers (see `worker_count`) or inline;
    iterate to get the results in job order. The first jobs start at once; use as a context
    manager so the workers end even when the caller stops early."""

    def __init__(self, function: Callable[[J], R], jobs: Iterable[J], workers: int):
        self._function = function
        self._jobs = iter(jobs)
        self._workers = workers
        self._waiting: deque[AsyncResult[R]] = deque()
        self._pool = None
        if workers > 0:
            self._pool = multiprocessing.get_context("fork").Pool(workers, _install, (function,))
            for _ in range(workers + 1):
                self._submit()

    def _submit(self) -> None:
        assert self._pool is not None
        job = next(self._jobs, None)
        if job is not None:
            self._waiting.append(self._pool.apply_async(_run, (job,)))

    def __iter__(self) -> Iterator[R]:
        if self._pool is None:
            for job in self._jobs:
                yield self._function(job)
            return
        while self._waiting:
            result = self._waiting.popleft().get()
            self._submit()
            yield result

    def close(self) -> None:
        if self._pool is not None:
            # A caller that stopped early (an error, a break) leaves jobs running. Their results
            # are read before terminate(): it stops the pool's result reader first, and a worker
            # then blocked writing a result larger than the pipe's buffer made it wait forever.
            for pending in self._waiting:
                pending.wait(JOB_WAIT_S)
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> OrderedJobs[J, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
