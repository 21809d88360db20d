"""Every analytics query checked against an independent computation in Python over the known
dataset of test_warehouse_support (two batches: a customer moves, a product's cost changes)."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from test_warehouse_support import (
    BATCH_1,
    BATCH_2,
    load_batch,
    merged,
    open_warehouse,
    run_stages,
)

from dwh.stages.analytics import QUERIES_DIR, SUMMARY_NAME, query_files, query_text

pytestmark = pytest.mark.integration

D = Decimal
DATA = merged([BATCH_1, BATCH_2])
CUSTOMERS = {c.customer_id: c for c in DATA.customers}  # current attributes
PRODUCTS = {p.product_id: p for p in DATA.products}
TRANSACTIONS = {t.transaction_id: t for t in DATA.transactions}


def r2(value: Decimal) -> Decimal:
    return value.quantize(D("0.01"), rounding=ROUND_HALF_UP)


def cost_on(product_id: str, day: dt.date) -> Decimal:
    """Cost valid on a day: batch 1's cost before batch 2's business date, then the latest."""
    first = {p.product_id: p for p in BATCH_1.products}.get(product_id)
    assert BATCH_2.business_date is not None
    if first is not None and day < BATCH_2.business_date:
        return first.cost
    return PRODUCTS[product_id].cost


# one dict per order line, computed from the dataset only
LINES = []
for _item in DATA.items:
    _t = TRANSACTIONS[_item.transaction_id]
    _cost = cost_on(_item.product_id, _t.transaction_date) * _item.quantity
    LINES.append(
        {
            "item": _item.item_id,
            "order": _t.transaction_id,
            "customer": _t.customer_id,
            "product": _item.product_id,
            "date": _t.transaction_date,
            "payment": _t.payment_method,
            "quantity": _item.quantity,
            "discount_pct": _item.discount_percentage,
            "gross": _item.unit_price * _item.quantity,
            "revenue": _item.line_total,
            "cost": _cost,
            "profit": _item.line_total - _cost,
        }
    )
AS_OF = max(line["date"] for line in LINES)


def total(lines, key: str) -> Decimal:
    return sum((line[key] for line in lines), D("0"))


def group(lines, key) -> dict:
    out = defaultdict(list)
    for line in lines:
        out[key(line)].append(line)
    return out


# analytics folder -> the database it was exported from (for queries run with other constants)
exported_urls: dict[Path, str] = {}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, pg_server_url):
    """Load both batches one by one, run the stages, return the analytics folder."""
    import uuid

    import psycopg2
    from psycopg2 import sql

    from dwh.settings import load_settings

    name = f"dwh_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = pg_server_url.rsplit("/", 1)[0] + "/" + name
    try:
        settings = load_settings(
            data_dir=tmp_path_factory.mktemp("analytics") / "data", database_url=url, environ={}
        )
        conn = open_warehouse(url)
        load_batch(conn, BATCH_1)
        run_stages(conn, settings, ("warehouse", "aggregates", "analytics"))
        load_batch(conn, BATCH_2)
        run_stages(conn, settings, ("warehouse", "aggregates", "analytics"))
        conn.close()
        exported_urls[settings.processed_dir / "analytics"] = url
        yield settings.processed_dir / "analytics", settings
    finally:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()


def read(folder: Path, name: str) -> list[dict[str, str]]:
    with (folder / f"{name}.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def typed(rows: list[dict[str, str]], expected: list[dict]) -> list[dict]:
    """The CSV rows with each value parsed like the expected value of its column."""
    out = []
    for row in rows:
        parsed = {}
        for column, value in row.items():
            sample = next((e[column] for e in expected if e.get(column) is not None), "")
            if value == "":
                parsed[column] = None
            elif isinstance(sample, Decimal):
                parsed[column] = Decimal(value)
            elif isinstance(sample, bool):
                parsed[column] = value == "t"
            elif isinstance(sample, int):
                parsed[column] = int(value)
            elif isinstance(sample, dt.date):
                parsed[column] = dt.date.fromisoformat(value)
            else:
                parsed[column] = value
        out.append(parsed)
    return out


def check(folder: Path, name: str, expected: list[dict]) -> None:
    rows = read(folder, name)
    assert rows, f"{name}.csv is empty"
    assert list(rows[0]) == list(expected[0]), f"{name}: columns"
    assert typed(rows, expected) == expected


def pct(part: Decimal, whole: Decimal) -> Decimal | None:
    return r2(D(part) * 100 / D(whole)) if whole else None


# ── expected results, one function per query ─────────────────────────────────────────────────
def _products() -> list[dict]:
    rows = []
    for pid, lines in group(LINES, lambda x: x["product"]).items():
        revenue, profit = total(lines, "revenue"), total(lines, "profit")
        rows.append(
            {
                "product_id": pid,
                "quantity": sum(x["quantity"] for x in lines),
                "revenue": revenue,
                "cost": total(lines, "cost"),
                "profit": profit,
                "margin_pct": pct(profit, revenue),
                "transactions": len({x["order"] for x in lines}),
            }
        )
    return rows


def expected_top_products_by_revenue() -> list[dict]:
    products = sorted(_products(), key=lambda p: (-p["revenue"], p["product_id"]))
    out = []
    for p in products[:10]:
        rank = 1 + sum(1 for q in products if q["revenue"] > p["revenue"])
        out.append(
            {
                "revenue_rank": rank,
                "product_id": p["product_id"],
                "product_name": PRODUCTS[p["product_id"]].product_name,
                "category": PRODUCTS[p["product_id"]].category,
                "brand": PRODUCTS[p["product_id"]].brand,
                "quantity_sold": p["quantity"],
                "revenue": p["revenue"],
                "profit": p["profit"],
                "margin_pct": p["margin_pct"],
                "transactions": p["transactions"],
            }
        )
    return out


def expected_monthly_sales_trend() -> list[dict]:
    out = []
    for month, lines in sorted(group(LINES, lambda x: x["date"].replace(day=1)).items()):
        orders = len({x["order"] for x in lines})
        revenue = total(lines, "revenue")
        out.append(
            {
                "month": month,
                "orders": orders,
                "items": len(lines),
                "quantity": sum(x["quantity"] for x in lines),
                "revenue": revenue,
                "profit": total(lines, "profit"),
                "avg_order_value": r2(revenue / orders),
                "unique_customers": len({x["customer"] for x in lines}),
            }
        )
    return out


def _customers() -> dict[str, dict]:
    out = {}
    for cid, lines in group(LINES, lambda x: x["customer"]).items():
        orders = len({x["order"] for x in lines})
        spent = total(lines, "revenue")
        out[cid] = {
            "orders": orders,
            "spent": spent,
            "first": min(x["date"] for x in lines),
            "last": max(x["date"] for x in lines),
        }
    return out


def expected_customer_spend_bands() -> list[dict]:
    bands = [
        (1, "under 100", D(0), D(100)),
        (2, "100 to 500", D(100), D(500)),
        (3, "500 to 1000", D(500), D(1000)),
        (4, "1000 to 2500", D(1000), D(2500)),
        (5, "2500 to 5000", D(2500), D(5000)),
        (6, "5000 and over", D(5000), None),
    ]
    customers = _customers().values()
    all_revenue = sum((c["spent"] for c in customers), D(0))
    out = []
    for order, label, low, high in bands:
        members = [
            c for c in customers if c["spent"] >= low and (high is None or c["spent"] < high)
        ]
        revenue = sum((c["spent"] for c in members), D(0))
        orders = sum(c["orders"] for c in members)
        out.append(
            {
                "band_order": order,
                "spend_band": label,
                "customers": len(members),
                "customers_pct": pct(D(len(members)), D(len(customers))),
                "revenue": revenue,
                "revenue_pct": pct(revenue, all_revenue),
                "avg_spent": r2(revenue / len(members)) if members else None,
                "avg_order_value": r2(revenue / orders) if orders else None,
            }
        )
    return out


def expected_category_performance() -> list[dict]:
    all_revenue = total(LINES, "revenue")
    out = []
    for category, lines in group(LINES, lambda x: PRODUCTS[x["product"]].category).items():
        revenue, profit = total(lines, "revenue"), total(lines, "profit")
        out.append(
            {
                "category": category,
                "products_sold": len({x["product"] for x in lines}),
                "quantity": sum(x["quantity"] for x in lines),
                "revenue": revenue,
                "cost": total(lines, "cost"),
                "profit": profit,
                "margin_pct": pct(profit, revenue),
                "revenue_share_pct": pct(revenue, all_revenue),
            }
        )
    return sorted(out, key=lambda r: (-r["revenue"], r["category"]))


def expected_payment_method_share() -> list[dict]:
    all_revenue = total(LINES, "revenue")
    all_orders = len({x["order"] for x in LINES})
    out = []
    for method, lines in group(LINES, lambda x: x["payment"]).items():
        orders = len({x["order"] for x in lines})
        revenue = total(lines, "revenue")
        out.append(
            {
                "payment_method": method,
                "payment_type": "Offline" if method == "Cash on Delivery" else "Online",
                "orders": orders,
                "orders_pct": pct(D(orders), D(all_orders)),
                "revenue": revenue,
                "revenue_pct": pct(revenue, all_revenue),
                "avg_order_value": r2(revenue / orders),
            }
        )
    return sorted(out, key=lambda r: (-r["revenue"], r["payment_method"]))


def expected_revenue_by_state() -> list[dict]:
    customers = _customers()
    all_revenue = total(LINES, "revenue")
    out = []
    for (country, state), ids in group(
        customers, lambda cid: (CUSTOMERS[cid].country, CUSTOMERS[cid].state)
    ).items():
        revenue = sum((customers[c]["spent"] for c in ids), D(0))
        orders = sum(customers[c]["orders"] for c in ids)
        out.append(
            {
                "country": country,
                "state": state,
                "customers": len(ids),
                "orders": orders,
                "revenue": revenue,
                "avg_order_value": r2(revenue / orders),
                "revenue_share_pct": pct(revenue, all_revenue),
            }
        )
    return sorted(out, key=lambda r: (-r["revenue"], r["country"], r["state"]))


def _scores(c: dict, settings) -> tuple[int, int, int]:
    wh = settings.warehouse
    days = (AS_OF - c["last"]).days
    recency = next((5 - i for i, bound in enumerate(wh.rfm_recency_days) if days <= bound), 1)
    frequency = 1 + sum(c["orders"] >= b for b in wh.rfm_frequency_orders)
    monetary = 1 + sum(c["spent"] >= D(str(b)) for b in wh.rfm_monetary_spent)
    return recency, frequency, monetary


def _rfm_segment(r: int, f: int, m: int) -> str:
    if r >= 4 and f >= 4 and m >= 4:
        return "Champions"
    if r >= 3 and f >= 3:
        return "Loyal"
    if r >= 4:
        return "Promising"
    if r <= 2 and f >= 3:
        return "At Risk"
    if r <= 2:
        return "Hibernating"
    return "Need Attention"


def expected_customer_lifetime_value(settings) -> list[dict]:
    wh = settings.warehouse
    out = []
    for cid, c in _customers().items():
        segment = (
            "VIP"
            if c["spent"] >= D(str(wh.vip_min_total_spent))
            else "Regular"
            if c["orders"] >= wh.regular_min_transactions
            else "New"
        )
        customer = CUSTOMERS[cid]
        out.append(
            {
                "customer_id": cid,
                "full_name": f"{customer.first_name} {customer.last_name}",
                "customer_segment": segment,
                "rfm_segment": _rfm_segment(*_scores(c, settings)),
                "orders": c["orders"],
                "lifetime_value": c["spent"],
                "avg_order_value": r2(c["spent"] / c["orders"]),
                "first_purchase_date": c["first"],
                "last_purchase_date": c["last"],
                "lifespan_days": (c["last"] - c["first"]).days,
            }
        )
    return sorted(out, key=lambda r: (-r["lifetime_value"], r["customer_id"]))[:100]


PROFITABILITY_N = 50  # the N of sql/queries/product_profitability.sql (top and bottom N)


def expected_product_profitability(n: int = PROFITABILITY_N) -> list[dict]:
    """The top and bottom n products by profit (every product once when there are < 2n), with
    their rank among all products."""
    out = [
        {
            "product_id": p["product_id"],
            "product_name": PRODUCTS[p["product_id"]].product_name,
            "category": PRODUCTS[p["product_id"]].category,
            "quantity_sold": p["quantity"],
            "revenue": p["revenue"],
            "cost": p["cost"],
            "profit": p["profit"],
            "margin_pct": p["margin_pct"],
            "profit_per_unit": r2(p["profit"] / p["quantity"]),
        }
        for p in _products()
    ]
    ranked = sorted(out, key=lambda r: (-r["profit"], r["product_id"]))
    return [
        {"profit_rank": rank, **row}
        for rank, row in enumerate(ranked, start=1)
        if rank <= n or rank > len(ranked) - n
    ]


def expected_day_of_week_pattern() -> list[dict]:
    all_revenue = total(LINES, "revenue")
    out = []
    for dow, lines in sorted(group(LINES, lambda x: x["date"].isoweekday()).items()):
        revenue = total(lines, "revenue")
        days = len({x["date"] for x in lines})
        orders = len({x["order"] for x in lines})
        out.append(
            {
                "day_of_week": dow,
                "day_name": lines[0]["date"].strftime("%A"),
                "days_with_sales": days,
                "orders": orders,
                "revenue": revenue,
                "avg_daily_revenue": r2(revenue / days),
                "avg_order_value": r2(revenue / orders),
                "revenue_share_pct": pct(revenue, all_revenue),
            }
        )
    return out


def expected_discount_bands() -> list[dict]:
    def band(p: Decimal) -> int:
        if p == 0:
            return 1
        for number, upper in ((2, 5), (3, 10), (4, 15), (5, 25)):
            if p <= upper:
                return number
        return 6

    labels = ["none (0)", "(0, 5]", "(5, 10]", "(10, 15]", "(15, 25]", "over 25"]
    all_revenue = total(LINES, "revenue")
    groups = group(LINES, lambda x: band(x["discount_pct"]))
    out = []
    for number, label in enumerate(labels, start=1):
        lines = groups.get(number, [])
        revenue, profit = total(lines, "revenue"), total(lines, "profit")
        out.append(
            {
                "band_order": number,
                "discount_band": label,
                "items": len(lines),
                "quantity": sum(x["quantity"] for x in lines),
                "gross_amount": total(lines, "gross"),
                "discount_amount": total(lines, "gross") - revenue,
                "revenue": revenue,
                "profit": profit,
                "margin_pct": pct(profit, revenue),
                "revenue_share_pct": pct(revenue, all_revenue),
            }
        )
    return out


def expected_cohort_retention() -> list[dict]:
    customers = _customers()
    cohort = {cid: c["first"].replace(day=1) for cid, c in customers.items()}
    size = defaultdict(int)
    for month in cohort.values():
        size[month] += 1
    out = []
    cells = group(LINES, lambda x: (cohort[x["customer"]], x["date"].replace(day=1)))
    for (first, month), lines in sorted(cells.items()):
        active = len({x["customer"] for x in lines})
        out.append(
            {
                "cohort_month": first,
                "months_since": (month.year - first.year) * 12 + month.month - first.month,
                "activity_month": month,
                "cohort_size": size[first],
                "active_customers": active,
                "retention_rate": (D(active) / size[first]).quantize(D("0.0001")),
                "revenue": total(lines, "revenue"),
            }
        )
    return out


# ── the tests ────────────────────────────────────────────────────────────────────────────────
CHECKS = {
    "top_products_by_revenue": lambda s: expected_top_products_by_revenue(),
    "monthly_sales_trend": lambda s: expected_monthly_sales_trend(),
    "customer_spend_bands": lambda s: expected_customer_spend_bands(),
    "category_performance": lambda s: expected_category_performance(),
    "payment_method_share": lambda s: expected_payment_method_share(),
    "revenue_by_state": lambda s: expected_revenue_by_state(),
    "customer_lifetime_value": expected_customer_lifetime_value,
    "product_profitability": lambda s: expected_product_profitability(),
    "day_of_week_pattern": lambda s: expected_day_of_week_pattern(),
    "discount_bands": lambda s: expected_discount_bands(),
    "cohort_retention": lambda s: expected_cohort_retention(),
}


def test_every_query_file_has_a_check():
    assert sorted(p.stem for p in query_files()) == sorted(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_query_matches_an_independent_computation(exported, name):
    folder, settings = exported
    check(folder, name, CHECKS[name](settings))


@pytest.mark.parametrize("n", [1, 3])
def test_product_profitability_keeps_the_top_and_bottom_n(exported, n):
    """The shipped N (50) keeps every product of this small dataset (4 products); the query with
    N = 1 returns only both ends, ranked among all products; with N = 3 the ends overlap and
    every product comes once."""
    import psycopg2

    folder, _ = exported
    products = len(_products())
    assert products == 4
    text = query_text(QUERIES_DIR / "product_profitability.sql")
    shipped = f"limits (n) AS (VALUES ({PROFITABILITY_N}))"
    assert shipped in text
    conn = psycopg2.connect(exported_urls[folder])
    try:
        with conn.cursor() as cur:
            cur.execute(text.replace(shipped, f"limits (n) AS (VALUES ({n}))"))
            columns = [c.name for c in cur.description]
            rows = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()
    expected = expected_product_profitability(n)
    assert len(expected) == min(2 * n, products)
    assert rows == expected


def test_dataset_exercises_the_interesting_cases():
    """Guards the dataset itself: a moved customer, a cost change, several months and bands."""
    assert {line["date"].month for line in LINES} == {1, 2, 3}
    assert cost_on("P2", dt.date(2024, 1, 5)) != cost_on("P2", dt.date(2024, 3, 10))
    assert len({line["discount_pct"] for line in LINES}) >= 4
    assert len(expected_cohort_retention()) >= 5


def test_summary_lists_rows_columns_and_timings(exported):
    folder, _ = exported
    summary = json.loads((folder / SUMMARY_NAME).read_text(encoding="utf-8"))
    assert sorted(summary) == sorted(CHECKS)
    for name, item in summary.items():
        rows = read(folder, name)
        assert item["rows"] == len(rows)
        assert item["columns"] == list(rows[0])
        assert 0 <= item["milliseconds"] < 60_000  # milliseconds, not seconds or microseconds
    assert not list(folder.glob(".*.tmp"))
