"""The production stage against a real PostgreSQL with generated batches: counts equal the
generator's manifest for every defect class, no defect reaches production, reruns change
nothing, late-arriving children are promoted, a killed promotion finishes on the next run."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from dwh.defects import DEFECT_CLASSES
from dwh.exceptions import QualityGateFailed
from dwh.generator import generate_batch
from dwh.orchestrator import run_pipeline
from dwh.settings import Settings, load_settings
from dwh.stages import production

pytestmark = pytest.mark.integration

SMALL = {
    "customers": 120,
    "products": 60,
    "transactions": 800,
    "next_batch": {
        "transactions": 40,
        "new_customers": 3,
        "new_products": 2,
        "changed_customers": 2,
        "changed_products": 2,
    },
}
STAGES = ("ingest", "quality", "production")
FILES = ("customers.csv", "products.csv", "transactions.csv", "transaction_items.csv")


def _settings(data_dir: Path, url: str) -> Settings:
    return load_settings(
        data_dir=data_dir, database_url=url, environ={}, overrides={"generator": SMALL}
    )


@pytest.fixture(scope="module")
def module_db(pg_server_url: str) -> Iterator[str]:
    name = f"dwh_prod_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(pg_server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield pg_server_url.rsplit("/", 1)[0] + f"/{name}"
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        admin.close()


@pytest.fixture(scope="module")
def dirty(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two dirty batches (history + next business day), loaded and promoted once."""
    data_dir = tmp_path_factory.mktemp("dirty") / "data"
    settings = _settings(data_dir, module_db)
    generate_batch(settings, dirty_rate=0.05)
    generate_batch(settings, dirty_rate=0.05, next_batch=True)
    report = run_pipeline(settings, stages=STAGES)
    manifests = {
        p.parent.name: json.loads(p.read_text())
        for p in sorted((settings.raw_dir).glob("batch_*/manifest.json"))
    }
    return {"settings": settings, "url": module_db, "report": report, "manifests": manifests}


