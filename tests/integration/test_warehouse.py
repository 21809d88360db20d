"""The warehouse and aggregates stages on a small known dataset written into production:
reconciliation, SCD2, inferred members, idempotence, incremental = full refresh, BI access."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import psycopg2
import psycopg2.errors
import pytest
from test_warehouse_support import (
    BATCH_1,
    BATCH_2,
    CUSTOMERS,
    Batch,
    Customer,
    Item,
    Product,
    Transaction,
    fetch,
    load_batch,
    merged,
    open_warehouse,
    run_stages,
    scalar,
    table_checksums,
)

from dwh import db
from dwh.exceptions import PipelineError
from dwh.stages.analytics import QUERIES_DIR, query_text

pytestmark = pytest.mark.integration

D = Decimal
AGGREGATES = (
    "agg_daily_sales",
    "agg_payment_method_daily",
    "agg_discount_daily",
    "agg_product_performance",
    "agg_customer_metrics",
    "agg_monthly_cohorts",
)


@pytest.fixture
def wh(db_url, make_settings):
    conn = open_warehouse(db_url)
    try:
        yield conn, make_settings(db_url)
    finally:
        conn.close()


def _cost_on(product_id: str, day: dt.date) -> Decimal:
    """The product's cost valid on a day, from the batches' history (independent of the SQL)."""
    cost = None
    for batch in (BATCH_1, BATCH_2):
        for p in batch.products:
            if p.product_id == product_id and (
                cost is None or batch.business_date is None or day >= batch.business_date
            ):
                cost = p.cost
    assert cost is not None
    return cost


def _load_both(conn, settings) -> None:
    load_batch(conn, BATCH_1)
    run_stages(conn, settings)
    load_batch(conn, BATCH_2)
    run_stages(conn, settings)


def test_fact_reconciles_with_production_and_aggregates_with_the_fact(wh):
    conn, settings = wh
    _load_both(conn, settings)
    data = merged([BATCH_1, BATCH_2])
    dates = {t.transaction_id: t.transaction_date for t in data.transactions}

    assert scalar(conn, "SELECT count(*) FROM warehouse.fact_sales") == len(data.items) == 14
    assert scalar(conn, "SELECT count(*) FROM production.transaction_items") == 14
    total, quantity, profit = fetch(
        conn, "SELECT sum(line_total), sum(quantity), sum(profit) FROM warehouse.fact_sales"
    )[0]
    assert total == sum(i.line_total for i in data.items)
    assert total == scalar(conn, "SELECT sum(line_total) FROM production.transaction_items")
    assert quantity == sum(i.quantity for i in data.items)
    expected_profit = sum(
        i.line_total - _cost_on(i.product_id, dates[i.transaction_id]) * i.quantity
        for i in data.items
    )
    assert profit == expected_profit
    # every key set and resolving, none pointing at an unknown member
    assert (
        scalar(
            conn,
            """SELECT count(*) FROM warehouse.fact_sales f
               LEFT JOIN warehouse.dim_date d ON d.date_key = f.date_key
               LEFT JOIN warehouse.dim_customers c ON c.customer_key = f.customer_key
               LEFT JOIN warehouse.dim_products p ON p.product_key = f.product_key
               LEFT JOIN warehouse.dim_payment_method m
                      ON m.payment_method_key = f.payment_method_key
               WHERE d.date_key IS NULL OR c.customer_key IS NULL OR p.product_key IS NULL
                  OR m.payment_method_key IS NULL
                  OR -1 IN (f.date_key, f.customer_key, f.product_key, f.payment_method_key)""",
        )
        == 0
    )
    # the version a line points at is valid on its order date
    assert (
        scalar(
            conn,
            """SELECT count(*) FROM warehouse.fact_sales f
               JOIN warehouse.dim_date d ON d.date_key = f.date_key
               JOIN warehouse.dim_customers c ON c.customer_key = f.customer_key
               JOIN warehouse.dim_products p ON p.product_key = f.product_key
               WHERE NOT (d.full_date >= c.effective_from AND d.full_date < c.effective_to)
                  OR NOT (d.full_date >= p.effective_from AND d.full_date < p.effective_to)""",
        )
        == 0
    )
    # every aggregate reconciles with the fact
    fact = fetch(
        conn,
        """SELECT sum(line_total), sum(profit), sum(quantity), count(*),
                  count(DISTINCT transaction_id), sum(cost_amount), sum(gross_amount),
                  sum(discount_amount)
           FROM warehouse.fact_sales""",
    )[0]
    rev, prof, qty, items, orders, cost, gross, disc = fact
    assert fetch(
        conn,
        "SELECT sum(revenue), sum(profit), sum(quantity), sum(items), sum(transactions)"
        " FROM warehouse.agg_daily_sales",
    )[0] == (rev, prof, qty, items, orders)
    assert fetch(
        conn,
        "SELECT sum(revenue), sum(profit), sum(items), sum(transactions)"
        " FROM warehouse.agg_payment_method_daily",
    )[0] == (rev, prof, items, orders)
    assert fetch(
        conn,
        "SELECT sum(revenue), sum(profit), sum(items), sum(quantity), sum(gross_amount),"
        " sum(discount_amount) FROM warehouse.agg_discount_daily",
    )[0] == (rev, prof, items, qty, gross, disc)
    assert fetch(
        conn,
        "SELECT sum(revenue), sum(profit), sum(quantity_sold), sum(cost)"
        " FROM warehouse.agg_product_performance",
    )[0] == (rev, prof, qty, cost)
    assert fetch(
        conn, "SELECT sum(total_spent), sum(transactions) FROM warehouse.agg_customer_metrics"
    )[0] == (rev, orders)
    assert scalar(conn, "SELECT sum(revenue) FROM warehouse.agg_monthly_cohorts") == rev
    assert gross == disc + rev


def test_scd2_change_closes_the_old_version_and_keeps_history_in_the_facts(wh):
    conn, settings = wh
    load_batch(conn, BATCH_1)
    run_stages(conn, settings)
    old_key = scalar(
        conn, "SELECT customer_key FROM warehouse.dim_customers WHERE customer_id = 'C1'"
    )
    load_batch(conn, BATCH_2)
    run_stages(conn, settings)

    versions = fetch(
        conn,
        """SELECT customer_key, city, effective_from, effective_to, is_current
           FROM warehouse.dim_customers WHERE customer_id = 'C1' ORDER BY effective_from""",
    )
    assert versions == [
        (old_key, "Mumbai", dt.date(1900, 1, 1), dt.date(2024, 3, 10), False),
        (versions[1][0], "Delhi", dt.date(2024, 3, 10), dt.date(9999, 12, 31), True),
    ]
    new_key = versions[1][0]
    assert new_key != old_key
    keys = dict(
        fetch(
            conn,
            """SELECT f.transaction_id, f.customer_key FROM warehouse.fact_sales f
               JOIN warehouse.dim_customers c USING (customer_key)
               WHERE c.customer_id = 'C1'""",
        )
    )
    assert keys == {"T01": old_key, "T03": old_key, "T07": old_key, "T08": new_key}
    # unchanged customers are untouched: one version each
    assert fetch(
        conn,
        "SELECT customer_id, count(*) FROM warehouse.dim_customers"
        " WHERE customer_id IN ('C2', 'C3', 'C4', 'C5') GROUP BY 1 ORDER BY 1",
    ) == [("C2", 1), ("C3", 1), ("C4", 1), ("C5", 1)]
    # the product's cost change: earlier lines keep the old cost, later ones get the new one
    costs = dict(
        fetch(
            conn,
            "SELECT f.item_id, f.cost_amount / f.quantity FROM warehouse.fact_sales f"
            " WHERE f.item_id IN ('I02', 'I10', 'I11')",
        )
    )
    assert costs == {"I02": D("15"), "I10": D("15"), "I11": D("18")}
    # one current version per entity, ranges continuous and non-overlapping
    assert (
        scalar(
            conn,
            """SELECT count(*) FROM (
                 SELECT effective_to, lead(effective_from) OVER w AS next_from, is_current
                 FROM warehouse.dim_customers WINDOW w AS (PARTITION BY customer_id
                                                           ORDER BY effective_from)) v
               WHERE (next_from IS NULL) <> is_current
                  OR (next_from IS NOT NULL AND next_from <> effective_to)""",
        )
        == 0
    )


def test_two_changes_on_one_business_day_keep_ranges_continuous(wh):
    conn, settings = wh
    _load_both(conn, settings)
    again = Batch(
        "batch_0003",
        BATCH_2.business_date,
        customers=[replace(BATCH_2.customers[0], city="Kolkata", state="West Bengal")],
    )
    load_batch(conn, again)
    run_stages(conn, settings)
    assert fetch(
        conn,
        """SELECT city, effective_from, effective_to, is_current FROM warehouse.dim_customers
           WHERE customer_id = 'C1' ORDER BY effective_from""",
    ) == [
        ("Mumbai", dt.date(1900, 1, 1), dt.date(2024, 3, 10), False),
        ("Kolkata", dt.date(2024, 3, 10), dt.date(9999, 12, 31), True),
    ]
    # the version overwritten in place moved state: the aggregates that group by it were
    # refreshed for its lines, as a full refresh would have built them
    incremental = table_checksums(conn)
    assert table_checksums_after_full_refresh(conn, settings) == incremental
    # a later business day opens a third version
    later = Batch("batch_0004", dt.date(2024, 3, 20), customers=[replace(CUSTOMER_C1, city="Goa")])
    load_batch(conn, later)
    run_stages(conn, settings)
    assert fetch(
        conn,
        """SELECT city, effective_from, effective_to FROM warehouse.dim_customers
           WHERE customer_id = 'C1' ORDER BY effective_from""",
    ) == [
        ("Mumbai", dt.date(1900, 1, 1), dt.date(2024, 3, 10)),
        ("Kolkata", dt.date(2024, 3, 10), dt.date(2024, 3, 20)),
        ("Goa", dt.date(2024, 3, 20), dt.date(9999, 12, 31)),
    ]


CUSTOMER_C1 = BATCH_1.customers[0]


def test_batch_without_business_date_uses_its_last_order_date(wh):
    conn, settings = wh
    load_batch(conn, BATCH_1)
    run_stages(conn, settings)
    undated = Batch(
        "batch_0002",
        None,
        customers=[replace(CUSTOMER_C1, city="Delhi")],
        transactions=[Transaction("T20", "C2", dt.date(2024, 3, 14), "UPI")],
        items=[Item("I20", "T20", "P4", 1, D("20.00"), D("0"))],
    )
    load_batch(conn, undated)
    run_stages(conn, settings)
    assert fetch(
        conn,
        "SELECT effective_from FROM warehouse.dim_customers"
        " WHERE customer_id = 'C1' AND is_current",
    ) == [(dt.date(2024, 3, 14),)]


def test_fact_foreign_keys_declared_and_enforced_before_postgresql_18(wh):
    conn, settings = wh
    load_batch(conn, BATCH_1)
    run_stages(conn, settings)
    version = int(scalar(conn, "SELECT current_setting('server_version_num')"))
    enforced = "conenforced" if version >= 180000 else "true"
    keys = fetch(
        conn,
        f"SELECT pg_get_constraintdef(oid), {enforced} FROM pg_constraint"
        " WHERE conrelid = 'warehouse.fact_sales'::regclass AND contype = 'f' ORDER BY 1",
    )
    # every relationship of the star stays in the catalogue, for BI tools and the dictionary
    assert [k[0].split(" NOT ENFORCED")[0] for k in keys] == [
        f"FOREIGN KEY ({column}) REFERENCES warehouse.{dim}({column})"
        for column, dim in (
            ("customer_key", "dim_customers"),
            ("date_key", "dim_date"),
            ("payment_method_key", "dim_payment_method"),
            ("product_key", "dim_products"),
        )
    ]
    # checked per line by triggers before 18; from 18 by the fact load's own query (below)
    assert {k[1] for k in keys} == {version < 180000}


@pytest.mark.parametrize("full_refresh", [False, True], ids=["batch", "full_refresh"])
def test_fact_line_whose_dimension_row_vanishes_fails_the_load(wh, full_refresh):
    """A line must never point at a missing dimension row. Here a trigger deletes the customer
    version of each line as it is inserted, in a batch and in a full refresh (which checks the
    whole fact): before PostgreSQL 18 the foreign key refuses it, from 18 (foreign keys NOT
    ENFORCED) the fact load's own check does; the run fails and the warehouse keeps its
    previous state either way."""
    conn, settings = wh
    load_batch(conn, BATCH_1)
    run_stages(conn, settings)
    before = table_checksums(conn)
    with conn.cursor() as cur:
        cur.execute(
            """
            CREATE FUNCTION pg_temp.drop_customer_versions() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                DELETE FROM warehouse.dim_customers
                WHERE customer_key IN (SELECT customer_key FROM new_lines);
                RETURN NULL;
            END $$;
            CREATE TRIGGER drop_customer_versions AFTER INSERT ON warehouse.fact_sales
            REFERENCING NEW TABLE AS new_lines
            FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.drop_customer_versions();
            """
        )
    conn.commit()
    load_batch(conn, BATCH_2)
    version = int(scalar(conn, "SELECT current_setting('server_version_num')"))
    refused_by = (
        pytest.raises(PipelineError, match=r"fact_sales: \d+ order lines .* does not exist")
        if version >= 180000
        else pytest.raises(psycopg2.errors.ForeignKeyViolation)
    )
    with refused_by:
        run_stages(conn, settings, ("warehouse",), full_refresh=full_refresh)
    with conn.cursor() as cur:
        cur.execute("DROP TRIGGER drop_customer_versions ON warehouse.fact_sales")
    conn.commit()
    assert table_checksums(conn) == before
    run_stages(conn, settings)
    assert scalar(conn, "SELECT count(*) FROM warehouse.fact_sales") == sum(
        len(b.items) for b in (BATCH_1, BATCH_2)
    )


def test_late_arriving_customer_and_product_get_inferred_members(wh):
    conn, settings = wh
    load_batch(conn, BATCH_1)
    # a source where orders may arrive before their customer and product
    with conn.cursor() as cur:
        cur.execute(
            "ALTER TABLE production.transactions DROP CONSTRAINT transactions_customer_id_fkey"
        )
        cur.execute(
            "ALTER TABLE production.transaction_items"
            " DROP CONSTRAINT transaction_items_product_id_fkey"
        )
    conn.commit()
    early = Batch(
        "batch_0002",
        dt.date(2024, 3, 10),
        transactions=[Transaction("T30", "C9", dt.date(2024, 3, 10), "UPI")],
        items=[Item("I30", "T30", "P9", 2, D("100.00"), D("0"))],
    )
    load_batch(conn, early)
    run_stages(conn, settings)
    customer = fetch(
        conn,
        "SELECT customer_key, is_inferred, full_name FROM warehouse.dim_customers"
        " WHERE customer_id = 'C9'",
    )
    product = fetch(
        conn,
        "SELECT product_key, is_inferred, cost FROM warehouse.dim_products WHERE product_id = 'P9'",
    )
    assert [row[1:] for row in customer] == [(True, None)]
    assert [row[1:] for row in product] == [(True, None)]
    line = fetch(
        conn,
        "SELECT customer_key, product_key, cost_amount, profit FROM warehouse.fact_sales"
        " WHERE item_id = 'I30'",
    )
    assert line == [(customer[0][0], product[0][0], D("0.00"), D("200.00"))]

    late = Batch(
        "batch_0003",
        dt.date(2024, 3, 11),
        customers=[Customer("C9", "Ira", "Sen", "Patna", "Bihar")],
        products=[Product("P9", "Lamp", "Home & Kitchen", D("100.00"), D("70.00"))],
    )
    load_batch(conn, late)
    run_stages(conn, settings)
    # completed in place: the same key, no second version, the fact keeps pointing at it
    assert fetch(
        conn,
        "SELECT customer_key, is_inferred, full_name, city FROM warehouse.dim_customers"
        " WHERE customer_id = 'C9'",
    ) == [(customer[0][0], False, "Ira Sen", "Patna")]
    assert fetch(
        conn,
        "SELECT product_key, is_inferred, cost FROM warehouse.dim_products WHERE product_id = 'P9'",
    ) == [(product[0][0], False, D("70.00"))]
    assert fetch(
        conn,
        "SELECT cost_amount, profit FROM warehouse.fact_sales WHERE item_id = 'I30'",
    ) == [(D("140.00"), D("60.00"))]
    # and the aggregates followed the re-costed line
    assert fetch(
        conn,
        "SELECT profit FROM warehouse.agg_product_performance WHERE product_id = 'P9'",
    ) == [(D("60.00"),)]
    assert scalar(
        conn, "SELECT profit FROM warehouse.agg_daily_sales WHERE date_key = 20240310"
    ) == scalar(conn, "SELECT sum(profit) FROM warehouse.fact_sales WHERE date_key = 20240310")


def test_changed_order_line_is_updated_and_its_old_date_refreshed(wh):
    conn, settings = wh
    _load_both(conn, settings)
    moved = Batch(
        "batch_0003",
        dt.date(2024, 3, 11),
        transactions=[replace(BATCH_1.transactions[4], transaction_date=dt.date(2024, 3, 11))],
        items=[replace(BATCH_1.items[6], quantity=3)],  # I07 of T05
    )
    load_batch(conn, moved)
    result = run_stages(conn, settings)
    assert result["warehouse"].details["fact_sales"]["updated"] == 1
    assert fetch(
        conn, "SELECT date_key, quantity FROM warehouse.fact_sales WHERE item_id = 'I07'"
    ) == [(20240311, 3)]
    # the old date has no sales any more, the new one has them; totals still reconcile
    assert fetch(
        conn,
        "SELECT date_key FROM warehouse.agg_daily_sales WHERE date_key IN (20240212, 20240311)",
    ) == [(20240311,)]
    assert scalar(conn, "SELECT sum(quantity) FROM warehouse.agg_daily_sales") == scalar(
        conn, "SELECT sum(quantity) FROM production.transaction_items"
    )
    before = table_checksums(conn)
    full = table_checksums_after_full_refresh(conn, settings)
    assert full == before


def table_checksums_after_full_refresh(conn, settings):
    run_stages(conn, settings, full_refresh=True)
    return table_checksums(conn)


def test_second_run_changes_nothing_and_full_refresh_gives_the_same_tables(wh):
    conn, settings = wh
    _load_both(conn, settings)
    first = table_checksums(conn)
    assert first["fact_sales"][0] == 14
    result = run_stages(conn, settings)
    assert result["warehouse"].rows_out == 0
    assert result["aggregates"].details["touched"]["dates"] == 0
    assert table_checksums(conn) == first
    result = run_stages(conn, settings, full_refresh=True)
    assert result["warehouse"].details["fact_sales"]["inserted"] == 14
    assert result["aggregates"].details["full_refresh"] is True
    assert table_checksums(conn) == first
    # and a normal run after the full refresh changes nothing either
    run_stages(conn, settings)
    assert table_checksums(conn) == first


# Batch 3 (business date 2024-03-20): C1 moves again and P2's cost changes again, with orders
# on the day, one in between, and a late order dated before batch 2's changes.
BATCH_3 = Batch(
    "batch_0003",
    dt.date(2024, 3, 20),
    customers=[replace(CUSTOMER_C1, city="Goa", state="Goa")],
    products=[replace(BATCH_2.products[0], cost=D("21.00"))],
    transactions=[
        Transaction("T11", "C1", dt.date(2024, 3, 20), "UPI"),
        Transaction("T12", "C2", dt.date(2024, 3, 15), "Credit Card"),
        Transaction("T13", "C1", dt.date(2024, 3, 5), "Debit Card"),
    ],
    items=[
        Item("I15", "T11", "P2", 3, D("40.00"), D("0")),
        Item("I16", "T12", "P2", 1, D("40.00"), D("5")),
        Item("I17", "T13", "P2", 2, D("40.00"), D("10")),
        Item("I18", "T11", "P1", 1, D("500.00"), D("0")),
    ],
)


@pytest.fixture
def second_db(pg_server_url, db_url):
    """A second fresh database on the same server (for comparing two ways of loading)."""
    import uuid

    from psycopg2 import sql

    name = f"dwh_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield db_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()


def _load_apart_and_together(db_url, other_url, make_settings, batches):
    """Load the batches one per run into db_url and all then one run into other_url; return
    both connections and settings."""
    one, settings = open_warehouse(db_url), make_settings(db_url)
    for batch in batches:
        load_batch(one, batch)
        run_stages(one, settings)
    together, other_settings = open_warehouse(other_url), make_settings(other_url)
    for batch in batches:
        load_batch(together, batch)
    run_stages(together, other_settings)
    return (one, settings), (together, other_settings)


def test_one_by_one_equals_all_at_once_equals_full_refresh(db_url, second_db, make_settings):
    """A product's cost and a customer's city change in batch 2 and again in batch 3, with orders
    in each batch: one batch per run, all three then one run, and --full-refresh after either give
    the same warehouse, every column of every table (surrogate keys and load times aside)."""
    batches = (BATCH_1, BATCH_2, BATCH_3)
    (one, settings), (together, other_settings) = _load_apart_and_together(
        db_url, second_db, make_settings, batches
    )
    try:
        expected = table_checksums(one)
        assert table_checksums(together) == expected
        assert table_checksums_after_full_refresh(one, settings) == expected
        assert table_checksums_after_full_refresh(together, other_settings) == expected

        # the whole history is there: three versions of C1 and of P2
        assert fetch(
            together,
            """SELECT city, effective_from, effective_to, is_current FROM warehouse.dim_customers
               WHERE customer_id = 'C1' ORDER BY effective_from""",
        ) == [
            ("Mumbai", dt.date(1900, 1, 1), dt.date(2024, 3, 10), False),
            ("Delhi", dt.date(2024, 3, 10), dt.date(2024, 3, 20), False),
            ("Goa", dt.date(2024, 3, 20), dt.date(9999, 12, 31), True),
        ]
        assert fetch(
            together,
            "SELECT cost, effective_from FROM warehouse.dim_products WHERE product_id = 'P2'"
            " ORDER BY effective_from",
        ) == [
            (D("15.00"), dt.date(1900, 1, 1)),
            (D("18.00"), dt.date(2024, 3, 10)),
            (D("21.00"), dt.date(2024, 3, 20)),
        ]
        # each line carries the cost and the customer version valid on its order date
        lines = {
            item: (cost, city)
            for item, cost, city in fetch(
                together,
                """SELECT f.item_id, f.cost_amount / f.quantity, c.city
                   FROM warehouse.fact_sales f JOIN warehouse.dim_customers c USING (customer_key)
                   WHERE f.item_id IN ('I10', 'I11', 'I15', 'I16', 'I17')""",
            )
        }
        assert lines == {
            "I10": (D("15"), "Mumbai"),  # 2024-03-01
            "I11": (D("18"), "Delhi"),  # 2024-03-10
            "I15": (D("21"), "Goa"),  # 2024-03-20
            "I16": (D("18"), "Pune"),  # C2, 2024-03-15
            "I17": (D("15"), "Mumbai"),  # late order dated 2024-03-05
        }
    finally:
        one.close()
        together.close()


# Batch 4 (2024-03-21): late lines for order T11 of batch 3 (P1 is already in it, P3 is not), a
# new order of C1 with two lines of P1, late orders in February (C2 was active then, C1 was not,
# both before and after), a late order of C1 in its first month, a new customer's first order,
# and a changed line of C3 (I14).
BATCH_4 = Batch(
    "batch_0004",
    dt.date(2024, 3, 21),
    customers=[Customer("C9", "Ira", "Sen", "Kochi", "Kerala")],
    transactions=[
        Transaction("T14", "C1", dt.date(2024, 3, 21), "UPI"),
        Transaction("T15", "C9", dt.date(2024, 3, 21), "Credit Card"),
        Transaction("T16", "C1", dt.date(2024, 1, 31), "UPI"),
        Transaction("T17", "C1", dt.date(2024, 2, 15), "UPI"),
        Transaction("T18", "C2", dt.date(2024, 2, 20), "UPI"),
    ],
    items=[
        Item("I19", "T11", "P1", 1, D("500.00"), D("5")),
        Item("I20", "T11", "P3", 2, D("60.00"), D("0")),
        Item("I21", "T14", "P1", 1, D("500.00"), D("0")),
        Item("I22", "T14", "P1", 2, D("490.00"), D("10")),
        Item("I23", "T15", "P3", 1, D("60.00"), D("20")),
        Item("I24", "T16", "P4", 1, D("20.00"), D("0")),
        Item("I25", "T17", "P4", 2, D("20.00"), D("0")),
        Item("I26", "T18", "P4", 1, D("20.00"), D("0")),
        replace(BATCH_2.items[3], quantity=6),  # I14 of T10 (C3, P4) changed
    ],
)


def test_inserted_lines_are_added_to_the_stored_aggregates(wh):
    """A batch of inserted lines refreshes its products and customers by adding the lines' sums
    and the orders they add (a late line of an existing order adds no order) to the stored rows;
    a changed line's keys are recomputed. Either way the tables equal a full rebuild."""
    conn, settings = wh
    for batch in (BATCH_1, BATCH_2, BATCH_3):
        load_batch(conn, batch)
        run_stages(conn, settings)
    assert table_checksums(conn) == table_checksums_after_full_refresh(conn, settings)
    orders_before = dict(
        fetch(conn, "SELECT product_id, transactions FROM warehouse.agg_product_performance")
    )
    load_batch(conn, BATCH_4)
    result = run_stages(conn, settings)
    assert result["warehouse"].details["fact_sales"]["updated"] == 1
    touched = result["aggregates"].details["touched"]
    assert touched["added"] == 8 and not result["aggregates"].details["full_refresh"]
    # T11 already had P1: only T14 adds an order to P1; P3 gains T11 and T15
    orders_after = dict(
        fetch(conn, "SELECT product_id, transactions FROM warehouse.agg_product_performance")
    )
    assert orders_after["P1"] == orders_before["P1"] + 1
    assert orders_after["P3"] == orders_before["P3"] + 2
    assert fetch(
        conn,
        "SELECT customer_id, transactions FROM warehouse.agg_customer_metrics"
        " WHERE customer_id IN ('C1', 'C9') ORDER BY 1",
    ) == [
        (
            "C1",
            scalar(conn, "SELECT count(*) FROM production.transactions WHERE customer_id = 'C1'"),
        ),
        ("C9", 1),
    ]
    incremental = table_checksums(conn)
    assert table_checksums_after_full_refresh(conn, settings) == incremental


