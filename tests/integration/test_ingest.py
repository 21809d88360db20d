"""Ingestion into staging against a real PostgreSQL: counts, idempotence, and bad files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dwh import db
from dwh.contract import CUSTOMERS, PRODUCTS
from dwh.exceptions import BadInputError, ExitCode
from dwh.orchestrator import run_pipeline
from dwh.stages import ingest
from dwh.stages.ingest import sha256_of

pytestmark = pytest.mark.integration

HEADER = ",".join(CUSTOMERS.columns)
ROW1 = 'CUST0001,Ann,Lee,ann@x.com,555-0100,2024-01-05,"Austin, TX",TX,USA,26-35'
ROW2 = "CUST0002,Bob,Ray,bob@x.com,555-0101,2024-02-01,Boston,MA,USA,36-45"
PRODUCT = "PROD0001,Desk Lamp,Home & Kitchen,Lighting,25.00,11.50,Lumo,40,SUP001"


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _counts(conn) -> dict[str, int]:
    with conn.cursor() as cur:
        out = {}
        for table in ("customers", "products", "transactions", "transaction_items"):
            cur.execute(f"SELECT count(*) FROM staging.{table}")
            out[table] = cur.fetchone()[0]
    conn.rollback()
    return out


def _ingest(settings):
    return run_pipeline(settings, stages=("ingest",))


@pytest.fixture
def settings(db_url, make_settings):
    return make_settings(db_url)


def test_loads_rows_with_lineage_and_skips_on_rerun(settings, conn) -> None:
    raw = settings.raw_dir / "batch_0001"
    _write(raw / "customers.csv", f"{HEADER}\n{ROW1}\n{ROW2}\n")
    _write(raw / "products.csv", ",".join(PRODUCTS.columns) + f"\n{PRODUCT}\n")

    report = _ingest(settings)
    assert report.status == "success"
    assert report.stages[0].rows_out == 3
    assert _counts(conn) == {
        "customers": 2,
        "products": 1,
        "transactions": 0,
        "transaction_items": 0,
    }
    with conn.cursor() as cur:
        cur.execute(
            "SELECT customer_id, city, _batch_id, _source_file, _source_line"
            " FROM staging.customers ORDER BY _source_line"
        )
        rows = cur.fetchall()
        assert rows == [
            ("CUST0001", "Austin, TX", "batch_0001", str(raw / "customers.csv"), 2),
            ("CUST0002", "Boston", "batch_0001", str(raw / "customers.csv"), 3),
        ]
        cur.execute("SELECT file_name, row_count, sha256 FROM ops.ingested_files ORDER BY 1")
        assert cur.fetchall() == [
            ("customers.csv", 2, sha256_of(raw / "customers.csv")),
            ("products.csv", 1, sha256_of(raw / "products.csv")),
        ]
    conn.rollback()

    second = _ingest(settings)
    assert second.stages[0].rows_out == 0
    assert _counts(conn)["customers"] == 2


def test_bom_crlf_and_reordered_columns_are_accepted(settings, conn) -> None:
    reordered = list(reversed(CUSTOMERS.columns))
    values = list(reversed(ROW2.split(",")))
    body = "\ufeff" + ",".join(reordered) + "\r\n" + ",".join(values) + "\r\n"
    _write(settings.raw_dir / "batch_0001" / "customers.csv", body)
    _ingest(settings)
    with conn.cursor() as cur:
        cur.execute("SELECT customer_id, email, age_group FROM staging.customers")
        assert cur.fetchall() == [("CUST0002", "bob@x.com", "36-45")]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            f"{HEADER}\n{ROW1}\n" + ROW2.replace("Boston", '"Boston') + "\n",
            r"line 4: unterminated CSV quoted field \(a field opened",
        ),
        (f"{HEADER}\n{ROW1}\nCUST0003,Cy\n", r'line 3: missing data for column "last_name"'),
        (f"{HEADER}\n{ROW1},extra\n", r"line 2: extra data after last expected column"),
        (
            f"{HEADER}\n{ROW1}\n".encode()
            + "CUST0009,Zoë,A,z@x.com,1,2024-01-01,B,C,D,18-25\n".encode("latin-1"),
            r"line 3: invalid byte sequence",
        ),
        (
            f"{HEADER}\nCUST0009,Z\x00e,A,z@x.com,1,2024-01-01,B,C,D,18-25\n",
            r"line 2: invalid byte sequence",
        ),
        ("", r"the file is empty"),
        (HEADER.replace(",email", "") + "\n", r"missing column\(s\) email"),
        (HEADER + ",loyalty_tier\n", r"unknown column\(s\) 'loyalty_tier'"),
        (HEADER.replace(",", ";") + "\n", r"delimiter"),
    ],
    ids=[
        "unterminated-quote",
        "too-few-fields",
        "too-many-fields",
        "latin-1",
        "nul-byte",
        "empty-file",
        "missing-column",
        "unknown-column",
        "semicolons",
    ],
)
def test_bad_file_fails_with_file_and_line_and_loads_nothing(
    settings, conn, body, expected
) -> None:
    good = settings.raw_dir / "batch_0001"
    _write(good / "customers.csv", f"{HEADER}\n{ROW1}\n")
    _ingest(settings)
    bad = _write(settings.raw_dir / "batch_0002" / "customers.csv", body)

    with pytest.raises(BadInputError, match=expected) as info:
        _ingest(settings)
    assert str(bad) in str(info.value)
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert _counts(conn)["customers"] == 1  # the earlier batch is intact, nothing of the bad file
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ops.ingested_files WHERE batch_id = 'batch_0002'")
        assert cur.fetchone()[0] == 0
        cur.execute(
            "SELECT r.status, s.status, s.error FROM ops.pipeline_runs r"
            " JOIN ops.stage_runs s USING (run_id) ORDER BY r.run_id DESC LIMIT 1"
        )
        run_status, stage_status, error = cur.fetchone()
    assert (run_status, stage_status) == ("failed", "failed")
    assert str(bad) in error


def test_a_file_written_long_before_its_load_is_trusted_by_its_stat(
    settings, conn, monkeypatch
) -> None:
    """Size and modification time vouch for an old file on later runs (no re-read); a file
    written just before its load is re-hashed every time; any later write is still caught."""
    old = _write(settings.raw_dir / "batch_0001" / "customers.csv", f"{HEADER}\n{ROW1}\n")
    fresh = _write(
        settings.raw_dir / "batch_0001" / "products.csv",
        ",".join(PRODUCTS.columns) + f"\n{PRODUCT}\n",
    )
    hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(old, ns=(hour_ago, hour_ago))
    _ingest(settings)
    with conn.cursor() as cur:
        cur.execute("SELECT file_name, mtime_ns FROM ops.ingested_files ORDER BY 1")
        assert cur.fetchall() == [("customers.csv", hour_ago), ("products.csv", None)]
    conn.rollback()

    # time passes: the file written just before its load is no longer racy
    later = time.time_ns() - 5 * 10**9
    os.utime(fresh, ns=(later, later))
    hashed: list[str] = []
    real = ingest.sha256_of
    monkeypatch.setattr(ingest, "sha256_of", lambda path: hashed.append(path.name) or real(path))
    assert _ingest(settings).status == "success"
    assert hashed == ["products.csv"]  # the racy one only, which is trusted from now on
    hashed.clear()
    assert _ingest(settings).status == "success"
    assert hashed == []

    _write(old, f"{HEADER}\n{ROW2}\n")  # same size, written now
    with pytest.raises(BadInputError, match=r"customers\.csv: changed since it was loaded"):
        _ingest(settings)


def test_changed_file_with_the_same_name_is_reported(settings, conn) -> None:
    path = _write(settings.raw_dir / "batch_0001" / "customers.csv", f"{HEADER}\n{ROW1}\n")
    _ingest(settings)
    _write(path, f"{HEADER}\n{ROW2}\n")
    with pytest.raises(BadInputError, match="changed since it was loaded"):
        _ingest(settings)
    with conn.cursor() as cur:
        cur.execute("SELECT customer_id FROM staging.customers")
        assert cur.fetchall() == [("CUST0001",)]


def test_same_content_in_another_batch_is_not_loaded_twice(settings, conn) -> None:
    _write(settings.raw_dir / "batch_0001" / "customers.csv", f"{HEADER}\n{ROW1}\n")
    _write(settings.raw_dir / "batch_0002" / "customers.csv", f"{HEADER}\n{ROW1}\n")
    report = _ingest(settings)
    files = report.stages[0].details["files"]
    assert [f["status"] for f in files] == ["loaded", "duplicate_content"]
    assert files[1]["same_as"] == ["batch_0001", "customers.csv"]
    assert _counts(conn)["customers"] == 1


def test_manifest_guards_against_truncated_and_missing_files(settings, conn) -> None:
    batch = settings.raw_dir / "batch_0001"
    full = f"{HEADER}\n{ROW1}\n{ROW2}\n"
    path = _write(batch / "customers.csv", full)
    manifest = {
        "business_date": "2025-12-31",
        "files": {
            "customers.csv": {"rows": 2, "sha256": sha256_of(path)},
            "products.csv": {"rows": 1, "sha256": "0" * 64},
        },
    }
    _write(batch / "manifest.json", json.dumps(manifest))
    with pytest.raises(
        BadInputError, match=r"products\.csv is listed in manifest\.json but missing"
    ):
        _ingest(settings)

    del manifest["files"]["products.csv"]
    _write(batch / "manifest.json", json.dumps(manifest))
    _write(path, f"{HEADER}\n{ROW1}\n")  # truncated: one row lost
    with pytest.raises(BadInputError, match="sha256 differs from the batch manifest"):
        _ingest(settings)
    assert _counts(conn)["customers"] == 0

    _write(path, full)
    _ingest(settings)
    assert _counts(conn)["customers"] == 2
    with conn.cursor() as cur:
        cur.execute("SELECT business_date::text FROM ops.batches WHERE batch_id = 'batch_0001'")
        assert cur.fetchone()[0] == "2025-12-31"


def test_unknown_file_in_a_batch_is_named(settings) -> None:
    _write(settings.raw_dir / "batch_0001" / "customers.csv", f"{HEADER}\n{ROW1}\n")
    _write(settings.raw_dir / "batch_0001" / "refunds.csv", "a,b\n1,2\n")
    with pytest.raises(BadInputError, match=r"refunds.csv: not a known source file"):
        _ingest(settings)


STAGING = ("customers", "products", "transactions", "transaction_items")


def _lose_staging(conn) -> None:
    """What PostgreSQL's recovery from a crash does to the unlogged staging tables (a real crash
    of the server: tests/reliability/test_database_faults.py)."""
    with conn.cursor() as cur:
        tables = [*STAGING, "unlogged_canary"]
        cur.execute("TRUNCATE " + ", ".join(f"staging.{t}" for t in tables))
    conn.commit()


def _staged(conn) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT customer_id, city, _batch_id, _source_file, _source_line FROM staging.customers"
            " UNION ALL SELECT product_id, brand, _batch_id, _source_file, _source_line"
            " FROM staging.products ORDER BY 1"
        )
        rows = cur.fetchall()
    conn.rollback()
    return rows


def test_staging_is_unlogged_and_lost_rows_of_an_unpromoted_batch_are_reloaded(
    settings, conn
) -> None:
    raw = settings.raw_dir / "batch_0001"
    _write(raw / "customers.csv", f"{HEADER}\n{ROW1}\n{ROW2}\n")
    _write(raw / "products.csv", ",".join(PRODUCTS.columns) + f"\n{PRODUCT}\n")
    _ingest(settings)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT relname, relpersistence FROM pg_class"
            " WHERE relnamespace = 'staging'::regnamespace AND relkind IN ('r', 'i') ORDER BY 1"
        )
        persistence = dict(cur.fetchall())
    conn.rollback()
    assert set(persistence) >= set(STAGING)
    assert set(persistence.values()) == {"u"}  # tables and their indexes
    before = _staged(conn)

    _lose_staging(conn)
    # not the ingest stage: the first stage that reads staging reloads what the batch lost
    report = run_pipeline(settings, stages=("quality", "production"))
    assert report.status == "success"
    assert report.stages[0].details["staging_restored"] == [
        {"batch_id": "batch_0001", "file": "customers.csv", "rows": 2},
        {"batch_id": "batch_0001", "file": "products.csv", "rows": 1},
    ]
    assert "staging_restored" not in report.stages[1].details  # the quality stage did it
    assert _staged(conn) == before
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM production.customers")
        assert cur.fetchone()[0] == 2
    conn.rollback()

    # nothing lost: nothing reloaded
    report = run_pipeline(settings, stages=("ingest", "quality", "production"))
    assert all("staging_restored" not in s.details for s in report.stages)
    assert _staged(conn) == before

    # a promoted batch is reloaded too (staging as before the crash), by the ingest stage; one
    # whose file is gone stays out of staging, with a warning: production holds its rows
    _lose_staging(conn)
    (raw / "products.csv").unlink()
    report = run_pipeline(settings, stages=("ingest", "quality", "production"))
    assert report.status == "success"
    assert report.stages[0].details["staging_restored"] == [
        {"batch_id": "batch_0001", "file": "customers.csv", "rows": 2},
    ]
    assert _staged(conn) == [row for row in before if row[0] != "PROD0001"]
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM production.products")
        assert cur.fetchone()[0] == 1
    conn.rollback()


def test_a_lost_batch_whose_file_is_gone_or_changed_is_named(settings, conn) -> None:
    path = _write(settings.raw_dir / "batch_0001" / "customers.csv", f"{HEADER}\n{ROW1}\n")
    _ingest(settings)
    _lose_staging(conn)
    path.rename(path.with_suffix(".bak"))
    with pytest.raises(BadInputError, match=r"customers\.csv is gone: put the file back"):
        run_pipeline(settings, stages=("production",))
    path.with_suffix(".bak").rename(path)
    _write(path, f"{HEADER}\n{ROW2}\n")
    with pytest.raises(
        BadInputError, match=r"not promoted yet; .*customers\.csv changed since it was loaded"
    ):
        run_pipeline(settings, stages=("production",))
    assert _staged(conn) == []  # nothing of the changed file was staged
    _write(path, f"{HEADER}\n{ROW1}\n")
    assert run_pipeline(settings, stages=("production",)).status == "success"
    with conn.cursor() as cur:
        cur.execute("SELECT customer_id FROM production.customers")
        assert cur.fetchall() == [("CUST0001",)]
    conn.rollback()


def test_a_database_from_before_gets_unlogged_staging_and_keeps_its_rows(settings, conn) -> None:
    _write(settings.raw_dir / "batch_0001" / "customers.csv", f"{HEADER}\n{ROW1}\n")
    _ingest(settings)
    with conn.cursor() as cur:
        for table in STAGING:
            cur.execute(f"ALTER TABLE staging.{table} SET LOGGED")
    conn.commit()
    before = _staged(conn)
    db.apply_ddl(conn, force=True)  # as for a database from before: its DDL checksum differs
    with conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT relpersistence FROM pg_class"
            " WHERE relnamespace = 'staging'::regnamespace AND relkind = 'r'"
        )
        assert cur.fetchall() == [("u",)]
    conn.rollback()
    assert _staged(conn) == before


def test_each_file_numbers_its_lines_from_2_in_one_session(settings, conn) -> None:
    # the line sequences hand out numbers from a per-session cache: the setval before each file
    # must empty it, or the second file of the run would go on from the first one's numbers
    row3 = "CUST0003,Cy,Oh,cy@x.com,555-0102,2024-03-01,Denver,CO,USA,18-25"
    _write(settings.raw_dir / "batch_0001" / "customers.csv", f"{HEADER}\n{ROW1}\n{ROW2}\n")
    _write(settings.raw_dir / "batch_0002" / "customers.csv", f"{HEADER}\n{row3}\n{ROW1}\n{ROW2}\n")
    _ingest(settings)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT _batch_id, array_agg(_source_line ORDER BY _source_line)"
            " FROM staging.customers GROUP BY 1 ORDER BY 1"
        )
        assert cur.fetchall() == [("batch_0001", [2, 3]), ("batch_0002", [2, 3, 4])]
    conn.rollback()
