"""Unit tests of the data generator (no database): the files it writes hold what the contract,
the manifest and the defect catalogue promise, checked by re-reading the CSV files."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from dwh import contract
from dwh.defects import DEFECT_CLASSES
from dwh.exceptions import ConfigError
from dwh.generator import CATEGORY_VARIANTS, batch, csvfile, generate_batch
from dwh.settings import load_settings
from dwh.stage import RunContext, RunOptions
from dwh.stages import generate as generate_stage

SMALL = {
    "customers": 200,
    "products": 80,
    "transactions": 1500,
    "start_date": "2024-01-01",
    "end_date": "2024-12-31",
    "chunk_rows": 700,  # several chunks even at this volume
    "seed": 7,
}
BUSINESS_DATE = dt.date(2024, 12, 31)
MONEY = re.compile(r"^\d+\.\d{2}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def make_settings(data_dir: Path, **generator):
    return load_settings(
        data_dir=data_dir, environ={}, overrides={"generator": {**SMALL, **generator}}
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[1:-1]


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / contract.MANIFEST_NAME).read_text(encoding="utf-8"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cents(text: str) -> int:
    return int((Decimal(text) * 100).to_integral_value())


def line_total(quantity: str, unit_price: str, discount: str) -> Decimal:
    exact = Decimal(quantity) * Decimal(unit_price) * (1 - Decimal(discount) / 100)
    return exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """A clean history batch."""
    settings = make_settings(tmp_path_factory.mktemp("clean"))
    return generate_batch(settings)


@pytest.fixture(scope="module")
def clean_rows(clean: Path) -> dict[str, list[dict[str, str]]]:
    return {f.name: read_rows(clean / f.name) for f in contract.SOURCE_FILES}


@pytest.fixture(scope="module")
def two_days(tmp_path_factory) -> list[Path]:
    """A clean history batch and two next batches."""
    settings = make_settings(tmp_path_factory.mktemp("next"))
    return [generate_batch(settings, next_batch=n > 0) for n in range(3)]


@pytest.fixture(scope="module")
def dirty(tmp_path_factory) -> list[Path]:
    """A dirty history batch (rate 0.1) and a dirty next batch."""
    settings = make_settings(tmp_path_factory.mktemp("dirty"), dirty_rate=0.1)
    return [generate_batch(settings), generate_batch(settings, next_batch=True)]


# ----------------------------------------------------------------------------- clean history


def test_batch_has_the_contract_files_and_a_manifest(clean: Path) -> None:
    assert clean.name == "batch_0001"
    assert sorted(p.name for p in clean.iterdir()) == sorted(
        [f.name for f in contract.SOURCE_FILES] + [contract.MANIFEST_NAME]
    )
    assert not [p for p in clean.parent.iterdir() if p.name.startswith(".")]  # no temp left
    for source in contract.SOURCE_FILES:
        data = (clean / source.name).read_bytes()
        assert b"\r" not in data and data.endswith(b"\n")
        assert data.decode("utf-8").split("\n", 1)[0] == ",".join(source.columns)


def test_counts_match_the_settings_and_the_manifest(clean: Path, clean_rows) -> None:
    manifest = manifest_of(clean)
    assert len(clean_rows["customers.csv"]) == 200
    assert len(clean_rows["products.csv"]) == 80
    assert len(clean_rows["transactions.csv"]) == 1500
    assert 1500 <= len(clean_rows["transaction_items.csv"]) <= 1500 * 5
    for name, rows in clean_rows.items():
        info = manifest["files"][name]
        assert info["rows"] == len(rows)
        assert info["sha256"] == sha256(clean / name)
        assert info["bytes"] == (clean / name).stat().st_size
        expected = manifest["expected"][name]
        assert expected["staged"] == expected["accepted"] == len(rows)
        assert expected["duplicates"] == 0 and not any(expected["quarantined"].values())
    assert manifest["batch_id"] == "batch_0001" and manifest["batch_number"] == 1
    assert manifest["business_date"] == BUSINESS_DATE.isoformat()
    assert manifest["generator_version"] == 1 and manifest["seed"] == 7
    assert manifest["dirty_rate"] == 0 and manifest["scale"] == 1
    assert manifest["last_ids"] == {
        "customer": 200,
        "product": 80,
        "transaction": 1500,
        "item": len(clean_rows["transaction_items.csv"]),
    }
    assert all(v == 0 for files in manifest["defects"].values() for v in files.values())


def test_ids_have_the_recorded_width_and_are_unique_and_ordered(clean: Path, clean_rows) -> None:
    widths = manifest_of(clean)["id_widths"]
    assert widths["customer"] >= 4 and widths["product"] >= 4
    assert widths["transaction"] >= 5 and widths["item"] >= 5
    for name, key, prefix, kind in (
        ("customers.csv", "customer_id", "CUST", "customer"),
        ("products.csv", "product_id", "PROD", "product"),
        ("transactions.csv", "transaction_id", "TXN", "transaction"),
        ("transaction_items.csv", "item_id", "ITEM", "item"),
    ):
        ids = [r[key] for r in clean_rows[name]]
        assert all(re.fullmatch(rf"{prefix}\d{{{widths[kind]}}}", i) for i in ids), name
        assert len(set(ids)) == len(ids) and ids == sorted(ids), name
        assert ids[0] == f"{prefix}{1:0{widths[kind]}d}"


def test_emails_are_unique_and_valid(clean_rows) -> None:
    emails = [r["email"] for r in clean_rows["customers.csv"]]
    assert len(set(emails)) == len(emails)
    assert all(EMAIL.match(e) for e in emails)


def test_clean_data_has_no_orphans(clean_rows) -> None:
    customers = {r["customer_id"] for r in clean_rows["customers.csv"]}
    products = {r["product_id"] for r in clean_rows["products.csv"]}
    transactions = {r["transaction_id"] for r in clean_rows["transactions.csv"]}
    assert {r["customer_id"] for r in clean_rows["transactions.csv"]} <= customers
    items = clean_rows["transaction_items.csv"]
    assert {r["product_id"] for r in items} <= products
    assert {r["transaction_id"] for r in items} == transactions  # every order has lines


def test_amounts_are_exact_to_the_cent(clean_rows) -> None:
    price = {r["product_id"]: r["price"] for r in clean_rows["products.csv"]}
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for r in clean_rows["transaction_items.csv"]:
        assert 1 <= int(r["quantity"]) <= 5
        assert int(r["discount_percentage"]) in contract.DISCOUNTS
        assert MONEY.match(r["unit_price"]) and MONEY.match(r["line_total"])
        assert r["unit_price"] == price[r["product_id"]]
        total = line_total(r["quantity"], r["unit_price"], r["discount_percentage"])
        assert Decimal(r["line_total"]) == total, r
        totals[r["transaction_id"]] += total
    for r in clean_rows["transactions.csv"]:
        assert MONEY.match(r["total_amount"])
        assert Decimal(r["total_amount"]) == totals[r["transaction_id"]], r


def test_dates_are_in_range_and_never_before_registration(clean_rows) -> None:
    registered = {}
    for r in clean_rows["customers.csv"]:
        registered[r["customer_id"]] = dt.date.fromisoformat(r["registration_date"])
        assert registered[r["customer_id"]] <= BUSINESS_DATE
    for r in clean_rows["transactions.csv"]:
        day = dt.date.fromisoformat(r["transaction_date"])
        assert dt.date(2024, 1, 1) <= day <= BUSINESS_DATE
        assert day >= registered[r["customer_id"]]
        assert re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d", r["transaction_time"])
    keys = [(r["transaction_date"], r["transaction_time"]) for r in clean_rows["transactions.csv"]]
    assert keys == sorted(keys)  # ids follow time


def test_domain_values_come_from_the_contract(clean_rows) -> None:
    customers, products = clean_rows["customers.csv"], clean_rows["products.csv"]
    assert {r["age_group"] for r in customers} == set(contract.AGE_GROUPS)
    assert {r["country"] for r in customers} == {"USA"}
    assert {r["category"] for r in products} <= set(contract.CATEGORIES)
    methods = {r["payment_method"] for r in clean_rows["transactions.csv"]}
    assert methods == set(contract.PAYMENT_METHODS)
    for r in products:
        assert MONEY.match(r["price"]) and MONEY.match(r["cost"])
        assert 0 < cents(r["cost"]) < cents(r["price"]), r
        assert int(r["stock_quantity"]) >= 0 and re.fullmatch(r"SUP\d{3}", r["supplier_id"])
        assert r["product_name"] and r["brand"] and r["sub_category"]


def test_addresses_with_commas_are_quoted(clean: Path, clean_rows) -> None:
    lines = read_lines(clean / "transactions.csv")
    assert len(lines) == len(clean_rows["transactions.csv"])
    assert all(line.count('"') == 2 for line in lines)
    for r in clean_rows["transactions.csv"][:50]:
        assert re.fullmatch(r"\d+ .+, .+, [A-Z]{2} \d{5}", r["shipping_address"])


def test_distributions_are_realistic(clean_rows) -> None:
    per_day = Counter(
        dt.date.fromisoformat(r["transaction_date"]) for r in clean_rows["transactions.csv"]
    )
    days = [dt.date(2024, 1, 1) + dt.timedelta(n) for n in range(366)]
    weekend = [per_day[d] for d in days if d.weekday() >= 5]
    weekday = [per_day[d] for d in days if d.weekday() < 5]
    assert sum(weekend) / len(weekend) > 1.15 * sum(weekday) / len(weekday)
    year_end = [per_day[d] for d in days if d.month >= 11]
    rest = [per_day[d] for d in days if d.month < 11]
    assert sum(year_end) / len(year_end) > 1.2 * sum(rest) / len(rest)
    revenue: Counter[str] = Counter()
    for r in clean_rows["transactions.csv"]:
        revenue[r["customer_id"]] += cents(r["total_amount"])
    top = sorted(revenue.values(), reverse=True)
    assert sum(top[: len(top) // 5]) > 0.5 * sum(top)  # a fifth of buyers, most revenue


# ----------------------------------------------------------------------------- determinism, scale


def test_same_seed_gives_identical_files_and_other_seed_does_not(tmp_path, clean: Path) -> None:
    again = generate_batch(make_settings(tmp_path / "a", chunk_rows=100_000))
    other = generate_batch(make_settings(tmp_path / "b"), seed=8)
    names = [f.name for f in contract.SOURCE_FILES] + [contract.MANIFEST_NAME]
    for name in names:  # the chunk size does not change the data either
        assert sha256(again / name) == sha256(clean / name), name
    for name in names:
        assert sha256(other / name) != sha256(clean / name), name


@pytest.mark.parametrize("workers", [0, 3])
def test_worker_processes_do_not_change_the_files(tmp_path, monkeypatch, workers) -> None:
    """Order chunks formatted inline (0) or by forked worker processes give the same bytes."""
    folders = []
    for run, count in (("inline", 0), ("workers", workers)):
        monkeypatch.setattr(batch, "worker_count", lambda count=count: count)
        settings = make_settings(tmp_path / run, chunk_rows=300, dirty_rate=0.05)
        folders.append([generate_batch(settings, next_batch=n > 0) for n in range(2)])
    names = [f.name for f in contract.SOURCE_FILES] + [contract.MANIFEST_NAME]
    for one, other in zip(*folders, strict=True):
        for name in names:
            assert sha256(one / name) == sha256(other / name), (one.name, name)


STOP_EARLY = """
import signal, sys, time
from dwh.generator.workers import OrderedJobs
signal.signal(signal.SIGTERM, lambda *_: None)  # as the orchestrator's handler: only notes it
def job(n):
    time.sleep(0.3)
    return bytes(1_000_000)  # more than a pipe holds
