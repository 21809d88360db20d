"""docs/data_dictionary.md is generated from the catalog and matches the committed file."""

from __future__ import annotations

import pytest
from test_warehouse_support import open_warehouse

from dwh import data_dictionary
from dwh.cli import main

pytestmark = pytest.mark.integration


def test_committed_data_dictionary_is_up_to_date(db_url):
    conn = open_warehouse(db_url)
    try:
        fresh = data_dictionary.render(conn)
    finally:
        conn.close()
    committed = data_dictionary.DEFAULT_PATH.read_text(encoding="utf-8")
    assert fresh == committed, (
        "docs/data_dictionary.md is stale: run "
        "`python scripts/pipeline_orchestrator.py data-dictionary` and commit the result"
    )
    for table in ("dim_date", "dim_customers", "dim_products", "dim_payment_method", "fact_sales"):
        assert f"### warehouse.{table}\n" in fresh
    assert "| `customer_key` | bigint | not null | FK → dim_customers |" in fresh


def test_data_dictionary_command_writes_the_file(db_url, tmp_path, capsys):
    target = tmp_path / "dictionary.md"
    code = main(["data-dictionary", "--database-url", db_url, "--output", str(target)])
    assert code == 0
    assert f"wrote {target}" in capsys.readouterr().out
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# Data dictionary\n")
    assert "### warehouse.v_sales" in text
