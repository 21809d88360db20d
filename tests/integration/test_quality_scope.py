"""Incremental quality checks on a real PostgreSQL (quality.scope, docs/data_quality.md): a
rerun with nothing new runs no check and raises no alert; a new batch is checked alone; a defect
in an old batch is found by scope `all` only; a batch whose checks failed the gate is checked
again; and the one-pass results equal per-check queries and the generator's manifest."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import psycopg2
import pytest

from dwh import quality
from dwh.exceptions import QualityGateFailed
from dwh.generator import generate_batch
from dwh.monitoring import run_checks as monitor
from dwh.orchestrator import run_pipeline
from dwh.settings import Settings, load_settings

pytestmark = pytest.mark.integration

STAGES = ("ingest", "quality", "production")
SMALL = {"customers": 120, "products": 60, "transactions": 800}


def _settings(tmp_path: Path, url: str, **quality_settings: object) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        database_url=url,
        environ={},
        overrides={"generator": SMALL, "quality": quality_settings},
    )


def _rows(url: str, text: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall()
    finally:
        conn.close()


def _results(url: str, run_id: int) -> dict[str, tuple[int, int, list]]:
    return {
        name: (total, failing, sample)
        for name, total, failing, sample in _rows(
            url,
            "SELECT check_name, total_rows, failing_rows, sample FROM ops.dq_results"
            " WHERE run_id = %s",
            (run_id,),
        )
    }


def _report(settings: Settings) -> dict:
    return json.loads((settings.processed_dir / "data_quality_report.json").read_text())


def _staged(url: str, batch: str) -> dict[str, int]:
    return dict(
        _rows(
            url,
            "SELECT table_name, row_count FROM ops.ingested_files WHERE batch_id = %s",
            (batch,),
        )
    )


def test_rerun_with_nothing_new_runs_no_check_and_raises_no_alert(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path, db_url)
    generate_batch(settings)
    first = run_pipeline(settings, stages=STAGES)
    checks_first = _rows(db_url, "SELECT count(*) FROM ops.dq_results")[0][0]
    assert checks_first == len(quality.load_checks(settings))
    score_first = _report(settings)["overall_score"]

    caplog.set_level("INFO")
    second = run_pipeline(settings, stages=STAGES)
    assert second.status == "success"
    # no check query ran: nothing stored for the rerun
    assert _rows(db_url, "SELECT count(*) FROM ops.dq_results")[0][0] == checks_first
    messages = [r.getMessage() for r in caplog.records]
    assert "no new batches: staging checks skipped" in messages
    assert "no new batches: production checks skipped" in messages
    details = dict(
        _rows(
            db_url,
            "SELECT stage, details FROM ops.stage_runs WHERE run_id = %s",
            (second.run_id,),
        )
    )
    assert details["quality"]["skipped"] == "no new batches: staging checks skipped"
    assert details["quality"]["checks"] == 0
    # the report says so and keeps the latest real results (run 1) for the score
    report = _report(settings)
    assert report["run_id"] == second.run_id
    assert report["skipped"] == ["production", "staging"]
    assert report["carried_from_run"] == first.run_id
    assert report["checks_run"] == 0
    assert report["overall_score"] == score_first == 100
    assert len(report["checks"]) == checks_first
    # monitoring reads that score: no alert for a run with nothing new
    health = monitor(settings, db_url, send_alerts=False)
    assert health.check("quality_score").status == "ok"
    assert health.check("quality_score").value == 100


def test_a_new_batch_is_checked_alone(db_url: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, db_url)
    generate_batch(settings)
    run_pipeline(settings, stages=STAGES)
    generate_batch(settings, next_batch=True)
    second = run_pipeline(settings, stages=STAGES)
    results = _results(db_url, second.run_id)
    staged = _staged(db_url, "batch_0002")
    # staging: exactly the rows of the new batch (every table of it)
    for table, key in (
        ("customers", "customer_id"),
        ("products", "product_id"),
        ("transactions", "transaction_id"),
        ("transaction_items", "item_id"),
    ):
        assert results[f"not_null:staging.{table}:{key}"][0] == staged[table], table
    assert results["row_count_min:staging.transactions"] == (1, 0, [])
    # production: the rows promoted from the new batch, not the table
    in_batch, in_table = _rows(
        db_url,
        "SELECT count(*) FILTER (WHERE _batch_id = 'batch_0002'), count(*)"
        " FROM production.transactions",
    )[0]
    assert 0 < in_batch < in_table
    assert results["not_null:production.transactions:transaction_id"][0] == in_batch
    assert results["relationships:production.transactions:customer_id"][:2] == (in_batch, 0)
    # the bespoke assert is scoped by its header (-- scope: _batch_id)
    assert results["assert_transaction_total_matches_lines"][0] == in_batch
    report = _report(settings)
    assert report["scope"] == "new"
    assert report["scopes"]["staging"]["checked_batches"] == ["batch_0002"]
    assert report["scopes"]["production"]["checked_batches"] == ["batch_0002"]
    assert report["skipped"] == []
    # the stored query reproduces the count
    query = _rows(
        db_url,
        "SELECT query FROM ops.dq_results WHERE run_id = %s"
        " AND check_name = 'not_null:production.transactions:transaction_id'",
        (second.run_id,),
    )[0][0]
    assert _rows(db_url, query)[0][:2] == (in_batch, 0)


def test_an_old_batch_defect_is_found_by_scope_all_only(db_url: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, db_url)
    generate_batch(settings)
    run_pipeline(settings, stages=STAGES)
    generate_batch(settings, next_batch=True)
    with (settings.raw_dir / "batch_0002" / "products.csv").open(newline="") as handle:
        in_batch_2 = {row["product_id"] for row in csv.DictReader(handle)}
    product = _rows(
        db_url,
        "SELECT product_id FROM production.products WHERE NOT product_id = ANY(%s)"
        " ORDER BY product_id LIMIT 1",
        (sorted(in_batch_2),),
    )[0][0]
    conn = psycopg2.connect(db_url)
    with conn, conn.cursor() as cur:  # a defect that cannot come through the pipeline
        cur.execute(
            "UPDATE production.products SET category = 'Gadgets' WHERE product_id = %s",
            (product,),
        )
    conn.close()
    name = "accepted_values:production.products:category"

    second = run_pipeline(settings, stages=STAGES)  # scope new: batch 2 only
    assert second.status == "success"
    total, failing, _sample = _results(db_url, second.run_id)[name]
    assert failing == 0
    assert (
        total
        == _rows(db_url, "SELECT count(*) FROM production.products WHERE _batch_id = 'batch_0002'")[
            0
        ][0]
    )

    everything = _settings(tmp_path, db_url, scope="all")
    with pytest.raises(QualityGateFailed, match=product) as failure:
        run_pipeline(everything, stages=STAGES)
    assert failure.value.exit_code == 5
    run_id = _rows(db_url, "SELECT max(run_id) FROM ops.pipeline_runs")[0][0]
    total_all, failing_all, sample = _results(db_url, run_id)[name]
    assert (failing_all, sample) == (1, [product])
    assert total_all == _rows(db_url, "SELECT count(*) FROM production.products")[0][0]
    assert _report(everything)["scope"] == "all"


def test_a_batch_that_failed_the_gate_is_checked_again(db_url: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, db_url)
    generate_batch(settings)
    run_pipeline(settings, stages=STAGES)
    generate_batch(settings, next_batch=True)
    run_pipeline(settings, stages=("ingest",))
    strict_file = tmp_path / "strict.yaml"
    strict_file.write_text(
        "tables:\n  production.transactions:\n    checks:\n"
        "      - row_count_min: {min: 1000000, name: too_few}\n"
    )
    strict = _settings(tmp_path, db_url, checks_file=str(strict_file))
    for _attempt in range(2):  # batch 2 stays in scope until a production stage succeeds
        with pytest.raises(QualityGateFailed, match="too_few"):
            run_pipeline(strict, stages=("production",))
        run_id = _rows(db_url, "SELECT max(run_id) FROM ops.pipeline_runs")[0][0]
        assert _results(db_url, run_id)["too_few"][:2] == (1, 1)
        assert _report(strict)["scopes"]["production"]["checked_batches"] == ["batch_0002"]
    passed = run_pipeline(settings, stages=("production",))
    assert "not_null:production.transactions:transaction_id" in _results(db_url, passed.run_id)
    again = run_pipeline(strict, stages=("production",))  # now nothing is new
    assert again.status == "success"
    assert _results(db_url, again.run_id) == {}


def test_one_pass_equals_per_check_queries_and_the_manifest(db_url: str, tmp_path: Path) -> None:
    """Scope all over two dirty batches: each check's count equals its own query, the samples
    equal per-check ORDER BY … LIMIT queries, and the counts equal the injected defects."""
    settings = _settings(tmp_path, db_url, scope="all")
    generate_batch(settings, dirty_rate=0.05)
    generate_batch(settings, dirty_rate=0.05, next_batch=True)
    run = run_pipeline(settings, stages=STAGES)
    manifests = [
        json.loads(p.read_text()) for p in sorted(settings.raw_dir.glob("batch_*/manifest.json"))
    ]
    assert len(manifests) == 2

    def injected(defect: str, file: str) -> int:
        return sum(m["defects"].get(defect, {}).get(file, 0) for m in manifests)

    def staged(file: str) -> int:
        return sum(m["expected"][file]["staged"] for m in manifests)

    results = _results(db_url, run.run_id)
    checks = quality.load_checks(settings)
    assert set(results) == {c.name for c in checks}
    # against the manifest
    for table, key in (
        ("customers", "customer_id"),
        ("products", "product_id"),
        ("transactions", "transaction_id"),
        ("transaction_items", "item_id"),
    ):
        file = f"{table}.csv"
        total, failing, _ = results[f"not_null:staging.{table}:{key}"]
        assert (total, failing) == (staged(file), injected("missing_id", file)), table
        dup = injected("exact_duplicate", file) + injected("conflicting_duplicate", file)
        unique = next(n for n in results if n.startswith(f"unique:staging.{table}."))
        assert results[unique][1] == 2 * dup, table  # both rows of each duplicated pair
    assert results["regex:staging.customers:email"][1] == injected("bad_email", "customers.csv")
    assert results["regex:staging.products:price"][1] == injected(
        "unparseable_number", "products.csv"
    )
    assert results["not_null:production.customers:email"][1] == injected(
        "bad_email", "customers.csv"
    )
    assert sum(failing for _t, failing, _s in results.values()) > 0

    # against one query per check (the old way): counts and samples
    conn = psycopg2.connect(db_url)
    try:
        for check in checks:
            if check.type == "assert":
                continue
            catalog = quality.catalog_columns(conn, check.schema, check.table)
            with conn.cursor() as cur:
                cur.execute(quality.compile_check(check, catalog, 5).as_string(conn))
                total, failing = cur.fetchone()[:2]
                assert results[check.name][:2] == (total, failing), check.name
                if check.type in ("unique", "row_count_min", "freshness") or not failing:
                    continue
                condition = quality._condition(check, catalog).as_string(conn)
                key = quality._key_expr(check.key).as_string(conn)
                cur.execute(
                    f"SELECT {key} AS k FROM (SELECT t.ctid AS dq_row_id, t.* FROM"
                    f" {check.qualified_table} AS t) AS scope WHERE {condition}"
                    " ORDER BY k LIMIT 5"
                )
                assert results[check.name][2] == [r[0] for r in cur.fetchall()], check.name
    finally:
        conn.close()
