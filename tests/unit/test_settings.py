"""Settings precedence and validation (no database)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dwh.exceptions import ConfigError
from dwh.settings import load_dotenv, load_settings, mask_url


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_come_from_the_shipped_config(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, environ={})
    assert settings.generator.customers == 1000
    assert settings.generator.products == 500
    assert settings.generator.transactions == 10000
    assert settings.data_dir == tmp_path.resolve()
    assert settings.pgdata_dir == tmp_path.resolve() / "postgres"
    assert settings.uses_embedded


def test_precedence_file_then_environment_then_explicit(tmp_path: Path) -> None:
    path = _config(tmp_path, "generator:\n  seed: 1\n  customers: 10\nembedded:\n  port: 6000\n")
    from_file = load_settings(path, environ={})
    assert (from_file.generator.seed, from_file.generator.customers) == (1, 10)
    assert from_file.embedded.port == 6000

    env = {"DWH_GENERATOR__SEED": "2", "DWH_EMBEDDED__PORT": "6001"}
    from_env = load_settings(path, environ=env)
    assert from_env.generator.seed == 2
    assert from_env.generator.customers == 10  # untouched keys keep the file's value
    assert from_env.embedded.port == 6001

    explicit = load_settings(path, environ=env, overrides={"generator": {"seed": 3}})
    assert explicit.generator.seed == 3


def test_data_dir_flag_wins_over_config_and_env(tmp_path: Path) -> None:
    path = _config(tmp_path, "data_dir: /nonexistent/from-file\n")
    settings = load_settings(
        path, data_dir=tmp_path / "flag", environ={"DWH_DATA_DIR": "/nonexistent/from-env"}
    )
    assert settings.data_dir == (tmp_path / "flag").resolve()
    assert load_settings(path, environ={"DWH_DATA_DIR": str(tmp_path)}).data_dir == tmp_path


def test_database_url_precedence() -> None:
    assert load_settings(environ={}).database_url is None
    assert load_settings(environ={"PGHOST": "db"}).database_url == "postgresql://"
    env = {"PGHOST": "db", "DATABASE_URL": "postgresql://u@env/x"}
    assert load_settings(environ=env).database_url == "postgresql://u@env/x"
    flag = load_settings(database_url="postgresql://u@flag/x", environ=env)
    assert flag.database_url == "postgresql://u@flag/x"
    assert not flag.uses_embedded


def test_password_never_in_repr() -> None:
    settings = load_settings(database_url="postgresql://u:s3cr3t-pw@h:5432/d", environ={})
    assert "s3cr3t-pw" not in repr(settings)
    assert "s3cr3t-pw" not in str(settings)
    assert "postgresql://u:***@h:5432/d" in repr(settings)
    assert mask_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    path = _config(tmp_path, "generator:\n  customerz: 5\n")
    with pytest.raises(ConfigError, match=r"unknown setting generator\.customerz"):
        load_settings(path, environ={})


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"generator\.customers: 'many' is not a valid int"):
        load_settings(environ={"DWH_GENERATOR__CUSTOMERS": "many"})
    with pytest.raises(ConfigError, match=r"generator\.start_date"):
        load_settings(_config(tmp_path, "generator:\n  start_date: someday\n"), environ={})


def test_secrets_are_refused_in_the_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="secrets come from the environment"):
        load_settings(_config(tmp_path, "database_url: postgresql://u:p@h/d\n"), environ={})


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_dotenv_never_overrides_the_environment(tmp_path: Path, monkeypatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nDWH_TEST_A=from-file\nexport DWH_TEST_B='quoted'\n")
    monkeypatch.setenv("DWH_TEST_A", "from-env")
    monkeypatch.setenv("DWH_TEST_B", "placeholder")  # so that teardown removes what .env sets
    monkeypatch.delenv("DWH_TEST_B")
    load_dotenv(env_file)
    assert os.environ["DWH_TEST_A"] == "from-env"
    assert os.environ["DWH_TEST_B"] == "quoted"
    env_file.write_text("no equals sign\n")
    with pytest.raises(ConfigError, match=r"line 1: expected KEY=VALUE"):
        load_dotenv(env_file)
