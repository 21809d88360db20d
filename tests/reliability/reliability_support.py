"""Helpers of the reliability suite: the CLI as a subprocess, fault injection, checksums.

Fault injection needs no hook in the product: a one-shot trigger (`install_pause`) makes the
pipeline's own statement sleep inside its transaction, the test waits until the pipeline's
backend is in that sleep (polled in pg_stat_activity, never a timed guess), then kills the
process, stops the server or terminates the backend. A sequence makes the pause fire once
(sequences are not rolled back), so the rerun goes through.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "pipeline_orchestrator.py"
SCHEDULER = ROOT / "scripts" / "scheduler.py"
SMALL_ENV = {
    "DWH_GENERATOR__CUSTOMERS": "120",
    "DWH_GENERATOR__PRODUCTS": "60",
    "DWH_GENERATOR__TRANSACTIONS": "800",
    "DWH_GENERATOR__NEXT_BATCH__TRANSACTIONS": "40",
    "DWH_GENERATOR__NEXT_BATCH__NEW_CUSTOMERS": "3",
    "DWH_GENERATOR__NEXT_BATCH__NEW_PRODUCTS": "2",
    "DWH_GENERATOR__NEXT_BATCH__CHANGED_CUSTOMERS": "4",
    "DWH_GENERATOR__NEXT_BATCH__CHANGED_PRODUCTS": "3",
    "DWH_GENERATOR__DIRTY_RATE": "0.03",
    # Retries of transient errors: short, but enough attempts to outlast a server restart.
    "DWH_PIPELINE__RETRY__ATTEMPTS": "8",
    "DWH_PIPELINE__RETRY__BASE_DELAY_S": "0.25",
    "DWH_PIPELINE__RETRY__MAX_DELAY_S": "2",
}
APP = "dwh-pipeline"


# ── URLs and databases ─────────────────────────────────────────────────────────────────────


def with_database(
    url: str, database: str, user: str | None = None, password: str | None = None
) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        host = netloc.rsplit("@", 1)[-1]
        netloc = f"{user}:{password}@{host}" if password else f"{user}@{host}"
    return urlunsplit(parts._replace(path=f"/{database}", netloc=netloc))


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def admin(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def create_database(
    server_url: str, *, template: str | None = None, owner: str | None = None
) -> str:
    name = f"dwh_rel_{uuid.uuid4().hex[:10]}"
    conn = admin(server_url)
    try:
        with conn.cursor() as cur:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            if owner:
                query += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
            cur.execute(query)
            # A backend whose client died notices it within 100 ms even inside a statement.
            cur.execute(
                sql.SQL("ALTER DATABASE {} SET client_connection_check_interval = '100ms'").format(
                    sql.Identifier(name)
                )
            )
    finally:
        conn.close()
    return with_database(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    conn = admin(server_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(database_of(url))
                )
            )
    finally:
        conn.close()


# ── the command line ───────────────────────────────────────────────────────────────────────


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DWH_", "PG", "DATABASE_URL"))}
    return {**env, **SMALL_ENV, **extra}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


class Cli:
    """One pipeline process at a time, its output in files (no pipe can fill up)."""

    def __init__(self, args: list[str], env: dict[str, str], out_dir: Path, script: Path = SCRIPT):
        out_dir.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:6]
        self.out = out_dir / f"cli-{tag}.out"
        self.err = out_dir / f"cli-{tag}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), *args], stdout=out, stderr=err, env=env, cwd=ROOT
            )

    def wait(self, timeout: float = 240) -> Result:
        self.proc.wait(timeout=timeout)
        return Result(
            self.proc.returncode,
            self.out.read_text(errors="replace"),
            self.err.read_text(errors="replace"),
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def alive(self) -> bool:
        return self.proc.poll() is None


def run_cli(args: list[str], env: dict[str, str], out_dir: Path, script: Path = SCRIPT) -> Result:
    cli = Cli(args, env, out_dir, script)
    try:
        return cli.wait()
    finally:
        cli.kill()


@contextmanager
def running(
    args: list[str], env: dict[str, str], out_dir: Path, script: Path = SCRIPT
) -> Iterator[Cli]:
    cli = Cli(args, env, out_dir, script)
    try:
        yield cli
    finally:
        cli.kill()


# ── fault injection ───────────────────────────────────────────────────────────────────────

PAUSE_FUNCTION = """
CREATE SEQUENCE IF NOT EXISTS public.reliability_pause_fired;
CREATE TABLE IF NOT EXISTS public.reliability_release (released boolean);
CREATE OR REPLACE FUNCTION public.reliability_pause() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('public.reliability_pause_fired') = 1 THEN
        -- Sleep until released (release_pause) or TG_ARGV[0] seconds have passed.
        FOR i IN 1 .. ceil(TG_ARGV[0]::double precision * 20)::int LOOP
            EXIT WHEN EXISTS (SELECT 1 FROM public.reliability_release);
            PERFORM pg_sleep(0.05);
        END LOOP;
    END IF;
    RETURN NEW;
