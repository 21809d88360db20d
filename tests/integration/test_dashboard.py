"""The Streamlit dashboard through Streamlit's testing API (AppTest), on a real PostgreSQL:
every page renders as bi_reader on a loaded and on an empty warehouse, the Overview figures equal
the same figures queried directly, the Data quality and Pipeline health figures equal the run
ledger queried directly in ops, and the dashboard reads the warehouse schema only (the ledger
through its warehouse.v_* views), as bi_reader in read-only sessions."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboards import access as dashboard_access  # noqa: E402
from dashboards import queries  # noqa: E402
from dwh import db  # noqa: E402
from dwh.monitoring import run_checks  # noqa: E402
from dwh.orchestrator import run_pipeline  # noqa: E402
from dwh.stage import RunOptions  # noqa: E402

pytestmark = pytest.mark.integration

APP = str(ROOT / "dashboards" / "app.py")
PAGES = (
    "views/overview.py",
    "views/sales_trends.py",
    "views/products.py",
    "views/customers.py",
    "views/payments.py",
    "views/data_quality.py",
    "views/pipeline_health.py",
)
SALES_PAGES = PAGES[:5]
OPS_PAGES = PAGES[5:]
TIMEOUT_S = 120
AS_BI_READER = "Reading as **bi_reader** (read-only)"
# The views of sql/ddl/75_bi_ops_views.sql: the run ledger as BI users may see it.
OPS_VIEWS = (
    "v_pipeline_runs",
    "v_stage_runs",
    "v_quality_runs",
    "v_data_quality",
    "v_quarantine_summary",
    "v_freshness",
    "v_health",
    "v_open_alerts",
)


@pytest.fixture
def dashboard_env(monkeypatch):
    # the dashboard loads the settings from the environment: no PG* or DWH_* leftovers
    for name in [n for n in os.environ if n.startswith(("PG", "DWH_"))]:
        monkeypatch.delenv(name, raising=False)

    def point_at(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)

    return point_at


@pytest.fixture
def loaded(db_url, make_settings, dashboard_env):
    """Two runs: a history batch with a few injected defects (quarantine), then the next day;
    then monitoring (a health report), as the command line does after a run."""
    settings = make_settings(db_url, dirty_rate=0.02)
    run_pipeline(settings)
    run_pipeline(settings, RunOptions(next_batch=True))
    run_checks(settings, db_url)  # health report and open alerts (no channel: log only)
    dashboard_env(db_url)
    return db_url


def _owner_rows(url: str, query: str, params: tuple = ()) -> list[tuple]:
    """Rows queried as the pipeline's (owner) user: the ops tables themselves."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        conn.close()


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _render(at: AppTest, page: str, *, as_bi_reader: bool = True) -> AppTest:
    at.switch_page(page).run()
    assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
    assert not at.error, f"{page}: {[e.value for e in at.error]}"
    if as_bi_reader:  # no fallback to the pipeline's user, and no note about one
        assert AS_BI_READER in [c.value for c in at.sidebar.caption], page
        assert not at.sidebar.warning, f"{page}: {[w.value for w in at.sidebar.warning]}"
    return at


def _number(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def _direct_kpis(url: str, start: dt.date, end: dt.date, category: str | None = None) -> dict:
    """The Overview figures straight from fact_sales (no aggregate table)."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                SELECT coalesce(sum(f.line_total), 0), count(DISTINCT f.transaction_id),
                       count(DISTINCT c.customer_id)
                FROM warehouse.fact_sales f
                JOIN warehouse.dim_date d ON d.date_key = f.date_key
                JOIN warehouse.dim_customers c ON c.customer_key = f.customer_key
                JOIN warehouse.dim_products p ON p.product_key = f.product_key
                WHERE d.full_date BETWEEN %s AND %s AND (%s::text IS NULL OR p.category = %s)
                """,
                (start, end, category, category),
            )
            revenue, orders, customers = cur.fetchone()
    finally:
        conn.close()
    aov = (revenue / orders).quantize(Decimal("0.01")) if orders else Decimal("0.00")
    return {"revenue": revenue, "orders": orders, "aov": aov, "customers": customers}


