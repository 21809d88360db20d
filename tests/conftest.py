"""Shared fixtures: a real PostgreSQL for the integration tests.

By default a session-wide embedded server is started in a temporary folder on a free port (the
same code path as the product). With TEST_DATABASE_URL set, that server is used instead. Either
way, every test that asks for `db_url` gets a brand-new database, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from psycopg2 import sql

from dwh.settings import Settings, load_settings

SMALL_GENERATOR = {
    "customers": 120,
    "products": 60,
    "transactions": 800,
    "next_batch": {
        "transactions": 40,
        "new_customers": 3,
        "new_products": 2,
        "changed_customers": 2,
        "changed_products": 2,
    },
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a maintenance database on a real server (embedded unless TEST_DATABASE_URL)."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    from dwh.embedded import EmbeddedServer

    # Its own folder, not pytest's tmp_path: pytest prunes old basetemp folders, which must
    # never pull the data directory from under a server that another session still runs.
    data_dir = Path(tempfile.mkdtemp(prefix="dwh-test-pg-"))
    settings = load_settings(
        data_dir=data_dir,
        environ={},
        overrides={"embedded": {"port": _free_port(), "database": "postgres"}},
    )
    server = EmbeddedServer(settings)
    server.start()
    try:
        yield server.url("postgres")
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def db_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"dwh_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield _with_database(pg_server_url, name)
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        admin.close()


@pytest.fixture
def make_settings(tmp_path: Path):
    """Build Settings on a temporary data folder with small generator volumes."""

    def build(database_url: str | None = None, **generator: object) -> Settings:
        return load_settings(
            data_dir=tmp_path / "data",
            database_url=database_url,
            environ={},
            overrides={"generator": {**SMALL_GENERATOR, **generator}},
        )

    return build


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg2.extensions.connection]:
    c = psycopg2.connect(db_url)
    try:
        yield c
    finally:
        c.close()
