"""How the dashboard reaches the database: as the read-only role bi_reader, read-only sessions.

The URL is the pipeline's (--database-url / DATABASE_URL / PG* / the embedded server) with the
user replaced by ``bi_reader``: no password on the embedded server (trust on 127.0.0.1),
otherwise the password from DWH_BI_READER_PASSWORD. When bi_reader cannot log in (the role is
NOLOGIN until a password is set, the normal case on the embedded server), the dashboard connects
as the pipeline's user and switches to the role with ``SET ROLE bi_reader``, so it still reads
with bi_reader's privileges. When the role does not exist (no pipeline run yet, or a server
where it may not be created), the pipeline's user is used in read-only sessions and a message
says so. Every session is read-only (default_transaction_read_only) with a statement timeout.

Every page, the data-quality and pipeline-health pages included, reads the warehouse schema
only: the run ledger is published there as views (sql/ddl/75_bi_ops_views.sql) that bi_reader
reads through the views' owner, without any grant on ops.

No Streamlit here: the module is used by the app and by the tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pandas as pd
import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from dwh.exceptions import first_line
from dwh.settings import Settings, mask_url

BI_ROLE = "bi_reader"
PASSWORD_ENV = "DWH_BI_READER_PASSWORD"
APPLICATION_NAME = "dwh-dashboard"
STATEMENT_TIMEOUT_MS = 60_000
# int2, int4, int8, float4, float8, numeric
_NUMBER_TYPES = frozenset({20, 21, 23, 700, 701, 1700})


@dataclass(frozen=True)
class Endpoint:
    """One way to open a session: a URL (secret: never shown) and an optional SET ROLE."""

    url: str
    role: str | None = None

    def describe(self) -> str:
        who = urlsplit(self.url).username or "the PG* user"
        shown = mask_url(self.url) if self.url != "postgresql://" else "the PG* server"
        return f"{shown}" + (f" (as {who}, SET ROLE {self.role})" if self.role else "")


@dataclass(frozen=True)
class Access:
    """Where every page reads from, and what to tell the user."""

    warehouse: Endpoint
    notes: tuple[str, ...] = ()
    """Warnings for the user (the dashboard could not read as bi_reader)."""
    as_bi_reader: bool = True


def with_user(url: str, user: str, password: str | None) -> str:
    """The URL with its user (and password) replaced; host, port, database and query kept."""
    parts = urlsplit(url)
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{auth}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def bi_reader_url(settings: Settings, base_url: str, environ: Mapping[str, str]) -> str:
    password = None if settings.uses_embedded else environ.get(PASSWORD_ENV) or None
    return with_user(base_url, BI_ROLE, password)


def open_session(endpoint: Endpoint, *, timeout_s: int = 10) -> psycopg2.extensions.connection:
    """A read-only, autocommit session in UTC, switched to the endpoint's role if any."""
    conn = psycopg2.connect(
        endpoint.url,
        application_name=APPLICATION_NAME,
        connect_timeout=timeout_s,
        options=f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}",
    )
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            if endpoint.role:
                cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(endpoint.role)))
    except Exception:
        conn.close()
        raise
    return conn


@contextmanager
def session(endpoint: Endpoint) -> Iterator[psycopg2.extensions.connection]:
    conn = open_session(endpoint)
    try:
        yield conn
    finally:
        conn.close()


def fetch_frame(
    endpoint: Endpoint, query: str, params: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Run one parameterised query; the rows as a DataFrame (columns from the cursor)."""
    with session(endpoint) as conn, conn.cursor() as cur:
        cur.execute(query, dict(params or {}))
        columns = [c.name for c in cur.description or ()]
        types = [c.type_code for c in cur.description or ()]
        rows: Sequence[tuple[Any, ...]] = cur.fetchall() if cur.description else []
    frame = pd.DataFrame.from_records(list(rows), columns=columns)
    for column, type_code in zip(columns, types, strict=True):
        series = frame[column]
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            # Sessions run in UTC: naive UTC times (Arrow, under st.dataframe, warns on
            # time-zone-aware pandas columns).
            frame[column] = series.dt.tz_convert(None)
        elif type_code in _NUMBER_TYPES and series.dtype == object:
            # numeric (Decimal) → float for charts; money sums stay exact to the cent here.
            frame[column] = pd.to_numeric(series.map(_decimal_to_float)).astype(float)
    return frame


def _decimal_to_float(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def resolve_access(
    settings: Settings, base_url: str, environ: Mapping[str, str] | None = None
) -> Access:
    """Decide how to read: bi_reader login, else SET ROLE bi_reader, else the pipeline's user.

    `base_url` is the pipeline's resolved URL (dwh.db.resolve_url). Raises psycopg2.Error when
    the server cannot be reached at all.
    """
    environ = os.environ if environ is None else environ
    pipeline = Endpoint(base_url)
    direct = Endpoint(bi_reader_url(settings, base_url, environ))
    try:
        open_session(direct).close()
        return Access(warehouse=direct)
    except psycopg2.OperationalError as exc:
        login_error = first_line(exc)

    # bi_reader cannot log in: decided from the pipeline user's point of view.
    with session(pipeline) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT r.oid IS NOT NULL, coalesce(pg_has_role(current_user, r.oid, 'MEMBER'), false)"
            " FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_roles r ON r.rolname = %s",
            (BI_ROLE,),
        )
        role_exists, is_member = cur.fetchone()

    if role_exists and is_member:
        return Access(warehouse=Endpoint(base_url, role=BI_ROLE))
    if not role_exists:
        note = (
            f"The read-only role {BI_ROLE} does not exist on this server yet: run the "
            "pipeline once (`make run`; it creates the role), or ask a DBA to create it "
            "(docs/bi_guide.md). Until then the dashboard reads as the pipeline's user, "
            "in read-only sessions."
        )
    else:
        note = (
            f"Cannot log in as {BI_ROLE} ({login_error}) and the pipeline's user may not "
            f"SET ROLE {BI_ROLE}: set {PASSWORD_ENV} and run the warehouse stage "
            "(docs/bi_guide.md). Until then the dashboard reads as the pipeline's user, "
            "in read-only sessions."
        )
    return Access(warehouse=pipeline, notes=(note,), as_bi_reader=False)
