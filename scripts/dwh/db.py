"""Connections and SQL files.

`resolve_url` decides which server to use (an explicit URL, or the embedded server, started on
demand); `connect` opens a psycopg2 connection to it; `run_sql_file` executes a file from sql/;
`apply_ddl` applies sql/ddl/*.sql in name order (each file is idempotent).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from dwh.exceptions import DatabaseUnavailable
from dwh.settings import PROJECT_ROOT, Settings, mask_url

SQL_DIR = PROJECT_ROOT / "sql"
APPLICATION_NAME = "dwh-pipeline"


def resolve_url(settings: Settings, *, start_embedded: bool = True) -> str:
    """The URL of the configured server; starts the embedded one when none is configured."""
    if settings.database_url is not None:
        return settings.database_url
    from dwh.embedded import EmbeddedServer

    server = EmbeddedServer(settings)
    if start_embedded:
        server.start()
    return server.url()


def connect(url: str, *, autocommit: bool = False) -> psycopg2.extensions.connection:
    """Open a connection; an unreachable server is a DatabaseUnavailable naming the masked URL."""
    try:
        conn = psycopg2.connect(url, application_name=APPLICATION_NAME, connect_timeout=10)
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
        raise DatabaseUnavailable(
            f"cannot connect to {mask_url(url) if url != 'postgresql://' else 'the PG* server'}: "
            f"{reason}. Check that the server runs and the URL (--database-url / DATABASE_URL) "
            "is right"
        ) from None
    conn.autocommit = autocommit
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    if not autocommit:
        conn.commit()
    return conn


def sql_path(relative: str) -> Path:
    return SQL_DIR / relative


def run_sql_file(
    conn: psycopg2.extensions.connection,
    relative: str,
    params: Mapping[str, Any] | None = None,
) -> int:
    """Execute one file under sql/ (pyformat parameters %(name)s); returns the last rowcount."""
    text = sql_path(relative).read_text(encoding="utf-8")
    with conn.cursor() as cur:
        cur.execute(text, params if params is not None else None)
        return cur.rowcount


def apply_ddl(conn: psycopg2.extensions.connection) -> list[str]:
    """Apply every sql/ddl/*.sql in name order, in one transaction; returns the file names."""
    applied = []
    with conn:
        with conn.cursor() as cur:
            # Serialise concurrent DDL runs (two first runs at once on a fresh database).
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('dwh.apply_ddl'))")
        for path in sorted((SQL_DIR / "ddl").glob("*.sql")):
            run_sql_file(conn, f"ddl/{path.name}")
            applied.append(path.name)
    return applied