def _query(url: str, text: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall()
    finally:
        conn.close()


def _reconciliation(url: str) -> dict[tuple[str, str], dict]:
    rows = _query(
        url,
        "SELECT batch_id, table_name, staged, accepted, quarantined, duplicates,"
        " quarantined_by_reason, defaults FROM ops.reconciliation",
    )
    return {
        (r[0], r[1] + ".csv"): {
            "staged": r[2],
            "accepted": r[3],
            "quarantined": r[4],
            "duplicates": r[5],
            "by_reason": r[6],
            "defaults": r[7],
        }
        for r in rows
    }


def _quarantine_by_reason(url: str) -> dict[tuple[str, str], Counter]:
    out: dict[tuple[str, str], Counter] = {}
    for batch, table, reason, n in _query(
        url,
        "SELECT batch_id, table_name, reason_codes[1], count(*) FROM ops.quarantine"
        " GROUP BY 1, 2, 3",
    ):
        out.setdefault((batch, table + ".csv"), Counter())[reason] = n
    return out


def test_dirty_counts_equal_the_manifest_for_every_file(dirty: dict) -> None:
    assert dirty["report"].status == "success"
    recon = _reconciliation(dirty["url"])
    quarantine = _quarantine_by_reason(dirty["url"])
    assert len(dirty["manifests"]) == 2
    for batch, manifest in dirty["manifests"].items():
        for file in FILES:
            expected = manifest["expected"][file]
            found = recon[batch, file]
            assert found["staged"] == expected["staged"], (batch, file)
            assert found["accepted"] == expected["accepted"], (batch, file)
            assert found["duplicates"] == expected["duplicates"], (batch, file)
            assert found["by_reason"] == expected["quarantined"], (batch, file)
            assert dict(quarantine.get((batch, file), {})) == expected["quarantined"], (batch, file)
            assert found["defaults"] == expected["defaults"], (batch, file)
            # the identity, per table and batch
            assert found["staged"] == found["accepted"] + found["quarantined"] + found["duplicates"]


@pytest.mark.parametrize("defect", DEFECT_CLASSES, ids=lambda d: d.name)
def test_each_defect_class_gets_its_outcome(dirty: dict, defect) -> None:
    """Per defect class: the pipeline's count for its reason equals what was injected."""
    recon = _reconciliation(dirty["url"])
    kinds = {
        (b, t + ".csv"): k
        for b, t, k in _query(
            dirty["url"], "SELECT batch_id, table_name, duplicates_by_kind FROM ops.reconciliation"
        )
    }
    injected_total = 0
    for batch, manifest in dirty["manifests"].items():
        for file, injected in manifest["defects"].get(defect.name, {}).items():
            injected_total += injected
            # every class that shares a reason in this file adds to the same counter
            same_reason = sum(
                manifest["defects"].get(d.name, {}).get(file, 0)
                for d in DEFECT_CLASSES
                if d.reason == defect.reason and d.outcome == defect.outcome
            )
            if defect.outcome == "quarantine":
                found = recon[batch, file]["by_reason"].get(defect.reason, 0)
            elif defect.outcome == "duplicate":
                found = kinds[batch, file].get(defect.reason, 0)
            else:
                found = recon[batch, file]["defaults"].get(defect.reason, 0)
            assert found == same_reason, (defect.name, batch, file, found, same_reason)
    assert injected_total > 0, f"the generator injected no {defect.name}"


def test_no_defect_reaches_production(dirty: dict) -> None:
    url = dirty["url"]
    checks = {
        "orphan or missing ids": "SELECT count(*) FROM production.transactions"
        " WHERE customer_id = 'CUST0000' OR transaction_id = ''",
        "orphan items": "SELECT count(*) FROM production.transaction_items"
        " WHERE product_id = 'PROD0000' OR transaction_id = 'TXN00000'",
        "bad quantities": "SELECT count(*) FROM production.transaction_items WHERE quantity <= 0",
        "line totals": "SELECT count(*) FROM production.transaction_items WHERE"
        " abs(line_total - round(quantity * unit_price * (1 - discount_percentage / 100), 2)) > 0.01",
        "future dates": "SELECT count(*) FROM production.transactions t JOIN ops.batches b"
        " ON b.batch_id = t._batch_id WHERE t.transaction_date > b.business_date",
        "invalid emails": "SELECT count(*) FROM production.customers"
        " WHERE email IS NOT NULL AND email !~ '^[^@ ]+@[^@ ]+[.][a-z]+$'",
        "untrimmed": "SELECT count(*) FROM production.customers WHERE first_name <> btrim(first_name)"
        " OR last_name <> btrim(last_name) OR city <> btrim(city)",
        "unknown categories": "SELECT count(*) FROM production.products"
        " WHERE category NOT IN ('Electronics', 'Clothing', 'Home & Kitchen', 'Books', 'Sports', 'Beauty')",
    }
    for label, query in checks.items():
        assert _query(url, query)[0][0] == 0, label
    # staged ids that were quarantined for good are absent from production
    leaked = _query(
        url,
        "SELECT count(*) FROM ops.quarantine q JOIN production.transaction_items i"
        " ON i.item_id = q.natural_key AND i._batch_id = q.batch_id"
        " AND i._source_line = q.source_line WHERE q.table_name = 'transaction_items'",
    )[0][0]
    assert leaked == 0
    # invalid emails were kept as NULL and flagged
    flagged = _query(
        url, "SELECT count(*) FROM production.customers WHERE email IS NULL AND NOT is_email_valid"
    )[0][0]
    assert flagged >= 1


def test_quarantine_rows_carry_file_line_raw_values_and_reasons(dirty: dict) -> None:
    rows = _query(
        dirty["url"],
        "SELECT q.source_file, q.source_line, q.raw, q.reason_codes, q.is_retryable"
        " FROM ops.quarantine q WHERE q.table_name = 'transactions'"
        " AND 'unparseable_date' = ANY(q.reason_codes) ORDER BY q.batch_id, q.source_line LIMIT 1",
    )
    source_file, line, raw, reasons, retryable = rows[0]
    assert source_file.endswith("transactions.csv")
    assert reasons[0] == "unparseable_date" and not retryable
    assert raw["_source_line"] == line
    # the raw values are those of the file's line (header = line 1)
    text = Path(source_file).read_text().splitlines()[line - 1]
    assert raw["transaction_id"] in text and raw["transaction_date"] in text
    orphan = _query(
        dirty["url"],
        "SELECT reason_codes, is_retryable FROM ops.quarantine"
        " WHERE table_name = 'transactions' AND reason_codes[1] = 'missing_parent' LIMIT 1",
    )[0]
    assert orphan == (["missing_parent"], True)


def test_derived_columns(dirty: dict) -> None:
    url = dirty["url"]
    categories = dict(
        _query(url, "SELECT price_category, count(*) FROM production.products GROUP BY 1")
    )
    assert set(categories) == {"Budget", "Mid-range", "Premium"}
    wrong_margin = _query(
        url,
        "SELECT count(*) FROM production.products"
        " WHERE profit_margin <> round((price - cost) / price * 100, 2)",
    )[0][0]
    assert wrong_margin == 0
    # computed_total is the sum of accepted lines, next to the untouched source total
    mismatched = _query(
        url,
        "SELECT count(*) FROM production.transaction_totals t WHERE computed_total IS DISTINCT FROM"
        " (SELECT sum(line_total) FROM production.transaction_items i"
        "  WHERE i.transaction_id = t.transaction_id)",
    )[0][0]
    assert mismatched == 0
    untouched = _query(
        url,
        "SELECT count(*) FROM production.transactions t JOIN staging.transactions s"
        " ON s._batch_id = t._batch_id AND s._source_line = t._source_line"
        " WHERE t.total_amount <> s.total_amount::numeric",
    )[0][0]
    assert untouched == 0
    utc = _query(
        url,
        "SELECT count(*) FROM production.transactions"
        " WHERE transaction_at <> (transaction_date + transaction_time) AT TIME ZONE 'UTC'",
    )[0][0]
    assert utc == 0


def test_second_batch_updates_changed_rows_only(dirty: dict) -> None:
    rows = _query(
        dirty["url"],
        "SELECT table_name, inserted, updated, unchanged FROM ops.reconciliation"
        " WHERE batch_id = 'batch_0002' ORDER BY 1",
    )
    by_table = {r[0]: r[1:] for r in rows}
    # re-sent changed customers/products update production; the rest of batch 2 is new
    assert by_table["customers"][1] == SMALL["next_batch"]["changed_customers"]
    assert by_table["products"][1] == SMALL["next_batch"]["changed_products"]
    assert by_table["transactions"][1] == 0


def test_lookups_are_analyzed_after_each_reload(dirty: dict) -> None:
    # the promotions join production.lookup_values right after it is rewritten: planned on its
    # statistics of before (or none), a batch's orders ran lookup_key once per pair of rows
    counted, estimated, per_lookup = _query(
        dirty["url"],
        "SELECT (SELECT count(*) FROM production.lookup_values), c.reltuples,"
        " (SELECT count(*) FROM pg_stats WHERE schemaname = 'production'"
        "  AND tablename = 'lookup_values' AND attname = 'lookup')"
        " FROM pg_class AS c WHERE c.oid = 'production.lookup_values'::regclass",
    )[0]
    assert counted > 0
    assert estimated == counted
    assert per_lookup == 1


def test_rerun_changes_nothing(dirty: dict) -> None:
    url = dirty["url"]
    snapshot_sql = (
        "SELECT 'c', customer_id, r::text FROM production.customers AS r UNION ALL"
        " SELECT 'p', product_id, r::text FROM production.products AS r UNION ALL"
        " SELECT 't', transaction_id, r::text FROM production.transactions AS r UNION ALL"
        " SELECT 'i', item_id, r::text FROM production.transaction_items AS r ORDER BY 1, 2"
    )
    before = _query(url, snapshot_sql)
    quarantine_before = _query(url, "SELECT count(*) FROM ops.quarantine")[0][0]
    # a plain rerun: nothing pending
    report = run_pipeline(dirty["settings"], stages=STAGES)
    assert report.status == "success"
    assert _query(url, snapshot_sql) == before
    # re-promoting already promoted batches (markers and quarantine removed) changes no row
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM ops.reconciliation")
        cur.execute("DELETE FROM ops.quarantine")
    conn.close()
    report = run_pipeline(dirty["settings"], stages=STAGES)
    assert report.status == "success"
    assert _query(url, snapshot_sql) == before
    assert _query(url, "SELECT count(*) FROM ops.quarantine")[0][0] == quarantine_before
    unchanged = _query(
        url, "SELECT sum(inserted + updated), sum(unchanged) FROM ops.reconciliation"
    )[0]
    assert unchanged[0] == 0 and unchanged[1] > 0
    # the summary file was written with the identity and per-table totals
    summary = json.loads(
        (dirty["settings"].processed_dir / "transformation_summary.json").read_text()
    )
    assert summary["reconciliation_ok"] is True
    assert summary["tables"]["customers"]["input"] == sum(
        m["expected"]["customers.csv"]["staged"] for m in dirty["manifests"].values()
    )


# ---------------------------------------------------------------------------------------------
# Hand-written batches: late-arriving parents, restart safety, the gate
# ---------------------------------------------------------------------------------------------

CUSTOMERS_HEADER = (
    "customer_id,first_name,last_name,email,phone,registration_date,city,state,country,age_group\n"
)
PRODUCTS_HEADER = (
    "product_id,product_name,category,sub_category,price,cost,brand,stock_quantity,supplier_id\n"
)
TRANSACTIONS_HEADER = "transaction_id,customer_id,transaction_date,transaction_time,payment_method,shipping_address,total_amount\n"
ITEMS_HEADER = (
    "item_id,transaction_id,product_id,quantity,unit_price,discount_percentage,line_total\n"
)


def _write_batch(raw: Path, name: str, files: dict[str, str]) -> None:
    folder = raw / name
    folder.mkdir(parents=True)
    for file, body in files.items():
        (folder / file).write_text(body, encoding="utf-8")


def _first_batch(raw: Path) -> None:
    _write_batch(
        raw,
        "batch_0001",
        {
            "customers.csv": CUSTOMERS_HEADER
            + "C1,ANNA,smith, Anna.Smith@Example.com ,(555) 123-4567 x12,2024-01-05,Boston,MA,USA,26-35\n",
            "products.csv": PRODUCTS_HEADER
            + "P1,Lamp,home and kitchen,Decor,40.00,10.00,Acme,5,S1\n"
            + "P2,Pen,Stationery,Office,2.50,1.00,Acme,,S1\n",
            "transactions.csv": TRANSACTIONS_HEADER
            + "T1,C1,2024-02-01,10:00:00,credit card,Somewhere,80.00\n"
            + "T2,C2,2024-02-02,11:30,COD,Elsewhere,40.00\n",
            "transaction_items.csv": ITEMS_HEADER
            + "I1,T1,P1,2,40.00,0,80.00\n"
            + "I2,T2,P1,1,40.00,0,40.00\n",
        },
    )


def test_late_arriving_parent_is_promoted_and_resolved(db_url: str, make_settings) -> None:
    settings = make_settings(db_url)
    _first_batch(settings.raw_dir)
    run_pipeline(settings, stages=STAGES)
    open_rows = _query(
        db_url,
        "SELECT table_name, natural_key, reason_codes, is_retryable FROM ops.quarantine"
        " WHERE resolved_at IS NULL ORDER BY 1",
    )
    assert open_rows == [
        ("transaction_items", "I2", ["missing_parent"], True),
        ("transactions", "T2", ["missing_parent"], True),
    ]
    # cleaning of the accepted rows
    assert _query(
        db_url, "SELECT first_name, last_name, email, phone FROM production.customers"
    ) == [("Anna", "Smith", "anna.smith@example.com", "5551234567")]
    assert _query(
        db_url, "SELECT product_id, category, price_category FROM production.products ORDER BY 1"
    ) == [("P1", "Home & Kitchen", "Mid-range"), ("P2", "unknown", "Budget")]
    assert _query(db_url, "SELECT payment_method FROM production.transactions") == [
        ("Credit Card",)
    ]
    defaults = _query(
        db_url,
        "SELECT table_name, defaults FROM ops.reconciliation WHERE defaults <> '{}' ORDER BY 1",
    )
    assert defaults == [
        ("customers", {"trimmed": 1}),
        ("products", {"unknown_category": 1, "category_normalised": 1}),
        ("transactions", {"payment_method_normalised": 1}),
    ]

    # the parent arrives in a later batch: the child rows are promoted and marked resolved
    _write_batch(
        settings.raw_dir,
        "batch_0002",
        {
            "customers.csv": CUSTOMERS_HEADER
            + "C2,Bo,Li,bo@li.org,555-987-6543,2024-01-09,Austin,TX,USA,18-25\n"
        },
    )
    run_pipeline(settings, stages=STAGES)
    assert (
        _query(db_url, "SELECT count(*) FROM ops.quarantine WHERE resolved_at IS NULL")[0][0] == 0
    )
    assert _query(
        db_url,
        "SELECT transaction_id, computed_total FROM production.transaction_totals ORDER BY 1",
    ) == [("T1", 80), ("T2", 40)]
    assert _query(db_url, "SELECT count(*) FROM production.transaction_items")[0][0] == 2
    # the original batch's reconciliation records the late promotion; its identity still holds
    assert _query(
        db_url,
        "SELECT table_name, quarantined, resolved_later FROM ops.reconciliation"
        " WHERE batch_id = 'batch_0001' AND quarantined > 0 ORDER BY 1",
    ) == [("transaction_items", 1, 1), ("transactions", 1, 1)]


def test_a_database_from_before_loses_its_row_hashes_and_still_detects_changes(
    db_url: str, make_settings
) -> None:
    # databases from before stored an md5 of each production row in _row_hash (NOT NULL, so an
    # insert that leaves it out fails): the next run drops the column, and changes are found by
    # comparing the columns themselves
    settings = make_settings(db_url)
    _first_batch(settings.raw_dir)
    run_pipeline(settings, stages=STAGES)
    conn = psycopg2.connect(db_url)
    with conn, conn.cursor() as cur:
        for table in ("customers", "products", "transactions", "transaction_items"):
            cur.execute(
                f"ALTER TABLE production.{table} ADD COLUMN _row_hash text NOT NULL DEFAULT 'md5'"
            )
            cur.execute(f"ALTER TABLE production.{table} ALTER COLUMN _row_hash DROP DEFAULT")
    conn.close()
    _write_batch(
        settings.raw_dir,
        "batch_0002",
        {
            "customers.csv": CUSTOMERS_HEADER
            + "C1,Anna,Smith,anna.smith@example.com,5551234567,2024-01-05,Denver,CO,USA,26-35\n"
            + "C2,Bo,Li,bo@li.org,555-987-6543,2024-01-09,Austin,TX,USA,18-25\n",
            "transactions.csv": TRANSACTIONS_HEADER
            + "T1,C1,2024-02-01,10:00:00,UPI,Somewhere,80.00\n",
        },
    )
    assert run_pipeline(settings, stages=STAGES).status == "success"
    assert _query(
        db_url,
        "SELECT count(*) FROM information_schema.columns"
        " WHERE table_schema = 'production' AND column_name = '_row_hash'",
    ) == [(0,)]
    assert _query(
        db_url,
        "SELECT table_name, inserted, updated, unchanged FROM ops.reconciliation"
        " WHERE batch_id = 'batch_0002' ORDER BY 1",
    ) == [("customers", 1, 1, 0), ("transactions", 0, 1, 0)]
    assert _query(
        db_url, "SELECT city, state FROM production.customers WHERE customer_id = 'C1'"
    ) == [("Denver", "CO")]
    assert _query(
        db_url, "SELECT payment_method FROM production.transactions WHERE transaction_id = 'T1'"
    ) == [("UPI",)]


def test_a_killed_promotion_finishes_on_the_next_run(
    db_url: str, make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(db_url)
    _first_batch(settings.raw_dir)
    real = production._run_promotion

    def dies_on_items(conn, params):
        counts = real(conn, params)
        if params["table_name"] == "transaction_items":
            raise KeyboardInterrupt  # killed mid-transaction
        return counts

    monkeypatch.setattr(production, "_run_promotion", dies_on_items)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(settings, stages=STAGES)
    # parents committed batch by batch; nothing of the items is visible
    assert _query(db_url, "SELECT table_name FROM ops.reconciliation ORDER BY 1") == [
        ("customers",),
        ("products",),
        ("transactions",),
    ]
    assert _query(db_url, "SELECT count(*) FROM production.transaction_items")[0][0] == 0
    assert (
        _query(
            db_url, "SELECT count(*) FROM ops.quarantine WHERE table_name = 'transaction_items'"
        )[0][0]
        == 0
    )
    monkeypatch.setattr(production, "_run_promotion", real)
    assert run_pipeline(settings, stages=STAGES).status == "success"
    assert _query(db_url, "SELECT count(*) FROM ops.reconciliation")[0][0] == 4
    assert _query(db_url, "SELECT count(*) FROM production.transaction_items")[0][0] == 1


def test_configured_critical_rule_quarantines_instead_of_defaulting(
    db_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        environ={},
        overrides={"production": {"rules": {"unknown_category": "critical"}}},
    )
    _first_batch(settings.raw_dir)
    run_pipeline(settings, stages=STAGES)
    assert _query(
        db_url,
        "SELECT natural_key, reason_codes FROM ops.quarantine WHERE table_name = 'products'",
    ) == [("P2", ["unknown_category"])]


def test_unknown_rule_setting_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, environ={}, overrides={"production": {"rules": {"nope": "critical"}}}
    )
    from dwh.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"production\.rules\.nope"):
        production.critical_rules(settings)


