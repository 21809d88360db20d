"""Aggregates stage: refresh the agg_* tables for what the warehouse stage changed.

The warehouse stage queues the keys (dates, customers, products) of every order line it inserts
or changes, in the same transaction as the facts (ops.warehouse_refresh_queue). This stage, in
one transaction, locks the queue, refreshes only the touched keys of each aggregate and empties
the queue: a key named only by inserted lines gets their sums added to its stored row, a key
named by a changed line or dimension is recomputed from fact_sales (agg_refresh_keys.sql).
Values that depend on all rows are re-derived from the aggregates themselves, never from the
facts (cohort sizes), or not stored: recency as of the last order date is computed when
agg_customer_metrics (a view over agg_customer_totals) is read, from the one row of
agg_recency_as_of that every run refreshes, and product revenue ranks are ranked at read time.
With --full-refresh, or when the warehouse stage queued a full rebuild, every aggregate is
rebuilt from fact_sales; both paths give the same tables (tests/integration/test_warehouse*.py).
Details: docs/warehouse.md.
"""

from __future__ import annotations

import psycopg2.extensions

from dwh.db import analyze_stale, bulk_load, run_sql_file_row, use_bulk_work_mem
from dwh.settings import Settings
from dwh.stage import RunContext, StageResult
from dwh.stages.warehouse import SQL

STAGE = "aggregates"

# Refresh order matters: cohorts read the first purchase dates of agg_customer_totals; the
# slices read its segments, and agg_customer_slices the per-order rows agg_sales_slices leaves
# (and, with agg_order_category_sets and agg_product_slices, its segment moves); each *_any_state
# table sums what its table just refreshed over states, each *_all_dates table over dates (from
# the rows its table replaced and its moves), agg_customer_slices_any_category over
# categories (and agg_customer_categories its categories over states), agg_product_slicer_totals
# agg_product_slices over segments and over categories.
AGGREGATES: tuple[str, ...] = (
    "agg_daily_sales",
    "agg_payment_method_daily",
    "agg_category_orders",
    "agg_discount_daily",
    "agg_product_performance",
    "agg_customer_totals",
    "agg_monthly_cohorts",
    "agg_sales_slices",
    "agg_sales_slices_any_state",
    "agg_sales_slices_all_dates",
    "agg_customer_slices",
    "agg_customer_slices_any_category",
    "agg_customer_categories",
    "agg_order_category_sets",
    "agg_order_category_sets_any_state",
    "agg_order_category_sets_all_dates",
    "agg_product_slices",
    "agg_product_slicer_totals",
)

# VACUUMed after the stage commits (StageResult.vacuum): every table after a full rebuild, these
# two after every refresh. The dashboard counts distinct customers by index-only scans of their
# category and state indexes, which skip the heap only on pages the visibility map marks
# all-visible; a load leaves none so marked, and a day's batch updates rows on most pages (at 10M
# lines a category's count went from 58 ms to 297 ms after one).
INDEX_ONLY: tuple[str, ...] = ("agg_customer_slices", "agg_customer_slices_any_category")


def _params(settings: Settings, full: bool) -> dict[str, object]:
    wh = settings.warehouse
    params: dict[str, object] = {
        "full": full,
        "vip_min_spent": wh.vip_min_total_spent,
        "regular_min_transactions": wh.regular_min_transactions,
    }
    for prefix, bounds in (
        ("r", wh.rfm_recency_days),
        ("f", wh.rfm_frequency_orders),
        ("m", wh.rfm_monetary_spent),
    ):
        for number, bound in enumerate(bounds, start=1):
            params[f"{prefix}{number}"] = bound
    return params


def _rows_written(conn: psycopg2.extensions.connection) -> dict[str, int]:
    """Rows inserted or updated per aggregate table by this session's statistics not yet sent
    (no count of the tables, which would read millions of rows after a refresh that wrote a few).
    Since PostgreSQL 15 they also hold the session's earlier transactions until it sends them,
    which it does only between transactions: the stage takes the difference from its start."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT relname, n_tup_ins + n_tup_upd FROM pg_stat_xact_user_tables"
            " WHERE schemaname = 'warehouse' AND relname = ANY(%s)",
            (list(AGGREGATES),),
        )
        written = dict(cur.fetchall())
    return {table: int(written.get(table, 0)) for table in AGGREGATES}


def run(conn: psycopg2.extensions.connection, settings: Settings, ctx: RunContext) -> StageResult:
    written_before = _rows_written(conn)
    touched = run_sql_file_row(
        conn, f"{SQL}/agg_refresh_keys.sql", {"full": ctx.options.full_refresh}
    )
    full = ctx.options.full_refresh or bool(touched["full_refresh_queued"])
    params = _params(settings, full)
    # the as-of row reads only the fact (loaded) and config, so it is written first, on every
    # run: the recency thresholds of config may have changed with nothing new queued
    run_sql_file_row(conn, f"{SQL}/agg_recency_as_of.sql", params)
    if not full and not any(touched[k] for k in ("dates", "products", "customers")):
        ctx.log.info("nothing queued: aggregates are up to date")
        return StageResult(details={"full_refresh": False, "touched": touched})
    use_bulk_work_mem(conn)
    if full:  # statistics for the joins of the whole fact, unless the load just took them
        analyze_stale(
            conn,
            ["warehouse.fact_sales", "warehouse.dim_customers", "warehouse.dim_products"],
            ctx.run_id,
        )
    for table in AGGREGATES:
        # a full rebuild empties the table (bulk_load truncates it: a new file, no dead rows
        # left behind), builds its secondary indexes once, at the end, and analyzes it; an
        # incremental refresh changes a small share of the rows and leaves statistics to
        # autovacuum
        with bulk_load(conn, f"warehouse.{table}", enabled=full):
            run_sql_file_row(conn, f"{SQL}/{table}.sql", params)
    rows = {table: n - written_before[table] for table, n in _rows_written(conn).items()}
    with conn.cursor() as cur:
        cur.execute("DELETE FROM ops.warehouse_refresh_queue")
        queued = cur.rowcount
    if full:
        ctx.log.info("rebuilt every aggregate from fact_sales: %d rows", sum(rows.values()))
    else:
        ctx.log.info(
            "refreshed: %d dates, %d products, %d customers (%d inserted lines added)",
            touched["dates"],
            touched["products"],
            touched["customers"],
            touched["added"],
        )
    return StageResult(
        rows_in=queued,
        rows_out=sum(rows.values()),
        details={"full_refresh": full, "touched": touched, "rows_written": rows},
        vacuum=tuple(f"warehouse.{table}" for table in (AGGREGATES if full else INDEX_ONLY)),
    )