def _check_overview(at: AppTest, url: str, category: str | None = None) -> None:
    start, end = at.date_input(key="filter_dates").value
    metrics = {m.label: m for m in at.metric}
    expected = _direct_kpis(url, start, end, category)
    assert _number(metrics["Revenue"].value) == expected["revenue"]
    assert _number(metrics["Orders"].value) == expected["orders"]
    assert _number(metrics["Average order value"].value) == expected["aov"]
    assert _number(metrics["Active customers"].value) == expected["customers"]

    length = (end - start).days + 1
    before = _direct_kpis(
        url, start - dt.timedelta(days=length), end - dt.timedelta(days=length), category
    )
    if before["revenue"]:
        change = (expected["revenue"] - before["revenue"]) / before["revenue"] * 100
        assert metrics["Revenue"].delta == f"{change:+.1f}%"
    else:
        assert not metrics["Revenue"].delta


def test_every_page_renders_on_a_loaded_warehouse(loaded):
    at = _app()
    for page in PAGES:
        _render(at, page)
        assert at.title[0].value
        assert at.get("plotly_chart"), f"{page} has no chart"
        assert not at.info, f"{page}: {[i.value for i in at.info]}"
        if page == PAGES[0]:
            _check_overview(at, loaded)
    # the whole data range: the per-product and per-customer aggregates are read
    at.switch_page(PAGES[0])
    first, last = at.date_input(key="filter_dates").min, at.date_input(key="filter_dates").max
    at.date_input(key="filter_dates").set_value((first, last)).run()
    for page in PAGES:
        _render(at, page)
        assert at.get("plotly_chart"), f"{page} has no chart over the whole range"
        if page == PAGES[0]:
            _check_overview(at, loaded)


def test_filters_apply_across_pages(loaded):
    at = _app()
    category = at.multiselect(key="filter_category").options[0]
    at.multiselect(key="filter_category").set_value([category]).run()
    _check_overview(at, loaded, category)
    for page in SALES_PAGES:
        _render(at, page)
        assert category in at.caption[0].value, page
    _render(at, "views/products.py")
    table = at.dataframe[0].value
    assert set(table["category"]) == {category}
    # state and segment filters too (every page still renders)
    at.multiselect(key="filter_state").set_value(at.multiselect(key="filter_state").options[:2])
    at.multiselect(key="filter_segment").set_value(["Regular"]).run()
    for page in PAGES:
        _render(at, page)


def test_every_page_renders_on_an_empty_database(db_url, dashboard_env):
    # no DDL yet: bi_reader may not exist on this server (the fallback is tested below)
    dashboard_env(db_url)
    at = _app()
    for page in PAGES:
        _render(at, page, as_bi_reader=False)
        assert any("make run" in i.value for i in at.info), page
        assert not at.get("plotly_chart")


def test_every_page_renders_on_an_empty_warehouse(db_url, dashboard_env):
    conn = db.connect(db_url)
    try:
        db.apply_ddl(conn)  # schemas, tables and views, no rows
    finally:
        conn.close()
    dashboard_env(db_url)
    at = _app()
    for page in SALES_PAGES:
        _render(at, page)
        assert any("make run" in i.value for i in at.info), page
    _render(at, "views/data_quality.py")
    assert any("No data-quality result" in i.value for i in at.info)
    assert any("No row has been quarantined" in m.value for m in at.success)
    _render(at, "views/pipeline_health.py")
    assert {"No stage has run yet.", "Nothing has been loaded yet."} <= {i.value for i in at.info}
    assert {m.label: m.value for m in at.metric}["Open alerts"] == "0"
    assert at.dataframe[-1].value.empty  # recent runs


