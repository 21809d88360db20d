"""The SQL files the stages execute with parameters (everything under sql/transform) hold no bare
`%`: psycopg2 reads every `%` of such a statement as a placeholder, so one in a comment ("a 1 %
batch") fails the stage with "argument formats can't be mixed". A literal percent sign is written
`%%`; parameters are `%(name)s`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r"%%|%\(\w+\)s|%")


def bare_percent_signs(text: str) -> list[int]:
    """Line numbers of the `%` that are neither `%%` nor a `%(name)s` parameter."""
    return [
        text.count("\n", 0, match.start()) + 1
        for match in TOKEN.finditer(text)
        if match.group() == "%"
    ]


def test_the_check_tells_placeholders_from_bare_percent_signs():
    assert bare_percent_signs("LIKE '+%%' AND x = %(x)s") == []
    assert bare_percent_signs("SELECT 1;\n-- a 1 % batch\nSELECT %(y)s") == [2]


def test_parameterised_sql_files_have_no_bare_percent_sign():
    files = sorted((ROOT / "sql" / "transform").rglob("*.sql"))
    assert len(files) > 20
    bare = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in files
        for line in bare_percent_signs(path.read_text(encoding="utf-8"))
    ]
    assert not bare, f"write a literal % as %% in these files (psycopg2 parameters): {bare}"
