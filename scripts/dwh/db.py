"""Connections and SQL files.

`resolve_url` decides which server to use (an explicit URL, or the embedded server, started on
demand); `connect` opens a psycopg2 connection to it; `run_sql_file` executes a file from sql/;
`apply_ddl` applies sql/ddl/*.sql in name order (each file is idempotent) when they or the
catalog changed since the last application.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from dwh.exceptions import DatabaseUnavailable, PipelineError, first_line
from dwh.settings import PROJECT_ROOT, Settings, mask_url

SQL_DIR = PROJECT_ROOT / "sql"
log = logging.getLogger("dwh")
APPLICATION_NAME = "dwh-pipeline"
# Session settings for bulk, set-based work (docs/performance.md). synchronous_commit off: a
# commit returns before its WAL reaches the disk; a server crash can lose the last commits, but
# each whole (the data and its ops.* bookkeeping are in the same transaction), never half of one,
# and the next run redoes them. jit off: compiling plans costs more than it saves on these
# queries. Memory settings are only ever raised, never lowered below the server's values.
SESSION_SQL = """
SELECT set_config('synchronous_commit', 'off', false), set_config('jit', 'off', false);
SELECT set_config(name, wanted, false)
FROM pg_settings
JOIN (VALUES ('work_mem', 65536, '64MB'), ('maintenance_work_mem', 262144, '256MB'),
             ('temp_buffers', 65536, '64MB')) AS w (setting_name, wanted_kb, wanted)
  ON pg_settings.name = w.setting_name
WHERE pg_settings.setting::bigint * CASE unit WHEN '8kB' THEN 8 ELSE 1 END < w.wanted_kb;
"""


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
        reason = first_line(exc, "no answer")
        raise DatabaseUnavailable(
            f"cannot connect to {mask_url(url) if url != 'postgresql://' else 'the PG* server'}: "
            f"{reason}. Check that the server runs and the URL (--database-url / DATABASE_URL) "
            "is right"
        ) from None
    conn.autocommit = autocommit
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute(SESSION_SQL)
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


def table_is_empty(conn: psycopg2.extensions.connection, table: str) -> bool:
    """True when `table` (schema.table, a constant of the caller) holds no row."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {table})")  # table: a constant of the caller
        return bool(cur.fetchone()[0])


@contextmanager
def bulk_load(
    conn: psycopg2.extensions.connection,
    table: str,
    enabled: bool = True,
):
    """Load an empty table fast, in the caller's transaction: drop its foreign keys, its
    indexes and its primary key and unique constraints (those no foreign key references) and
    truncate it (a new file, which a server at wal_level minimal fills without WAL), run the
    load, then recreate them from their own catalog definitions (each index is built once by a
    sort, which at 1M rows costs a third of maintaining a unique index row by row; each
    foreign key is validated by one set-based query instead of a trigger per row) and ANALYZE
    the table, so the next statements plan with real statistics. A duplicate key fails the
    rebuild of its unique index, which names the key, and the transaction rolls back. The DDL
    is transactional: a failure or a kill rolls everything back with the rows. Takes an
    exclusive lock on `table` until the transaction ends, so use it only when the table is
    empty (a first load or a full refresh), where nobody can miss rows that are not there yet.
    The load must not rely on the target's unique indexes (no ON CONFLICT into it)."""
    if not enabled:
        yield
        return
    with conn.cursor() as cur:
        cur.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname",
            (table,),
        )
        foreign_keys = cur.fetchall()
        # primary key and unique constraints that no foreign key points at (a referenced one
        # stays: dropping it would need the referencing table's constraint dropped too)
        cur.execute(
            "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
            " WHERE c.conrelid = %s::regclass AND c.contype IN ('p', 'u')"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint r"
            "                 WHERE r.contype = 'f' AND r.conindid = c.conindid)"
            " ORDER BY c.contype, c.conname",
            (table,),
        )
        keys = cur.fetchall()
        cur.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " WHERE i.indrelid = %s::regclass"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
            " ORDER BY 1",
            (table,),
        )
        indexes = cur.fetchall()
        for name, _ in foreign_keys:
            cur.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
        for name, _ in keys:
            cur.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
        for name, _ in indexes:
            cur.execute(f"DROP INDEX {name}")
        # Empty it for real: a new, empty file in this transaction, which a server at
        # wal_level minimal (the embedded one) fills without WAL and syncs at commit. The
        # tables referencing it are empty too (their foreign keys say so): CASCADE only
        # satisfies TRUNCATE's rule for referenced tables.
        cur.execute(f"TRUNCATE {table} CASCADE")
    yield
    with conn.cursor() as cur:
        for name, definition in keys:
            cur.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
        for _, definition in indexes:
            cur.execute(definition)
        for name, definition in foreign_keys:
            cur.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
        cur.execute(f"ANALYZE {table}")


