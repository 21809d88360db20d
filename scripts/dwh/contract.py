"""The staging contract: which source files exist, their columns, and the load order.

Every other module takes file names, table names and column lists from here, so the generator,
the ingestion and the tests cannot disagree about them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceFile:
    """One source file of a batch and the staging table it lands in."""

    name: str  # file name inside a batch folder, e.g. "customers.csv"
    table: str  # staging table name (schema staging), e.g. "customers"
    key: str  # natural key column
    columns: tuple[str, ...]  # the header, in the generator's order


CUSTOMERS = SourceFile(
    name="customers.csv",
    table="customers",
    key="customer_id",
    columns=(
        "customer_id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "registration_date",
        "city",
        "state",
        "country",
        "age_group",
    ),
)

PRODUCTS = SourceFile(
    name="products.csv",
    table="products",
    key="product_id",
    columns=(
        "product_id",
        "product_name",
        "category",
        "sub_category",
        "price",
        "cost",
        "brand",
        "stock_quantity",
        "supplier_id",
    ),
)

TRANSACTIONS = SourceFile(
    name="transactions.csv",
    table="transactions",
    key="transaction_id",
    columns=(
        "transaction_id",
        "customer_id",
        "transaction_date",
        "transaction_time",
        "payment_method",
        "shipping_address",
        "total_amount",
    ),
)

TRANSACTION_ITEMS = SourceFile(
    name="transaction_items.csv",
    table="transaction_items",
    key="item_id",
    columns=(
        "item_id",
        "transaction_id",
        "product_id",
        "quantity",
        "unit_price",
        "discount_percentage",
        "line_total",
    ),
)

# Parents before children: the order files of a batch are loaded and promoted in.
SOURCE_FILES: tuple[SourceFile, ...] = (CUSTOMERS, PRODUCTS, TRANSACTIONS, TRANSACTION_ITEMS)
SOURCE_BY_NAME: dict[str, SourceFile] = {f.name: f for f in SOURCE_FILES}

# Pipeline columns every staging table has after the source columns.
STAGING_META_COLUMNS: tuple[str, ...] = ("_batch_id", "_source_file", "_source_line", "_loaded_at")

CATEGORIES: tuple[str, ...] = (
    "Electronics",
    "Clothing",
    "Home & Kitchen",
    "Books",
    "Sports",
    "Beauty",
)
PAYMENT_METHODS: tuple[str, ...] = (
    "Credit Card",
    "Debit Card",
    "UPI",
    "Cash on Delivery",
    "Net Banking",
)
AGE_GROUPS: tuple[str, ...] = ("18-25", "26-35", "36-45", "46-60", "60+")
DISCOUNTS: tuple[int, ...] = (0, 5, 10, 15)

MANIFEST_NAME = "manifest.json"