_REVENUE_BY_STATE = (
    "SELECT state, revenue FROM (" + query_text(QUERIES_DIR / "revenue_by_state.sql") + ") q"
)


def test_a_customer_moving_without_orders_moves_its_metrics_and_revenue_to_the_new_state(wh):
    """agg_customer_metrics keeps each customer's current state and country: a batch that only
    moves a customer (no order) queues it, and its metrics, the revenue per state and the
    dashboard's customers per state follow, as a full rebuild would have them."""
    conn, settings = wh
    _load_both(conn, settings)
    c2 = next(c for c in BATCH_1.customers if c.customer_id == "C2")
    spent = scalar(
        conn, "SELECT total_spent FROM warehouse.agg_customer_metrics WHERE customer_id = 'C2'"
    )
    assert spent > 0
    before = dict(fetch(conn, _REVENUE_BY_STATE))
    moved = Batch(
        "batch_0005", dt.date(2024, 3, 22), customers=[replace(c2, state="Goa", city="Panaji")]
    )
    load_batch(conn, moved)
    result = run_stages(conn, settings)
    assert result["warehouse"].details["fact_sales"]["inserted"] == 0
    assert result["aggregates"].details["touched"]["customers"] == 1
    # not recomputed: its lines keep the state of the versions they point at, so its slices stay
    assert result["aggregates"].details["rows_written"]["agg_customer_slices"] == 0
    assert fetch(
        conn,
        "SELECT state, country FROM warehouse.agg_customer_metrics WHERE customer_id = 'C2'",
    ) == [("Goa", "India")]
    after = dict(fetch(conn, _REVENUE_BY_STATE))
    assert after["Goa"] == spent
    assert after.get("Maharashtra", 0) == before["Maharashtra"] - spent
    assert table_checksums(conn) == table_checksums_after_full_refresh(conn, settings)
    # a rerun queues nothing more
    assert run_stages(conn, settings)["aggregates"].details["touched"]["customers"] == 0