def test_data_quality_page_equals_the_ledger(loaded):
    at = _render(_app(), "views/data_quality.py")
    metrics = {m.label: m.value for m in at.metric}
    (_run_id, score, grade, checks, failed), *_ = _owner_rows(
        loaded,
        """
        SELECT r.run_id,
               coalesce((p.details ->> 'quality_score')::numeric,
                        (q.details ->> 'score')::numeric),
               coalesce(p.details ->> 'quality_grade', q.details ->> 'grade'),
               (SELECT count(*) FROM ops.dq_results d WHERE d.run_id = r.run_id),
               (SELECT count(*) FROM ops.dq_results d WHERE d.run_id = r.run_id AND NOT d.passed)
        FROM ops.pipeline_runs r
        LEFT JOIN ops.stage_runs p
               ON p.run_id = r.run_id AND p.stage = 'production' AND p.status = 'success'
        LEFT JOIN ops.stage_runs q
               ON q.run_id = r.run_id AND q.stage = 'quality' AND q.status = 'success'
        WHERE p.run_id IS NOT NULL OR q.run_id IS NOT NULL
        ORDER BY r.run_id DESC
        """,
    )
    assert checks > 0
    assert metrics["Quality score (latest run)"] == f"{float(score):.1f}"
    assert metrics["Grade"] == grade
    assert _number(metrics["Checks"]) == checks
    assert _number(metrics["Failed checks"]) == failed
    # the table of the latest run's checks: the same checks and failing rows as ops.dq_results
    table = at.dataframe[-1].value
    expected = _owner_rows(
        loaded,
        "SELECT check_name, failing_rows, passed FROM ops.dq_results"
        " WHERE run_id = (SELECT max(run_id) FROM ops.dq_results)",
    )
    shown = zip(table["check_name"], table["failing_rows"], table["passed"], strict=True)
    assert sorted((c, int(f), bool(p)) for c, f, p in shown) == sorted(expected)
    assert "sample" not in table.columns and "query" not in table.columns
    # score history, quarantine by reason (its counts: test_ops_queries_equal_the_ledger),
    # checks by dimension
    assert len(at.get("plotly_chart")) == 3


def test_pipeline_health_page_equals_the_ledger(loaded):
    conn = psycopg2.connect(loaded)  # an open alert, as monitoring would raise it
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO ops.alerts (check_name, severity, message, opened_at, last_seen_at)"
                " VALUES ('test.dashboard', 'warning', 'fewer orders than usual', now(), now())"
            )
    finally:
        conn.close()
    at = _render(_app(), "views/pipeline_health.py")
    metrics = {m.label: m.value for m in at.metric}
    (run_id, status), *_ = _owner_rows(
        loaded, "SELECT run_id, status FROM ops.pipeline_runs ORDER BY run_id DESC"
    )
    assert metrics["Last run"] == f"#{run_id} {status}"
    ((last_success,),) = _owner_rows(
        loaded,
        "SELECT max(finished_at) AT TIME ZONE 'UTC' FROM ops.pipeline_runs"
        " WHERE status = 'success'",
    )
    assert metrics["Last success (UTC)"] == f"{last_success:%H:%M}"
    (health, score), *_ = _owner_rows(
        loaded, "SELECT health, score FROM ops.health_reports ORDER BY report_id DESC"
    )
    assert metrics["Health"] == f"{health} ({float(score):g})"
    ((open_alerts,),) = _owner_rows(
        loaded, "SELECT count(*) FROM ops.alerts WHERE resolved_at IS NULL"
    )
    assert open_alerts >= 1
    assert _number(metrics["Open alerts"]) == open_alerts
    alerts = at.dataframe[0].value
    assert "fewer orders than usual" in set(alerts["message"])
    runs = at.dataframe[-1].value
    expected = _owner_rows(
        loaded, "SELECT run_id, status, exit_code FROM ops.pipeline_runs ORDER BY run_id DESC"
    )
    shown = zip(runs["run_id"], runs["status"], runs["exit_code"], strict=True)
    assert [(int(r), s, int(e)) for r, s, e in shown] == expected
    assert len(at.get("plotly_chart")) == 2  # stage durations, freshness


