"""WarehouseSettings: defaults, YAML/environment values, and clear errors for bad values."""

from __future__ import annotations

import datetime as dt

import pytest

from dwh.exceptions import ConfigError
from dwh.settings import DEFAULT_CONFIG, WarehouseSettings, load_settings
from dwh.stages.aggregates import _params


def test_config_file_matches_the_defaults():
    from_file = load_settings(DEFAULT_CONFIG, environ={}).warehouse
    assert from_file == WarehouseSettings()
    assert from_file.fiscal_year_start_month == 4
    assert dt.date(2024, 12, 25) in from_file.holidays


def test_environment_overrides_and_list_values():
    settings = load_settings(
        environ={
            "DWH_WAREHOUSE__FISCAL_YEAR_START_MONTH": "7",
            "DWH_WAREHOUSE__HOLIDAYS": "[2025-05-01, 2025-01-01]",
            "DWH_WAREHOUSE__RFM_RECENCY_DAYS": "[7, 14, 28, 56]",
        }
    ).warehouse
    assert settings.fiscal_year_start_month == 7
    assert settings.holidays == (dt.date(2025, 1, 1), dt.date(2025, 5, 1))
    assert settings.rfm_recency_days == (7, 14, 28, 56)


def test_bi_password_variable_is_not_a_setting():
    settings = load_settings(environ={"DWH_BI_READER_PASSWORD": "secret"})
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"fiscal_year_start_month": 13}, "fiscal_year_start_month"),
        ({"holidays": ["2024-02-30"]}, "holidays"),
        ({"rfm_recency_days": [30, 90, 180]}, "rfm_recency_days"),
        ({"rfm_monetary_spent": [500, 100, 1000, 2000]}, "rfm_monetary_spent"),
        ({"date_padding_years": -1}, "date_padding_years"),
    ],
)
def test_bad_values_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={}, overrides={"warehouse": overrides})


def test_aggregate_parameters_carry_every_threshold():
    params = _params(load_settings(environ={}), full=False)
    assert [params[f"r{i}"] for i in range(1, 5)] == [30, 90, 180, 365]
    assert [params[f"f{i}"] for i in range(1, 5)] == [2, 4, 8, 12]
    assert params["m4"] == 5000.0 and params["full"] is False