def test_customers_moving_with_new_orders_get_them_added_to_their_cohort_cells(wh):
    """A customer whose state changed is not recomputed (its lines did not change): its new
    orders are added to its cohort cells (a new active customer in a month it had no order
    in, none in a month it had one) instead of the month being recomputed from every line,
    and the result is the full rebuild's."""
    conn, settings = wh
    _load_both(conn, settings)
    c1, c2 = (
        next(c for c in merged([BATCH_1, BATCH_2]).customers if c.customer_id == i)
        for i in ("C1", "C2")
    )
    day = dt.date(2024, 3, 22)
    moved = Batch(
        "batch_0005",
        day,
        customers=[
            replace(c1, state="Punjab", city="Amritsar"),
            replace(c2, state="Goa", city="Panaji"),
        ],
        transactions=[Transaction("T20", "C1", day, "UPI"), Transaction("T21", "C2", day, "UPI")],
        items=[
            Item("I20", "T20", "P1", 1, D("500.00"), D("0")),
            Item("I21", "T21", "P4", 2, D("20.00"), D("0")),
        ],
    )
    cohort_march = (
        "SELECT active_customers, revenue FROM warehouse.agg_monthly_cohorts"
        " WHERE cohort_month = DATE '2024-01-01' AND activity_month = DATE '2024-03-01'"
    )
    active, revenue = fetch(conn, cohort_march)[0]
    load_batch(conn, moved)
    result = run_stages(conn, settings)
    assert result["aggregates"].details["touched"]["customers"] == 2
    # C1 had ordered in March already, C2 had not: one more active customer, both orders' revenue
    assert fetch(conn, cohort_march) == [(active + 1, revenue + D("540.00"))]
    assert table_checksums(conn) == table_checksums_after_full_refresh(conn, settings)