def test_ops_queries_equal_the_ledger(loaded, make_settings):
    """Every query of the two ops pages, run as bi_reader on the warehouse.v_* views, gives what
    the same question asked of the ops tables (as their owner) gives."""
    access = dashboard_access.resolve_access(make_settings(loaded), loaded, environ={})
    endpoint = access.warehouse
    assert access.as_bi_reader

    quarantine = queries.quarantine(endpoint)
    expected = _owner_rows(
        loaded,
        """
        SELECT reason, q.table_name, count(*),
               count(*) FILTER (WHERE q.resolved_at IS NULL),
               count(*) FILTER (WHERE q.resolved_at IS NOT NULL)
        FROM ops.quarantine q CROSS JOIN LATERAL unnest(q.reason_codes) AS reason
        GROUP BY 1, 2
        """,
    )
    assert expected, "the dirty batch quarantined nothing"
    shown = quarantine[["reason", "table_name", "rows", "open_rows", "resolved_rows"]]
    assert sorted((a, b, int(c), int(d), int(e)) for a, b, c, d, e in shown.itertuples(False)) == (
        sorted(expected)
    )
    # primary_rows add up to the rows in quarantine (a row with several reasons counted once)
    ((primary,),) = _owner_rows(loaded, "SELECT count(*) FROM ops.quarantine")
    with dashboard_access.session(endpoint) as conn, conn.cursor() as cur:
        cur.execute("SELECT sum(primary_rows) FROM warehouse.v_quarantine_summary")
        assert cur.fetchone()[0] == primary

    stages = queries.stage_durations(endpoint, 1000)
    expected = _owner_rows(
        loaded, "SELECT run_id, stage, status, rows_out FROM ops.stage_runs ORDER BY run_id, stage"
    )
    shown = stages[["run_id", "stage", "status", "rows_out"]].itertuples(False)
    assert sorted(
        (int(r), s, st, None if o != o or o is None else int(o)) for r, s, st, o in shown
    ) == sorted(expected, key=lambda row: (row[0], row[1]))

    freshness = queries.freshness(endpoint).set_index("layer")["loaded_at"]
    expected = dict(
        _owner_rows(
            loaded,
            "SELECT 'staging', max(loaded_at) AT TIME ZONE 'UTC' FROM ops.ingested_files"
            " UNION ALL SELECT stage, max(finished_at) AT TIME ZONE 'UTC' FROM ops.stage_runs"
            " WHERE status = 'success' AND stage IN ('production', 'warehouse', 'aggregates')"
            " GROUP BY stage",
        )
    )
    assert {layer: freshness[layer].to_pydatetime() for layer in expected} == expected

    health = queries.health(endpoint, 1000)
    expected = _owner_rows(
        loaded, "SELECT health, score FROM ops.health_reports ORDER BY report_id DESC"
    )
    assert [
        (h, Decimal(str(s))) for h, s in zip(health["health"], health["score"], strict=True)
    ] == [(h, Decimal(s)) for h, s in expected]

    runs = queries.quality_runs(endpoint, 1000)
    ((scored,),) = _owner_rows(
        loaded,
        "SELECT count(DISTINCT run_id) FROM ops.stage_runs"
        " WHERE stage IN ('quality', 'production') AND status = 'success'",
    )
    assert len(runs) == scored
    ((results,),) = _owner_rows(loaded, "SELECT count(*) FROM ops.dq_results")
    assert int(runs["checks"].sum()) == results


def test_dashboard_sql_reads_only_the_warehouse():
    """No query of the dashboard names a schema other than warehouse (pg_catalog aside)."""
    texts = {name: value for name, value in vars(queries).items() if name.endswith("_SQL")}
    assert len(texts) > 20
    for name, text in texts.items():
        assert not re.search(r"\b(ops|staging|production|public)\.", text), name
        assert "warehouse." in text or "pg_catalog." in text, name