END
$$;
"""


def install_pause(
    url: str,
    table: str,
    *,
    timing: str = "AFTER",
    events: str = "INSERT OR UPDATE",
    row_when: str | None = None,
    seconds: float = 120,
) -> None:
    """Make the first statement (or row, with row_when) on `table` sleep inside its transaction."""
    conn = admin(url)
    try:
        with conn.cursor() as cur:
            cur.execute(PAUSE_FUNCTION)
            cur.execute("ALTER SEQUENCE public.reliability_pause_fired RESTART")
            cur.execute("TRUNCATE public.reliability_release")
            level = f"FOR EACH ROW WHEN ({row_when})" if row_when else "FOR EACH STATEMENT"
            cur.execute(f"DROP TRIGGER IF EXISTS reliability_pause ON {table}")
            cur.execute(
                f"CREATE TRIGGER reliability_pause {timing} {events} ON {table} {level}"
                f" EXECUTE FUNCTION public.reliability_pause('{float(seconds)}')"
            )
    finally:
        conn.close()


def release_pause(url: str) -> None:
    """Let a paused statement continue."""
    conn = admin(url)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO public.reliability_release VALUES (true)")
    finally:
        conn.close()


def remove_pause(url: str, table: str) -> None:
    conn = admin(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TRIGGER IF EXISTS reliability_pause ON {table}")
    finally:
        conn.close()


def pipeline_backends(conn, database: str, *, sleeping: bool = False) -> list[int]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s"
            " AND pid <> pg_backend_pid()" + (" AND wait_event = 'PgSleep'" if sleeping else ""),
            (database, APP),
        )
        return [r[0] for r in cur.fetchall()]


def wait_for_pause(url: str, cli: Cli | None = None, timeout: float = 90) -> int:
    """Poll until a pipeline backend sleeps in the injected pause; returns its pid."""
    conn = admin(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = pipeline_backends(conn, database_of(url), sleeping=True)
            if pids:
                return pids[0]
            if cli is not None and not cli.alive():
                result = cli.wait()
                raise AssertionError(
                    f"the pipeline ended (exit {result.returncode}) before reaching the pause:\n"
                    f"{result.stderr[-3000:]}"
                )
            time.sleep(0.02)
        raise AssertionError("the pipeline never reached the injected pause")
    finally:
        conn.close()


def wait_until_gone(url: str, timeout: float = 15) -> None:
    """Wait until the pipeline's backends have ended (a killed client's backend notices within
    client_connection_check_interval); terminate stragglers after the timeout."""
    conn = admin(url)
    try:
        deadline = time.monotonic() + timeout
        while pipeline_backends(conn, database_of(url)):
            if time.monotonic() > deadline:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s AND application_name = %s",
                        (database_of(url), APP),
                    )
                deadline = time.monotonic() + timeout
            time.sleep(0.02)
    finally:
        conn.close()


def wait_for_ledger(
    url: str, condition_sql: str, cli: Cli | None = None, timeout: float = 90
) -> None:
    """Poll until `condition_sql` (a boolean query on the ledger) is true."""
    conn = admin(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('ops.stage_runs') IS NOT NULL")
                if cur.fetchone()[0]:
                    cur.execute(condition_sql)
                    if cur.fetchone()[0]:
                        return
            if cli is not None and not cli.alive():
                raise AssertionError(f"the pipeline ended before: {cli.wait().stderr[-2000:]}")
            time.sleep(0.005)
        raise AssertionError(f"ledger condition never true: {condition_sql}")
    finally:
        conn.close()


# ── what was loaded ────────────────────────────────────────────────────────────────────────

# Columns that legitimately differ between two loads of the same files.
VOLATILE = {
    "created_at",
    "updated_at",
    "_loaded_at",
    "quarantined_at",
    "promoted_at",
    "resolved_at",
    "queued_at",
    "run_id",
    "resolved_run_id",
    "quarantine_id",
    "source_file",
    "_source_file",
    "source_path",
    "file_id",
    "loaded_at",
    "registered_at",
    "recorded_at",
    "mtime_ns",  # the file's modification time: two datasets are written at different times
}
SURROGATE = {
    "dim_customers": "customer_key",
    "dim_products": "product_key",
    "dim_payment_method": "payment_method_key",
    "fact_sales": "sales_key",
}
# A foreign surrogate key is replaced by what it stands for.
RESOLVE = {
    "customer_key": "(SELECT d.customer_id || '@' || d.effective_from FROM warehouse.dim_customers d"
    " WHERE d.customer_key = t.customer_key)",
    "product_key": "(SELECT d.product_id || '@' || d.effective_from FROM warehouse.dim_products d"
    " WHERE d.product_key = t.product_key)",
    "payment_method_key": "(SELECT d.payment_method_name FROM warehouse.dim_payment_method d"
    " WHERE d.payment_method_key = t.payment_method_key)",
}
COMPARED_OPS = ("ops.reconciliation", "ops.quarantine", "ops.ingested_files", "ops.batches")


def _tables(cur, schemas: tuple[str, ...]) -> list[tuple[str, str]]:
    cur.execute(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE table_schema = ANY(%s) AND table_type = 'BASE TABLE' ORDER BY 1, 2",
        (list(schemas),),
    )
    return cur.fetchall()


def checksums(url: str, schemas: tuple[str, ...] = ("production", "warehouse")) -> dict[str, str]:
    """md5 of every row (as text, sorted) of every table, without surrogate keys, load
    timestamps and run ids; plus the compared ops tables and row counts."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            targets = _tables(cur, schemas) + [tuple(t.split(".")) for t in COMPARED_OPS]
            out: dict[str, str] = {}
            for schema, table in targets:
                cur.execute(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                    (schema, table),
                )
                exprs = []
                for column, data_type in cur.fetchall():
                    if column in VOLATILE or SURROGATE.get(table) == column:
                        continue
                    if column in RESOLVE and schema == "warehouse":
                        exprs.append(RESOLVE[column])
                    elif data_type == "jsonb" and column == "raw":
                        exprs.append("(t.raw - '_source_file' - '_loaded_at')::text")
                    else:
                        exprs.append(f"t.{column}::text")
                row = "concat_ws('|', " + ", ".join(f"coalesce({e}, '∅')" for e in exprs) + ")"
                cur.execute(
                    f"SELECT count(*), coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), '')"
                    f" FROM (SELECT {row} AS r FROM {schema}.{table} t) x"
                )
                count, digest = cur.fetchone()
                out[f"{schema}.{table}"] = f"{count}:{digest}"
        return out
    finally:
        conn.close()


