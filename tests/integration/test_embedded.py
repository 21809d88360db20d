"""The embedded PostgreSQL server: init, start, stop, url, port clash, concurrent starts."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from dwh.embedded import EmbeddedServer
from dwh.exceptions import DatabaseUnavailable
from dwh.settings import load_settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(data_dir: Path, port: int):
    return load_settings(data_dir=data_dir, environ={}, overrides={"embedded": {"port": port}})


def _postmasters(pgdata: Path) -> list[int]:
    """PIDs of server processes started on pgdata (read from /proc, no ps needed)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"/postgres") and str(pgdata).encode() in args:
            found.append(int(proc.name))
    return found


def test_start_status_url_stop(tmp_path: Path) -> None:
    port = _free_port()
    server = EmbeddedServer(_settings(tmp_path, port))
    assert not server.status().running
    try:
        status = server.start()
        assert status.running and status.port == port
        assert (tmp_path / "postgres" / "PG_VERSION").exists()
        assert server.url() == f"postgresql://postgres@127.0.0.1:{port}/ecommerce_dwh"
        conn = psycopg2.connect(server.url())
        with conn.cursor() as cur:
            cur.execute("SHOW server_version_num")
            assert int(cur.fetchone()[0]) >= 150000
            cur.execute("SHOW listen_addresses")
            assert cur.fetchone()[0] == "127.0.0.1"
            # byte-order collation (fast text sorts), UTF-8 character classes
            cur.execute(
                "SELECT datcollate, datctype FROM pg_database WHERE datname = 'ecommerce_dwh'"
            )
            collate, ctype = cur.fetchone()
            assert collate == "C"
            cur.execute("SELECT 'B' < 'a', 'a' < 'é'")
            assert cur.fetchone() == (True, True)
            if ctype != "C":  # C.UTF-8 where the machine has it
                cur.execute("SELECT upper('é')")
                assert cur.fetchone()[0] == "É"
        conn.close()
        # a second start is a no-op on the running server
        assert server.start().pid == status.pid
    finally:
        stopped = server.stop()
    assert not stopped.running
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(server.url(), connect_timeout=2)


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = EmbeddedServer(_settings(tmp_path, port))
        with pytest.raises(
            DatabaseUnavailable, match=rf"port {port} on 127.0.0.1 is already in use"
        ):
            server.start()
    assert not server.status().running


def test_two_commands_at_once_start_one_server(tmp_path: Path) -> None:
    port = _free_port()
    command = [
        sys.executable,
        str(ROOT / "scripts" / "pipeline_orchestrator.py"),
        "--data-dir",
        str(tmp_path),
        "db",
        "start",
    ]
    env = {"PATH": "/usr/bin:/bin", "DWH_EMBEDDED__PORT": str(port), "HOME": str(tmp_path)}
    procs = [
        subprocess.Popen(
            command,
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        pids = {
            line.split("pid ")[1].split(",")[0]
            for out, _ in outputs
            for line in out.splitlines()
            if "pid " in line
        }
        assert len(pids) == 1, outputs
        assert len(_postmasters(tmp_path / "postgres")) == 1
    finally:
        EmbeddedServer(_settings(tmp_path, port)).stop()


def test_automatic_port_gives_each_data_folder_its_own_stable_port(tmp_path: Path) -> None:
    """Port 0 (the default): two data folders started at once never collide."""
    first = EmbeddedServer(_settings(tmp_path / "one", 0))
    second = EmbeddedServer(_settings(tmp_path / "two", 0))
    try:
        a, b = first.start(), second.start()
        assert a.running and b.running and a.port != b.port
        assert (tmp_path / "one" / ".postgres.port").read_text().strip() == str(a.port)
        first.stop()
        # the folder keeps its port across restarts, even if a lower one is free again
        assert EmbeddedServer(_settings(tmp_path / "one", 0)).start().port == a.port
        assert second.url().endswith(f":{b.port}/ecommerce_dwh")
    finally:
        first.stop()
        second.stop()
