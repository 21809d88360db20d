"""Helpers of the warehouse and analytics tests (no tests here): a small known dataset written
straight into the production tables, the stages run one by one, and table checksums.

The dataset is plain Python, so the tests can compute every expected number independently of
the SQL under test.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

import psycopg2
import psycopg2.extensions

from dwh import db
from dwh.settings import Settings
from dwh.stage import RunContext, RunOptions, StageResult

D = Decimal


@dataclass(frozen=True)
class Customer:
    customer_id: str
    first_name: str
    last_name: str
    city: str
    state: str
    country: str = "India"
    email: str | None = None
    phone: str | None = None
    age_group: str = "26-35"
    registration_date: dt.date = dt.date(2023, 6, 1)


@dataclass(frozen=True)
class Product:
    product_id: str
    product_name: str
    category: str
    price: Decimal
    cost: Decimal
    brand: str = "Acme"
    sub_category: str | None = None
    price_category: str = "Mid-range"


@dataclass(frozen=True)
class Transaction:
    transaction_id: str
    customer_id: str
    transaction_date: dt.date
    payment_method: str


@dataclass(frozen=True)
class Item:
    item_id: str
    transaction_id: str
    product_id: str
    quantity: int
    unit_price: Decimal
    discount_percentage: Decimal

    @property
    def line_total(self) -> Decimal:
        gross = self.unit_price * self.quantity
        return (gross - gross * self.discount_percentage / 100).quantize(D("0.01"))


@dataclass
class Batch:
    batch_id: str
    business_date: dt.date | None
    customers: list[Customer] = field(default_factory=list)
    products: list[Product] = field(default_factory=list)
    transactions: list[Transaction] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)


# ── the known dataset: two batches, three months, five customers, four products ──────────────
CUSTOMERS = [
    Customer("C1", "Asha", "Rao", "Mumbai", "Maharashtra", email="asha@example.com"),
    Customer("C2", "Ben", "Das", "Pune", "Maharashtra"),
    Customer("C3", "Chitra", "Iyer", "Chennai", "Tamil Nadu", age_group="36-45"),
    Customer("C4", "Dev", "Shah", "Ahmedabad", "Gujarat"),
]
PRODUCTS = [
    Product("P1", "Phone", "Electronics", D("500.00"), D("300.00"), price_category="Premium"),
    Product("P2", "Shirt", "Clothing", D("40.00"), D("15.00"), price_category="Budget"),
    Product("P3", "Pan", "Home & Kitchen", D("60.00"), D("35.00")),
    Product("P4", "Novel", "Books", D("20.00"), D("8.00"), price_category="Budget"),
]
TRANSACTIONS_1 = [
    Transaction("T01", "C1", dt.date(2024, 1, 5), "Credit Card"),  # Friday
    Transaction("T02", "C2", dt.date(2024, 1, 5), "UPI"),
    Transaction("T03", "C1", dt.date(2024, 1, 20), "Cash on Delivery"),  # Saturday
    Transaction("T04", "C3", dt.date(2024, 2, 11), "UPI"),  # Sunday
    Transaction("T05", "C2", dt.date(2024, 2, 12), "Debit Card"),
    Transaction("T06", "C4", dt.date(2024, 2, 29), "Credit Card"),
    Transaction("T07", "C1", dt.date(2024, 3, 1), "UPI"),
]
ITEMS_1 = [
    Item("I01", "T01", "P1", 1, D("500.00"), D("0")),
    Item("I02", "T01", "P2", 2, D("40.00"), D("10")),
    Item("I03", "T02", "P3", 1, D("60.00"), D("5")),
    Item("I04", "T03", "P4", 3, D("20.00"), D("0")),
    Item("I05", "T03", "P2", 1, D("40.00"), D("15")),
    Item("I06", "T04", "P1", 2, D("480.00"), D("10")),
    Item("I07", "T05", "P4", 1, D("20.00"), D("5")),
    Item("I08", "T06", "P3", 2, D("60.00"), D("0")),
    Item("I09", "T06", "P2", 1, D("40.00"), D("30")),
    Item("I10", "T07", "P2", 4, D("38.50"), D("10")),
]
# Batch 2 (business date 2024-03-10): C1 moved to Delhi, P2 got dearer to make, a new customer
# C5 and new orders, one of them by C1 after the move.
CUSTOMERS_2 = [
    replace(CUSTOMERS[0], city="Delhi", state="Delhi"),
    Customer("C5", "Esha", "Nair", "Kochi", "Kerala", registration_date=dt.date(2024, 3, 9)),
]
PRODUCTS_2 = [replace(PRODUCTS[1], cost=D("18.00"))]
TRANSACTIONS_2 = [
    Transaction("T08", "C1", dt.date(2024, 3, 10), "Net Banking"),
    Transaction("T09", "C5", dt.date(2024, 3, 10), "UPI"),
    Transaction("T10", "C3", dt.date(2024, 3, 10), "Credit Card"),
]
ITEMS_2 = [
    Item("I11", "T08", "P2", 2, D("40.00"), D("0")),
    Item("I12", "T08", "P3", 1, D("60.00"), D("5")),
    Item("I13", "T09", "P1", 1, D("500.00"), D("15")),
    Item("I14", "T10", "P4", 5, D("20.00"), D("10")),
]
BATCH_1 = Batch("batch_0001", dt.date(2024, 3, 1), CUSTOMERS, PRODUCTS, TRANSACTIONS_1, ITEMS_1)
BATCH_2 = Batch(
    "batch_0002", dt.date(2024, 3, 10), CUSTOMERS_2, PRODUCTS_2, TRANSACTIONS_2, ITEMS_2
)


def merged(batches: Sequence[Batch]) -> Batch:
    """What production holds after these batches: one row per key, the latest wins."""
    out = Batch(batches[-1].batch_id, batches[-1].business_date)
    for name, key in (
        ("customers", "customer_id"),
        ("products", "product_id"),
        ("transactions", "transaction_id"),
        ("items", "item_id"),
    ):
        rows: dict[str, object] = {}
        for batch in batches:
            for row in getattr(batch, name):
                rows[getattr(row, key)] = row
        setattr(out, name, list(rows.values()))
    return out


# ── writing production rows ──────────────────────────────────────────────────────────────────
def load_batch(conn: psycopg2.extensions.connection, batch: Batch) -> None:
    """Upsert a batch into ops.batches, the production tables (latest wins) and the version
    logs, and commit."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ops.batches (batch_id, business_date) VALUES (%s, %s)"
            " ON CONFLICT (batch_id) DO NOTHING",
            (batch.batch_id, batch.business_date),
        )
        for line, c in enumerate(batch.customers, start=2):
            cur.execute(
                """INSERT INTO production.customers (customer_id, first_name, last_name, email,
                       is_email_valid, phone, registration_date, city, state, country, age_group,
                       _batch_id, _source_line)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (customer_id) DO UPDATE SET first_name = EXCLUDED.first_name,
                       last_name = EXCLUDED.last_name, email = EXCLUDED.email,
                       phone = EXCLUDED.phone, registration_date = EXCLUDED.registration_date,
                       city = EXCLUDED.city, state = EXCLUDED.state, country = EXCLUDED.country,
                       age_group = EXCLUDED.age_group,
                       _batch_id = EXCLUDED._batch_id, updated_at = now()
                   WHERE (customers.first_name, customers.last_name, customers.email,
                       customers.phone, customers.registration_date, customers.city,
                       customers.state, customers.country, customers.age_group)
                   IS DISTINCT FROM (EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.email,
                       EXCLUDED.phone, EXCLUDED.registration_date, EXCLUDED.city, EXCLUDED.state,
                       EXCLUDED.country, EXCLUDED.age_group)""",
                (
                    c.customer_id,
                    c.first_name,
                    c.last_name,
                    c.email,
                    c.email is not None,
                    c.phone,
                    c.registration_date,
                    c.city,
                    c.state,
                    c.country,
                    c.age_group,
                    batch.batch_id,
                    line,
                ),
            )
        for line, p in enumerate(batch.products, start=2):
            cur.execute(
                """INSERT INTO production.products (product_id, product_name, category,
                       sub_category, brand, price, cost, price_category, _batch_id,
                       _source_line)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (product_id) DO UPDATE SET product_name = EXCLUDED.product_name,
                       category = EXCLUDED.category, sub_category = EXCLUDED.sub_category,
                       brand = EXCLUDED.brand, price = EXCLUDED.price, cost = EXCLUDED.cost,
                       price_category = EXCLUDED.price_category,
                       _batch_id = EXCLUDED._batch_id, updated_at = now()
                   WHERE (products.product_name, products.category, products.sub_category,
                       products.brand, products.price, products.cost, products.price_category)
                   IS DISTINCT FROM (EXCLUDED.product_name, EXCLUDED.category,
                       EXCLUDED.sub_category, EXCLUDED.brand, EXCLUDED.price, EXCLUDED.cost,
                       EXCLUDED.price_category)""",
                (
                    p.product_id,
                    p.product_name,
                    p.category,
                    p.sub_category,
                    p.brand,
                    p.price,
                    p.cost,
                    p.price_category,
                    batch.batch_id,
                    line,
                ),
            )
        for line, t in enumerate(batch.transactions, start=2):
            total = sum(
                (i.line_total for i in batch.items if i.transaction_id == t.transaction_id),
                D("0"),
            )
            cur.execute(
                """INSERT INTO production.transactions (transaction_id, customer_id,
                       transaction_date, transaction_at, payment_method, total_amount, _batch_id,
                       _source_line)
                   VALUES (%s, %s, %s, %s::date, %s, %s, %s, %s)
                   ON CONFLICT (transaction_id) DO UPDATE SET customer_id = EXCLUDED.customer_id,
                       transaction_date = EXCLUDED.transaction_date,
                       transaction_at = EXCLUDED.transaction_at,
                       payment_method = EXCLUDED.payment_method,
                       _batch_id = EXCLUDED._batch_id, updated_at = now()
                   WHERE (transactions.customer_id, transactions.transaction_date,
                       transactions.transaction_at, transactions.payment_method)
                   IS DISTINCT FROM (EXCLUDED.customer_id, EXCLUDED.transaction_date,
                       EXCLUDED.transaction_at, EXCLUDED.payment_method)""",
                (
                    t.transaction_id,
                    t.customer_id,
                    t.transaction_date,
                    t.transaction_date,
                    t.payment_method,
                    total,
                    batch.batch_id,
                    line,
                ),
            )
        for line, i in enumerate(batch.items, start=2):
            cur.execute(
                """INSERT INTO production.transaction_items (item_id, transaction_id, product_id,
                       quantity, unit_price, discount_percentage, line_total, _batch_id,
                       _source_line)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (item_id) DO UPDATE SET transaction_id = EXCLUDED.transaction_id,
                       product_id = EXCLUDED.product_id, quantity = EXCLUDED.quantity,
                       unit_price = EXCLUDED.unit_price,
                       discount_percentage = EXCLUDED.discount_percentage,
                       line_total = EXCLUDED.line_total,
                       _batch_id = EXCLUDED._batch_id, updated_at = now()
                   WHERE (transaction_items.transaction_id, transaction_items.product_id,
                       transaction_items.quantity, transaction_items.unit_price,
                       transaction_items.discount_percentage, transaction_items.line_total)
                   IS DISTINCT FROM (EXCLUDED.transaction_id, EXCLUDED.product_id,
                       EXCLUDED.quantity, EXCLUDED.unit_price, EXCLUDED.discount_percentage,
                       EXCLUDED.line_total)""",
                (
                    i.item_id,
                    i.transaction_id,
                    i.product_id,
                    i.quantity,
                    i.unit_price,
                    i.discount_percentage,
                    i.line_total,
                    batch.batch_id,
                    line,
                ),
            )
    # the version logs, as the production stage writes them when it promotes a batch
    for log in ("customer_versions", "product_versions"):
        db.run_sql_file(conn, f"transform/production/{log}.sql", {"batch_id": batch.batch_id})
    conn.commit()