def _segment_of(conn, customer_id: str) -> object:
    return scalar(
        conn,
        "SELECT customer_segment FROM warehouse.agg_customer_metrics WHERE customer_id = %s",
        (customer_id,),
    )


def _load_and_run_day(conn, settings, day: dt.date, transactions, items) -> dict:
    """Load one batch of these orders (business date `day`) and run the stages on it."""
    load_batch(conn, Batch("batch_0005", day, transactions=transactions, items=items))
    return run_stages(conn, settings)


def _one_order_on_day(conn, settings, customer_id: str, item: Item) -> None:
    """Load and run one order of `customer_id` with this line, on 2024-03-12."""
    day = dt.date(2024, 3, 12)
    _load_and_run_day(
        conn,
        settings,
        day,
        transactions=[Transaction(item.transaction_id, customer_id, day, "UPI")],
        items=[item],
    )


def test_a_customer_changing_segment_moves_its_product_sales_once(wh):
    """C4 (one order: P3 and P2, segment New) orders again and becomes Regular, while a changed
    line of another customer's order makes P3 a product to recompute. agg_product_slices moves
    C4's P2 line from New to Regular as a delta, and gets its P3 line from the recompute (not
    moved a second time): the tables equal a full rebuild."""
    conn, settings = wh
    _load_both(conn, settings)
    assert _segment_of(conn, "C4") == "New"
    day = dt.date(2024, 3, 12)
    result = _load_and_run_day(
        conn,
        settings,
        day,
        transactions=[BATCH_1.transactions[1], Transaction("T30", "C4", day, "UPI")],
        items=[
            replace(BATCH_1.items[2], quantity=2),  # I03 of T02 (C2): P3 recomputed
            Item("I30", "T30", "P4", 1, D("20.00"), D("0")),
        ],
    )
    assert result["warehouse"].details["fact_sales"]["updated"] == 1
    assert _segment_of(conn, "C4") == "Regular"
    assert table_checksums(conn) == table_checksums_after_full_refresh(conn, settings)


