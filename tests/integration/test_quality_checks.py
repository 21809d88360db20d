"""Quality checks on a real PostgreSQL: every check type compiled to SQL and run against a table
with known bad rows; bespoke assert files; the clean-data acceptance (score 100, grade A)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest

from dwh import db, quality
from dwh.exceptions import ConfigError, QualityGateFailed
from dwh.generator import generate_batch
from dwh.orchestrator import run_pipeline
from dwh.settings import load_settings

pytestmark = pytest.mark.integration

SETUP = """
CREATE SCHEMA qc;
CREATE TABLE qc.parent (id text PRIMARY KEY);
INSERT INTO qc.parent VALUES ('a'), ('b');
CREATE TABLE qc.t (
    id text, parent_id text, kind text, amount numeric, code text, qty int, price numeric,
    total numeric, seen_at timestamptz
);
INSERT INTO qc.t VALUES
    ('1', 'a', 'x', 5,   'AB1', 2, 1.50, 3.00, now()),
    ('2', 'b', 'y', 50,  'AB2', 1, 2.00, 2.00, now()),
    ('3', 'zz', 'q', -1, 'bad', 3, 1.00, 9.99, now() - interval '10 days'),
    ('3', NULL, NULL, 200, '  ', 1, 1.00, 1.00, now()),
    (NULL, 'a', 'x', 10, 'AB5', 1, 1.00, 1.00, now());