# The foreign keys of a table whose per-row triggers a session may skip for a set check: each
# enforced one, its column and its parent's; none when a foreign key has several columns or is
# deferrable, when the table has a trigger or rule of its own (skipped with the foreign keys'),
# or when the session may not set session_replication_role (a superuser, or granted SET on it).
_SET_CHECKABLE_FOREIGN_KEYS = """
WITH fk AS (
    SELECT c.conname,
           (SELECT nspname FROM pg_namespace WHERE oid = r.relnamespace) AS parent_schema,
           r.relname AS parent,
           (SELECT attname FROM pg_attribute
            WHERE attrelid = c.conrelid AND attnum = c.conkey[1]) AS col,
           (SELECT attname FROM pg_attribute
            WHERE attrelid = c.confrelid AND attnum = c.confkey[1]) AS parent_col,
           cardinality(c.conkey) = 1 AND NOT c.condeferrable AS checkable
    FROM pg_constraint c
    JOIN pg_class r ON r.oid = c.confrelid
    WHERE c.conrelid = %(table)s::regclass AND c.contype = 'f'
      AND (to_jsonb(c) ->> 'conenforced') IS DISTINCT FROM 'false'
)
SELECT conname, parent_schema, parent, col, parent_col FROM fk
WHERE has_parameter_privilege('session_replication_role', 'SET')
  AND NOT EXISTS (SELECT 1 FROM pg_trigger
                  WHERE tgrelid = %(table)s::regclass AND NOT tgisinternal)
  AND NOT EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = %(table)s::regclass)
  AND NOT EXISTS (SELECT 1 FROM fk WHERE NOT checkable)
ORDER BY conname
"""


@contextmanager
def foreign_keys_checked_as_a_set(
    conn: psycopg2.extensions.connection,
    table: str,
    written: str,
):
    """Write `table` in the caller's transaction with its foreign keys checked once for all the
    rows written instead of by a trigger per row (at 10M order lines, 100k lines with two
    foreign keys: 2.0 s with the triggers, 0.9 s this way). Inside the block the session skips
    triggers (session_replication_role = replica, set back after it); after it, for each
    foreign key, the parent rows of the keys of `written` (a query of the rows the block wrote,
    with their referencing columns) are locked FOR KEY SHARE in one statement, as each row's
    trigger would have locked its own (a concurrent delete of a parent waits for this
    transaction, then fails on the rows it references), and a key without a parent raises
    PipelineError: the caller rolls back. Where the triggers cannot be skipped safely (see
    _SET_CHECKABLE_FOREIGN_KEYS) they check each row as usual. The block must write only
    `table` (insert or update, never a key another table references)."""
    with conn.cursor() as cur:
        cur.execute(_SET_CHECKABLE_FOREIGN_KEYS, {"table": table})
        foreign_keys = cur.fetchall()
        if foreign_keys:
            cur.execute(
                "SELECT current_setting('session_replication_role'),"
                " set_config('session_replication_role', 'replica', true)"
            )
            role = cur.fetchone()[0]
    yield
    if not foreign_keys:
        return
    with conn.cursor() as cur:
        cur.execute("SELECT set_config('session_replication_role', %s, true)", (role,))
        for name, parent_schema, parent, col, parent_col in foreign_keys:
            cur.execute(
                sql.SQL(
                    "WITH keys AS MATERIALIZED (SELECT DISTINCT w.{col} AS k FROM ({written}) AS w"
                    "                           WHERE w.{col} IS NOT NULL)"
                    " SELECT (SELECT count(*) FROM keys)"
                    " - (SELECT count(*) FROM (SELECT 1 FROM {parent} AS p"
                    "    WHERE p.{parent_col} = ANY (ARRAY(SELECT k FROM keys))"
                    "    FOR KEY SHARE OF p) AS locked)"
                ).format(
                    col=sql.Identifier(col),
                    written=sql.SQL(written),
                    parent=sql.Identifier(parent_schema, parent),
                    parent_col=sql.Identifier(parent_col),
                )
            )
            missing = cur.fetchone()[0]
            if missing:
                raise PipelineError(
                    f"{table}: {missing} value(s) of {col} written point at no row of"
                    f" {parent_schema}.{parent} (foreign key {name}): a row they need was"
                    " deleted while they were written. Nothing of this transaction was kept;"
                    " run again.",
                    table=table,
                )


