"""Least privilege and secrets: the pipeline as a dedicated owner role (no superuser), bi_reader
reads only the warehouse, SQL never built from values, passwords never printed.

The DBA set-up these tests perform is the one docs/security.md documents.
"""

from __future__ import annotations

import ast
import re
import uuid
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors, sql
from reliability_support import (
    ROOT,
    SCHEDULER,
    admin,
    checksums,
    cli_env,
    create_database,
    diff,
    drop_database,
    query,
    rows_lost,
    run_cli,
    with_database,
)

from dwh.settings import load_settings

pytestmark = pytest.mark.reliability
FAMILY = "security"


def _databases(server_url: str) -> list[str]:
    return [r[0] for r in query(server_url, "SELECT datname FROM pg_database WHERE datallowconn")]


def _drop_role_everywhere(server_url: str, role: str) -> None:
    """DROP OWNED in every database of the cluster, then DROP ROLE (a role is cluster-wide)."""
    if not query(server_url, "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)):
        return
    for name in _databases(server_url):
        conn = admin(with_database(server_url, name))
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        finally:
            conn.close()
    conn = admin(server_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    finally:
        conn.close()


def _create_owner(server_url: str, password: str) -> tuple[str, str]:
    """The one-time DBA set-up of docs/security.md: a login role and a database it owns."""
    role = f"dwh_owner_{uuid.uuid4().hex[:8]}"
    conn = admin(server_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN PASSWORD %s NOSUPERUSER NOCREATEDB NOCREATEROLE"
                ).format(sql.Identifier(role)),
                (password,),
            )
    finally:
        conn.close()
    url = create_database(server_url, owner=role)
    return role, url


def test_pipeline_runs_as_a_dedicated_owner_role_without_superuser(
    private_server, dataset, tmp_path, outcome
) -> None:
    outcome.expected = (
        "as a NOSUPERUSER NOCREATEROLE owner: exit 0, bi_reader skipped with a warning line; "
        "once a DBA creates bi_reader, the next run grants it the warehouse"
    )
    server = private_server.url
    _drop_role_everywhere(server, "bi_reader")  # a cluster where nobody created it yet
    role, url = _create_owner(server, "owner-pw")
    owner_url = with_database(server, url.rsplit("/", 1)[1], user=role, password="owner-pw")
    data = dataset.data_dir(tmp_path, batches=1)
    env = cli_env(DATABASE_URL=owner_url)
    first = run_cli(["run", "--data-dir", str(data)], env, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (
        "DDL: cannot create role bi_reader (the pipeline's role has no CREATEROLE)" in first.stderr
    )
    assert query(
        server,
        "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = %s",
        (role,),
    ) == [(False, False, False)]
    owners = query(
        url,
        "SELECT DISTINCT nspowner::regrole::text FROM pg_namespace WHERE nspname IN ('staging','production','warehouse','ops')",
    )
    assert owners == [(role,)]
    outcome.rows_lost = rows_lost(url)
    assert diff(dataset.base, checksums(url)) == [] and outcome.rows_lost == 0

    conn = admin(server)  # the DBA creates the role once (docs/security.md)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE ROLE bi_reader NOLOGIN")
    finally:
        conn.close()
    second = run_cli(["run", "--data-dir", str(data)], env, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "bi_reader" not in second.stderr
    granted = query(
        url, "SELECT has_table_privilege('bi_reader', 'warehouse.fact_sales', 'SELECT')"
    )
    assert granted == [(True,)]
    outcome.observed = "exit 0 as owner role; warning logged; grants applied once bi_reader existed"


def test_bi_reader_reads_only_the_warehouse(dataset, pg_server_url, scratch_dbs, outcome) -> None:
    outcome.expected = (
        "bi_reader: SELECT on warehouse only; denied on staging/production/ops; no write"
    )
    url = create_database(pg_server_url, template=dataset.full_db)
    scratch_dbs.append(url)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    denied, allowed = 0, 0
    try:
        with conn.cursor() as cur:
            cur.execute("SET ROLE bi_reader")
            cur.execute(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN ('staging','production','warehouse','ops')"
            )
            tables = cur.fetchall()
            assert {s for s, _ in tables} == {"warehouse"}  # it cannot even see the others
        cur = conn.cursor()
        cur.execute("RESET ROLE")
        cur.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN ('staging','production','warehouse','ops') AND table_type = 'BASE TABLE'"
        )
        every = cur.fetchall()
        cur.execute("SET ROLE bi_reader")
        statements = []
        for schema, table in every:
            name = f"{schema}.{table}"
            if schema == "warehouse":
                cur.execute(f"SELECT count(*) FROM {name}")
                allowed += 1
                statements += [
                    f"INSERT INTO {name} DEFAULT VALUES",
                    f"DELETE FROM {name}",
                    f"TRUNCATE {name}",
                    f"UPDATE {name} SET {_first_column(conn, schema, table)} = NULL",
                ]
            else:
                statements.append(f"SELECT 1 FROM {name} LIMIT 1")
        statements += [
            "CREATE TABLE warehouse.evil (x int)",
            "CREATE TABLE public.evil (x int)",
            "CREATE SCHEMA evil",
            "CREATE VIEW warehouse.evil AS SELECT 1",
            "DROP VIEW warehouse.v_sales",
            "ALTER TABLE warehouse.fact_sales ADD COLUMN evil int",
        ]
        for statement in statements:
            with pytest.raises(errors.InsufficientPrivilege):
                cur.execute(statement)
            denied += 1
        cur.execute("SELECT count(*) FROM warehouse.v_sales")
        assert cur.fetchone()[0] > 0
    finally:
        conn.close()
    outcome.rows_lost = 0
    outcome.observed = f"{allowed} warehouse tables readable; {denied} reads/writes/DDL denied"


def _first_column(conn, schema: str, table: str) -> str:
    with conn.cursor() as cur:
        cur.execute("RESET ROLE")
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position LIMIT 1",
            (schema, table),
        )
        column = cur.fetchone()[0]
        cur.execute("SET ROLE bi_reader")
    return column


def _everything_written(tmp_path: Path, results) -> dict[str, str]:
    texts = {f"output {i}": r.stdout + r.stderr for i, r in enumerate(results)}
    for path in tmp_path.rglob("*"):
        if path.is_file() and "raw" not in path.parts:
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    return texts


def test_passwords_never_appear_in_outputs(pg_server_url, dataset, tmp_path, outcome) -> None:
    password = f"Pw-{uuid.uuid4().hex}-Zq9"
    outcome.expected = (
        "a distinctive password appears in no output, log, report, ledger row or repr"
    )
    role, url = _create_owner(pg_server_url, password)
    secret_url = with_database(pg_server_url, url.rsplit("/", 1)[1], user=role, password=password)
    dead_url = f"postgresql://{role}:{password}@127.0.0.1:9/nowhere"
    data = dataset.data_dir(tmp_path, batches=1)
    env = cli_env(DATABASE_URL=secret_url, DWH_BI_READER_PASSWORD=password)
    base = ["--data-dir", str(data)]
    try:
        results = [
            run_cli(["run", "-v", *base], env, tmp_path),
            run_cli(["run", "--dry-run", *base], env, tmp_path),
            run_cli(["status", *base], env, tmp_path),
            run_cli(["monitor", *base], env, tmp_path),
            run_cli(["db", "url", *base], env, tmp_path),
            run_cli(["--help"], env, tmp_path),
            run_cli(["run", "--database-url", secret_url, *base], cli_env(), tmp_path),
            run_cli(["run", *base], cli_env(DATABASE_URL=dead_url), tmp_path),
            run_cli(["--once", *base], cli_env(DATABASE_URL=secret_url, DWH_SCHEDULER__NEXT_BATCH="false"), tmp_path, script=SCHEDULER),
        ]  # fmt: skip
        (data / "raw" / "batch_0001" / "customers.csv").write_text("customer_id\n")
        results.append(run_cli(["run", "-v", *base], env, tmp_path))  # a failing run (exit 4)
        codes = [r.returncode for r in results]
        assert codes[0] == 0 and codes[7] == 3 and codes[-1] == 4, codes
        texts = _everything_written(tmp_path, results)
        texts["settings repr"] = repr(load_settings(database_url=secret_url, environ={}))
        texts["settings str"] = str(load_settings(database_url=secret_url, environ={}))
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                for table in (
                    "ops.pipeline_runs",
                    "ops.stage_runs",
                    "ops.health_reports",
                    "ops.alerts",
                    "ops.dq_results",
                ):
                    cur.execute(f"SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {table} t")
                    texts[table] = cur.fetchone()[0]
        finally:
            conn.close()
        leaks = [name for name, content in texts.items() if password in content]
        assert leaks == []
        assert any("***" in t for t in texts.values())  # the URL is shown, masked
        assert len(texts) > 12
    finally:
        drop_database(pg_server_url, url)
        _drop_role_everywhere(pg_server_url, role)
    outcome.rows_lost = 0
    outcome.observed = f"{len(texts)} outputs/files/ledger tables scanned ({len(results)} commands, exits {sorted(set(codes))}): 0 leaks"


# Interpolations into SQL text that were reviewed: identifiers and constants of the code or of
# the catalog, never values (values always go as parameters). Anything new fails this test
# until it is reviewed (and quoted with psycopg2.sql.Identifier where it comes from config).
REVIEWED = {
    "scripts/dwh/db.py": {"table", "name", "definition"},  # catalog names, caller constants
    "scripts/dwh/monitoring.py": {"table"},  # module constants, checked with to_regclass
    "scripts/dwh/stages/aggregates.py": {"table"},  # module constants
    "scripts/dwh/stages/analytics.py": {"query_text(path)"},  # a query file of sql/queries
    "scripts/dwh/stages/warehouse.py": {"BI_ROLE"},  # the constant 'bi_reader'
    "scripts/dwh/cleanup.py": {"verb"},  # 'DELETE FROM' or 'SELECT count(*) FROM'
}
SQL_CALLS = {"execute", "copy_expert", "SQL", "mogrify"}


def _interpolations(node: ast.AST) -> set[str] | None:
    if isinstance(node, ast.JoinedStr):
        names = {ast.unparse(v.value) for v in node.values if isinstance(v, ast.FormattedValue)}
        return names or None
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        parts = {ast.unparse(p) for p in (node.left, node.right) if not isinstance(p, ast.Constant)}
        return {p for p in parts if not p.startswith(("'", '"'))} or None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and isinstance(node.func.value, ast.Constant)
    ):
        return {ast.unparse(a) for a in node.args} | {k.arg or "" for k in node.keywords}
    return None


def test_sql_text_is_never_built_from_values(outcome) -> None:
    outcome.expected = "no SQL built with f-strings/format/+/% except reviewed identifiers"
    found: dict[str, set[str]] = {}
    calls = 0
    for path in sorted((ROOT / "scripts" / "dwh").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SQL_CALLS
                and node.args
            ):
                calls += 1
                names = _interpolations(node.args[0])
                if names:
                    found.setdefault(rel, set()).update(names)
    unreviewed = {
        f: n - REVIEWED.get(f, set()) for f, n in found.items() if n - REVIEWED.get(f, set())
    }
    assert unreviewed == {}
    # Identifiers from config are quoted: the quality checks compile with sql.Identifier.
    quality = (ROOT / "scripts" / "dwh" / "quality.py").read_text(encoding="utf-8")
    assert "sql.Identifier" in quality
    assert not re.search(r"execute\(\s*f[\"']", quality)
    outcome.rows_lost = 0
    outcome.observed = f"{calls} SQL calls scanned; {sum(map(len, found.values()))} interpolations, all reviewed identifiers"