"""


@pytest.fixture
def qc_conn(conn):
    db.apply_ddl(conn)
    with conn.cursor() as cur:
        cur.execute(SETUP)
    conn.commit()
    return conn


def _checks(document: dict) -> list[quality.Check]:
    return quality.parse_checks({"tables": document})


CASES = [
    # (columns spec / checks spec, expected failing, expected total, expected sample)
    ({"columns": {"id": ["not_null"]}}, 1, 5, [None]),
    ({"columns": {"code": ["not_null"]}}, 1, 5, None),  # blank text counts as missing
    ({"columns": {"id": ["unique"]}}, 2, 4, ["3"]),
    ({"checks": [{"unique": {"columns": ["id", "kind"]}}]}, 0, 3, []),
    (
        {"columns": {"parent_id": [{"relationships": {"to": "qc.parent", "field": "id"}}]}},
        1,
        5,
        None,
    ),
    ({"columns": {"kind": [{"accepted_values": {"values": ["x", "y"]}}]}}, 1, 5, None),
    (
        {
            "columns": {
                "kind": [{"accepted_values": {"values": ["X", "Y", "Q"], "ignore_case": True}}]
            }
        },
        0,
        5,
        [],
    ),
    ({"columns": {"amount": [{"range": {"min": 0, "max": 100}}]}}, 2, 5, None),
    ({"columns": {"amount": [{"range": {"min": 0}}]}}, 1, 5, None),
    ({"columns": {"code": [{"regex": {"pattern": "^AB[0-9]$"}}]}}, 2, 5, None),
    ({"checks": [{"expression": {"expression": "total = qty * price"}}]}, 1, 5, None),
    ({"checks": [{"row_count_min": {"min": 5}}]}, 0, 1, []),
    ({"checks": [{"row_count_min": {"min": 6}}]}, 1, 1, ["rows: 5"]),
    ({"columns": {"seen_at": [{"freshness": {"max_age_hours": 1}}]}}, 0, 1, []),
    (
        {
            "columns": {
                "seen_at": [
                    {"freshness": {"max_age_hours": 1, "where": "id = '3' AND code = 'bad'"}}
                ]
            }
        },
        1,
        1,
        None,
    ),
]


@pytest.mark.parametrize(("spec", "failing", "total", "sample"), CASES)
def test_each_check_type_counts_failing_rows(qc_conn, spec, failing, total, sample) -> None:
    spec = {"key": ["id"], **spec}
    checks = _checks({"qc.t": spec})
    assert len(checks) == 1
    (result,) = quality.run_checks(qc_conn, checks, run_id=None)
    assert (result.failing_rows, result.total_rows) == (failing, total)
    assert result.passed is (failing == 0)
    if sample is not None:
        assert result.sample == sample
    with qc_conn.cursor() as cur:
        cur.execute("SELECT check_name, failing_rows FROM ops.dq_results WHERE layer = 'qc'")
        assert cur.fetchall() == [(checks[0].name, failing)]


def test_unique_on_a_column_with_a_unique_index_is_counted_in_the_table_pass(
    qc_conn, monkeypatch
) -> None:
    # qc.parent.id is its primary key: a GROUP BY of it cannot find a duplicate, so the table's
    # one query counts its rows (no second query); qc.t.id has no index and is grouped (CASES)
    with qc_conn.cursor() as cur:
        cur.execute("INSERT INTO qc.parent VALUES ('c')")
    checks = _checks({"qc.parent": {"key": ["id"], "columns": {"id": ["not_null", "unique"]}}})
    sent: list[str] = []
    fetch = quality._fetch

    def recorded(conn, text, *, many=False):
        sent.append(text)
        return fetch(conn, text, many=many)

    monkeypatch.setattr(quality, "_fetch", recorded)
    by_type = {r.type: r for r in quality.run_checks(qc_conn, checks, run_id=None)}
    unique = by_type["unique"]
    assert (unique.total_rows, unique.failing_rows, unique.passed) == (3, 0, True)
    assert len(sent) == 1 and "GROUP BY" not in sent[0]
    # the stored query is the GROUP BY, and it reproduces the counts
    assert "GROUP BY" in unique.query
    with qc_conn.cursor() as cur:
        cur.execute(unique.query)
        assert cur.fetchone()[:2] == (3, 0)

    # a deferred unique constraint holds duplicates until the commit: grouped as any column
    with qc_conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE qc.d (id text UNIQUE DEFERRABLE INITIALLY DEFERRED);"
            " INSERT INTO qc.d VALUES ('x'), ('x'), ('y')"
        )
    deferred = _checks({"qc.d": {"key": ["id"], "columns": {"id": ["unique"]}}})
    (result,) = quality.run_checks(qc_conn, deferred, run_id=None)
    assert (result.total_rows, result.failing_rows, result.sample) == (3, 2, ["x"])
    qc_conn.rollback()


def test_mostly_tolerates_a_failing_share(qc_conn) -> None:
    checks = _checks(
        {
            "qc.t": {
                "key": ["id"],
                "columns": {
                    "kind": [
                        {"accepted_values": {"values": ["x", "y"], "mostly": 0.8, "name": "loose"}},
                        {"accepted_values": {"values": ["x"], "mostly": 0.8, "name": "strict"}},
                    ]
                },
            }
        }
    )
    loose, strict = quality.run_checks(qc_conn, checks, run_id=None)
    assert (loose.failing_rows, loose.passed) == (1, True)  # 1 of 5 = 20 % <= 20 %
    assert (strict.failing_rows, strict.passed) == (2, False)


def test_names_are_checked_against_the_catalog(qc_conn) -> None:
    with pytest.raises(ConfigError, match="has no column 'nope'"):
        quality.run_checks(
            qc_conn, _checks({"qc.t": {"columns": {"nope": ["not_null"]}}}), run_id=None
        )
    with pytest.raises(ConfigError, match=r"qc\.missing does not exist"):
        quality.run_checks(
            qc_conn, _checks({"qc.missing": {"columns": {"id": ["not_null"]}}}), run_id=None
        )
    bad_ref = {"columns": {"parent_id": [{"relationships": {"to": "qc.parent", "field": "nope"}}]}}
    with pytest.raises(ConfigError, match=r"qc\.parent has no column 'nope'"):
        quality.run_checks(qc_conn, _checks({"qc.t": bad_ref}), run_id=None)


def test_identifiers_are_quoted_not_injected(qc_conn) -> None:
    with qc_conn.cursor() as cur:
        cur.execute('CREATE TABLE qc.odd ("x; DROP TABLE qc.parent" text)')
    checks = [quality.Check(name="odd", type="not_null", schema="qc", table="odd",
                            columns=("x; DROP TABLE qc.parent",), dimension="completeness")]  # fmt: skip
    (result,) = quality.run_checks(qc_conn, checks, run_id=None)
    assert result.total_rows == 0
    with qc_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM qc.parent")
        assert cur.fetchone()[0] == 2


def test_bespoke_assert_file(qc_conn, tmp_path: Path) -> None:
    path = tmp_path / "assert_totals.sql"
    path.write_text(
        "-- layer: qc\n-- table: qc.t\n-- severity: error\n-- dimension: consistency\n"
        "-- Rows whose total is not qty * price.\n"
        "SELECT id, total FROM qc.t WHERE total <> qty * price;\n"
    )
    check = quality.parse_assert(path)
    assert (check.layer, check.severity, check.dimension) == ("qc", "error", "consistency")
    (result,) = quality.run_checks(qc_conn, [check], run_id=None)
    assert (result.failing_rows, result.total_rows) == (1, 5)
    assert result.sample == [{"id": "3", "total": 9.99}]
    with pytest.raises(QualityGateFailed, match="assert_totals"):
        quality.gate([result])


def test_a_broken_expression_is_a_config_error(qc_conn) -> None:
    checks = _checks({"qc.t": {"checks": [{"expression": {"expression": "no_such_column > 0"}}]}})
    with pytest.raises(ConfigError, match="could not run"):
        quality.run_checks(qc_conn, checks, run_id=None)


BATCHED = """
CREATE TABLE qc.b (_batch_id text, id text, v int);
CREATE INDEX ON qc.b (_batch_id);
INSERT INTO qc.b VALUES ('b1', '1', -1), ('b1', NULL, 5), ('b2', '3', 7), ('b2', '4', -2),
    ('b2', '4', 1);
