"""Fixtures of the reliability suite, and the recorder of its results.

Every test asks for `outcome`, states its family, case and expected outcome, and fills in what it
observed and the rows lost. Pass/fail comes from pytest itself. At the end of the session the
results go to tests/reliability/results.json, from which tests/reliability/report.py renders
docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
from reliability_support import (
    checksums,
    cli_env,
    create_database,
    database_of,
    drop_database,
    run_cli,
)

RESULTS_PATH = Path(__file__).with_name("results.json")


@dataclass
class Outcome:
    family: str
    case: str
    test: str
    expected: str = ""
    observed: str = ""
    rows_lost: int | None = None
    passed: bool | None = None
    seconds: float = 0.0
    failure: str = ""
    extra: dict = field(default_factory=dict)


_RESULTS: list[Outcome] = []


@pytest.fixture
def outcome(request) -> Iterator[Outcome]:
    family = getattr(request.module, "FAMILY", request.module.__name__)
    case = request.node.callspec.id if hasattr(request.node, "callspec") else request.node.name
    if case.startswith("test_"):
        case = case[5:].replace("_", " ")
    record = Outcome(family=family, case=case, test=request.node.nodeid)
    request.node._reliability = record
    _RESULTS.append(record)
    yield record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    record: Outcome | None = getattr(item, "_reliability", None)
    if record is None:
        return
    record.seconds = round(record.seconds + report.duration, 2)
    if report.when == "call" or (report.when == "setup" and report.failed):
        record.passed = report.passed
        if report.failed:
            text = str(report.longrepr).strip().splitlines()
            record.failure = (text[-1] if text else "failed")[:300]
    elif report.when == "teardown" and report.failed:
        record.passed = False
        record.failure = "teardown failed"


def pytest_sessionfinish(session, exitstatus):
    if not _RESULTS:
        return
    done = [r for r in _RESULTS if r.passed is not None]
    payload = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "server": "TEST_DATABASE_URL" if os.environ.get("TEST_DATABASE_URL") else "embedded",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cases": [asdict(r) for r in done],
    }
    RESULTS_PATH.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


# ── datasets: two generated batches and reference databases loaded without interruption ────


@dataclass(frozen=True)
class Dataset:
    raw: Path
    """raw/ with batch_0001 and batch_0002 (the next business day)."""
    base_db: str
    """Database name: batch_0001 loaded by one uninterrupted run (a template)."""
    full_db: str
    """Database name: batch_0001, then batch_0002 loaded by a second run."""
    base: dict[str, str]
    full: dict[str, str]

    def data_dir(self, tmp_path: Path, batches: int = 2) -> Path:
        data = tmp_path / "data"
        for n in range(1, batches + 1):
            name = f"batch_{n:04d}"
            shutil.copytree(self.raw / name, data / "raw" / name)
        return data


@pytest.fixture(scope="session")
def dataset(pg_server_url: str, tmp_path_factory) -> Iterator[Dataset]:
    started = time.monotonic()
    root = tmp_path_factory.mktemp("reliability-dataset")
    data = root / "data"
    env = cli_env()
    for args in (["generate"], ["generate", "--next-batch"]):
        result = run_cli([*args, "--data-dir", str(data)], env, root)
        assert result.returncode == 0, result.stderr[-3000:]
    raw_all = root / "raw-all"
    shutil.copytree(data / "raw", raw_all)
    shutil.rmtree(data / "raw" / "batch_0002")

    base_url = create_database(pg_server_url)
    full_url = None
    try:
        result = run_cli(["run", "--database-url", base_url, "--data-dir", str(data)], env, root)
        assert result.returncode == 0, result.stderr[-3000:]
        base = checksums(base_url)
        full_url = create_database(pg_server_url, template=database_of(base_url))
        shutil.copytree(raw_all / "batch_0002", data / "raw" / "batch_0002")
        result = run_cli(["run", "--database-url", full_url, "--data-dir", str(data)], env, root)
        assert result.returncode == 0, result.stderr[-3000:]
        full = checksums(full_url)
        assert base != full
        print(f"reliability dataset ready in {time.monotonic() - started:.1f}s")
        yield Dataset(raw_all, database_of(base_url), database_of(full_url), base, full)
    finally:
        drop_database(pg_server_url, base_url)
        if full_url:
            drop_database(pg_server_url, full_url)


@pytest.fixture
def scratch_dbs(pg_server_url: str) -> Iterator[list[str]]:
    """Databases a test creates (append their URLs); dropped afterwards."""
    urls: list[str] = []
    yield urls
    for url in urls:
        drop_database(pg_server_url, url)


@dataclass
class PrivateServer:
    """An embedded PostgreSQL of this suite alone: tests may stop and restart it."""

    server: object
    url: str  # maintenance database (postgres), superuser

    def restart(self) -> None:
        self.server.stop()
        self.server.start()

    def crash(self) -> None:
        """Stop without a shutdown checkpoint, as a crash does: the next start recovers from the
        WAL and, as after any crash, empties every unlogged table."""
        self.server._pg_ctl("stop", "-w", "-m", "immediate")
        self.server.start()


@pytest.fixture(scope="session")
def private_server(tmp_path_factory) -> Iterator[PrivateServer]:
    import socket
    import tempfile

    from dwh.embedded import EmbeddedServer
    from dwh.settings import load_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir = Path(tempfile.mkdtemp(prefix="dwh-rel-pg-"))
    settings = load_settings(
        data_dir=data_dir,
        environ={},
        overrides={"embedded": {"port": port, "database": "postgres"}},
    )
    server = EmbeddedServer(settings)
    server.start()
    try:
        yield PrivateServer(server, server.url("postgres"))
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
