"""The slice aggregates the dashboard's filters read (agg_sales_slices, agg_order_category_sets,
agg_customer_slices and their sums over states or categories, agg_product_slices), on a real
PostgreSQL with a dirty generated dataset: every *_SLICES_SQL statement gives exactly what the
same statement on the order lines (queries.LINES_REFERENCE, fact_sales joined to the dimensions)
gives, for several filter combinations (two categories included: an order with lines in both is
one order) and date ranges (some touching neither end of the data); the Overview's customer
count from the aggregates equals the count on the order lines; and the slices refreshed batch by
batch (with customers changing segment) equal a full rebuild."""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import psycopg2
import pytest
from test_warehouse_support import fetch, scalar, table_checksums

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboards import queries  # noqa: E402
from dwh.orchestrator import run_pipeline  # noqa: E402
from dwh.stage import RunOptions  # noqa: E402
from dwh.stages.aggregates import AGGREGATES, INDEX_ONLY  # noqa: E402

pytestmark = pytest.mark.integration

# statements that exist in both forms: <NAME>_SLICES_SQL and queries.LINES_REFERENCE[<NAME>]
PAIRS = (
    "KPIS",
    "DAILY",
    "MONTHLY",
    "WEEKDAY",
    "CATEGORIES",
    "STATES",
    "PAYMENTS",
    "PAYMENTS_MONTHLY",
)
SLICE_TABLES = (
    "agg_sales_slices",
    "agg_sales_slices_any_state",
    "agg_order_category_sets",
    "agg_order_category_sets_any_state",
    "agg_sales_slices_all_dates",
    "agg_order_category_sets_all_dates",
    "agg_customer_slices",
    "agg_customer_slices_any_category",
    "agg_customer_categories",
    "agg_category_orders",
    "agg_product_slices",
    "agg_product_slicer_totals",
    "agg_customer_metrics",
)


def _rows(conn, text: str, params: dict) -> list[tuple]:
    return sorted(fetch(conn, text, params), key=repr)


