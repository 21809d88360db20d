"""dwh.quality without a database: grades, pass/mostly, scoring, parsing and validation of
check declarations, bespoke assert headers; production rule settings and lookups."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dwh import quality
from dwh.exceptions import ConfigError, QualityGateFailed
from dwh.settings import PROJECT_ROOT, load_settings
from dwh.stages import production


@pytest.mark.parametrize(
    ("score", "letter"),
    [
        (100, "A"),
        (90, "A"),
        (89.99, "B"),
        (80, "B"),
        (79.99, "C"),
        (70, "C"),
        (69.99, "D"),
        (60, "D"),
        (59.99, "F"),
        (0, "F"),
    ],
)
def test_grade_boundaries(score: float, letter: str) -> None:
    assert quality.grade(score) == letter


@pytest.mark.parametrize(
    ("total", "failing", "mostly", "passed"),
    [
        (100, 0, 1.0, True),
        (100, 1, 1.0, False),
        (100, 5, 0.95, True),
        (100, 6, 0.95, False),
        (0, 0, 1.0, True),
        (0, 1, 0.5, False),
        (3, 3, 0.0, True),
    ],
)
def test_passes_honours_mostly(total: int, failing: int, mostly: float, passed: bool) -> None:
    assert quality.passes(total, failing, mostly) is passed


def _result(dimension: str, total: int, failing: int, severity: str = "error", name: str = "c"):
    return quality.CheckResult(
        name=name,
        type="not_null",
        layer="production",
        table="production.t",
        column="x",
        dimension=dimension,
        severity=severity,
        mostly=1.0,
        total_rows=total,
        failing_rows=failing,
        passed=failing == 0,
        sample=["k1", "k2"] if failing else [],
        query="SELECT 1",
    )


def test_score_is_weighted_over_the_dimensions_present() -> None:
    results = [
        _result("completeness", 100, 0),
        _result("completeness", 100, 50),  # completeness = (100 + 50) / 2 = 75
        _result("validity", 10, 0),  # validity = 100
    ]
    weights = {"completeness": 0.3, "validity": 0.1, "timeliness": 0.6}
    scored = quality.score(results, weights)
    assert scored["dimensions"]["completeness"]["score"] == 75
    assert scored["dimensions"]["completeness"]["failed"] == 1
    assert scored["dimensions"]["validity"]["score"] == 100
    assert "timeliness" not in scored["dimensions"]  # no check: not scored, weight renormalised
    assert scored["overall_score"] == pytest.approx((75 * 0.3 + 100 * 0.1) / 0.4, abs=0.01)
    assert scored["grade"] == "B"


def test_score_of_clean_results_is_100_a_and_unknown_weight_is_rejected() -> None:
    scored = quality.score([_result(d, 10, 0) for d in quality.DIMENSIONS], {})
    assert (scored["overall_score"], scored["grade"]) == (100, "A")
    with pytest.raises(ConfigError, match="unknown dimension 'speed'"):
        quality.score([], {"speed": 1})


def test_gate_names_failed_error_checks_and_their_keys() -> None:
    quality.gate([_result("validity", 10, 2, severity="warn")])  # warnings never stop the run
    with pytest.raises(QualityGateFailed) as failure:
        quality.gate([_result("validity", 10, 2, name="unique:production.t.x")], stage="production")
    assert failure.value.exit_code == 5
    assert "unique:production.t.x (2 of 10 rows failing; e.g. k1, k2)" in str(failure.value)


def test_parse_checks_forms_and_defaults() -> None:
    checks = quality.parse_checks(
        {
            "tables": {
                "production.t": {
                    "key": ["id"],
                    "checks": [
                        {"row_count_min": {"min": 1, "severity": "warn"}},
                        {"unique": {"columns": ["a", "b"]}},
                    ],
                    "columns": {
                        "id": ["not_null", "unique"],
                        "x": [{"range": {"min": 0, "mostly": 0.9, "dimension": "consistency"}}],
                        "p": [{"relationships": {"to": "production.parent"}}],
                    },
                }
            }
        }
    )
    by_name = {c.name: c for c in checks}
    assert set(by_name) == {
        "row_count_min:production.t",
        "unique:production.t:a.b",
        "not_null:production.t:id",
        "unique:production.t:id",
        "range:production.t:x",
        "relationships:production.t:p",
    }
    assert by_name["row_count_min:production.t"].severity == "warn"
    assert by_name["unique:production.t:a.b"].columns == ("a", "b")
    assert by_name["not_null:production.t:id"].dimension == "completeness"
    assert by_name["not_null:production.t:id"].severity == "error"
    assert by_name["range:production.t:x"].mostly == 0.9
    assert by_name["range:production.t:x"].dimension == "consistency"
    assert by_name["relationships:production.t:p"].dimension == "referential_integrity"
    assert all(c.layer == "production" for c in checks)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"t": {}}, "schema.table"),
        ({"s.t": {"columns": {"x": ["nope"]}}}, "unknown check 'nope'"),
        ({"s.t": {"columns": {"x": [{"range": {}}]}}}, "range needs min, max or both"),
        ({"s.t": {"columns": {"x": [{"regex": {}}]}}}, "needs the parameter pattern"),
        ({"s.t": {"columns": {"x": [{"not_null": {"severity": "fatal"}}]}}}, "warn or error"),
        ({"s.t": {"columns": {"x": [{"not_null": {"mostly": 2}}]}}}, "mostly must be in 0..1"),
        ({"s.t": {"columns": {"x": [{"not_null": {"dimension": "beauty"}}]}}}, "unknown dimension"),
        ({"s.t": {"columns": {"x": [{"not_null": {"values": [1]}}]}}}, "no parameter 'values'"),
        ({"s.t": {"checks": ["not_null"]}}, "needs a column"),
        ({"s.t": {"checks": [{"freshness": {"max_age_hours": 1}}]}}, "belongs under a column"),
        ({"s.t": {"extra": 1}}, "unknown entry 'extra'"),
        ({"s.t": {"columns": {"x": ["not_null", "not_null"]}}}, "declared twice"),
    ],
)
def test_parse_checks_rejects_bad_declarations(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        quality.parse_checks({"tables": spec})


def test_parse_assert_reads_the_header(tmp_path: Path) -> None:
    path = tmp_path / "assert_x.sql"
    path.write_text("-- table: production.t\n-- severity: warn\n-- explains\nSELECT 1 AS k;\n")
    check = quality.parse_assert(path)
    assert (check.name, check.type, check.layer, check.severity, check.dimension) == (
        "assert_x",
        "assert",
        "production",
        "warn",
        "consistency",
    )
    assert check.sql_text == "SELECT 1 AS k"
    path.write_text("SELECT 1\n")
    with pytest.raises(ConfigError, match=r"table: schema\.table"):
        quality.parse_assert(path)


def test_shipped_checks_parse_and_cover_every_type_and_layer(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, environ={})
    checks = quality.load_checks(settings)
    assert {c.type for c in checks} >= set(quality.CHECK_TYPES) | {"assert"}
    staging = quality.load_checks(settings, layer="staging")
    assert staging and all(c.schema == "staging" for c in staging)
    # staging holds raw text: its checks measure the input and never stop the run
    assert all(c.severity == "warn" for c in staging)


def test_critical_rules_follow_the_settings(tmp_path: Path) -> None:
    default = production.critical_rules(load_settings(data_dir=tmp_path, environ={}))
    assert {"missing_id", "missing_parent", "future_date", "line_total_mismatch"} <= set(default)
    assert "invalid_email" not in default
    strict = load_settings(
        data_dir=tmp_path,
        environ={},
        overrides={
            "production": {"rules": {"invalid_email": "critical", "future_date": "default"}}
        },
    )
    rules = production.critical_rules(strict)
    assert "invalid_email" in rules and "future_date" not in rules
    bad = load_settings(
        data_dir=tmp_path, environ={}, overrides={"production": {"rules": {"invalid_email": "x"}}}
    )
    with pytest.raises(ConfigError, match="'critical' or 'default'"):
        production.critical_rules(bad)


def test_lookups_map_generator_variants_and_reject_conflicts(tmp_path: Path) -> None:
    from dwh.generator import CATEGORY_VARIANTS

    mapping = production.read_lookup(PROJECT_ROOT / "config/lookups/categories.yaml")
    for canonical, variants in CATEGORY_VARIANTS.items():
        for variant in variants:
            assert mapping[production._lookup_key(variant)] == canonical, variant
    payments = production.read_lookup(PROJECT_ROOT / "config/lookups/payment_methods.yaml")
    assert payments["cod"] == "Cash on Delivery" and payments["upi"] == "UPI"
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({"A": ["same"], "B": [" SAME "]}))
    with pytest.raises(ConfigError, match="maps to both"):
        production.read_lookup(path)


def test_scope_setting_precedence_and_validation(tmp_path: Path) -> None:
    assert load_settings(data_dir=tmp_path, environ={}).quality.scope == "new"
    env = {"DWH_QUALITY__SCOPE": "all"}
    assert load_settings(data_dir=tmp_path, environ=env).quality.scope == "all"
    flags = {"quality": {"scope": "new"}}
    assert load_settings(data_dir=tmp_path, environ=env, overrides=flags).quality.scope == "new"
    with pytest.raises(ConfigError, match=r"quality\.scope"):
        load_settings(data_dir=tmp_path, environ={"DWH_QUALITY__SCOPE": "some"})


def test_scope_restricts_tables_to_their_batches() -> None:
    scope = quality.Scope(
        mode="new",
        batches={"staging.customers": ("b2",), "staging.products": ("b1", "b2")},
        tracked=frozenset({"staging.customers", "staging.products", "staging.transactions"}),
    )
    assert scope.all_batches == ("b1", "b2") and not scope.is_empty
    assert scope.batches_for("staging.customers") == ("b2",)
    assert scope.batches_for("staging.transactions") == ()  # fed by batches, none new: skipped
    assert scope.batches_for("staging.some_view") == ("b1", "b2")  # not fed: every batch
    assert quality.Scope(mode="new").is_empty
    assert quality.ALL.batches_for("staging.customers") is None and not quality.ALL.is_empty


def test_assert_scope_header(tmp_path: Path) -> None:
    path = tmp_path / "assert_s.sql"
    path.write_text("-- table: production.t\n-- scope: _batch_id\nSELECT k, _batch_id FROM x\n")
    assert quality.parse_assert(path).params["scope_column"] == "_batch_id"
    path.write_text("-- table: production.t\n-- scope: a b\nSELECT 1\n")
    with pytest.raises(ConfigError, match="scope must name one column"):
        quality.parse_assert(path)
    shipped = quality.load_checks(load_settings(data_dir=tmp_path, environ={}), "production")
    asserts = [c for c in shipped if c.type == "assert"]
    assert asserts and all(c.params.get("scope_column") for c in asserts)
