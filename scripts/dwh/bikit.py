"""BI kit: connection files for Power BI (.pbids) and Tableau (.tds) pointing at the configured
server, as the read-only role bi_reader (`pipeline_orchestrator.py bi-kit`).

Neither file holds a password: the tool asks for it on first use (docs/bi_guide.md). The Tableau
data source declares the star's relationships (fact_sales → each dimension on its key), so a
workbook opened on it starts with the model ready.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit
from xml.etree import ElementTree as ET

from dwh.exceptions import ConfigError
from dwh.settings import PROJECT_ROOT, Settings

DEFAULT_OUTPUT = PROJECT_ROOT / "dashboards"
BI_USER = "bi_reader"
SCHEMA = "warehouse"
FACT = "fact_sales"


@dataclass(frozen=True)
class Relationship:
    """fact.fact_column (many) → dimension.dimension_column (one)."""

    fact: str
    fact_column: str
    dimension: str
    dimension_column: str


STAR: tuple[Relationship, ...] = (
    Relationship(FACT, "date_key", "dim_date", "date_key"),
    Relationship(FACT, "customer_key", "dim_customers", "customer_key"),
    Relationship(FACT, "product_key", "dim_products", "product_key"),
    Relationship(FACT, "payment_method_key", "dim_payment_method", "payment_method_key"),
)


@dataclass(frozen=True)
class Target:
    """Where BI tools connect: host, port and database (no credentials)."""

    host: str
    port: int
    database: str

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in self.database)


def target_from_url(url: str, environ: Mapping[str, str] | None = None) -> Target:
    """Host, port and database of a postgresql:// URL; missing parts from PG* like libpq."""
    environ = os.environ if environ is None else environ
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"bi-kit: expected a postgresql:// URL, got scheme {parts.scheme!r}")
    try:
        port = parts.port or int(environ.get("PGPORT") or 5432)
    except ValueError:
        raise ConfigError(
            "bi-kit: the port of the database URL (or PGPORT) is not a number"
        ) from None
    host = parts.hostname or environ.get("PGHOST") or "localhost"
    if host.startswith("/"):
        raise ConfigError(
            f"bi-kit: the database is reached through the socket directory {host}; BI tools "
            "need a TCP host: use a URL with a host name (--database-url)"
        )
    database = unquote(parts.path.lstrip("/")) or environ.get("PGDATABASE") or ""
    if not database:
        database = unquote(parts.username or "") or environ.get("PGUSER") or "postgres"
    return Target(host=host, port=port, database=database)


def configured_target(settings: Settings) -> Target:
    """The configured server (the embedded one when no URL is set; it is not started)."""
    if settings.uses_embedded:
        return Target("127.0.0.1", settings.embedded.port, settings.embedded.database)
    return target_from_url(settings.database_url or "postgresql://")


def pbids(target: Target) -> dict:
    """The Power BI data source (PBIDS) document."""
    return {
        "version": "0.1",
        "connections": [
            {
                "details": {
                    "protocol": "postgresql",
                    "address": {"server": target.server, "database": target.database},
                },
                "options": {},
                "mode": "Import",
            }
        ],
    }


def _object_id(table: str) -> str:
    return f"{table}_{hash_text(table):08X}"


def hash_text(text: str) -> int:
    """A stable small hash (Python's hash() is salted per process)."""
    value = 0
    for char in text:
        value = (value * 31 + ord(char)) & 0xFFFFFFFF
    return value


def tds(target: Target) -> ET.ElementTree:
    """The Tableau data source: a postgres connection and the star's relationships."""
    tables = [FACT] + [r.dimension for r in STAR]
    named = "postgres.dwh"
    root = ET.Element(
        "datasource",
        {
            "formatted-name": f"{target.database} ({SCHEMA} star)",
            "inline": "true",
            "source-platform": "win",
            "version": "18.1",
            "xmlns:user": "http://www.tableausoftware.com/xml/user",
        },
    )
    connection = ET.SubElement(root, "connection", {"class": "federated"})
    named_connections = ET.SubElement(connection, "named-connections")
    named_connection = ET.SubElement(
        named_connections, "named-connection", {"caption": target.host, "name": named}
    )
    ET.SubElement(
        named_connection,
        "connection",
        {
            "authentication": "username-password",
            "class": "postgres",
            "dbname": target.database,
            "odbc-native-protocol": "",
            "one-time-sql": "",
            "port": str(target.port),
            "schema": SCHEMA,
            "server": target.host,
            "sslmode": "",
            "username": BI_USER,
        },
    )
    collection = ET.SubElement(connection, "relation", {"type": "collection"})
    for table in tables:
        ET.SubElement(collection, "relation", _relation_attributes(named, table))

    graph = ET.SubElement(root, "object-graph")
    objects = ET.SubElement(graph, "objects")
    for table in tables:
        obj = ET.SubElement(objects, "object", {"caption": table, "id": _object_id(table)})
        properties = ET.SubElement(obj, "properties", {"context": ""})
        ET.SubElement(properties, "relation", _relation_attributes(named, table))
    relationships = ET.SubElement(graph, "relationships")
    for rel in STAR:
        relationship = ET.SubElement(relationships, "relationship")
        expression = ET.SubElement(relationship, "expression", {"op": "="})
        ET.SubElement(expression, "expression", {"op": f"[{rel.fact_column}]"})
        # The same column name on both sides: Tableau names the dimension's copy "col (table)".
        ET.SubElement(
            expression, "expression", {"op": f"[{rel.dimension_column} ({rel.dimension})]"}
        )
        ET.SubElement(relationship, "first-end-point", {"object-id": _object_id(rel.fact)})
        ET.SubElement(relationship, "second-end-point", {"object-id": _object_id(rel.dimension)})
    ET.indent(root, space="  ")
    return ET.ElementTree(root)


def _relation_attributes(connection: str, table: str) -> dict[str, str]:
    return {
        "connection": connection,
        "name": table,
        "table": f"[{SCHEMA}].[{table}]",
        "type": "table",
    }


def write_kit(target: Target, output_dir: Path = DEFAULT_OUTPUT) -> list[Path]:
    """Write <output>/powerbi/<db>.pbids and <output>/tableau/<db>.tds; returns their paths."""
    powerbi = output_dir / "powerbi" / f"{target.slug}.pbids"
    tableau = output_dir / "tableau" / f"{target.slug}.tds"
    try:
        powerbi.parent.mkdir(parents=True, exist_ok=True)
        tableau.parent.mkdir(parents=True, exist_ok=True)
        powerbi.write_text(json.dumps(pbids(target), indent=2) + "\n", encoding="utf-8")
        document = ET.tostring(tds(target).getroot(), encoding="unicode")
        tableau.write_text(
            "<?xml version='1.0' encoding='utf-8' ?>\n" + document + "\n", encoding="utf-8"
        )
    except OSError as exc:
        raise ConfigError(f"bi-kit: cannot write into {output_dir}: {exc.strerror}") from exc
    return [powerbi, tableau]
