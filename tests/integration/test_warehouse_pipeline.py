"""The whole pipeline (generate … analytics) on generated batches: the warehouse reconciles with
production, SCD2 versions follow the next batch, reruns change nothing, --full-refresh gives the
same tables, and loading the batches one by one equals loading them together (every column)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql
from test_warehouse_support import fetch, scalar, table_checksums

from dwh import db
from dwh.generator import generate_batch
from dwh.orchestrator import STAGES, run_pipeline
from dwh.stage import RunOptions
from dwh.stages.analytics import SUMMARY_NAME, query_files

pytestmark = pytest.mark.integration


@pytest.fixture
def other_db(pg_server_url: str) -> Iterator[str]:
    name = f"dwh_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield pg_server_url.rsplit("/", 1)[0] + f"/{name}"
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        admin.close()


def _check_reconciliation(conn) -> None:
    production = fetch(
        conn,
        "SELECT count(*), sum(line_total), sum(quantity) FROM production.transaction_items",
    )[0]
    fact = fetch(
        conn,
        "SELECT count(*), sum(line_total), sum(quantity) FROM warehouse.fact_sales",
    )[0]
    assert production[0] > 0
    assert fact == production
    # profit = Σ(line_total − cost × quantity) with the cost of the version each line points at
    assert (
        scalar(
            conn,
            """SELECT count(*) FROM warehouse.fact_sales f
               JOIN warehouse.dim_products p USING (product_key)
               WHERE f.profit <> f.line_total - p.cost * f.quantity""",
        )
        == 0
    )
    assert scalar(conn, "SELECT sum(profit) FROM warehouse.fact_sales") == scalar(
        conn,
        """SELECT sum(f.line_total - p.cost * f.quantity) FROM warehouse.fact_sales f
           JOIN warehouse.dim_products p USING (product_key)""",
    )
    # no unknown members, every line at the version valid on its date
    assert (
        scalar(
            conn,
            """SELECT count(*) FROM warehouse.fact_sales f
               JOIN warehouse.dim_date d USING (date_key)
               JOIN warehouse.dim_customers c USING (customer_key)
               JOIN warehouse.dim_products p USING (product_key)
               WHERE -1 IN (f.date_key, f.customer_key, f.product_key, f.payment_method_key)
                  OR NOT (d.full_date >= c.effective_from AND d.full_date < c.effective_to)
                  OR NOT (d.full_date >= p.effective_from AND d.full_date < p.effective_to)""",
        )
        == 0
    )
    revenue = fact[1]
    for table, column in (
        ("agg_daily_sales", "revenue"),
        ("agg_payment_method_daily", "revenue"),
        ("agg_discount_daily", "revenue"),
        ("agg_product_performance", "revenue"),
        ("agg_customer_metrics", "total_spent"),
        ("agg_monthly_cohorts", "revenue"),
    ):
        assert scalar(conn, f"SELECT sum({column}) FROM warehouse.{table}") == revenue, table
    assert scalar(conn, "SELECT sum(transactions) FROM warehouse.agg_daily_sales") == scalar(
        conn,
        "SELECT count(*) FROM production.transactions t WHERE EXISTS"
        " (SELECT 1 FROM production.transaction_items i WHERE i.transaction_id = t.transaction_id)",
    )
    # dim_date: whole years, no gaps, covering every order date
    first, last, days = fetch(
        conn,
        "SELECT min(full_date), max(full_date), count(*) FROM warehouse.dim_date"
        " WHERE date_key > 0",
    )[0]
    assert (first.month, first.day, last.month, last.day) == (1, 1, 12, 31)
    assert days == (last - first).days + 1
    assert fetch(
        conn,
        "SELECT min(transaction_date) >= %s AND max(transaction_date) <= %s"
        " FROM production.transactions",
        (first, last),
    ) == [(True,)]


def test_pipeline_end_to_end(db_url, make_settings, other_db, tmp_path):
    assert STAGES[-3:] == ("warehouse", "aggregates", "analytics")
    settings = make_settings(db_url)
    report = run_pipeline(settings)
    assert report.status == "success"
    # the first load analyzes the new dimensions inside its transaction, and again after it
    warehouse = next(s for s in report.stages if s.stage == "warehouse")
    assert warehouse.details["analyzed"] == ["warehouse.dim_customers", "warehouse.dim_products"]
    conn = db.connect(db_url)
    try:
        _check_reconciliation(conn)
        folder = settings.processed_dir / "analytics"
        summary = json.loads((folder / SUMMARY_NAME).read_text(encoding="utf-8"))
        assert sorted(summary) == sorted(p.stem for p in query_files())
        assert all((folder / f"{name}.csv").is_file() for name in summary)
        assert summary["top_products_by_revenue"]["rows"] == 10

        # the next business day: changed customers get a second version from that day
        report = run_pipeline(settings, RunOptions(next_batch=True))
        assert report.status == "success"
        _check_reconciliation(conn)
        business_date = scalar(
            conn, "SELECT business_date FROM ops.batches ORDER BY batch_id DESC LIMIT 1"
        )
        changed = fetch(
            conn,
            """SELECT customer_id, min(effective_to), count(*) FROM warehouse.dim_customers
               WHERE customer_id <> 'unknown' GROUP BY 1 HAVING count(*) > 1""",
        )
        assert changed, "the next batch changed no customer"
        assert {row[1] for row in changed} == {business_date}
        assert all(row[2] == 2 for row in changed)
        warehouse = next(s for s in report.stages if s.stage == "warehouse")
        assert warehouse.details["dim_customers"]["changed"] == len(changed)
        # so this run finds their statistics fresh: the load's rows are not counted as changes
        # since the load's ANALYZE (without the one after the commit they were, and the first
        # batch after every load analyzed the dimensions again)
        assert warehouse.details["analyzed"] == []
        assert warehouse.details["fact_sales"]["inserted"] == scalar(
            conn,
            "SELECT count(*) FROM production.transaction_items WHERE _batch_id = "
            "(SELECT max(batch_id) FROM ops.batches)",
        )

        # the version logs hold exactly the versions of the dimensions (a re-sent row whose
        # tracked attributes did not change logged nothing), and a rerun logs nothing
        logs = """SELECT (SELECT count(*) FROM production.customer_versions),
                         (SELECT count(*) FROM production.product_versions)"""
        dims = """SELECT (SELECT count(*) FROM warehouse.dim_customers WHERE customer_key > 0),
                         (SELECT count(*) FROM warehouse.dim_products WHERE product_key > 0)"""
        logged = fetch(conn, logs)
        assert logged == fetch(conn, dims)

        # a rerun changes nothing; a full refresh rebuilds the same tables
        before = table_checksums(conn)
        report = run_pipeline(settings)
        assert next(s for s in report.stages if s.stage == "warehouse").rows_out == 0
        assert table_checksums(conn) == before
        assert fetch(conn, logs) == logged
        run_pipeline(settings, RunOptions(full_refresh=True))
        assert table_checksums(conn) == before
        one_by_one = table_checksums(conn)
    finally:
        conn.close()

    # the same two batches loaded together give the same warehouse, every column of every table
    # (the dimensions' versions and the costs included: they come from the version logs)
    together = make_settings(other_db)
    together = type(together)(
        **{**together.__dict__, "data_dir": tmp_path / "together"}  # a separate raw folder
    )
    generate_batch(together)
    generate_batch(together, next_batch=True)
    report = run_pipeline(together, stages=STAGES[1:])
    assert report.status == "success"
    conn = db.connect(other_db)
    try:
        _check_reconciliation(conn)
        assert table_checksums(conn) == one_by_one
        run_pipeline(together, RunOptions(full_refresh=True))
        assert table_checksums(conn) == one_by_one
    finally:
        conn.close()