def row_counts(
    url: str, schemas: tuple[str, ...] = ("staging", "production", "warehouse")
) -> dict[str, int]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            out = {}
            for schema, table in _tables(cur, schemas):
                cur.execute(f"SELECT count(*) FROM {schema}.{table}")
                out[f"{schema}.{table}"] = cur.fetchone()[0]
            return out
    finally:
        conn.close()


def query(url: str, text: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall()
    finally:
        conn.close()


def rows_lost(url: str) -> int:
    """Rows that went missing between layers (must be 0):

    - staged rows not accounted for as accepted + quarantined + duplicates (per table batch,
      including batches ingested but never promoted after a successful run),
    - ingested rows the staging table does not hold,
    - accepted order lines (production) missing from fact_sales.
    """
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('ops.reconciliation') IS NOT NULL")
            if not cur.fetchone()[0]:
                return 0
            lost = 0
            cur.execute(
                "SELECT coalesce(sum(abs(staged - accepted - quarantined - duplicates)), 0)"
                " FROM ops.reconciliation"
            )
            lost += int(cur.fetchone()[0])
            for table in ("customers", "products", "transactions", "transaction_items"):
                cur.execute(
                    "SELECT coalesce(sum(f.row_count), 0) FROM ops.ingested_files f"
                    " WHERE f.table_name = %s",
                    (table,),
                )
                ingested = int(cur.fetchone()[0])
                cur.execute(f"SELECT count(*) FROM staging.{table}")
                lost += abs(ingested - int(cur.fetchone()[0]))
                cur.execute(
                    "SELECT coalesce(sum(r.staged), 0) FROM ops.reconciliation r"
                    " WHERE r.table_name = %s",
                    (table,),
                )
                promoted = int(cur.fetchone()[0])
                cur.execute(
                    "SELECT coalesce(sum(f.row_count), 0) FROM ops.ingested_files f"
                    " JOIN ops.reconciliation r USING (batch_id, table_name)"
                    " WHERE f.table_name = %s",
                    (table,),
                )
                lost += abs(promoted - int(cur.fetchone()[0]))
            cur.execute("SELECT to_regclass('warehouse.fact_sales') IS NOT NULL")
            if cur.fetchone()[0]:
                cur.execute(
                    "SELECT count(*) FROM production.transaction_items i"
                    " WHERE NOT EXISTS (SELECT 1 FROM warehouse.fact_sales f"
                    " WHERE f.item_id = i.item_id)"
                )
                lost += int(cur.fetchone()[0])
            return lost
    finally:
        conn.close()


def diff(expected: dict[str, str], observed: dict[str, str]) -> list[str]:
    return sorted(
        k for k in expected.keys() | observed.keys() if expected.get(k) != observed.get(k)
    )
