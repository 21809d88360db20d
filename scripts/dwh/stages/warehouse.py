"""Warehouse stage: merge the dimensions (SCD type 2) and load fact_sales incrementally.

All in the stage's one transaction, in this order: dim_customers and dim_products are merged
from the versions that the production stage logged since the last merge
(production.customer_versions, production.product_versions); the order lines written since the last load are selected; the payment
methods and calendar days they need are added; unknown customers or products get inferred
members; the lines are inserted (or updated, if production changed them) with the dimension
versions valid on their order dates; and the keys they touched are queued for the aggregates
stage. What is "new" is derived from the data (production updated_at against the watermarks in
ops.warehouse_watermarks, written in the same transaction), so a killed run leaves nothing
behind and the next run redoes the work. --full-refresh reloads fact_sales from all of
production and queues a full rebuild of the aggregates; the dimensions are emptied (unknown
members aside) and rebuilt by replaying the whole version log. Details: docs/warehouse.md.
"""

from __future__ import annotations

import os

import psycopg2
import psycopg2.extensions

from dwh import citus
from dwh.contract import PAYMENT_METHODS
from dwh.db import (
    analyze_stale,
    bulk_load,
    run_sql_file_row,
    table_is_empty,
    use_bulk_work_mem,
)
from dwh.exceptions import PipelineError
from dwh.settings import Settings
from dwh.stage import RunContext, StageResult

STAGE = "warehouse"
SQL = "transform/warehouse"
BI_ROLE = "bi_reader"
BI_PASSWORD_ENV = "DWH_BI_READER_PASSWORD"


def _full_refresh_reset(conn: psycopg2.extensions.connection) -> None:
    """Forget what was loaded: every production row is looked at again, facts are reloaded,
    the dimensions are rebuilt from the version logs (their unknown members stay)."""
    with conn.cursor() as cur:
        cur.execute("TRUNCATE warehouse.fact_sales RESTART IDENTITY")
        cur.execute("DELETE FROM warehouse.dim_customers WHERE customer_key <> -1")
        cur.execute("DELETE FROM warehouse.dim_products WHERE product_key <> -1")
        cur.execute("DELETE FROM ops.warehouse_watermarks")
        cur.execute("DELETE FROM ops.warehouse_refresh_queue")
        cur.execute("INSERT INTO ops.warehouse_refresh_queue (is_full_refresh) VALUES (true)")


def _grant_bi_login(conn: psycopg2.extensions.connection, ctx: RunContext) -> str:
    """Give bi_reader LOGIN and the password from the environment, when one is set."""
    password = os.environ.get(BI_PASSWORD_ENV)
    if not password:
        return "nologin"
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT bi_login")
        try:
            cur.execute(f"ALTER ROLE {BI_ROLE} WITH LOGIN PASSWORD %s", (password,))
        except psycopg2.Error as exc:
            cur.execute("ROLLBACK TO SAVEPOINT bi_login")
            ctx.log.warning(
                "cannot set the password of role %s (%s): BI users cannot log in as it",
                BI_ROLE,
                (exc.pgerror or str(exc)).strip().splitlines()[0],
            )
            return "unchanged"
        cur.execute("RELEASE SAVEPOINT bi_login")
    return "login"


def run(conn: psycopg2.extensions.connection, settings: Settings, ctx: RunContext) -> StageResult:
    wh = settings.warehouse
    full = ctx.options.full_refresh
    # Opt-in, before any write of this transaction: inert without the citus extension.
    distributed = citus.apply(conn, wh.citus, ctx.log)
    use_bulk_work_mem(conn)
    if full:
        _full_refresh_reset(conn)
        ctx.log.info("full refresh: fact_sales and dimensions emptied, every version replayed")

    scd = {"full_refresh": full, "first_from": wh.first_version_effective_from}
    customers = run_sql_file_row(conn, f"{SQL}/dim_customers_scd2.sql", scd)
    products = run_sql_file_row(conn, f"{SQL}/dim_products_scd2.sql", scd)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(max(updated_at) FILTER (WHERE source_table = %s), '-infinity')::text,"
            " coalesce(max(updated_at) FILTER (WHERE source_table = %s), '-infinity')::text"
            " FROM ops.warehouse_watermarks",
            ("production.transaction_items", "production.transactions"),
        )
        items_after, transactions_after = cur.fetchone()
    candidates = run_sql_file_row(
        conn,
        f"{SQL}/fact_sales_candidates.sql",
        {
            "full_refresh": full,
            "items_after": items_after,
            "transactions_after": transactions_after,
        },
    )
    methods = run_sql_file_row(
        conn, f"{SQL}/dim_payment_method.sql", {"methods": list(PAYMENT_METHODS)}
    )
    dates = run_sql_file_row(
        conn,
        f"{SQL}/dim_date.sql",
        {
            "padding": wh.date_padding_years,
            "holidays": list(wh.holidays),
            "fiscal_start": wh.fiscal_year_start_month,
        },
    )
    # An empty fact (first load, --full-refresh) is bulk-loaded: foreign keys and secondary
    # indexes are recreated after the insert, not maintained row by row (db.bulk_load); and
    # since every key is new, the aggregates are rebuilt whole (one queue marker) instead of
    # being refreshed key by key from a queue of every date x customer x product.
    fact_empty = table_is_empty(conn, "warehouse.fact_sales")
    # the fact resolves every line against the dimensions: after a first load or a large merge
    # their statistics are missing or stale, and the planner would hash the lines, not them
    # (analyzed again after the commit: StageResult.analyze)
    analyzed = analyze_stale(
        conn, ["warehouse.dim_customers", "warehouse.dim_products"], ctx.run_id
    )
    with bulk_load(conn, "warehouse.fact_sales", fact_empty):
        facts = run_sql_file_row(
            conn, f"{SQL}/fact_sales.sql", {**scd, "full_refresh": full or fact_empty}
        )
    if facts and int(facts["orphan_lines"]):
        # a bug, not bad input: the transaction rolls back and the fact keeps its last state
        raise PipelineError(
            f"warehouse.fact_sales: {facts['orphan_lines']} order lines of this load point at"
            " a dimension row that does not exist; nothing was written (please report this"
            " with the run's log)",
            stage="warehouse",
            table="warehouse.fact_sales",
        )
    if fact_empty and not full and facts and int(facts["inserted"]):
        with conn.cursor() as cur:
            cur.execute("INSERT INTO ops.warehouse_refresh_queue (is_full_refresh) VALUES (true)")
    facts = facts or {
        "inserted": 0,
        "updated": 0,
        "inferred_customers": 0,
        "inferred_products": 0,
        "queued_keys": 0,
        "orphan_lines": 0,
    }
    bi_login = _grant_bi_login(conn, ctx)
    ctx.log.info(
        "customers: %d new, %d changed; products: %d new, %d changed; "
        "facts: %d inserted, %d updated (of %d candidate lines)",
        customers["new"],
        customers["changed"],
        products["new"],
        products["changed"],
        facts["inserted"],
        facts["updated"],
        candidates["candidates"],
    )
    return StageResult(
        rows_in=int(candidates["candidates"]),
        rows_out=int(facts["inserted"]) + int(facts["updated"]),
        details={
            "full_refresh": full,
            "dim_customers": customers,
            "dim_products": products,
            "dim_payment_method": methods,
            "dim_date": dates,
            "fact_sales": facts,
            "bi_reader": bi_login,
            "citus": distributed,
            "analyzed": analyzed,
        },
        analyze=tuple(analyzed),
    )