def test_a_customer_turning_vip_in_a_new_state_moves_its_rows_of_the_old_state(wh):
    """C1 (lines in Maharashtra, then Delhi since batch 2) orders enough in Delhi to become VIP:
    an added order only, so its sums are added in place; its Maharashtra rows in the customer
    slices, which the batch adds nothing to, change segment too: the tables equal a full
    rebuild."""
    conn, settings = wh
    _load_both(conn, settings)
    assert _segment_of(conn, "C1") == "Regular"
    _one_order_on_day(conn, settings, "C1", Item("I31", "T31", "P1", 10, D("500.00"), D("0")))
    assert _segment_of(conn, "C1") == "VIP"
    assert fetch(
        conn,
        "SELECT state, customer_segment FROM warehouse.agg_customer_slices_any_category"
        " WHERE customer_id = 'C1' ORDER BY state",
    ) == [("Delhi", "VIP"), ("Maharashtra", "VIP")]
    assert table_checksums(conn) == table_checksums_after_full_refresh(conn, settings)


def test_a_customer_without_a_state_changing_segment_moves_its_category_set_row(wh):
    """C4 has no state (NULL, unknown) and an order holding two categories (T06: P3 and P2), so
    agg_order_category_sets has a row with a NULL state. C4 orders again and turns Regular: that
    row, and the order's rows of agg_sales_slices, move to the new segment through the refreshes'
    paths for keys with a NULL (which an index condition cannot match): the tables equal a full
    rebuild."""
    conn, settings = wh
    without_state = replace(CUSTOMERS[3], state=None)
    load_batch(conn, replace(BATCH_1, customers=[*CUSTOMERS[:3], without_state]))
    run_stages(conn, settings)
    load_batch(conn, BATCH_2)
    run_stages(conn, settings)
    assert _segment_of(conn, "C4") == "New"
    _one_order_on_day(conn, settings, "C4", Item("I30", "T30", "P4", 1, D("20.00"), D("0")))
    assert _segment_of(conn, "C4") == "Regular"
    assert fetch(
        conn,
        "SELECT state, customer_segment, orders FROM warehouse.agg_order_category_sets"
        " WHERE date_key = 20240229",
    ) == [(None, "Regular", 1)]
    assert table_checksums(conn) == table_checksums_after_full_refresh(conn, settings)