"""


def test_scope_restricts_every_check_to_the_batches_in_scope(qc_conn, tmp_path: Path) -> None:
    with qc_conn.cursor() as cur:
        cur.execute(BATCHED)
    checks = _checks(
        {
            "qc.b": {
                "key": ["id"],
                "checks": [{"row_count_min": {"min": 4}}],
                "columns": {"id": ["not_null", "unique"], "v": [{"range": {"min": 0}}]},
            }
        }
    )
    path = tmp_path / "assert_b.sql"
    path.write_text(
        "-- layer: qc\n-- table: qc.b\n-- scope: _batch_id\n"
        "SELECT id, v, _batch_id FROM qc.b WHERE v < 0\n"
    )
    checks.append(quality.parse_assert(path))

    def counts(scope: quality.Scope) -> dict[str, tuple[int, int, list]]:
        results = quality.run_checks(qc_conn, checks, run_id=None, scope=scope)
        return {r.type: (r.total_rows, r.failing_rows, r.sample) for r in results}

    assert counts(quality.ALL) == {
        "row_count_min": (1, 0, []),
        "not_null": (5, 1, [None]),
        "unique": (4, 2, ["4"]),
        "range": (5, 2, ["1", "4"]),
        "assert": (5, 2, [{"id": "1", "v": -1, "_batch_id": "b1"},
                          {"id": "4", "v": -2, "_batch_id": "b2"}]),
    }  # fmt: skip
    new = quality.Scope(mode="new", batches={"qc.b": ("b2",)})
    assert counts(new) == {
        "row_count_min": (1, 1, ["rows: 3"]),  # the batch is too small
        "not_null": (3, 0, []),
        "unique": (3, 2, ["4"]),
        "range": (3, 1, ["4"]),
        "assert": (3, 1, [{"id": "4", "v": -2, "_batch_id": "b2"}]),
    }
    # fed by batches but none in scope: nothing runs
    nothing = quality.Scope(mode="new", batches={"qc.t": ("b2",)}, tracked=frozenset({"qc.b"}))
    assert counts(nothing) == {}
    # one query for the whole table (plus one for unique, the assert and the failed samples)
    text = quality.compile_table_pass(
        [c for c in checks if c.type in ("row_count_min", "not_null", "range")],
        quality.catalog_columns(qc_conn, "qc", "b"),
        ("b2",),
    ).as_string(qc_conn)
    assert text.count("SELECT") == 2 and text.count("FILTER (WHERE") == 2
    assert "ANY(ARRAY['b2']" in text


def test_shipped_checks_compile_against_the_schema(db_url: str, tmp_path: Path) -> None:
    """Every check of config/quality_checks.yaml and sql/checks runs on the real DDL."""
    settings = load_settings(data_dir=tmp_path, database_url=db_url, environ={})
    run_pipeline(settings, stages=("ingest",))  # applies the DDL; no batch
    conn = psycopg2.connect(db_url)
    try:
        checks = quality.load_checks(settings)
        layers = {c.layer for c in checks}
        assert {"staging", "production"} <= layers
        results = quality.run_checks(conn, checks, run_id=None)
        assert len(results) == len(checks)
        # empty tables: only the row counts (warnings) fail
        assert {r.type for r in results if not r.passed} <= {"row_count_min", "freshness"}
        assert not quality.failed_errors(results)
    finally:
        conn.close()


def test_clean_data_is_all_accepted_with_score_100(db_url: str, make_settings) -> None:
    settings = make_settings(db_url)
    generate_batch(settings)
    generate_batch(settings, next_batch=True)
    report = run_pipeline(settings, stages=("ingest", "quality", "production"))
    assert report.status == "success"
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT sum(staged), sum(accepted), sum(quarantined), sum(duplicates)"
                " FROM ops.reconciliation"
            )
            staged, accepted, quarantined, duplicates = cur.fetchone()
            cur.execute("SELECT sum(row_count) FROM ops.ingested_files")
            assert staged == cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM ops.dq_results WHERE NOT passed")
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()
    assert staged == accepted and quarantined == 0 and duplicates == 0
    dq = json.loads((settings.processed_dir / "data_quality_report.json").read_text())
    assert dq["overall_score"] == 100 and dq["grade"] == "A"
    assert set(dq["layers"]) == {"staging", "production"}
    assert set(dq["dimensions"]) == set(quality.DIMENSIONS)
    assert dq["gate"]["passed"] is True


def test_unique_counts_every_duplicated_row_and_samples_the_smallest_keys(qc_conn) -> None:
    # seven keys twice or more (in no order), two once: the sample is the five smallest keys
    with qc_conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE qc.u (id text);"
            " INSERT INTO qc.u SELECT 'k' || (g % 9) FROM generate_series(1, 16) AS g"
            " UNION ALL VALUES ('k7'), (NULL), (NULL)"
        )
    (result,) = quality.run_checks(
        qc_conn, _checks({"qc.u": {"key": ["id"], "columns": {"id": ["unique"]}}}), run_id=None
    )
    # k0..k8 from 16 rows: k1..k7 twice (k7 three times with the extra row), k0 and k8 once
    assert (result.total_rows, result.failing_rows) == (17, 15)
    assert result.sample == ["k1", "k2", "k3", "k4", "k5"]
    with qc_conn.cursor() as cur:
        cur.execute(result.query)
        assert cur.fetchone() == (17, 15, ["k1", "k2", "k3", "k4", "k5"])
    qc_conn.rollback()
