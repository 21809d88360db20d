"""Retention on a real PostgreSQL: only expired, already-promoted data is removed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg2
import pytest

from dwh import db
from dwh.cleanup import promoted_batches, run_cleanup
from dwh.settings import Settings, load_settings

pytestmark = pytest.mark.integration

# Batch A: old and promoted. B: old, a customer row neither in production nor in quarantine.
# D: old, rows accounted for but an order line not in warehouse.fact_sales yet. C: recent.
BATCHES = {"2025-01-01_a": 60, "2025-01-02_b": 60, "2025-01-03_d": 60, "2025-06-01_c": 1}


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", database_url=db_url, environ={})


def _seed(settings: Settings, url: str) -> None:
    conn = db.connect(url)
    db.apply_ddl(conn)
    with conn, conn.cursor() as cur:
        for n, (batch, days) in enumerate(BATCHES.items()):
            folder = settings.raw_dir / batch
            folder.mkdir(parents=True)
            (folder / "customers.csv").write_text("customer_id\nx\n" * 50)
            (folder / "manifest.json").write_text("{}")
            cur.execute(
                "INSERT INTO ops.ingested_files (batch_id, file_name, table_name, source_path,"
                " sha256, bytes, row_count, loaded_at)"
                " VALUES (%s, 'customers.csv', 'customers', 'x', %s, 100, 2,"
                " now() - make_interval(days => %s))",
                (batch, f"sha{n}", days),
            )
        cur.execute(
            """
            INSERT INTO staging.customers (customer_id, _batch_id, _source_file, _source_line)
            VALUES (' C1 ', '2025-01-01_a', 'customers.csv', 2),
                   ('',     '2025-01-01_a', 'customers.csv', 3),
                   ('C2',   '2025-01-02_b', 'customers.csv', 2),
                   ('C1',   '2025-01-03_d', 'customers.csv', 2),
                   ('C1',   '2025-06-01_c', 'customers.csv', 2);
            INSERT INTO staging.transaction_items (item_id, _batch_id, _source_file, _source_line)
            VALUES ('I1', '2025-01-01_a', 'transaction_items.csv', 2),
                   ('I2', '2025-01-03_d', 'transaction_items.csv', 2);
            INSERT INTO production.customers (customer_id, first_name, last_name,
                is_email_valid, registration_date, _batch_id, _source_line)
            VALUES ('C1', 'A', 'B', true, DATE '2024-01-01', '2025-01-01_a', 2);
            INSERT INTO production.products (product_id, product_name, price, cost,
                price_category, _batch_id, _source_line)
            VALUES ('P1', 'p', 10, 5, 'Budget', '2025-01-01_a', 2);
            INSERT INTO production.transactions (transaction_id, customer_id, transaction_date,
                transaction_at, payment_method, total_amount, _batch_id, _source_line)
            VALUES ('T1', 'C1', DATE '2025-01-01', now(), 'UPI', 20, '2025-01-01_a', 2);
            INSERT INTO production.transaction_items (item_id, transaction_id, product_id,
                quantity, unit_price, discount_percentage, line_total, _batch_id,
                _source_line)
            VALUES ('I1', 'T1', 'P1', 2, 10, 0, 20, '2025-01-01_a', 2),
                   ('I2', 'T1', 'P1', 1, 10, 0, 10, '2025-01-03_d', 2);
            INSERT INTO warehouse.fact_sales (date_key, customer_key, product_key,
                payment_method_key, transaction_id, item_id, quantity, unit_price,
                discount_percentage, discount_amount, gross_amount, line_total, cost_amount,
                profit, _batch_id)
            VALUES (-1, -1, -1, -1, 'T1', 'I1', 2, 10, 0, 0, 20, 20, 10, 10, '2025-01-01_a');
            -- the blank-id row of A was rejected (open); an old resolved row, a recent one.
            INSERT INTO ops.quarantine (batch_id, table_name, source_file, source_line,
                reason_codes, raw, resolved_at)
            VALUES ('2025-01-01_a', 'customers', 'customers.csv', 3, '{missing_id}', '{}', NULL),
                   ('2025-01-01_a', 'customers', 'customers.csv', 9, '{x}', '{}',
                    now() - interval '100 days'),
                   ('2025-06-01_c', 'customers', 'customers.csv', 9, '{x}', '{}',
                    now() - interval '1 day');
            """
        )
    conn.close()
    settings.processed_dir.mkdir(parents=True)
    settings.log_dir.mkdir(parents=True)
    old = time.time() - 40 * 86400
    for folder in (settings.processed_dir, settings.log_dir):
        (folder / "old.json").write_text("x" * 10)
        os.utime(folder / "old.json", (old, old))
        (folder / "new.json").write_text("y")


def _staging_batches(url: str) -> list[tuple[str, str]]:
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 'customers', _batch_id FROM staging.customers UNION ALL"
            " SELECT 'items', _batch_id FROM staging.transaction_items ORDER BY 1, 2"
        )
        rows = cur.fetchall()
    conn.close()
    return rows


def test_only_expired_promoted_data_is_removed(settings, db_url) -> None:
    # Staging rows go after 30 days here (default 90) so that A's go and C's stay.
    settings = load_settings(
        data_dir=settings.data_dir,
        database_url=db_url,
        environ={},
        overrides={"retention": {"staging_days": 30}},
    )
    _seed(settings, db_url)
    before = _staging_batches(db_url)

    dry = run_cleanup(settings, dry_run=True)
    assert dry.kept_unpromoted == ["2025-01-02_b", "2025-01-03_d"]
    assert {(r.kind, Path(r.target).name) for r in dry.removed} == {
        ("raw_batch", "2025-01-01_a"),
        ("staging_rows", "staging.customers"),
        ("staging_rows", "staging.transaction_items"),
        ("quarantine_rows", "ops.quarantine"),
        ("report", "old.json"),
        ("log", "old.json"),
    }
    assert dry.rows == 4  # A: 2 customers + 1 item staged, 1 resolved quarantine row
    assert dry.files == 2 + 2 and dry.bytes == 700 + 2 + 10 + 10  # csv, manifest, report, log
    # A dry run changes nothing.
    assert _staging_batches(db_url) == before
    assert (settings.raw_dir / "2025-01-01_a").is_dir()
    assert (settings.processed_dir / "old.json").exists()

    done = run_cleanup(settings)
    assert (done.rows, done.files, done.bytes) == (dry.rows, dry.files, dry.bytes)
    assert sorted(p.name for p in settings.raw_dir.iterdir()) == [
        "2025-01-02_b",
        "2025-01-03_d",
        "2025-06-01_c",
    ]
    assert _staging_batches(db_url) == [
        ("customers", "2025-01-02_b"),
        ("customers", "2025-01-03_d"),
        ("customers", "2025-06-01_c"),
        ("items", "2025-01-03_d"),
    ]
    conn = psycopg2.connect(db_url)
    with conn.cursor() as cur:
        cur.execute("SELECT batch_id, source_line FROM ops.quarantine ORDER BY 1, 2")
        assert cur.fetchall() == [("2025-01-01_a", 3), ("2025-06-01_c", 9)]
    conn.close()
    assert sorted(p.name for p in settings.processed_dir.iterdir()) == ["new.json"]
    assert sorted(p.name for p in settings.log_dir.iterdir()) == ["new.json"]

    # Nothing left to do: a second run removes nothing.
    again = run_cleanup(settings)
    assert (again.rows, again.files) == (0, 0)


def test_nothing_is_promoted_until_the_warehouse_exists(settings, db_url) -> None:
    _seed(settings, db_url)
    conn = psycopg2.connect(db_url)
    with conn.cursor() as cur:
        assert promoted_batches(cur, list(BATCHES)) == {"2025-01-01_a", "2025-06-01_c"}
        cur.execute("DROP TABLE warehouse.fact_sales CASCADE")
        assert promoted_batches(cur, list(BATCHES)) == set()
    conn.rollback()
    conn.close()


def test_the_newest_batch_folder_and_unloaded_files_are_kept(settings, db_url) -> None:
    _seed(settings, db_url)
    # A file of batch A that was never loaded: its folder must stay.
    (settings.raw_dir / "2025-01-01_a" / "products.csv").write_text("product_id\n")
    report = run_cleanup(settings)
    assert (settings.raw_dir / "2025-01-01_a" / "products.csv").exists()
    assert not [r for r in report.removed if r.kind == "raw_batch"]
    # Default staging retention is 90 days: no staging row is old enough.
    assert not [r for r in report.removed if r.kind == "staging_rows"]