def test_quality_gate_stops_the_run_with_exit_code_5(db_url: str, make_settings) -> None:
    settings = make_settings(db_url)
    _first_batch(settings.raw_dir)
    run_pipeline(settings, stages=STAGES)
    # a row that breaks an error check (it cannot come through the pipeline)
    conn = psycopg2.connect(db_url)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE production.products SET category = 'Gadgets' WHERE product_id = 'P1'")
    conn.close()
    # a plain rerun checks only new batches (none); scope all re-reads every production row
    whole = load_settings(
        data_dir=settings.data_dir,
        database_url=db_url,
        environ={},
        overrides={"quality": {"scope": "all"}},
    )
    with pytest.raises(QualityGateFailed) as failure:
        run_pipeline(whole, stages=STAGES)
    message = str(failure.value)
    assert failure.value.exit_code == 5
    assert "accepted_values:production.products:category" in message and "P1" in message
    stored = _query(
        db_url,
        "SELECT failing_rows, passed, sample FROM ops.dq_results"
        " WHERE check_name = 'accepted_values:production.products:category'"
        " ORDER BY result_id DESC LIMIT 1",
    )[0]
    assert stored == (1, False, ["P1"])
    report = json.loads((settings.processed_dir / "data_quality_report.json").read_text())
    assert report["gate"]["passed"] is False
    assert "accepted_values:production.products:category" in report["gate"]["failed_error_checks"]
    status = _query(
        db_url, "SELECT status, exit_code FROM ops.pipeline_runs ORDER BY run_id DESC LIMIT 1"
    )
    assert status == [("failed", 5)]