def test_a_customer_changing_segment_leaves_the_other_orders_of_its_slices(wh):
    """C4 and C6 (both in Gujarat, both New) each have an order holding two categories on
    2024-02-29, paid by credit card: they share rows of agg_sales_slices, agg_order_category_sets
    and agg_order_category_sets_any_state. C4 orders again and turns Regular: those rows keep
    C6's order (updated in place, one order less, not inserted a second time), and C4's rows of
    the Regular segment are new: the tables equal a full rebuild."""
    conn, settings = wh
    day = dt.date(2024, 2, 29)
    load_batch(
        conn,
        replace(
            BATCH_1,
            customers=[*CUSTOMERS, Customer("C6", "Farah", "Khan", "Surat", "Gujarat")],
            transactions=[*BATCH_1.transactions, Transaction("T11", "C6", day, "Credit Card")],
            items=[
                *BATCH_1.items,
                Item("I15", "T11", "P3", 1, D("60.00"), D("0")),
                Item("I16", "T11", "P2", 1, D("40.00"), D("0")),
            ],
        ),
    )
    run_stages(conn, settings)
    load_batch(conn, BATCH_2)
    run_stages(conn, settings)
    sets = (
        "SELECT customer_segment, orders FROM warehouse.agg_order_category_sets{}"
        " WHERE date_key = 20240229 ORDER BY 1"
    )
    assert fetch(conn, sets.format("")) == [("New", 2)]
    _one_order_on_day(conn, settings, "C4", Item("I30", "T30", "P4", 1, D("20.00"), D("0")))
    assert (_segment_of(conn, "C4"), _segment_of(conn, "C6")) == ("Regular", "New")
    for table in ("", "_any_state"):
        assert fetch(conn, sets.format(table)) == [("New", 1), ("Regular", 1)]
    assert table_checksums(conn) == table_checksums_after_full_refresh(conn, settings)


# agg_customer_metrics as a table with recency stored (before recency moved to read time), built
# from the current schema: the stored columns renamed back, the view's values copied in
OLDER_CUSTOMER_METRICS = """
CREATE TABLE warehouse.older_metrics AS SELECT * FROM warehouse.agg_customer_metrics;
DROP VIEW warehouse.agg_customer_metrics;
DROP TABLE warehouse.agg_recency_as_of;
ALTER TABLE warehouse.agg_customer_totals RENAME TO agg_customer_metrics;
ALTER TABLE warehouse.agg_customer_metrics
    RENAME CONSTRAINT agg_customer_totals_pkey TO agg_customer_metrics_pkey;
ALTER INDEX warehouse.agg_customer_totals_first_idx RENAME TO agg_customer_metrics_first_idx;
ALTER INDEX warehouse.agg_customer_totals_last_idx RENAME TO agg_customer_metrics_last_idx;
ALTER INDEX warehouse.agg_customer_totals_spent_idx RENAME TO agg_customer_metrics_spent_idx;
ALTER TABLE warehouse.agg_customer_metrics
    ADD COLUMN as_of_date date, ADD COLUMN days_since_last_purchase integer,
    ADD COLUMN recency_score smallint, ADD COLUMN rfm_segment text;
UPDATE warehouse.agg_customer_metrics m
SET as_of_date = o.as_of_date, days_since_last_purchase = o.days_since_last_purchase,
    recency_score = o.recency_score, rfm_segment = o.rfm_segment
FROM warehouse.older_metrics o
WHERE o.customer_id = m.customer_id;
DROP TABLE warehouse.older_metrics
"""


@pytest.mark.parametrize(
    "older_schema",
    [
        # before agg_product_performance kept lines and discount_sum (and the queue item_id)
        "ALTER TABLE warehouse.agg_product_performance DROP COLUMN lines,"
        " DROP COLUMN discount_sum; ALTER TABLE ops.warehouse_refresh_queue DROP COLUMN item_id",
        # before agg_customer_metrics kept the current state and country (and was a table)
        OLDER_CUSTOMER_METRICS
        + "; ALTER TABLE warehouse.agg_customer_metrics DROP COLUMN state, DROP COLUMN country",
        # before the slices summed over states
        "DROP TABLE warehouse.agg_sales_slices_any_state,"
        " warehouse.agg_order_category_sets_any_state",
        # before the slices summed over every date
        "DROP TABLE warehouse.agg_sales_slices_all_dates,"
        " warehouse.agg_order_category_sets_all_dates",
        # before agg_customer_slices kept the days with orders
        "ALTER TABLE warehouse.agg_customer_slices DROP COLUMN active_days",
        # before the customer slices summed over categories
        "DROP TABLE warehouse.agg_customer_slices_any_category",
        # before the categories bought per customer
        "DROP TABLE warehouse.agg_customer_categories",
        # before the customers of each order's categories
        "DROP TABLE warehouse.agg_category_orders",
        # before those kept the categories bought
        "ALTER TABLE warehouse.agg_customer_slices_any_category DROP COLUMN categories",
        # before the product slices
        "DROP TABLE warehouse.agg_product_slices",
        # before their sums per category and per segment
        "DROP TABLE warehouse.agg_product_slicer_totals",
    ],
    ids=[
        "added_sums",
        "stored_state",
        "any_state_slices",
        "all_dates_slices",
        "active_days",
        "any_category",
        "customer_categories",
        "category_orders",
        "categories_bought",
        "product_slices",
        "product_slicer_totals",
    ],
)
def test_a_database_from_before_new_aggregates_is_upgraded_and_rebuilt(wh, older_schema):
    """Applying the DDL to a database from before an aggregate's new columns or tables adds them
    and queues a full rebuild, which fills them: every table as if built with them."""
    conn, settings = wh
    _load_both(conn, settings)
    expected = table_checksums(conn)
    with conn.cursor() as cur:
        cur.execute(older_schema)
    conn.commit()
    db.apply_ddl(conn)
    assert scalar(conn, "SELECT bool_and(is_full_refresh) FROM ops.warehouse_refresh_queue")
    result = run_stages(conn, settings)
    assert result["aggregates"].details["full_refresh"] is True
    assert table_checksums(conn) == expected
    db.apply_ddl(conn)  # applied again: nothing queued
    assert scalar(conn, "SELECT count(*) FROM ops.warehouse_refresh_queue") == 0


def test_a_database_with_recency_stored_is_upgraded_without_a_rebuild(wh):
    """agg_customer_metrics was a table holding recency: applying the DDL keeps its stored
    columns as agg_customer_totals (nothing rebuilt), and the next run, with nothing new, writes
    the as-of row, after which the view reads as the table did."""
    conn, settings = wh
    _load_both(conn, settings)
    expected = table_checksums(conn)
    before = fetch(conn, "SELECT * FROM warehouse.agg_customer_metrics ORDER BY customer_id")
    with conn.cursor() as cur:
        cur.execute(OLDER_CUSTOMER_METRICS)
    conn.commit()
    db.apply_ddl(conn)
    assert scalar(conn, "SELECT count(*) FROM ops.warehouse_refresh_queue") == 0
    result = run_stages(conn, settings)
    assert result["aggregates"].details["touched"]["customers"] == 0
    assert (
        fetch(conn, "SELECT * FROM warehouse.agg_customer_metrics ORDER BY customer_id") == before
    )
    assert table_checksums(conn) == expected


