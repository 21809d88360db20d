"""The BI kit files (.pbids, .tds): fields, connection attributes, no secrets; the CLI command."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from dwh import bikit
from dwh.cli import main
from dwh.exceptions import ConfigError
from dwh.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def _pbids(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _tds(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def check_pbids(document: dict, server: str, database: str) -> None:
    assert document["version"] == "0.1"
    assert len(document["connections"]) == 1
    connection = document["connections"][0]
    assert connection["details"] == {
        "protocol": "postgresql",
        "address": {"server": server, "database": database},
    }
    assert connection["options"] == {}
    assert connection["mode"] == "Import"


def tds_connection(root: ET.Element) -> ET.Element:
    matches = [c for c in root.iter("connection") if c.get("class") == "postgres"]
    assert len(matches) == 1
    return matches[0]


def tds_relationships(root: ET.Element) -> list[tuple[str, str, str, str]]:
    """(fact table, fact column, dimension table, dimension column) of each relationship."""
    tables = {
        obj.get("id"): obj.find("properties/relation").get("table") for obj in root.iter("object")
    }
    found = []
    for relationship in root.iter("relationship"):
        expression = relationship.find("expression")
        assert expression.get("op") == "="
        left, right = (e.get("op") for e in expression.findall("expression"))
        first = tables[relationship.find("first-end-point").get("object-id")]
        second = tables[relationship.find("second-end-point").get("object-id")]
        fact = first.removeprefix("[warehouse].[").removesuffix("]")
        dimension = second.removeprefix("[warehouse].[").removesuffix("]")
        right_column = right.strip("[]").removesuffix(f" ({dimension})")
        found.append((fact, left.strip("[]"), dimension, right_column))
    return found


def test_pbids_document():
    check_pbids(
        bikit.pbids(bikit.Target("db.example.com", 6543, "shop")), "db.example.com:6543", "shop"
    )


def test_tds_connection_and_relationships():
    root = bikit.tds(bikit.Target("db.example.com", 6543, "shop")).getroot()
    assert root.tag == "datasource"
    connection = tds_connection(root)
    assert connection.get("server") == "db.example.com"
    assert connection.get("port") == "6543"
    assert connection.get("dbname") == "shop"
    assert connection.get("username") == "bi_reader"
    assert connection.get("schema") == "warehouse"
    relations = {r.get("table") for r in root.iter("relation") if r.get("type") == "table"}
    assert relations == {
        "[warehouse].[fact_sales]",
        "[warehouse].[dim_date]",
        "[warehouse].[dim_customers]",
        "[warehouse].[dim_products]",
        "[warehouse].[dim_payment_method]",
    }
    assert sorted(tds_relationships(root)) == sorted(
        (r.fact, r.fact_column, r.dimension, r.dimension_column) for r in bikit.STAR
    )


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("postgresql://u:pw@db.example.com:6543/shop", {}, ("db.example.com", 6543, "shop")),
        ("postgresql://u@db.example.com/shop", {}, ("db.example.com", 5432, "shop")),
        ("postgres://u@[::1]:5433/shop%20x", {}, ("::1", 5433, "shop x")),
        (
            "postgresql://",
            {"PGHOST": "pg.internal", "PGPORT": "5499", "PGDATABASE": "dwh"},
            ("pg.internal", 5499, "dwh"),
        ),
        ("postgresql://alice@host", {}, ("host", 5432, "alice")),
    ],
)
def test_target_from_url(url, environ, expected):
    target = bikit.target_from_url(url, environ)
    assert (target.host, target.port, target.database) == expected


def test_target_from_a_socket_or_another_scheme_is_a_clear_error():
    with pytest.raises(ConfigError, match="TCP host"):
        bikit.target_from_url("postgresql://", {"PGHOST": "/var/run/postgresql"})
    with pytest.raises(ConfigError, match="postgresql://"):
        bikit.target_from_url("mysql://h/db", {})


def test_embedded_target_is_not_started(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("embedded:\n  port: 55555\n  database: x\n", encoding="utf-8")
    settings = load_settings(config, data_dir=tmp_path, environ={})
    assert bikit.configured_target(settings) == bikit.Target("127.0.0.1", 55555, "x")
    assert not (tmp_path / "postgres").exists()


def test_bi_kit_command_writes_both_files_without_secrets(tmp_path, monkeypatch, capsys):
    for name in ("DATABASE_URL", "PGHOST", "DWH_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    url = "postgresql://loader:top-secret@warehouse.example.com:6432/sales"
    code = main(["bi-kit", "--database-url", url, "--output-dir", str(tmp_path)])
    assert code == 0
    pbids = tmp_path / "powerbi" / "sales.pbids"
    tds = tmp_path / "tableau" / "sales.tds"
    check_pbids(_pbids(pbids), "warehouse.example.com:6432", "sales")
    connection = tds_connection(_tds(tds))
    assert (connection.get("server"), connection.get("port")) == ("warehouse.example.com", "6432")
    for path in (pbids, tds):
        text = path.read_text(encoding="utf-8")
        assert "top-secret" not in text and "loader" not in text
    out = capsys.readouterr().out
    assert f"wrote {pbids}" in out and "top-secret" not in out


def test_committed_kit_matches_the_default_configuration(tmp_path):
    """dashboards/powerbi and dashboards/tableau hold the kit of the default (embedded) setup."""
    settings = load_settings(
        data_dir=tmp_path, environ={}, config_path=REPO / "config" / "config.yaml"
    )
    written = bikit.write_kit(bikit.configured_target(settings), tmp_path / "kit")
    for path in written:
        committed = REPO / "dashboards" / path.parent.name / path.name
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{committed} is stale: run `python scripts/pipeline_orchestrator.py bi-kit`"
        )