PARSER_CASES = [
    ("production.try_date", "2024-02-29", "2024-02-29"),
    ("production.try_date", " 2024-1-5 ", "2024-01-05"),
    ("production.try_date", "2023-02-29", None),
    ("production.try_date", "2024-13-45", None),
    ("production.try_date", "2023-11-31", None),
    ("production.try_date", "0000-01-01", None),
    ("production.try_date", "31/31/2024", None),
    ("production.try_date", "", None),
    ("production.try_time", "23:59:59", "23:59:59"),
    ("production.try_time", "7:05", "07:05:00"),
    ("production.try_time", "24:00", None),
    ("production.try_time", "12:00:60", None),
    ("production.try_numeric", " 12.50 ", "12.50"),
    ("production.try_numeric", "-3", "-3"),
    ("production.try_numeric", "12,5x", None),
    ("production.try_numeric", "1O.50", None),
    ("production.try_numeric", "12.3.4", None),
    ("production.try_numeric", "12345678901", None),  # beyond numeric(12,2)
    ("production.try_numeric", "9999999999.99", "9999999999.99"),
    ("production.try_numeric", "-9999999999.5", "-9999999999.5"),
    ("production.try_numeric", "+.5", "0.5"),
    ("production.try_numeric", "5.", "5"),
    ("production.try_numeric", ".", None),
    ("production.try_numeric", "+", None),
    ("production.try_numeric", "--5", None),
    ("production.try_numeric", "1-2", None),
    ("production.try_numeric", "NaN", None),
    ("production.try_numeric", "Infinity", None),
    ("production.try_numeric", "1e5", None),
    ("production.try_numeric", "1_000", None),
    ("production.try_numeric", "0x1A", None),
    ("production.try_numeric", "1 000", None),
    ("production.try_numeric", "", None),
    # the digit count past 10 characters, and the spaces only around (PostgreSQL 16+ checks the
    # notation with the type's input function, which skips any white space)
    ("production.try_numeric", " 12345678901 ", None),
    ("production.try_numeric", "00000000001", None),
    ("production.try_numeric", "-0000000001", "-1"),
    ("production.try_numeric", "1234567890", "1234567890"),
    ("production.try_numeric", "  +1234567890.125  ", "1234567890.125"),
    ("production.try_numeric", "\t5", None),
    ("production.try_numeric", "5\n", None),
    ("production.try_numeric", "- 5", None),
    ("production.try_numeric", None, None),
    # the spaces around, not other white space; no word the types' input functions accept
    ("production.try_date", "\t2024-01-05", None),
    ("production.try_date", "today", None),
    ("production.try_date", "epoch", None),
    ("production.try_date", None, None),
    ("production.try_time", "7:05\t", None),
    ("production.try_time", "now", None),
    ("production.try_time", "allballs", None),
    ("production.try_time", "04:05 PM", None),
    ("production.try_time", None, None),
    ("production.try_date", "2024-02-30", None),
    ("production.try_date", "20240105", None),
    ("production.try_date", "2024-01-05 10:00", None),
    ("production.try_date", "2024-1-5x", None),
    ("production.try_date", "1999-12-31", "1999-12-31"),
    ("production.try_time", " 7:05 ", "07:05:00"),
    ("production.try_time", "23:59:59.123456", "23:59:59.123456"),
    ("production.try_time", "7:5", None),
    ("production.try_time", "12:60", None),
    ("production.try_time", "12:30:5", None),
    ("production.try_time", "12:30:05.1234567", None),
    ("production.try_time", "noon", None),
    ("production.try_time", "", None),
    ("production.lookup_key", "  Home   and KITCHEN ", "home and kitchen"),
]


def test_safe_parsers_never_raise(db_url: str, make_settings) -> None:
    run_pipeline(make_settings(db_url), stages=("ingest",))  # applies the DDL
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            for function, value, expected in PARSER_CASES:
                cur.execute(sql.SQL("SELECT {}(%s)::text").format(sql.SQL(function)), (value,))
                assert cur.fetchone()[0] == expected, (function, value)
    finally:
        conn.close()