with OrderedJobs(job, range(8), 2) as results:
    next(iter(results))  # the caller stops while the workers are busy
print("closed")
"""


def test_workers_end_when_the_caller_stops_early_under_a_sigterm_handler(tmp_path) -> None:
    """The pool ends its workers with SIGTERM; a worker must not keep the parent's handler
    (a run stopped by SIGTERM used to hang here, waiting for workers that ignored it)."""
    out = tmp_path / "out.txt"
    with open(out, "w") as f:  # a file, not a pipe: a stray worker cannot hold it open
        proc = subprocess.Popen(
            [sys.executable, "-c", STOP_EARLY],
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(SCRIPTS)},
            start_new_session=True,
        )
        try:
            assert proc.wait(timeout=60) == 0, out.read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert out.read_text().strip() == "closed"


def test_scale_multiplies_the_volumes(tmp_path) -> None:
    settings = make_settings(tmp_path, customers=30, products=10, transactions=100)
    folder = generate_batch(settings, scale=2)
    manifest = manifest_of(folder)
    assert manifest["scale"] == 2
    rows = {name: info["rows"] for name, info in manifest["files"].items()}
    assert rows["customers.csv"] == 60 and rows["products.csv"] == 20
    assert rows["transactions.csv"] == 200


# ----------------------------------------------------------------------------- next batches


def test_next_batches_continue_one_business_day_at_a_time(two_days: list[Path]) -> None:
    manifests = [manifest_of(p) for p in two_days]
    assert [p.name for p in two_days] == ["batch_0001", "batch_0002", "batch_0003"]
    assert [m["business_date"] for m in manifests] == ["2024-12-31", "2025-01-01", "2025-01-02"]
    for before, after in itertools.pairwise(manifests):
        assert after["id_widths"] == before["id_widths"]
        assert after["batch_number"] == before["batch_number"] + 1
        for kind, last in before["last_ids"].items():
            assert after["last_ids"][kind] > last
    for folder, m in zip(two_days[1:], manifests[1:], strict=True):
        txns = read_rows(folder / "transactions.csv")
        assert len(txns) == 15
        assert {r["transaction_date"] for r in txns} == {m["business_date"]}
        first_txn = int(txns[0]["transaction_id"][3:])
        previous = manifests[m["batch_number"] - 2]["last_ids"]
        assert first_txn == previous["transaction"] + 1
        items = read_rows(folder / "transaction_items.csv")
        assert int(items[0]["item_id"][4:]) == previous["item"] + 1


def test_next_batch_has_new_and_changed_rows(two_days: list[Path]) -> None:
    history, day2 = two_days[0], two_days[1]
    last = manifest_of(history)["last_ids"]
    old_c = {r["customer_id"]: r for r in read_rows(history / "customers.csv")}
    old_p = {r["product_id"]: r for r in read_rows(history / "products.csv")}
    new_c = read_rows(day2 / "customers.csv")
    new_p = read_rows(day2 / "products.csv")
    changed_c = [r for r in new_c if r["customer_id"] in old_c]
    fresh_c = [r for r in new_c if r["customer_id"] not in old_c]
    assert len(changed_c) == 5 and len(fresh_c) == 10
    assert [int(r["customer_id"][4:]) for r in fresh_c] == list(
        range(last["customer"] + 1, last["customer"] + 11)
    )
    assert all(r["registration_date"] == "2025-01-01" for r in fresh_c)
    for r in changed_c:
        old = old_c[r["customer_id"]]
        assert r != old
        assert (r["city"], r["state"]) != (old["city"], old["state"]) or r["email"] != old["email"]
        assert r["registration_date"] == old["registration_date"]
    emails = [
        r["email"]
        for r in old_c.values()
        if r["customer_id"] not in {c["customer_id"] for c in changed_c}
    ]
    emails += [r["email"] for r in new_c]
    assert len(set(emails)) == len(emails) and all(EMAIL.match(e) for e in emails)
    changed_p = [r for r in new_p if r["product_id"] in old_p]
    assert len(changed_p) == 3 and len(new_p) == 6
    for r in changed_p:
        old = old_p[r["product_id"]]
        assert r["price"] != old["price"] or r["category"] != old["category"]
        assert 0 < cents(r["cost"]) < cents(r["price"])
        assert r["category"] in contract.CATEGORIES


def test_next_batch_orders_reference_known_rows_at_current_prices(two_days: list[Path]) -> None:
    customers: dict[str, dict[str, str]] = {}
    products: dict[str, dict[str, str]] = {}
    for folder in two_days:
        customers.update({r["customer_id"]: r for r in read_rows(folder / "customers.csv")})
        products.update({r["product_id"]: r for r in read_rows(folder / "products.csv")})
        day = manifest_of(folder)["business_date"]
        txns = read_rows(folder / "transactions.csv")
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for r in read_rows(folder / "transaction_items.csv"):
            assert r["unit_price"] == products[r["product_id"]]["price"]
            assert Decimal(r["line_total"]) == line_total(
                r["quantity"], r["unit_price"], r["discount_percentage"]
            )
            totals[r["transaction_id"]] += Decimal(r["line_total"])
        for r in txns:
            assert customers[r["customer_id"]]["registration_date"] <= r["transaction_date"] <= day
            assert Decimal(r["total_amount"]) == totals[r["transaction_id"]]


def test_next_batch_into_the_future_is_refused(tmp_path) -> None:
    today = dt.date.today()
    settings = make_settings(tmp_path, start_date=today - dt.timedelta(30), end_date=today)
    generate_batch(settings)
    with pytest.raises(ConfigError, match="future"):
        generate_batch(settings, next_batch=True)
    with pytest.raises(ConfigError, match="already holds"):
        generate_batch(settings)
    assert [p.name for p in settings.raw_dir.iterdir()] == ["batch_0001"]


def test_a_failed_run_leaves_no_batch_folder(tmp_path, monkeypatch) -> None:
    settings = make_settings(tmp_path)
    stale = settings.raw_dir / ".tmp-batch_0001-999999999-0"  # left by a killed generator
    stale.mkdir(parents=True)

    def fail(self, lines):
        raise OSError("disk full")

    monkeypatch.setattr(csvfile.CsvWriter, "write", fail)
    with pytest.raises(OSError):
        generate_batch(settings)
    assert list(settings.raw_dir.iterdir()) == []


def test_workers_stopped_early_end_while_results_larger_than_a_pipe_are_pending() -> None:
    """A caller leaving OrderedJobs before its results (a failed write, a break) ends the pool
    even when running jobs are writing results larger than the pipe's buffer. Before, terminate()
    stopped reading results first and hung within 7 to 24 such stops here; in a child process with a
    timeout, so a hang fails the test instead of the suite."""
    code = (
        "from dwh.generator.workers import OrderedJobs\n"
        "def big(i):\n"
        "    return b'x' * 2_000_000\n"
        "for _ in range(100):\n"
        "    with OrderedJobs(big, range(20), 2) as jobs:\n"
        "        for result in jobs:\n"
        "            break\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(SCRIPTS)},
        timeout=120,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


# ----------------------------------------------------------------------------- dirty data


def _detect(folder: Path, known: dict[str, set[str]], business_date: str) -> dict:
    """Count each defect class per file by re-reading the CSV files (independent of the
    generator's code): {class: {file: count}} and the accepted rows per file."""
    found: dict[str, Counter] = defaultdict(Counter)
    accepted: dict[str, set[str]] = {}
    valid_ids: dict[str, set[str]] = {}
    for source in contract.SOURCE_FILES:
        f = source.name
        lines = read_lines(folder / f)
        rows = list(csv.reader(lines))
        by_key: dict[str, list[str]] = defaultdict(list)
        keep: set[str] = set()
        for text, row in zip(lines, rows, strict=True):
            r = dict(zip(source.columns, row, strict=True))
            key = r[source.key]
            if key == "":
                found["missing_id"][f] += 1
                continue
            if text in by_key[key]:
                found["exact_duplicate"][f] += 1
                continue
            by_key[key].append(text)
            cls = _row_defect(f, r, valid_ids, known, business_date)
            if cls:
                found[cls][f] += 1
            if cls not in _QUARANTINE:
                keep.add(key)
        if f in ("customers.csv", "products.csv"):
            found["conflicting_duplicate"][f] += sum(len(v) - 1 for v in by_key.values())
        accepted[f] = keep
        valid_ids[f] = keep
    return {"defects": found, "accepted": {f: len(k) for f, k in accepted.items()}}


_QUARANTINE = {d.name for d in DEFECT_CLASSES if d.outcome == "quarantine"}


def _row_defect(f, r, valid_ids, known, business_date) -> str | None:
    if f == "customers.csv":
        if not EMAIL.match(r["email"]):
            return "bad_email"
        if any(r[c] != r[c].strip() for c in ("first_name", "last_name", "city")):
            return "stray_whitespace"
    elif f == "products.csv":
        if not NUMBER.match(r["price"]):
            return "unparseable_number"
        if r["category"] not in contract.CATEGORIES:
            return "category_variant"
        if any(r[c] != r[c].strip() for c in ("product_name", "brand")):
            return "stray_whitespace"
    elif f == "transactions.csv":
        try:
            day = dt.date.fromisoformat(r["transaction_date"])
        except ValueError:
            return "unparseable_date"
        if day.isoformat() > business_date:
            return "future_date"
        if r["customer_id"] not in known["customers"]:
            return "orphan_reference"
    else:
        if not NUMBER.match(r["quantity"]) or not NUMBER.match(r["unit_price"]):
            return "unparseable_number"
        if int(r["quantity"]) <= 0:
            return "negative_quantity"
        if (
            r["transaction_id"] not in valid_ids["transactions.csv"]
            or r["product_id"] not in known["products"]
        ):
            return "orphan_reference"
        expected = line_total(r["quantity"], r["unit_price"], r["discount_percentage"])
        if Decimal(r["line_total"]) != expected:
            assert abs(Decimal(r["line_total"]) - expected) >= Decimal("0.05")
            return "line_total_mismatch"
    return None


def test_injected_defects_match_the_manifest(dirty: list[Path]) -> None:
    known: dict[str, set[str]] = {"customers": set(), "products": set()}
    for folder in dirty:
        manifest = manifest_of(folder)
        # valid ids so far: extra customer rows have no id, extra product rows a bad price
        known["customers"] |= {r["customer_id"] for r in read_rows(folder / "customers.csv")}
        known["products"] |= {
            r["product_id"] for r in read_rows(folder / "products.csv") if NUMBER.match(r["price"])
        }
        result = _detect(folder, known, manifest["business_date"])
        for d in DEFECT_CLASSES:
            for f in d.files:
                assert manifest["defects"][d.name][f] >= 1, (d.name, f)
                assert result["defects"][d.name][f] == manifest["defects"][d.name][f], (
                    folder.name,
                    d.name,
                    f,
                )
        for f, exp in manifest["expected"].items():
            assert exp["staged"] == manifest["files"][f]["rows"]
            assert (
                exp["staged"]
                == exp["accepted"] + sum(exp["quarantined"].values()) + exp["duplicates"]
            )
            assert exp["accepted"] == result["accepted"][f], (folder.name, f)
        stated = {d.name: d for d in DEFECT_CLASSES}
        for f, exp in manifest["expected"].items():
            for reason, n in exp["defaults"].items():
                cls = next(c for c in stated.values() if c.reason == reason and f in c.files)
                assert n == manifest["defects"][cls.name][f]


def test_defect_counts_follow_the_rate(dirty: list[Path]) -> None:
    manifest = manifest_of(dirty[0])
    accepted = manifest["expected"]["transactions.csv"]["accepted"]
    assert manifest["defects"]["future_date"]["transactions.csv"] == round(0.1 * accepted / 5)
    assert manifest["dirty_rate"] == 0.1


def test_category_variants_are_known_variants(dirty: list[Path]) -> None:
    variants = {v: c for c, vs in CATEGORY_VARIANTS.items() for v in vs}
    for folder in dirty:
        for r in read_rows(folder / "products.csv"):
            if r["category"] not in contract.CATEGORIES:
                assert r["category"] in variants
                assert r["category"].strip() not in contract.CATEGORIES


def test_clean_part_of_dirty_data_equals_clean_data(dirty: list[Path], clean: Path) -> None:
    history = dirty[0]
    volumes = manifest_of(history)["volumes"]
    for name, limit in (
        ("transactions.csv", volumes["transactions"]),
        ("transaction_items.csv", volumes["transaction_items"]),
    ):
        seen: set[str] = set()
        kept = []
        for text in read_lines(history / name):
            key = text.split(",", 1)[0]
            if key and int(re.sub(r"\D", "", key)) <= limit and text not in seen:
                kept.append(text)
            seen.add(text)
        assert kept == read_lines(clean / name), name
    for name, edits in (
        ("customers.csv", ("bad_email", "stray_whitespace")),
        ("products.csv", ("category_variant", "stray_whitespace")),
    ):
        missing = set(read_lines(clean / name)) - set(read_lines(history / name))
        defects = manifest_of(history)["defects"]
        assert len(missing) == sum(defects[d][name] for d in edits), name


# ----------------------------------------------------------------------------- the stage


def test_stage_writes_history_once_then_only_on_next_batch(tmp_path) -> None:
    settings = make_settings(tmp_path, customers=20, products=10, transactions=50)
    log = logging.LoggerAdapter(logging.getLogger("test"), {})
    first = generate_stage.run(None, settings, RunContext(1, RunOptions(), log))
    assert first.details["batch_id"] == "batch_0001"
    assert first.details["files"]["transactions.csv"] == 50
    assert first.rows_out == first.details["files"]["transaction_items.csv"] > 0
    second = generate_stage.run(None, settings, RunContext(2, RunOptions(), log))
    assert second.rows_out == 0 and "skipped" in second.details
    assert [p.name for p in settings.raw_dir.iterdir()] == ["batch_0001"]
    options = RunOptions(next_batch=True, seed=3, dirty_rate=0.0)
    third = generate_stage.run(None, settings, RunContext(3, options, log))
    assert third.details["batch_id"] == "batch_0002"
    assert third.details["files"]["transactions.csv"] == 15
    assert manifest_of(settings.raw_dir / "batch_0002")["seed"] == 3