def test_a_new_order_date_rewrites_only_the_customers_it_touches(wh):
    """A day's batch moves the as-of date: recency, its score and the RFM segment change for
    every customer, but only the customer who ordered gets a row written (recency is computed
    when agg_customer_metrics is read); the tables equal a full rebuild."""
    conn, settings = wh
    _load_both(conn, settings)
    days_before = dict(
        fetch(
            conn, "SELECT customer_id, days_since_last_purchase FROM warehouse.agg_customer_metrics"
        )
    )
    day = dt.date(2024, 3, 12)  # two days after batch 2's last order date
    result = _load_and_run_day(
        conn,
        settings,
        day,
        transactions=[Transaction("T30", "C4", day, "UPI")],
        items=[Item("I30", "T30", "P2", 1, D("20.00"), D("0"))],
    )
    assert result["aggregates"].details["rows_written"]["agg_customer_totals"] == 1
    assert scalar(conn, "SELECT as_of_date FROM warehouse.agg_recency_as_of") == day
    days_after = dict(
        fetch(
            conn, "SELECT customer_id, days_since_last_purchase FROM warehouse.agg_customer_metrics"
        )
    )
    assert days_after.pop("C4") == 0
    assert days_after == {c: d + 2 for c, d in days_before.items() if c != "C4"}
    assert table_checksums(conn) == table_checksums_after_full_refresh(conn, settings)


def test_changed_recency_thresholds_apply_at_the_next_run(wh):
    """The recency thresholds of config are read at every run, even with nothing new to load."""
    conn, settings = wh
    _load_both(conn, settings)
    scores = fetch(conn, "SELECT DISTINCT recency_score FROM warehouse.agg_customer_metrics")
    assert scores == [(5,)]  # every order within the default 30 days of the last
    strict = replace(settings, warehouse=replace(settings.warehouse, rfm_recency_days=(0, 1, 2, 3)))
    run_stages(conn, strict)
    assert fetch(
        conn,
        "SELECT DISTINCT recency_score FROM warehouse.agg_customer_metrics"
        " WHERE days_since_last_purchase > 3",
    ) == [(1,)]
    assert scalar(conn, "SELECT recency_days FROM warehouse.agg_recency_as_of") == [0, 1, 2, 3]


def test_facts_already_loaded_move_to_a_version_that_now_covers_their_date(
    db_url, second_db, make_settings
):
    """Batch 1 (business date 2024-02-20) sent orders up to 2024-03-01 (kept with future_date:
    default); batch 2 changes C1 and P2 from 2024-02-25. The lines of batch 1 dated on or after
    that day move to the new versions (and the new cost), as when both are loaded together."""
    early = replace(BATCH_1, business_date=dt.date(2024, 2, 20))
    change = Batch(
        "batch_0002",
        dt.date(2024, 2, 25),
        customers=[replace(CUSTOMER_C1, city="Delhi", state="Delhi")],
        products=[replace(BATCH_2.products[0], cost=D("18.00"))],
    )
    (one, settings), (together, _) = _load_apart_and_together(
        db_url, second_db, make_settings, (early, change)
    )
    try:
        assert table_checksums(one) == table_checksums(together)
        lines = {
            item: (cost, city)
            for item, cost, city in fetch(
                one,
                """SELECT f.item_id, f.cost_amount / f.quantity, c.city
                   FROM warehouse.fact_sales f JOIN warehouse.dim_customers c USING (customer_key)
                   WHERE f.item_id IN ('I05', 'I09', 'I10')""",
            )
        }
        # I05: C1 on 2024-01-20 (before); I09: C4 on 2024-02-29; I10: C1 on 2024-03-01 (after)
        assert lines == {
            "I05": (D("15"), "Mumbai"),
            "I09": (D("18"), "Ahmedabad"),
            "I10": (D("18"), "Delhi"),
        }
        # and the aggregates followed the moved lines
        assert scalar(one, "SELECT sum(profit) FROM warehouse.fact_sales") == scalar(
            one, "SELECT sum(profit) FROM warehouse.agg_product_performance"
        )
        run_stages(one, settings, full_refresh=True)
        assert table_checksums(one) == table_checksums(together)
    finally:
        one.close()
        together.close()


def test_version_log_appends_nothing_on_a_rerun_or_for_an_unchanged_row(wh):
    conn, settings = wh
    load_batch(conn, BATCH_1)
    load_batch(conn, BATCH_2)
    count = (
        "SELECT (SELECT count(*) FROM production.customer_versions),"
        " (SELECT count(*) FROM production.product_versions)"
    )
    logged = fetch(conn, count)[0]
    assert logged == (len(BATCH_1.customers) + 2, len(BATCH_1.products) + 1)
    # the same batch again logs nothing
    load_batch(conn, BATCH_2)
    assert fetch(conn, count)[0] == logged
    # a re-sent row whose tracked attributes did not change logs nothing, even when production
    # rewrote it for an untracked column
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE production.products SET stock_quantity = 7, _batch_id = 'batch_0003'"
            " WHERE product_id = 'P2'"
        )
    load_batch(conn, Batch("batch_0003", dt.date(2024, 3, 20), customers=[BATCH_2.customers[0]]))
    assert fetch(conn, count)[0] == logged
    run_stages(conn, settings)
    before = table_checksums(conn)
    run_stages(conn, settings)
    assert table_checksums(conn) == before


def test_a_warehouse_loaded_before_the_version_logs_gets_them_from_its_history(wh):
    """Upgrade: with empty logs, the DDL fills them from the dimensions' history (and from
    production rows not merged yet), so the next run and --full-refresh keep every version."""
    conn, settings = wh
    _load_both(conn, settings)
    before = table_checksums(conn)
    with conn.cursor() as cur:
        cur.execute("TRUNCATE production.customer_versions, production.product_versions")
        cur.execute("DELETE FROM ops.warehouse_watermarks WHERE source_table LIKE '%_versions'")
    conn.commit()
    db.apply_ddl(conn)
    run_stages(conn, settings)
    assert table_checksums(conn) == before
    assert table_checksums_after_full_refresh(conn, settings) == before


