"""docs/data_dictionary.md, generated from the database catalog (COMMENT ON … in sql/ddl/).

The comments live beside the DDL, so the dictionary cannot drift from the tables: regenerate it
with `python scripts/pipeline_orchestrator.py data-dictionary` after a DDL change (a test
compares the committed file with a fresh rendering).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import psycopg2.extensions

from dwh.settings import PROJECT_ROOT

DEFAULT_PATH = PROJECT_ROOT / "docs" / "data_dictionary.md"
DEFAULT_SCHEMAS: tuple[str, ...] = ("warehouse",)
_KINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view"}

_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind,
       coalesce(obj_description(c.oid, 'pg_class'), '') AS comment
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm')
ORDER BY c.relkind = 'v', c.relname
"""
_COLUMNS = """
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod),
       a.attnotnull,
       coalesce(col_description(a.attrelid, a.attnum), ''),
       EXISTS (SELECT 1 FROM pg_constraint k
               WHERE k.conrelid = a.attrelid AND k.contype = 'p' AND a.attnum = ANY (k.conkey)),
       (SELECT string_agg(DISTINCT f.relname, ', ')
        FROM pg_constraint k JOIN pg_class f ON f.oid = k.confrelid
        WHERE k.conrelid = a.attrelid AND k.contype = 'f' AND a.attnum = ANY (k.conkey))
FROM pg_attribute a
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(conn: psycopg2.extensions.connection, schemas: Sequence[str] = DEFAULT_SCHEMAS) -> str:
    """The Markdown data dictionary of `schemas`, from pg_description and pg_attribute."""
    lines = [
        "# Data dictionary",
        "",
        "Generated from the database catalog (the `COMMENT ON` statements in `sql/ddl/`) by",
        "`python scripts/pipeline_orchestrator.py data-dictionary`. Do not edit by hand: change the",
        "comment in the DDL and regenerate. Design notes: [warehouse.md](warehouse.md); BI tools:",
        "[bi_guide.md](bi_guide.md).",
        "",
    ]
    with conn.cursor() as cur:
        for schema in schemas:
            cur.execute("SELECT obj_description(%s::regnamespace, 'pg_namespace')", (schema,))
            lines += [f"## Schema `{schema}`", "", _cell(cur.fetchone()[0] or ""), ""]
            cur.execute(_RELATIONS, (schema,))
            relations = cur.fetchall()
            lines.append("| relation | kind | description |")
            lines.append("|---|---|---|")
            for _oid, nsp, name, kind, comment in relations:
                lines.append(
                    f"| [`{nsp}.{name}`](#{nsp}{name}) | {_KINDS[kind]} | {_cell(comment)} |"
                )
            lines.append("")
            for oid, nsp, name, kind, comment in relations:
                lines += [f"### {nsp}.{name}", "", f"*{_KINDS[kind]}* — {_cell(comment)}", ""]
                lines.append("| column | type | null | key | description |")
                lines.append("|---|---|---|---|---|")
                cur.execute(_COLUMNS, (oid,))
                for column, type_, not_null, text, is_pk, references in cur.fetchall():
                    key = "PK" if is_pk else ""
                    if references:
                        key = (key + " " if key else "") + f"FK → {references}"
                    null = "" if kind == "v" else ("not null" if not_null else "null")
                    lines.append(f"| `{column}` | {type_} | {null} | {key} | {_cell(text)} |")
                lines.append("")
    conn.rollback()
    return "\n".join(lines).rstrip("\n") + "\n"


def write(
    conn: psycopg2.extensions.connection,
    path: Path = DEFAULT_PATH,
    schemas: Sequence[str] = DEFAULT_SCHEMAS,
) -> Path:
    """Render and write the dictionary (atomically); returns the path."""
    text = render(conn, schemas)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
