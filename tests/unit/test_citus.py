"""The Citus opt-in (dwh.citus): the SQL it would issue, and that it is inert without Citus."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg2
import pytest

from dwh import citus
from dwh.exceptions import ConfigError
from dwh.settings import CitusSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _text(statements) -> list[str]:
    # sql.Composed renders without a connection only for SQL/Identifier parts; Literals need one,
    # so render with a dummy quoting that matches psycopg2's for plain strings and integers.
    out = []
    for statement in statements:
        parts = []
        for part in statement.seq:
            if isinstance(part, psycopg2.sql.Literal):
                value = part.wrapped
                parts.append(str(value) if isinstance(value, int) else f"'{value}'")
            elif isinstance(part, psycopg2.sql.Identifier):
                parts.append(".".join(part.strings))
            else:
                parts.append(part.string)
        out.append("".join(parts))
    return out


def test_disabled_by_default():
    assert load_settings(environ={}).warehouse.citus == CitusSettings()
    assert CitusSettings().enabled is False


def test_environment_enables_it():
    settings = load_settings(
        environ={"DWH_WAREHOUSE__CITUS__ENABLED": "true", "DWH_WAREHOUSE__CITUS__SHARD_COUNT": "32"}
    )
    assert settings.warehouse.citus.enabled is True
    assert settings.warehouse.citus.shard_count == 32


def test_statements_reference_tables_first_then_the_fact():
    statements = _text(citus.distribution_statements(CitusSettings(enabled=True)))
    references = [f"SELECT create_reference_table('{t}')" for t in citus.REFERENCE_TABLES]
    assert statements[: len(references)] == references
    assert "warehouse.dim_date" in citus.REFERENCE_TABLES
    assert "warehouse.dim_customers" in citus.REFERENCE_TABLES
    assert "warehouse.dim_products" in citus.REFERENCE_TABLES
    assert "warehouse.dim_payment_method" in citus.REFERENCE_TABLES
    # the distribution column must be in the primary key before distributing
    assert statements[-2] == (
        "ALTER TABLE warehouse.fact_sales DROP CONSTRAINT fact_sales_pkey,"
        " ADD CONSTRAINT fact_sales_pkey PRIMARY KEY (sales_key, item_id)"
    )
    assert statements[-1] == "SELECT create_distributed_table('warehouse.fact_sales', 'item_id')"


def test_statements_shard_count_column_and_already_distributed():
    settings = CitusSettings(enabled=True, distribution_column="transaction_id", shard_count=16)
    statements = _text(
        citus.distribution_statements(
            settings,
            already={"warehouse.dim_date", "warehouse.agg_daily_sales"},
            fact_primary_key=("sales_key", "transaction_id"),
        )
    )
    assert "SELECT create_reference_table('warehouse.dim_date')" not in statements
    assert not any("ALTER TABLE" in s for s in statements)
    assert statements[-1] == (
        "SELECT create_distributed_table('warehouse.fact_sales', 'transaction_id', "
        "shard_count := 16)"
    )
    everything = set(citus.REFERENCE_TABLES) | {citus.FACT_TABLE}
    assert citus.distribution_statements(settings, already=everything) == []


@pytest.mark.parametrize("column", ["customer_key", "date_key", "sales_key; DROP TABLE x"])
def test_a_column_an_update_can_change_is_refused(column):
    with pytest.raises(ConfigError, match="distribution_column"):
        citus.distribution_statements(CitusSettings(enabled=True, distribution_column=column))


class _Cursor:
    def __init__(self, log: list[str], citus_present: bool):
        self.log, self.citus_present = log, citus_present

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, query, params=None):
        self.log.append(str(query))

    def fetchone(self):
        return (self.citus_present,)


class _Conn:
    """Records the statements; stands in for a database without the citus extension."""

    def __init__(self, citus_present: bool = False):
        self.executed: list[str] = []
        self.citus_present = citus_present

    def cursor(self):
        return _Cursor(self.executed, self.citus_present)


def test_inert_when_disabled():
    conn = _Conn()
    assert citus.apply(conn, CitusSettings(), logging.getLogger("t")) == {"enabled": False}
    assert conn.executed == []


def test_enabled_without_the_extension_logs_and_skips(caplog):
    conn = _Conn(citus_present=False)
    with caplog.at_level(logging.INFO):
        result = citus.apply(conn, CitusSettings(enabled=True), logging.getLogger("t"))
    assert result == {"enabled": True, "skipped": "citus extension not installed"}
    assert len(conn.executed) == 1 and "pg_extension" in conn.executed[0]
    assert "citus extension is not installed" in caplog.text


def test_every_warehouse_table_is_the_fact_or_a_reference_table():
    """A table added to the warehouse DDL gets a place in the distribution (views, such as
    agg_customer_metrics, follow the tables they read)."""
    ddl = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "sql" / "ddl").glob("*.sql"))
    created = set(re.findall(r"CREATE TABLE IF NOT EXISTS (warehouse\.\w+)", ddl))
    assert "warehouse.agg_customer_totals" in created
    assert created == set(citus.REFERENCE_TABLES) | {citus.FACT_TABLE}
