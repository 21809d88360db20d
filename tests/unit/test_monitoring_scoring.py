"""Scoring of monitoring checks: thresholds, robust z-score, overall health, score lookup."""

from __future__ import annotations

import math

import pytest

from dwh.monitoring import CheckResult, _find_score, grade, overall, robust_z


def test_grade_in_both_directions() -> None:
    assert grade(1, 24.5, 25) == "ok"
    assert grade(24.9, 24.5, 25) == "warning"
    assert grade(26, 24.5, 25) == "critical"
    assert grade(95, 90, 70, higher_is_worse=False) == "ok"
    assert grade(80, 90, 70, higher_is_worse=False) == "warning"
    assert grade(60, 90, 70, higher_is_worse=False) == "critical"


def test_robust_z_uses_mad_and_falls_back_when_it_is_zero() -> None:
    # median 100, MAD 10 -> sigma 14.826; 500 is (400 / 14.826) = 26.98 sigmas away.
    assert robust_z(500, 100, 10, 12) == pytest.approx(400 / 14.826)
    assert robust_z(100, 100, 10, 12) == 0
    # More than half the days equal: MAD 0, the mean absolute deviation takes over.
    assert robust_z(130, 100, 0, 4) == pytest.approx(30 / (1.2533 * 4))
    # A perfectly flat window: any change is infinitely surprising, no change is not.
    assert math.isinf(robust_z(101, 100, 0, 0))
    assert robust_z(100, 100, 0, 0) == 0


def test_overall_health_and_score() -> None:
    def checks(*statuses: str) -> list[CheckResult]:
        return [CheckResult(f"c{i}", s, "") for i, s in enumerate(statuses)]

    assert overall(checks("ok", "ok", "unknown", "not_applicable")) == ("healthy", 100.0)
    assert overall(checks("ok", "warning")) == ("degraded", 75.0)
    assert overall(checks("ok", "warning", "critical", "unknown")) == ("critical", 50.0)
    assert overall(checks("critical", "unknown", "unknown")) == ("critical", 0.0)


def test_quality_score_is_found_at_the_top_or_nested() -> None:
    assert _find_score({"overall_score": 87.5}) == 87.5
    assert _find_score({"summary": {"overall_score": 91}}) == 91
    assert _find_score({"quality": 1, "quality_score": {"overall_score": 0.93}}) == 0.93
    assert _find_score({"tables": []}) is None
