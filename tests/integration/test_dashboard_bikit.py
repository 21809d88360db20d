"""The Tableau data source names tables and columns that exist in the warehouse, and its
relationships join a fact key to the dimension's primary key."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from dwh import bikit, db

# The .tds readers of the unit tests (tests/unit is not on sys.path here).
_spec = importlib.util.spec_from_file_location(
    "bikit_unit_helpers", Path(__file__).resolve().parents[1] / "unit" / "test_bikit.py"
)
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
tds_connection = _helpers.tds_connection
tds_relationships = _helpers.tds_relationships

pytestmark = pytest.mark.integration


def test_tds_relationships_name_existing_tables_and_keys(db_url, tmp_path):
    conn = db.connect(db_url)
    try:
        db.apply_ddl(conn)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = 'warehouse'"
            )
            columns = set(cur.fetchall())
            cur.execute(
                """
                SELECT tc.table_name, kcu.column_name
                FROM information_schema.table_constraints tc
                JOIN information_schema.key_column_usage kcu
                  ON kcu.constraint_name = tc.constraint_name
                 AND kcu.table_schema = tc.table_schema
                WHERE tc.table_schema = 'warehouse' AND tc.constraint_type = 'PRIMARY KEY'
                """
            )
            primary_keys = set(cur.fetchall())
            cur.execute(
                """
                SELECT tc.table_name, kcu.column_name, ccu.table_name, ccu.column_name
                FROM information_schema.table_constraints tc
                JOIN information_schema.key_column_usage kcu
                  ON kcu.constraint_name = tc.constraint_name
                 AND kcu.table_schema = tc.table_schema
                JOIN information_schema.constraint_column_usage ccu
                  ON ccu.constraint_name = tc.constraint_name
                 AND ccu.table_schema = tc.table_schema
                WHERE tc.table_schema = 'warehouse' AND tc.constraint_type = 'FOREIGN KEY'
                """
            )
            foreign_keys = set(cur.fetchall())
    finally:
        conn.close()

    target = bikit.target_from_url(db_url, {})
    _, tds_path = bikit.write_kit(target, tmp_path)
    root = ET.parse(tds_path).getroot()
    connection = tds_connection(root)
    assert connection.get("dbname") == target.database
    assert connection.get("port") == str(target.port)
    relationships = tds_relationships(root)
    assert len(relationships) == 4
    for fact, fact_column, dimension, dimension_column in relationships:
        assert (fact, fact_column) in columns
        assert (dimension, dimension_column) in columns
        assert (dimension, dimension_column) in primary_keys
        assert (fact, fact_column, dimension, dimension_column) in foreign_keys