def test_dashboard_reads_as_bi_reader_in_read_only_sessions(loaded, make_settings):
    settings = make_settings(loaded)
    access = dashboard_access.resolve_access(settings, loaded, environ={})
    assert access.as_bi_reader and not access.notes
    with dashboard_access.session(access.warehouse) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "bi_reader"
        cur.execute("SELECT count(*) FROM warehouse.fact_sales")
        assert cur.fetchone()[0] > 0
        for view in OPS_VIEWS:  # the ledger's views: readable as bi_reader
            cur.execute(f"SELECT count(*) FROM warehouse.{view}")
        cur.execute("SELECT count(*) FROM warehouse.v_pipeline_runs")
        assert cur.fetchone()[0] == 2
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SELECT count(*) FROM production.customers")
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("CREATE TABLE public.dashboard_was_here (x int)")


def test_bi_reader_reads_the_ledger_only_through_the_views(loaded):
    """The grant model behind the ops pages, checked outside read-only sessions: bi_reader reads
    the warehouse.v_* views (owned by the pipeline's role) but no ops, staging or production
    table, and writes nothing, not even through the views that PostgreSQL could update."""
    conn = psycopg2.connect(loaded)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT c.relname, pg_get_userbyid(c.relowner) = current_user,"
                "       has_table_privilege('bi_reader', c.oid, 'SELECT')"
                " FROM pg_class c WHERE c.relnamespace = 'warehouse'::regnamespace"
                " AND c.relname = ANY (%s)",
                (list(OPS_VIEWS),),
            )
            assert sorted(cur.fetchall()) == sorted((v, True, True) for v in OPS_VIEWS)
            cur.execute(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname IN ('ops', 'staging', 'production') AND c.relkind IN ('r', 'p')"
            )
            hidden = [r[0] for r in cur.fetchall()]
            assert any(name.startswith("ops.") for name in hidden)
            assert "ops.quarantine" in hidden
            cur.execute("SET ROLE bi_reader")
            for name in hidden:
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(f"SELECT 1 FROM {name} LIMIT 1")
            cur.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'warehouse' AND table_name = 'v_quarantine_summary'"
            )
            columns = {r[0] for r in cur.fetchall()}
            assert {"batch_id", "table_name", "reason", "rows", "open_rows"} <= columns
            assert not columns & {"raw", "natural_key", "source_file", "source_line"}
            for statement in (
                "UPDATE warehouse.v_open_alerts SET message = 'x'",
                "DELETE FROM warehouse.v_pipeline_runs",
                "UPDATE warehouse.v_stage_runs SET rows_out = 0",
                "DELETE FROM warehouse.v_data_quality",
                "INSERT INTO warehouse.v_open_alerts (check_name, severity, message, opened_at,"
                " last_seen_at) VALUES ('x', 'warning', 'x', now(), now())",
                "CREATE OR REPLACE VIEW warehouse.v_open_alerts AS SELECT 1 AS alert_id",
                "DROP VIEW warehouse.v_quarantine_summary",
            ):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(statement)
    finally:
        conn.close()


def test_a_missing_role_falls_back_with_a_clear_message(loaded, make_settings, monkeypatch):
    monkeypatch.setattr(dashboard_access, "BI_ROLE", "bi_reader_that_does_not_exist")
    access = dashboard_access.resolve_access(make_settings(loaded), loaded, environ={})
    assert not access.as_bi_reader
    assert any("does not exist" in note and "make run" in note for note in access.notes)
    with dashboard_access.session(access.warehouse) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("CREATE TABLE public.dashboard_was_here (x int)")


def test_bi_reader_url_replaces_the_user():
    from dashboards.access import with_user

    assert (
        with_user("postgresql://loader:pw@db:6432/shop?sslmode=require", "bi_reader", "s/cret")
        == "postgresql://bi_reader:s%2Fcret@db:6432/shop?sslmode=require"
    )
    assert with_user("postgresql://postgres@127.0.0.1:54329/x", "bi_reader", None) == (
        "postgresql://bi_reader@127.0.0.1:54329/x"
    )