# Memory for the hash joins and aggregates of a bulk stage (SET LOCAL: its transaction only),
# so that joining and grouping millions of rows stays in memory instead of spilling to disk.
BULK_WORK_MEM = "512MB"


def use_bulk_work_mem(conn: psycopg2.extensions.connection) -> None:
    """Raise work_mem to BULK_WORK_MEM for the rest of the current transaction (never lower)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT set_config('work_mem', %s, true) FROM pg_settings"
            " WHERE name = 'work_mem' AND setting::bigint < pg_size_bytes(%s) / 1024",
            (BULK_WORK_MEM, BULK_WORK_MEM),
        )


def analyze_stale(
    conn: psycopg2.extensions.connection,
    tables: Sequence[str],
    run_id: int | None,
    share: float = 0.1,
) -> list[str]:
    """ANALYZE those of `tables` never analyzed, or analyzed before run `run_id` started and
    with `share` or more of their rows changed since (the server's counters); returns the
    ones analyzed. A table a bulk load of this run filled and analyzed is fresh. (Its
    counters cannot tell: the rows a transaction wrote before its own ANALYZE are counted
    as changes when it commits.)"""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT t FROM unnest(%(tables)s::text[]) WITH ORDINALITY AS u (t, n)"
            " LEFT JOIN pg_stat_user_tables s ON s.relid = t::regclass"
            " CROSS JOIN LATERAL (SELECT greatest(s.last_analyze, s.last_autoanalyze) AS at) a"
            " WHERE a.at IS NULL"
            " OR (a.at < coalesce((SELECT started_at FROM ops.pipeline_runs"
            "                      WHERE run_id = %(run)s), 'infinity')"
            "     AND s.n_mod_since_analyze >= %(share)s * greatest(s.n_live_tup, 1))"
            " ORDER BY u.n",
            {"tables": list(tables), "run": run_id, "share": share},
        )
        stale = [row[0] for row in cur.fetchall()]
        if stale:
            cur.execute(_on_tables(sql.SQL("ANALYZE"), stale))
    return stale


def _on_tables(command: sql.SQL, tables: Sequence[str]) -> sql.Composed:
    """`command` (ANALYZE, VACUUM) on "schema.table" names, quoted."""
    names = (sql.Identifier(*name.split(".")) for name in tables)
    return sql.SQL("{} {}").format(command, sql.SQL(", ").join(names))


def flush_table_statistics(conn: psycopg2.extensions.connection) -> None:
    """End the current transaction so that this session's table counters (rows inserted,
    updated, deleted) reach the server's statistics: at once on PostgreSQL 15+ (forced for when
    the session is idle, right after this commit), within half a second before."""
    with conn.cursor() as cur:
        if conn.server_version >= 150000:
            cur.execute("SELECT pg_stat_force_next_flush()")
    conn.commit()


def analyze(conn: psycopg2.extensions.connection, tables: Sequence[str]) -> None:
    """ANALYZE `tables` after the committed work of this session is counted in their
    statistics, so that ANALYZE resets their count of rows changed since the last one."""
    flush_table_statistics(conn)
    with conn.cursor() as cur:
        cur.execute(_on_tables(sql.SQL("ANALYZE"), tables))
    conn.commit()


def vacuum(conn: psycopg2.extensions.connection, tables: Sequence[str]) -> None:
    """VACUUM `tables` (committed work only: VACUUM cannot run inside a transaction, so the
    connection is switched to autocommit for it). After a bulk load it sets the visibility map,
    so that index-only scans skip the heap at once instead of after autovacuum's visit."""
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(_on_tables(sql.SQL("VACUUM"), tables))
    finally:
        conn.autocommit = autocommit