def test_dim_date_holds_whole_years_with_calendar_and_fiscal_attributes(wh):
    conn, settings = wh
    load_batch(conn, BATCH_1)
    run_stages(conn, settings, ("warehouse",))
    assert fetch(
        conn,
        "SELECT min(full_date), max(full_date), count(*) FROM warehouse.dim_date"
        " WHERE date_key > 0",
    ) == [(dt.date(2024, 1, 1), dt.date(2024, 12, 31), 366)]
    rows = fetch(
        conn,
        """SELECT date_key, year, quarter, month, month_name, week_of_year, day_of_month,
                  day_of_week, day_name, is_weekend, is_holiday, fiscal_year, fiscal_quarter
           FROM warehouse.dim_date WHERE date_key IN (20240126, 20240301, 20240401, 20241229)
           ORDER BY 1""",
    )
    assert rows == [
        (20240126, 2024, 1, 1, "January", 4, 26, 5, "Friday", False, True, 2024, 4),
        (20240301, 2024, 1, 3, "March", 9, 1, 5, "Friday", False, False, 2024, 4),
        (20240401, 2024, 2, 4, "April", 14, 1, 1, "Monday", False, False, 2025, 1),
        (20241229, 2024, 4, 12, "December", 52, 29, 7, "Sunday", True, False, 2025, 3),
    ]
    assert fetch(
        conn, "SELECT month_name, day_name FROM warehouse.dim_date WHERE date_key = -1"
    ) == [("Unknown", "Unknown")]
    # a later order in the next year extends the calendar by that whole year
    load_batch(
        conn,
        Batch(
            "batch_0002",
            dt.date(2025, 2, 1),
            transactions=[Transaction("T40", "C2", dt.date(2025, 2, 1), "UPI")],
            items=[Item("I40", "T40", "P4", 1, D("20.00"), D("0"))],
        ),
    )
    run_stages(conn, settings, ("warehouse",))
    assert fetch(
        conn,
        "SELECT min(full_date), max(full_date), count(*) FROM warehouse.dim_date"
        " WHERE date_key > 0",
    ) == [(dt.date(2024, 1, 1), dt.date(2025, 12, 31), 366 + 365)]


def test_every_dimension_has_its_unknown_member(wh):
    conn, _ = wh
    for table, key in (
        ("dim_date", "date_key"),
        ("dim_customers", "customer_key"),
        ("dim_products", "product_key"),
        ("dim_payment_method", "payment_method_key"),
    ):
        assert scalar(conn, f"SELECT count(*) FROM warehouse.{table} WHERE {key} = -1") == 1


def test_payment_types(wh):
    conn, settings = wh
    load_batch(conn, BATCH_1)
    run_stages(conn, settings, ("warehouse",))
    assert dict(
        fetch(conn, "SELECT payment_method_name, payment_type FROM warehouse.dim_payment_method")
    ) == {
        "Unknown": "Unknown",
        "Credit Card": "Online",
        "Debit Card": "Online",
        "UPI": "Online",
        "Cash on Delivery": "Offline",
        "Net Banking": "Online",
    }


def test_every_warehouse_table_view_and_column_has_a_comment(wh):
    conn, _ = wh
    missing = fetch(
        conn,
        """SELECT c.relname, a.attname FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'warehouse'
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           WHERE c.relkind IN ('r', 'v', 'p', 'm')
             AND col_description(c.oid, a.attnum) IS NULL
           UNION ALL
           SELECT c.relname, '(table)' FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'warehouse'
           WHERE c.relkind IN ('r', 'v', 'p', 'm') AND obj_description(c.oid, 'pg_class') IS NULL""",
    )
    assert missing == []


def test_bi_reader_reads_everything_and_writes_nothing(wh):
    conn, settings = wh
    _load_both(conn, settings)
    relations = [
        r[0]
        for r in fetch(
            conn,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'warehouse' AND c.relkind IN ('r', 'v') ORDER BY 1",
        )
    ]
    assert "v_sales" in relations and "fact_sales" in relations
    # a table created later in warehouse is readable too (default privileges)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE warehouse.agg_rebuilt_later (x int)")
    conn.commit()
    relations.append("agg_rebuilt_later")
    with conn.cursor() as cur:
        cur.execute("SET ROLE bi_reader")
        for relation in relations:
            cur.execute(f"SELECT count(*) FROM warehouse.{relation}")
        cur.execute("SELECT count(*), sum(line_total) FROM warehouse.v_sales")
        assert cur.fetchone() == (14, scalar_sum_line_total(BATCH_1, BATCH_2))
    conn.rollback()
    for statement in (
        "INSERT INTO warehouse.dim_payment_method (payment_method_name, payment_type)"
        " VALUES ('Gift Card', 'Online')",
        "UPDATE warehouse.fact_sales SET quantity = 0",
        "DELETE FROM warehouse.agg_daily_sales",
        "TRUNCATE warehouse.agg_customer_totals",
        "CREATE TABLE warehouse.mine (x int)",
        "DROP VIEW warehouse.v_sales",
        "SELECT count(*) FROM production.customers",
    ):
        with conn.cursor() as cur:
            cur.execute("SET ROLE bi_reader")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
        conn.rollback()
    assert fetch(
        conn,
        "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = 'bi_reader'",
    ) == [(False, False, False)]


def scalar_sum_line_total(*batches: Batch) -> Decimal:
    return sum((i.line_total for i in merged(list(batches)).items), D("0"))


def test_bi_password_from_the_environment_gives_login(wh, monkeypatch):
    conn, settings = wh
    monkeypatch.setenv("DWH_BI_READER_PASSWORD", "s3cret-for-tests")
    result = run_stages(conn, settings, ("warehouse",))
    assert result["warehouse"].details["bi_reader"] == "login"
    assert scalar(conn, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'bi_reader'") is True


def test_ddl_applies_twice_and_role_creation_is_idempotent(db_url):
    conn = open_warehouse(db_url)
    try:
        from dwh import db

        db.apply_ddl(conn)
        assert scalar(conn, "SELECT count(*) FROM pg_roles WHERE rolname = 'bi_reader'") == 1
        assert scalar(conn, "SELECT count(*) FROM warehouse.dim_customers") == 1
    finally:
        conn.close()


def test_failed_aggregates_stage_leaves_the_queue_and_the_next_run_completes(wh, monkeypatch):
    conn, settings = wh
    load_batch(conn, BATCH_1)
    run_stages(conn, settings)
    expected = table_checksums(conn)
    load_batch(conn, BATCH_2)
    run_stages(conn, settings, ("warehouse",))
    queued = scalar(conn, "SELECT count(*) FROM ops.warehouse_refresh_queue")
    assert queued > 0

    from dwh.stages import aggregates

    real = aggregates.run_sql_file_row

    def failing(conn_, relative, params):
        result = real(conn_, relative, params)
        if relative.endswith("agg_customer_totals.sql"):
            raise RuntimeError("killed mid-stage")
        return result

    monkeypatch.setattr(aggregates, "run_sql_file_row", failing)
    with pytest.raises(RuntimeError):
        run_stages(conn, settings, ("aggregates",))
    # nothing half-refreshed: the aggregates are still those of batch 1, the queue is intact
    assert scalar(conn, "SELECT count(*) FROM ops.warehouse_refresh_queue") == queued
    now = table_checksums(conn, AGGREGATES)
    assert now == {t: expected[t] for t in AGGREGATES}

    monkeypatch.setattr(aggregates, "run_sql_file_row", real)
    run_stages(conn, settings, ("aggregates",))
    assert scalar(conn, "SELECT count(*) FROM ops.warehouse_refresh_queue") == 0
    incremental = table_checksums(conn)
    run_stages(conn, settings, full_refresh=True)
    assert table_checksums(conn) == incremental
