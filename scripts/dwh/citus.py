"""Opt-in distribution of the warehouse over Citus (warehouse.citus in config; docs/scaling.md).

With `warehouse.citus.enabled` and the citus extension installed in the database, the warehouse
stage makes the dimensions and the aggregates reference tables (a copy on every node, so every
join of the fact to them stays local) and distributes fact_sales by
`warehouse.citus.distribution_column`. Citus needs the distribution column in every primary key
and unique constraint of a distributed table, so the fact's primary key (sales_key) is widened
to (sales_key, <column>) first; UNIQUE (item_id) already holds it for the default column.
Without the extension (plain PostgreSQL) the setting is inert: one log line, nothing issued.
Tables already in pg_dist_partition are left alone, so every run may call `apply`.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from dwh.exceptions import ConfigError
from dwh.settings import CitusSettings

FACT_TABLE = "warehouse.fact_sales"
REFERENCE_TABLES: tuple[str, ...] = (
    "warehouse.dim_date",
    "warehouse.dim_customers",
    "warehouse.dim_products",
    "warehouse.dim_payment_method",
    "warehouse.agg_daily_sales",
    "warehouse.agg_payment_method_daily",
    "warehouse.agg_category_orders",
    "warehouse.agg_discount_daily",
    "warehouse.agg_product_performance",
    "warehouse.agg_customer_totals",
    "warehouse.agg_recency_as_of",
    "warehouse.agg_monthly_cohorts",
    "warehouse.agg_sales_slices",
    "warehouse.agg_sales_slices_any_state",
    "warehouse.agg_sales_slices_all_dates",
    "warehouse.agg_customer_slices",
    "warehouse.agg_customer_slices_any_category",
    "warehouse.agg_customer_categories",
    "warehouse.agg_order_category_sets",
    "warehouse.agg_order_category_sets_any_state",
    "warehouse.agg_order_category_sets_all_dates",
    "warehouse.agg_product_slices",
    "warehouse.agg_product_slicer_totals",
)
# Columns of fact_sales that never change once a line is loaded (an update may not move a row
# to another shard): the natural key, and the line's transaction.
DISTRIBUTABLE_COLUMNS: tuple[str, ...] = ("item_id", "transaction_id")


def citus_installed(conn: psycopg2.extensions.connection) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
        return bool(cur.fetchone()[0])


def distribution_statements(
    settings: CitusSettings,
    already: set[str] | frozenset[str] = frozenset(),
    fact_primary_key: tuple[str, ...] = ("sales_key",),
) -> list[sql.Composed]:
    """The statements that distribute the warehouse, in order, skipping tables in `already`
    (schema.table names from pg_dist_partition). Pure: no database needed."""
    column = settings.distribution_column
    if column not in DISTRIBUTABLE_COLUMNS:
        raise ConfigError(
            f"setting warehouse.citus.distribution_column: {column!r} is not one of "
            f"{', '.join(DISTRIBUTABLE_COLUMNS)} (the fact's columns that an update never "
            "changes; see docs/scaling.md)"
        )
    if settings.shard_count < 0:
        raise ConfigError("setting warehouse.citus.shard_count: must be 0 (default) or more")
    statements: list[sql.Composed] = [
        sql.SQL("SELECT create_reference_table({})").format(sql.Literal(table))
        for table in REFERENCE_TABLES
        if table not in already
    ]
    if FACT_TABLE not in already:
        if column not in fact_primary_key:
            statements.append(
                sql.SQL(
                    "ALTER TABLE warehouse.fact_sales DROP CONSTRAINT fact_sales_pkey,"
                    " ADD CONSTRAINT fact_sales_pkey PRIMARY KEY (sales_key, {})"
                ).format(sql.Identifier(column))
            )
        if settings.shard_count:
            statements.append(
                sql.SQL("SELECT create_distributed_table({}, {}, shard_count := {})").format(
                    sql.Literal(FACT_TABLE), sql.Literal(column), sql.Literal(settings.shard_count)
                )
            )
        else:
            statements.append(
                sql.SQL("SELECT create_distributed_table({}, {})").format(
                    sql.Literal(FACT_TABLE), sql.Literal(column)
                )
            )
    return statements


def _distributed_tables(conn: psycopg2.extensions.connection) -> set[str]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_dist_partition p"
            " JOIN pg_class c ON c.oid = p.logicalrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
        )
        return {row[0] for row in cur.fetchall()}


def _fact_primary_key(conn: psycopg2.extensions.connection) -> tuple[str, ...]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY a.attnum",
            (FACT_TABLE,),
        )
        return tuple(row[0] for row in cur.fetchall())


def apply(
    conn: psycopg2.extensions.connection,
    settings: CitusSettings,
    log: logging.Logger | logging.LoggerAdapter,
) -> dict[str, Any]:
    """Distribute the warehouse when enabled and Citus is present; returns what was done."""
    if not settings.enabled:
        return {"enabled": False}
    if not citus_installed(conn):
        log.info(
            "warehouse.citus.enabled is set but the citus extension is not installed in this "
            "database: skipped (plain PostgreSQL)"
        )
        return {"enabled": True, "skipped": "citus extension not installed"}
    statements = distribution_statements(
        settings, _distributed_tables(conn), _fact_primary_key(conn)
    )
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    issued = [s.as_string(conn) for s in statements]
    if issued:
        log.info("citus: %d distribution call(s) issued", len(issued))
    return {"enabled": True, "issued": issued}