def run_sql_file_row(
    conn: psycopg2.extensions.connection,
    relative: str,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Execute a (multi-statement) file under sql/; returns its last statement's row as a dict
    ({} when it returns none), for files that end by reporting their counts."""
    text = sql_path(relative).read_text(encoding="utf-8")
    with conn.cursor() as cur:
        cur.execute(text, params if params is not None else None)
        row = cur.fetchone() if cur.description is not None else None
        if row is None:
            return {}
        return {col.name: value for col, value in zip(cur.description, row, strict=True)}


# What the DDL creates, as the catalog shows it: every table, view, index and sequence of the
# loader's schemas (by oid, so a dropped and recreated one differs), its columns and grants, the
# functions, and whether the role the DDL grants the warehouse to exists (a DBA may create it
# later). Read from the catalog only: it takes no lock on any table.
_CATALOG_SIGNATURE = """
WITH loader AS (
    SELECT oid FROM pg_namespace WHERE nspname IN ('staging', 'production', 'warehouse', 'ops')
)
SELECT md5(concat_ws('|',
    (SELECT string_agg(c.oid || ':' || c.relkind::text || ':' || coalesce(c.relacl::text, '')
                       || ':' || (SELECT count(*) FROM pg_attribute a
                                  WHERE a.attrelid = c.oid AND a.attnum > 0
                                    AND NOT a.attisdropped),
                       ',' ORDER BY c.oid)
     FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM loader)),
    (SELECT string_agg(p.oid::text, ',' ORDER BY p.oid)
     FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM loader)),
    to_regrole('bi_reader') IS NOT NULL))
"""
_DDL_IS_CURRENT_SQL = (
    "SELECT EXISTS (SELECT 1 FROM ops.ddl_applied WHERE checksum = %s AND catalog = ("
    + _CATALOG_SIGNATURE
    + "))"
)
_DDL_APPLIED_SQL = (
    "INSERT INTO ops.ddl_applied (checksum, catalog) VALUES (%s, ("
    + _CATALOG_SIGNATURE
    + ")) ON CONFLICT (singleton) DO UPDATE"
    " SET checksum = excluded.checksum, catalog = excluded.catalog,"
    " applied_at = excluded.applied_at"
)


def ddl_checksum() -> str:
    """sha256 of the names and contents of sql/ddl/*.sql, in the order they are applied."""
    digest = hashlib.sha256()
    for path in sorted((SQL_DIR / "ddl").glob("*.sql")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _ddl_is_current(cur: psycopg2.extensions.cursor, checksum: str) -> bool:
    """The files and the catalog are those the last application left."""
    cur.execute("SELECT to_regclass('ops.ddl_applied') IS NOT NULL")
    if not cur.fetchone()[0]:
        return False
    cur.execute(_DDL_IS_CURRENT_SQL, (checksum,))
    return bool(cur.fetchone()[0])


def apply_ddl(conn: psycopg2.extensions.connection, force: bool = False) -> list[str]:
    """Apply every sql/ddl/*.sql in name order, in one transaction; returns the file names.

    Skipped (returns []) when the files and the catalog of the loader's schemas are those the
    last application left (ops.ddl_applied), unless `force`: the DDL's statements lock every
    large table against VACUUM, so applying it on every run made each run wait for, and cancel,
    the autovacuum of the tables the previous run had written. A table, view, index, column or
    grant dropped by hand, or the role bi_reader created by a DBA, changes the catalog, so the
    next run applies the DDL again.
    """
    checksum = ddl_checksum()
    applied = []
    with conn:
        with conn.cursor() as cur:
            # Serialise concurrent DDL runs (two first runs at once on a fresh database).
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('dwh.apply_ddl'))")
            if not force and _ddl_is_current(cur, checksum):
                return applied
        for path in sorted((SQL_DIR / "ddl").glob("*.sql")):
            run_sql_file(conn, f"ddl/{path.name}")
            applied.append(path.name)
        with conn.cursor() as cur:
            cur.execute(_DDL_APPLIED_SQL, (checksum,))
    # A DDL file raises a WARNING for what it had to skip (e.g. no CREATEROLE for bi_reader).
    for notice in conn.notices:
        if notice.startswith("WARNING:"):
            log.warning("DDL: %s", notice.removeprefix("WARNING:").strip())
    del conn.notices[:]
    return applied