# ── running the stages ───────────────────────────────────────────────────────────────────────
def open_warehouse(db_url: str) -> psycopg2.extensions.connection:
    """A connection to a database with every DDL file applied."""
    conn = db.connect(db_url)
    db.apply_ddl(conn)
    return conn


def run_stages(
    conn: psycopg2.extensions.connection,
    settings: Settings,
    stages: Iterable[str] = ("warehouse", "aggregates"),
    *,
    full_refresh: bool = False,
) -> dict[str, StageResult]:
    """Run stages the way the orchestrator does: each in its own transaction, committed."""
    import importlib

    results = {}
    for stage in stages:
        module = importlib.import_module(f"dwh.stages.{stage}")
        ctx = RunContext(
            run_id=0,
            options=RunOptions(full_refresh=full_refresh),
            log=logging.LoggerAdapter(logging.getLogger("dwh"), {"run_id": 0, "stage": stage}),
        )
        try:
            results[stage] = module.run(conn, settings, ctx)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return results


def fetch(conn: psycopg2.extensions.connection, query: str, params: object = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    conn.rollback()
    return rows


def scalar(conn: psycopg2.extensions.connection, query: str, params: object = None) -> object:
    return fetch(conn, query, params)[0][0]


# Columns that differ between equal loads by nature (surrogate keys, load times), per table.
VOLATILE = {
    "fact_sales": ("sales_key", "customer_key", "product_key", "payment_method_key", "_loaded_at"),
    "dim_customers": ("customer_key", "_loaded_at"),
    "dim_products": ("product_key", "_loaded_at"),
    "dim_payment_method": ("payment_method_key",),
    "agg_payment_method_daily": ("payment_method_key",),
}
NATURAL = {
    # fact keys replaced by what they stand for, so loads with other surrogate keys compare
    "fact_sales": "(SELECT customer_id FROM warehouse.dim_customers c WHERE c.customer_key = t.customer_key),"
    " (SELECT product_id FROM warehouse.dim_products p WHERE p.product_key = t.product_key),"
    " (SELECT payment_method_name FROM warehouse.dim_payment_method m"
    "   WHERE m.payment_method_key = t.payment_method_key)",
    "agg_payment_method_daily": "(SELECT payment_method_name FROM warehouse.dim_payment_method m"
    " WHERE m.payment_method_key = t.payment_method_key)",
}


def table_checksums(
    conn: psycopg2.extensions.connection, tables: Iterable[str] | None = None
) -> dict[str, tuple[int, str]]:
    """(rows, md5 of the rows in a stable order) per warehouse table, and the agg_customer_metrics
    view (its recency is computed when read), volatile columns left out."""
    with conn.cursor() as cur:
        if tables is None:
            cur.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'warehouse'"
                " AND (table_type = 'BASE TABLE' OR table_name = 'agg_customer_metrics')"
                " ORDER BY 1"
            )
            tables = [r[0] for r in cur.fetchall()]
        out = {}
        for table in tables:
            cur.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'warehouse' AND table_name = %s ORDER BY ordinal_position",
                (table,),
            )
            columns = [r[0] for r in cur.fetchall() if r[0] not in VOLATILE.get(table, ())]
            expr = "ROW(" + ", ".join(f"t.{c}" for c in columns)
            if table in NATURAL:
                expr += ", " + NATURAL[table]
            expr += ")::text"
            cur.execute(
                f"SELECT count(*), coalesce(md5(string_agg(x, '|' ORDER BY x)), '')"
                f" FROM (SELECT {expr} AS x FROM warehouse.{table} t) s"
            )
            out[table] = tuple(cur.fetchone())
    conn.rollback()
    return out