def _tables_read(conn, text: str, params: dict) -> set[str]:
    """The tables a statement's plan reads (the relation of every scan node)."""
    with conn.cursor() as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + text, params)
        plan = cur.fetchone()[0]
    conn.rollback()
    tables: set[str] = set()
    nodes = [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        if "Relation Name" in node:
            tables.add(node["Relation Name"])
        nodes.extend(node.get("Plans", ()))
    return tables


def _data_range(conn) -> tuple[dt.date, dt.date]:
    return fetch(
        conn,
        "SELECT min(full_date), max(full_date) FROM warehouse.dim_date"
        " WHERE date_key IN (SELECT date_key FROM warehouse.fact_sales)",
    )[0]


def _largest(conn, column: str, table: str, limit: int) -> list[str]:
    return [
        r[0]
        for r in fetch(
            conn,
            f"SELECT {column} FROM warehouse.{table} WHERE {column} IS NOT NULL"  # constants
            f" GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT {limit}",
        )
    ]


def _segments(conn) -> dict[str, str]:
    return dict(
        fetch(conn, "SELECT customer_id, customer_segment FROM warehouse.agg_customer_metrics")
    )


def test_slices_equal_the_order_lines(db_url, make_settings):
    settings = make_settings(db_url, dirty_rate=0.02)
    run_pipeline(settings)
    run_pipeline(settings, RunOptions(next_batch=True))
    conn = psycopg2.connect(db_url)
    try:
        first, last = _data_range(conn)
        categories = _largest(conn, "category", "dim_products", 2)
        states = _largest(conn, "state", "dim_customers", 2)
        assert len(categories) == 2 and len(states) == 2
        combos = [
            {},
            {"categories": (categories[0],)},
            {"states": (states[0],)},
            {"segments": ("Regular",)},
            {"segments": ("New", "VIP")},
            {"segments": ("New", "VIP"), "states": tuple(states)},
            {"categories": (categories[1],), "states": (states[1],), "segments": ("Regular",)},
            {"categories": tuple(categories)},
            {"categories": tuple(categories), "segments": ("Regular", "VIP")},
            {"categories": tuple(categories), "states": (states[0],)},
        ]
        windows = [
            (first, last),  # all
            (last - dt.timedelta(days=29), last),  # the last 30 days
            (first, first + dt.timedelta(days=40)),  # from the first day
            (first - dt.timedelta(days=5), last + dt.timedelta(days=5)),  # wider than the data
            # touching neither end: distinct customers from agg_customer_slices.active_days
            (first + dt.timedelta(days=10), last - dt.timedelta(days=10)),
            (first + dt.timedelta(days=20), first + dt.timedelta(days=33)),
        ]
        compared = 0
        for combo in combos:
            for start, end in windows:
                filters = queries.Filters(
                    start=start, end=end, data_start=first, data_end=last, **combo
                )
                inner = start > first + dt.timedelta(days=5) and end < last
                assert filters.touches_data_edge is not inner
                params = filters.params()
                for name in PAIRS:
                    slices = _rows(conn, getattr(queries, f"{name}_SLICES_SQL"), params)
                    lines = _rows(conn, queries.LINES_REFERENCE[name], params)
                    assert slices == lines, (name, combo, start, end)
                    compared += len(lines)
                # on the lines: every product in order, of which a top three is the first three
                top = {**params, "limit": 100_000}
                lines = fetch(conn, queries.TOP_PRODUCTS_LINES_SQL, top)
                top_three = fetch(conn, queries.TOP_PRODUCTS_LINES_SQL, {**params, "limit": 3})
                assert top_three == lines[:3], (combo, start, end)
                if not combo:  # no filter: the same rows without reading the customers
                    assert fetch(conn, queries.TOP_PRODUCTS_RANGE_SQL, top) == lines, (start, end)
                    top_three = fetch(conn, queries.TOP_PRODUCTS_RANGE_SQL, {**params, "limit": 3})
                    assert top_three == lines[:3], (start, end)
                if filters.covers_all_dates and not filters.states:  # the aggregates: the same
                    routed = queries.top_products_statement(filters)
                    for statement in {routed, queries.TOP_PRODUCTS_SLICES_SQL}:
                        assert fetch(conn, statement, top) == lines, combo
                    top_three = fetch(conn, routed, {**params, "limit": 3})
                    assert top_three == lines[:3], combo
                    compared += len(lines)
                kpis = fetch(conn, queries.KPIS_SLICES_SQL, params)[0]
                if (start, end) == (first, last):  # every filter combination selects sales
                    assert kpis[0] > 0 and kpis[1] > 0 and kpis[2] > 0, combo
                if not combo and not inner:  # no filter: the Overview reads the metrics
                    lines = fetch(conn, queries.LINES_REFERENCE["KPIS"], params)
                    assert fetch(conn, queries.KPIS_AGG_SQL, params) == lines
        assert compared > 1000
        _check_customer_statements(conn, first, last, states)
        # with both categories selected, an order holding both counts once: fewer orders than the
        # two categories' orders added (so the correction of agg_order_category_sets is exercised)
        params = queries.Filters(
            start=first, end=last, data_start=first, data_end=last, categories=tuple(categories)
        ).params()
        both = fetch(conn, queries.KPIS_SLICES_SQL, params)[0][1]
        each = sum(
            fetch(conn, queries.KPIS_SLICES_SQL, {**params, "categories": [c]})[0][1]
            for c in categories
        )
        assert 0 < both < each
        assert scalar(conn, "SELECT count(*) FROM warehouse.agg_order_category_sets") > 0
        assert (
            scalar(
                conn,
                "SELECT count(*) FROM warehouse.agg_order_category_sets"
                " WHERE cardinality(categories) < 2 OR orders <= 0",
            )
            == 0
        )
        # an order with lines in several categories: the reason orders_first exists
        assert (
            scalar(
                conn,
                """SELECT count(*) FROM (
                       SELECT f.transaction_id FROM warehouse.fact_sales f
                       JOIN warehouse.dim_products p USING (product_key)
                       GROUP BY 1 HAVING count(DISTINCT p.category) > 1) x""",
            )
            > 0
        )
        # the dirty rows are in: some lines without a category or state (inferred or unknown)
        # would break a slice query that dropped NULLs
        assert scalar(conn, "SELECT sum(orders_first) FROM warehouse.agg_sales_slices") == scalar(
            conn, "SELECT count(DISTINCT transaction_id) FROM warehouse.fact_sales"
        )
        # the range statement sorts the lines itself: no index gives that order, so even with
        # sorting disabled the planner cannot read the fact in its product index's order (at 10M
        # that plan visited the fact's pages at random, 43-64 s for a year)
        with conn.cursor() as cur:
            cur.execute("SET enable_sort = off")
            cur.execute("EXPLAIN " + queries.TOP_PRODUCTS_RANGE_SQL, {**params, "limit": 10})
            plan = "\n".join(row[0] for row in cur.fetchall())
            cur.execute("RESET enable_sort")
        assert "fact_sales_product_idx" not in plan, plan
        # distinct customers of categories over a range touching neither end of the data,
        # without a segment: agg_category_orders' rows in the range, not agg_customer_slices'
        # days with orders (compared with the order lines above); with a segment, or over a
        # range touching an end, agg_customer_slices
        inside = queries.Filters(
            start=first + dt.timedelta(days=10),
            end=last - dt.timedelta(days=10),
            data_start=first,
            data_end=last,
            categories=tuple(categories),
        )
        for filters, table in (
            (inside, "agg_category_orders"),
            (replace(inside, segments=("Regular",)), "agg_customer_slices"),
            (replace(inside, categories=tuple(categories[:1])), "agg_category_orders"),
            (
                replace(inside, categories=tuple(categories[:1]), segments=("VIP",)),
                "agg_customer_slices",
            ),
            (replace(inside, end=last), "agg_customer_slices"),
        ):
            for statement in (queries.KPIS_SLICES_SQL, queries.STATES_SLICES_SQL):
                tables = _tables_read(conn, statement, filters.params())
                other = {"agg_category_orders", "agg_customer_slices"} - {table}
                assert table in tables and not other & tables, (filters, tables)
    finally:
        conn.close()


# The customers of the Customers page as the dashboard read them before it skipped the dimension
# join without a state filter: the reference for RFM_SQL and the LTV statements.
_CUSTOMERS_JOINED = """
customers AS (
    SELECT m.*, c.state
    FROM warehouse.agg_customer_metrics AS m
    LEFT JOIN warehouse.dim_customers AS c ON c.customer_id = m.customer_id AND c.is_current
    WHERE (%(states)s::text[] IS NULL OR c.state = ANY (%(states)s::text[]))
      AND (%(segments)s::text[] IS NULL OR m.customer_segment = ANY (%(segments)s::text[]))
)"""


def _check_customer_statements(conn, first, last, states) -> None:
    """RFM and LTV statements (no dimension join unless a state is selected) equal the same
    statements on the metrics joined to the current customer versions, for each filter."""
    statements = (queries.RFM_SQL, queries.LTV_DISTRIBUTION_SQL, queries.LTV_SUMMARY_SQL)
    counts = []
    for combo in (
        {},
        {"states": (states[0],)},
        {"segments": ("Regular",)},
        {"states": tuple(states), "segments": ("New", "VIP")},
    ):
        params = {
            **queries.Filters(start=first, end=last, **combo).params(),
            "buckets": queries.LTV_BUCKETS,
        }
        for text in statements:
            assert queries._CUSTOMERS in text
            reference = text.replace(queries._CUSTOMERS, _CUSTOMERS_JOINED)
            assert _rows(conn, text, params) == _rows(conn, reference, params), (text, combo)
        counts.append(fetch(conn, queries.LTV_SUMMARY_SQL, params)[0][0])
    assert counts[0] > counts[1] > 0 and counts[0] > counts[2] > 0  # the filters select


def test_routing_reads_the_slices_for_every_filter_and_range(monkeypatch):
    issued: list[str] = []

    def fake_fetch(endpoint, query, params=None):
        issued.append(query)
        return pd.DataFrame([{"revenue": 0, "orders": 0, "customers": 0}])

    monkeypatch.setattr(queries, "fetch_frame", fake_fetch)
    day = dt.date(2025, 1, 1)
    edge = {"data_start": day, "data_end": day + dt.timedelta(days=100)}
    one = queries.Filters(start=day, end=day + dt.timedelta(days=9), categories=("A",), **edge)
    two = queries.Filters(start=day, end=day + dt.timedelta(days=9), categories=("A", "B"), **edge)
    inside = queries.Filters(
        start=day + dt.timedelta(days=10), end=day + dt.timedelta(days=20), states=("X",), **edge
    )
    assert one.touches_data_edge and two.touches_data_edge
    assert not inside.touches_data_edge  # customers: neither end of the data in the range
    # any number of categories: the slices (orders corrected by agg_order_category_sets)
    for filters in (one, two, inside):
        queries.daily(None, filters)
        assert issued[-1] is queries.DAILY_SLICES_SQL
        queries.payments_monthly(None, filters)
        assert issued[-1] is queries.PAYMENTS_MONTHLY_SLICES_SQL
        # distinct customers over any range: agg_customer_slices (by the days with orders when
        # the range touches neither end of the data)
        queries.kpis(None, filters)
        assert issued[-1] is queries.KPIS_SLICES_SQL
        queries.spend_by_state(None, filters)
        assert issued[-1] is queries.STATES_SLICES_SQL
    assert [f.params()["inner_range"] for f in (one, two, inside)] == [False, False, True]
    # top products over all dates without a state: agg_product_slicer_totals for one slicer,
    # agg_product_slices for both; else the order lines (without the customers when no filter)
    everything = replace(one, start=edge["data_start"], end=edge["data_end"])
    for filters, statement in (
        (replace(everything, categories=()), queries.TOP_PRODUCTS_AGG_SQL),
        (everything, queries.TOP_PRODUCTS_SLICER_SQL),
        (replace(everything, categories=("A", "B")), queries.TOP_PRODUCTS_SLICERS_SQL),
        (replace(everything, categories=(), segments=("VIP",)), queries.TOP_PRODUCTS_SLICER_SQL),
        (replace(everything, segments=("VIP",)), queries.TOP_PRODUCTS_SLICES_SQL),
        (replace(everything, states=("X",)), queries.TOP_PRODUCTS_LINES_SQL),
        (one, queries.TOP_PRODUCTS_LINES_SQL),
        (replace(one, categories=()), queries.TOP_PRODUCTS_RANGE_SQL),
    ):
        queries.top_products(None, filters)
        assert issued[-1] is statement, filters
    # without a filter: agg_customer_metrics when the range touches an end of the data
    queries.kpis(None, replace(one, categories=()))
    assert issued[-1] is queries.KPIS_AGG_SQL
    queries.kpis(None, replace(inside, states=()))
    assert issued[-1] is queries.KPIS_SLICES_SQL


def test_refreshes_leave_the_aggregates_read_by_index_only_scans_vacuumed(db_url, make_settings):
    """VACUUM cannot run in the stage's transaction: once it commits, the orchestrator vacuums
    every aggregate after a full rebuild, and the customer slices after a batch too, whose
    updates clear the visibility map of the pages they touch: the index-only scans the
    dashboard's customer counts use then read no heap page."""

    def heap_fetches() -> dict[str, int]:
        out = {}
        with conn.cursor() as cur:
            cur.execute("SET enable_seqscan = off")
            cur.execute("SET enable_bitmapscan = off")
            for table, column in INDEX_ONLY_READS:
                cur.execute(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*)"  # constants
                    f" FROM warehouse.{table} WHERE {column} > ''"
                )
                node = cur.fetchone()[0][0]["Plan"]["Plans"][0]
                assert node["Node Type"] == "Index Only Scan", node
                out[table] = node["Heap Fetches"]
        return out

    settings = make_settings(db_url)
    run_pipeline(settings)
    conn = psycopg2.connect(db_url)
    conn.autocommit = True  # no snapshot held here while the next run vacuums
    try:
        pages = fetch(
            conn,
            "SELECT c.relname, c.relpages, c.relallvisible FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'warehouse' AND c.relname = ANY (%s)",
            (list(AGGREGATES),),
        )
        assert len(pages) == len(AGGREGATES)
        assert dict(p[:2] for p in pages)["agg_customer_slices"] > 0
        assert all(total == visible for _, total, visible in pages), pages
        assert heap_fetches() == {table: 0 for table in INDEX_ONLY}
        before = table_checksums(conn, INDEX_ONLY)
        run_pipeline(settings, RunOptions(next_batch=True))
        changed = table_checksums(conn, INDEX_ONLY)
        assert all(changed[t] != before[t] for t in INDEX_ONLY)  # the batch wrote rows there
        assert heap_fetches() == {table: 0 for table in INDEX_ONLY}
    finally:
        conn.close()


# the customer slices and the column of an index the dashboard reads them by, index-only
INDEX_ONLY_READS = (
    ("agg_customer_slices", "category"),
    ("agg_customer_slices_any_category", "state"),
)


def test_incremental_slices_equal_a_full_rebuild(db_url, make_settings):
    settings = make_settings(db_url, dirty_rate=0.02)
    run_pipeline(settings)
    conn = psycopg2.connect(db_url)
    try:
        moved = 0
        for _ in range(3):
            before = _segments(conn)
            conn.rollback()
            report = run_pipeline(settings, RunOptions(next_batch=True))
            after = _segments(conn)
            conn.rollback()
            moved += sum(1 for c, s in before.items() if after.get(c, s) != s)
        # the batches changed some customers' segment: their older lines moved slice (a delta)
        assert moved > 0
        aggregates = next(st for st in report.stages if st.stage == "aggregates")
        assert aggregates.details["full_refresh"] is False
        incremental = table_checksums(conn, SLICE_TABLES)
        assert all(rows > 0 for rows, _ in incremental.values())
        run_pipeline(settings, RunOptions(full_refresh=True))
        assert table_checksums(conn, SLICE_TABLES) == incremental
    finally:
        conn.close()
