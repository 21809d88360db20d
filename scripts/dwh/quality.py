"""Data-quality checks: load them, compile them to SQL, run them over the rows in scope, score,
report, gate.

Two kinds of checks, both run by `run_checks` and stored in ops.dq_results:

- declarative checks in config/quality_checks.yaml, per table and column: not_null, unique (also
  composite), relationships, accepted_values, range, regex, expression, row_count_min,
  freshness (identifiers quoted with psycopg2.sql, names checked against the catalog first);
- bespoke checks sql/checks/assert_*.sql: a query returning the violating rows, with a header
  of `-- key: value` lines (layer, table, severity, dimension, mostly, scope).

Scope (quality.scope, docs/data_quality.md): `new` (default) checks only the rows of the batches
this run brings to the layer (`resolve_scope`); a layer with nothing new is skipped, and its
report carries the latest real results forward. `all` (or --full-refresh) reads whole tables.

One pass per table: every declarative check of a table except `unique` is one aggregate of a
single query over the scope (`count(*) FILTER (WHERE <failing condition>)`); samples of
offending keys are fetched afterwards, in one query, only for the checks that found failing
rows. `unique` is a GROUP BY of its own over the same scope, except on one column that a unique
index enforces (a primary key): no key can repeat, so its rows are counted in the table's pass.
ops.dq_results.query stores, per check, the query that reproduces its counts (`compile_check`).

Every check yields total rows, failing rows and a sample of offending keys. A check passes when
failing / total <= 1 - mostly. Scores: per dimension the mean pass rate of its checks (0-100),
overall the weighted mean of the dimensions present, graded A ≥ 90, B ≥ 80, C ≥ 70, D ≥ 60, F.
`gate` raises QualityGateFailed (exit code 5) for a failed check of severity error.

Callers pick a layer (the schema: staging, production, warehouse): `load_checks(..., layer=)`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg2
import yaml
from psycopg2 import sql
from psycopg2.extras import Json

from dwh.exceptions import ConfigError, QualityGateFailed
from dwh.settings import PROJECT_ROOT, Settings

DIMENSIONS: tuple[str, ...] = (
    "completeness",
    "uniqueness",
    "validity",
    "consistency",
    "referential_integrity",
    "timeliness",
)
# Check type → the dimension it scores (a check may override it with `dimension:`).
CHECK_TYPES: dict[str, str] = {
    "not_null": "completeness",
    "row_count_min": "completeness",
    "unique": "uniqueness",
    "accepted_values": "validity",
    "range": "validity",
    "regex": "validity",
    "expression": "consistency",
    "relationships": "referential_integrity",
    "freshness": "timeliness",
}
# Parameters each check type accepts (besides the common ones).
_TYPE_PARAMS: dict[str, set[str]] = {
    "not_null": set(),
    "row_count_min": {"min"},
    "unique": {"columns"},
    "accepted_values": {"values", "ignore_case"},
    "range": {"min", "max"},
    "regex": {"pattern"},
    "expression": {"expression"},
    "relationships": {"to", "field"},
    "freshness": {"max_age_hours"},
}
_COMMON_PARAMS = {"severity", "mostly", "dimension", "name", "where"}
SEVERITIES = ("warn", "error")
GRADES: tuple[tuple[float, str], ...] = ((90, "A"), (80, "B"), (70, "C"), (60, "D"))
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
SCOPES = ("new", "all")
BATCH_COLUMN = "_batch_id"  # the column a layer's rows are scoped by (indexed in each table)
log = logging.getLogger(__name__)
_HEADER = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.+?)\s*$")


@dataclass(frozen=True)
class Check:
    """One check, as declared (yaml or assert file)."""

    name: str
    type: str  # a CHECK_TYPES key, or "assert"
    schema: str
    table: str
    columns: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    severity: str = "error"
    mostly: float = 1.0
    dimension: str = "validity"
    key: tuple[str, ...] = ()  # columns shown as the offending keys
    where: str | None = None  # optional filter (trusted SQL from the config)
    sql_text: str | None = None  # the violating-rows query of an assert check

    @property
    def layer(self) -> str:
        return self.schema

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass
class CheckResult:
    name: str
    type: str
    layer: str
    table: str
    column: str | None
    dimension: str
    severity: str
    mostly: float
    total_rows: int
    failing_rows: int
    passed: bool
    sample: list[Any]
    query: str

    @property
    def pass_rate(self) -> float:
        return 1.0 if self.total_rows <= 0 else max(0.0, 1 - self.failing_rows / self.total_rows)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _split_table(name: str, where: str) -> tuple[str, str]:
    parts = str(name).split(".")
    if len(parts) != 2 or not all(_NAME.match(p) for p in parts):
        raise ConfigError(f"{where}: table {name!r} must be written schema.table (lowercase)")
    return parts[0], parts[1]


def _entries(value: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """A list of checks: 'type' or {type: {params}} or {type: null}."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of checks, got {value!r}")
    out = []
    for item in value:
        if isinstance(item, str):
            out.append((item, {}))
        elif isinstance(item, Mapping) and len(item) == 1:
            (kind, params), *_ = item.items()
            if params is None:
                params = {}
            if not isinstance(params, Mapping):
                raise ConfigError(f"{where}: parameters of {kind} must be a mapping")
            out.append((str(kind), dict(params)))
        else:
            raise ConfigError(f"{where}: a check is a name or a one-key mapping, got {item!r}")
    return out


def _make_check(
    kind: str,
    params: dict[str, Any],
    schema: str,
    table: str,
    column: str | None,
    key: tuple[str, ...],
    where: str,
) -> Check:
    if kind not in CHECK_TYPES:
        raise ConfigError(f"{where}: unknown check {kind!r}; known: {', '.join(CHECK_TYPES)}")
    unknown = set(params) - _COMMON_PARAMS - _TYPE_PARAMS[kind]
    if unknown:
        raise ConfigError(f"{where}: {kind} has no parameter {sorted(unknown)[0]!r}")
    severity = str(params.get("severity", "error"))
    if severity not in SEVERITIES:
        raise ConfigError(f"{where}: severity must be warn or error, not {severity!r}")
    try:
        mostly = float(params.get("mostly", 1.0))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: mostly must be a number in 0..1") from None
    if not 0 <= mostly <= 1:
        raise ConfigError(f"{where}: mostly must be in 0..1, not {mostly}")
    dimension = str(params.get("dimension", CHECK_TYPES[kind]))
    if dimension not in DIMENSIONS:
        raise ConfigError(
            f"{where}: unknown dimension {dimension!r}; known: {', '.join(DIMENSIONS)}"
        )
    if kind == "unique":
        columns = tuple(params.get("columns") or ([column] if column else []))
    elif kind == "freshness" and column is None:
        raise ConfigError(f"{where}: freshness belongs under a column (the timestamp to age)")
    else:
        columns = (column,) if column else ()
    if kind not in ("row_count_min", "expression") and not columns:
        raise ConfigError(f"{where}: {kind} needs a column (put it under columns:)")
    required = {
        "accepted_values": "values",
        "regex": "pattern",
        "expression": "expression",
        "relationships": "to",
        "row_count_min": "min",
        "freshness": "max_age_hours",
    }.get(kind)
    if required and params.get(required) is None:
        raise ConfigError(f"{where}: {kind} needs the parameter {required}")
    if kind == "range" and params.get("min") is None and params.get("max") is None:
        raise ConfigError(f"{where}: range needs min, max or both")
    label = params.get("name") or ":".join(
        [kind, f"{schema}.{table}"] + ([".".join(columns)] if columns else [])
    )
    clean = {k: v for k, v in params.items() if k not in _COMMON_PARAMS}
    return Check(
        name=str(label),
        type=kind,
        schema=schema,
        table=table,
        columns=columns,
        params=clean,
        severity=severity,
        mostly=mostly,
        dimension=dimension,
        key=key or columns,
        where=params.get("where"),
    )


def parse_checks(document: Mapping[str, Any], source: str = "quality_checks.yaml") -> list[Check]:
    """The checks of a quality_checks.yaml document (`tables: {schema.table: {...}}`)."""
    tables = (document or {}).get("tables") or {}
    if not isinstance(tables, Mapping):
        raise ConfigError(f"{source}: 'tables' must map schema.table to its checks")
    checks: list[Check] = []
    for qualified, spec in tables.items():
        where = f"{source}: {qualified}"
        schema, table = _split_table(qualified, where)
        spec = spec or {}
        unknown = set(spec) - {"key", "checks", "columns"}
        if unknown:
            raise ConfigError(
                f"{where}: unknown entry {sorted(unknown)[0]!r} (key, checks, columns)"
            )
        key = tuple(spec.get("key") or ())
        for kind, params in _entries(spec.get("checks"), f"{where}.checks"):
            checks.append(_make_check(kind, params, schema, table, None, key, f"{where}.checks"))
        columns = spec.get("columns") or {}
        if not isinstance(columns, Mapping):
            raise ConfigError(f"{where}.columns: expected a mapping of column → checks")
        for column, entries in columns.items():
            col_where = f"{where}.{column}"
            for kind, params in _entries(entries, col_where):
                checks.append(_make_check(kind, params, schema, table, str(column), key, col_where))
    names = [c.name for c in checks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{source}: check {repeated[0]!r} is declared twice; give one a name:")
    return checks


def parse_assert(path: Path) -> Check:
    """A bespoke check: `-- key: value` header lines, then a query returning violating rows."""
    text = path.read_text(encoding="utf-8")
    meta: dict[str, str] = {}
    body_lines = []
    for line in text.splitlines():
        match = _HEADER.match(line)
        if match and not body_lines:
            meta[match.group(1)] = match.group(2)
        elif line.strip().startswith("--") and not body_lines:
            continue
        else:
            body_lines.append(line)
    body = "\n".join(body_lines).strip().rstrip(";").strip()
    where = str(path)
    if not body:
        raise ConfigError(f"{where}: no query after the header")
    if "table" not in meta:
        raise ConfigError(f"{where}: header line '-- table: schema.table' is missing")
    schema, table = _split_table(meta["table"], where)
    severity = meta.get("severity", "error")
    if severity not in SEVERITIES:
        raise ConfigError(f"{where}: severity must be warn or error, not {severity!r}")
    dimension = meta.get("dimension", "consistency")
    if dimension not in DIMENSIONS:
        raise ConfigError(f"{where}: unknown dimension {dimension!r}")
    try:
        mostly = float(meta.get("mostly", 1.0))
    except ValueError:
        raise ConfigError(f"{where}: mostly must be a number in 0..1") from None
    params = {"table_schema": schema}
    if "scope" in meta:
        # `-- scope: <column>`: a column of `table` and of the query's result holding the batch
        # id; with quality.scope new, both counts are restricted to the batches in scope.
        if not _NAME.match(meta["scope"]):
            raise ConfigError(f"{where}: scope must name one column (e.g. _batch_id)")
        params["scope_column"] = meta["scope"]
    return Check(
        name=path.stem,
        type="assert",
        schema=meta.get("layer", schema),
        table=table,
        severity=severity,
        mostly=mostly,
        dimension=dimension,
        sql_text=body,
        params=params,
    )


def load_checks(settings: Settings, layer: str | None = None) -> list[Check]:
    """All declared and bespoke checks, or those of one layer (schema)."""
    path = _project_path(settings.quality.checks_file)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    checks = parse_checks(document, str(path))
    checks_dir = _project_path(settings.quality.checks_dir)
    if checks_dir.is_dir():
        checks += [parse_assert(p) for p in sorted(checks_dir.glob("assert_*.sql"))]
    return [c for c in checks if layer is None or c.layer == layer]


def _project_path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else PROJECT_ROOT / path


# ----------------------------------------------------------------------------------------------
# Scope: which rows a run's checks look at
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The rows a layer's checks look at in a run.

    mode "all": whole tables. mode "new": per table (schema.table), the rows whose `_batch_id` is
    one of `batches[table]`; a table the ledger feeds (`tracked`) with no batch of its own is
    skipped; any other table with a `_batch_id` (a view, a version log) gets every batch in scope;
    a table without `_batch_id` is read whole. An empty "new" scope means: nothing to check.
    """

    mode: str = "all"
    batches: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tracked: frozenset[str] = frozenset()

    @property
    def is_all(self) -> bool:
        return self.mode == "all"

    @property
    def all_batches(self) -> tuple[str, ...]:
        return tuple(sorted({b for bs in self.batches.values() for b in bs}))

    @property
    def is_empty(self) -> bool:
        return not self.is_all and not self.all_batches

    def batches_for(self, table: str) -> tuple[str, ...] | None:
        """Batch ids a table's checks are restricted to; None = the whole table; () = skip."""
        if self.is_all:
            return None
        if table in self.batches:
            return self.batches[table]
        return () if table in self.tracked else self.all_batches

    def describe(self) -> dict[str, Any]:
        if self.is_all:
            return {"mode": "all"}
        return {"mode": "new", "batches": {t: list(b) for t, b in sorted(self.batches.items())}}


ALL = Scope()


def resolve_scope(
    conn: psycopg2.extensions.connection,
    settings: Settings,
    layer: str,
    run_id: int | None,
    *,
    full_refresh: bool = False,
) -> Scope:
    """The scope of a layer's checks in a run (quality.scope; --full-refresh means all).

    staging: the batches ingested and not yet promoted (what the production stage promotes next).
    production: the batches promoted, and those with quarantine rows resolved, by this run or by
    any run since the last one whose production stage succeeded (so batches whose checks failed
    the gate, or never ran because a run died, are checked again). Other layers: all.
    """
    mode = settings.quality.scope
    if mode not in SCOPES:
        raise ConfigError(f"setting quality.scope: {mode!r} is not one of {', '.join(SCOPES)}")
    if full_refresh or run_id is None or mode == "all" or layer not in ("staging", "production"):
        return ALL
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT table_name FROM ops.ingested_files")
        tracked = frozenset(f"{layer}.{t}" for (t,) in cur.fetchall())
        if layer == "staging":
            cur.execute(
                "SELECT f.table_name, array_agg(DISTINCT f.batch_id ORDER BY f.batch_id)"
                " FROM ops.ingested_files AS f"
                " WHERE NOT EXISTS (SELECT 1 FROM ops.reconciliation AS r"
                "   WHERE r.table_name = f.table_name AND r.batch_id = f.batch_id)"
                " GROUP BY f.table_name"
            )
        else:
            cur.execute(
                "WITH since AS (SELECT coalesce(max(run_id), 0) AS run_id FROM ops.stage_runs"
                "   WHERE stage = 'production' AND status = 'success' AND run_id <> %(run)s)"
                " SELECT table_name, array_agg(DISTINCT batch_id ORDER BY batch_id) FROM ("
                "   SELECT r.table_name, r.batch_id FROM ops.reconciliation AS r, since"
                "   WHERE r.run_id = %(run)s OR r.run_id > since.run_id"
                "   UNION ALL"
                "   SELECT q.table_name, q.batch_id FROM ops.quarantine AS q, since"
                "   WHERE q.resolved_run_id = %(run)s OR q.resolved_run_id > since.run_id"
                " ) AS b GROUP BY table_name",
                {"run": run_id},
            )
        batches = {f"{layer}.{t}": tuple(b) for t, b in cur.fetchall()}
    return Scope(mode="new", batches=batches, tracked=tracked)


# ----------------------------------------------------------------------------------------------
# Compiling
# ----------------------------------------------------------------------------------------------


def catalog_columns(
    conn: psycopg2.extensions.connection, schema: str, table: str
) -> dict[str, str]:
    """Column → data type of a table ({} when it does not exist)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s",
            (schema, table),
        )
        return dict(cur.fetchall())


def unique_columns(conn: psycopg2.extensions.connection, schema: str, table: str) -> set[str]:
    """Columns that alone carry a unique index (a primary key, a UNIQUE constraint) that is valid
    and checked at once (not deferred): no two rows can hold the same value there."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname FROM pg_index AS i"
            " JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
            " WHERE i.indrelid = to_regclass(format('%%I.%%I', %s, %s)) AND i.indisunique"
            " AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL"
            " AND i.indisvalid AND i.indimmediate",
            (schema, table),
        )
        return {r[0] for r in cur.fetchall()}


def _validate(check: Check, catalog: Mapping[str, str], other: Mapping[str, str] | None) -> None:
    if not catalog:
        raise ConfigError(
            f"quality check {check.name}: table {check.qualified_table} does not exist"
        )
    for column in (*check.columns, *check.key):
        if column not in catalog:
            raise ConfigError(
                f"quality check {check.name}: {check.qualified_table} has no column {column!r}"
            )
    if check.type == "relationships":
        if not other:
            raise ConfigError(
                f"quality check {check.name}: referenced table {check.params['to']} does not exist"
            )
        ref = check.params.get("field") or check.columns[0]
        if ref not in other:
            raise ConfigError(
                f"quality check {check.name}: {check.params['to']} has no column {ref!r}"
            )


def _key_expr(columns: Sequence[str]) -> sql.Composable:
    if not columns:
        return sql.SQL("dq_row_id::text")
    if len(columns) == 1:
        return sql.SQL("{}::text").format(sql.Identifier(columns[0]))
    return sql.SQL("concat_ws('|', {})").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
    )


def _scope_from(schema: str, table: str, batches: Sequence[str] | None) -> sql.Composed:
    """The rows in scope, as a subquery aliased `scope` (dq_row_id = ctid, every column)."""
    rows = sql.SQL("SELECT t.ctid AS dq_row_id, t.* FROM {} AS t").format(
        sql.Identifier(schema, table)
    )
    if batches is not None:
        rows = sql.SQL("{} WHERE t.{} = ANY({}::text[])").format(
            rows, sql.Identifier(BATCH_COLUMN), sql.Literal(list(batches))
        )
    return sql.SQL("({}) AS scope").format(rows)


def _condition(check: Check, catalog: Mapping[str, str]) -> sql.Composable:
    """The failing condition of a row-level check, over the columns of `scope`."""
    col = sql.Identifier(check.columns[0]) if check.columns else None
    params = check.params
    kind = check.type
    if kind == "not_null":
        blank = catalog.get(check.columns[0]) in ("text", "character varying", "character")
        if blank:
            return sql.SQL("{c} IS NULL OR btrim({c}) = ''").format(c=col)
        return sql.SQL("{} IS NULL").format(col)
    if kind == "accepted_values":
        values = [str(v) for v in params["values"]]
        if params.get("ignore_case"):
            return sql.SQL("{c} IS NOT NULL AND lower({c}::text) <> ALL({v}::text[])").format(
                c=col, v=sql.Literal([v.lower() for v in values])
            )
        return sql.SQL("{c} IS NOT NULL AND {c}::text <> ALL({v}::text[])").format(
            c=col, v=sql.Literal(values)
        )
    if kind == "range":
        parts = []
        if params.get("min") is not None:
            parts.append(sql.SQL("{} < {}").format(col, sql.Literal(params["min"])))
        if params.get("max") is not None:
            parts.append(sql.SQL("{} > {}").format(col, sql.Literal(params["max"])))
        return sql.SQL("{} IS NOT NULL AND ({})").format(col, sql.SQL(" OR ").join(parts))
    if kind == "regex":
        return sql.SQL("{c} IS NOT NULL AND {c}::text !~ {p}").format(
            c=col, p=sql.Literal(str(params["pattern"]))
        )
    if kind == "expression":
        return sql.SQL("({}) IS NOT TRUE").format(sql.SQL(str(params["expression"])))
    if kind == "relationships":
        other_schema, other_table = _split_table(params["to"], check.name)
        ref = sql.Identifier(params.get("field") or check.columns[0])
        return sql.SQL(
            "scope.{c} IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM {t} AS parent WHERE parent.{r} = scope.{c})"
        ).format(c=col, t=sql.Identifier(other_schema, other_table), r=ref)
    raise ConfigError(f"quality check {check.name}: unknown type {kind}")  # pragma: no cover


def _filtered(check: Check, condition: sql.Composable | None) -> sql.Composable:
    """FILTER (WHERE …) of an aggregate: the check's `where` and the condition (if any)."""
    parts = []
    if check.where:
        parts.append(sql.SQL("({})").format(sql.SQL(check.where)))
    if condition is not None:
        parts.append(sql.SQL("({})").format(condition))
    if not parts:
        return sql.SQL("")
    return sql.SQL(" FILTER (WHERE {})").format(sql.SQL(" AND ").join(parts))


def _aggregates(
    check: Check, catalog: Mapping[str, str], condition: sql.Composable | None = None
) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """(total rows, failing rows, note) of a row-level or table-level check as aggregates over
    `scope`, to sit beside the other checks of its table in one pass. The note is the sample of
    a failed table-level check (row count, newest value); NULL for row-level checks."""
    if check.type == "row_count_min":
        n = sql.SQL("count(*){}").format(_filtered(check, None))
        low = sql.SQL("{} < {}").format(n, sql.Literal(int(check.params["min"])))
        return (
            sql.SQL("1::bigint"),
            sql.SQL("({})::int::bigint").format(low),
            sql.SQL("CASE WHEN {} THEN 'rows: ' || {} END").format(low, n),
        )
    if check.type == "freshness":
        newest = sql.SQL("(max({}){})::timestamptz").format(
            sql.Identifier(check.columns[0]), _filtered(check, None)
        )
        stale = sql.SQL("({n} IS NULL OR {n} < now() - {h} * interval '1 hour')").format(
            n=newest, h=sql.Literal(float(check.params["max_age_hours"]))
        )
        return (
            sql.SQL("1::bigint"),
            sql.SQL("{}::int::bigint").format(stale),
            sql.SQL("CASE WHEN {} THEN 'newest: ' || coalesce({}::text, 'none') END").format(
                stale, newest
            ),
        )
    if check.type == "unique":
        # in a table's pass only when a unique index on its one column enforces it (run_checks):
        # no key can occur twice, so no GROUP BY; the rows counted are compile_check's
        not_null = sql.SQL("{} IS NOT NULL").format(sql.Identifier(check.columns[0]))
        return (
            sql.SQL("count(*){}").format(_filtered(check, not_null)),
            sql.SQL("0::bigint"),
            sql.SQL("NULL::text"),
        )
    return (
        sql.SQL("count(*){}").format(_filtered(check, None)),
        sql.SQL("count(*){}").format(_filtered(check, condition or _condition(check, catalog))),
        sql.SQL("NULL::text"),
    )


def compile_check(
    check: Check,
    catalog: Mapping[str, str],
    sample_size: int = 5,
    batches: Sequence[str] | None = None,
) -> sql.Composed:
    """One query for one declarative check over its scope (the whole table when `batches` is
    None): (total_rows, failing_rows[, sample]). It reproduces the counts the one-pass query of
    the check's table found; it is what ops.dq_results.query stores."""
    scope = _scope_from(check.schema, check.table, batches)
    if check.type == "unique":
        cols = sql.SQL(", ").join(map(sql.Identifier, check.columns))
        not_null = sql.SQL(" AND ").join(
            sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in check.columns
        )
        if check.where:
            not_null = sql.SQL("({}) AND {}").format(sql.SQL(check.where), not_null)
        # One pass: the keys are sorted, then grouped in order (the sort compares bytes with
        # abbreviated keys; a hash aggregate of every key was twice as slow: 1.0 -> 0.56 s for
        # 1M order lines, 13.2 -> 6.4 s for 10M, and the planner picks it without the ORDER BY);
        # the duplicated keys are collected unordered, and only they are sorted for the sample.
        return sql.SQL(
            "SELECT coalesce(a.total, 0)::bigint AS total_rows,"
            " coalesce(a.failing, 0)::bigint AS failing_rows,"
            " ARRAY(SELECT k FROM unnest(a.dups) AS k ORDER BY k LIMIT {limit}) AS sample"
            " FROM (SELECT sum(n) AS total, sum(n) FILTER (WHERE n > 1) AS failing,"
            " array_agg(k) FILTER (WHERE n > 1) AS dups"
            " FROM (SELECT {key} AS k, count(*) AS n"
            " FROM (SELECT {cols} FROM {scope} WHERE {not_null} ORDER BY {cols}) AS keyed"
            " GROUP BY {cols}) AS g) AS a"
        ).format(
            scope=scope,
            cols=cols,
            not_null=not_null,
            key=_key_expr(check.columns),
            limit=sql.Literal(int(sample_size)),
        )
    total, failing, _note = _aggregates(check, catalog)
    return sql.SQL("SELECT {} AS total_rows, {} AS failing_rows FROM {}").format(
        total, failing, scope
    )


def compile_table_pass(
    checks: Sequence[Check],
    catalog: Mapping[str, str],
    batches: Sequence[str] | None = None,
    joinable: Iterable[int] = (),
) -> sql.Composed:
    """ONE query over a table's scope computing its declarative checks (`unique` only where a
    unique index enforces it):
    three columns per check, in order: total rows, failing rows, note.

    `joinable`: indexes of relationships checks whose parent column is unique (a primary key):
    they become a LEFT JOIN to the parent (at most one match per row, so no count changes), which
    lets the planner pick index lookups for a small scope and a hash join for a large one. The
    others are NOT EXISTS on the parent, as in `compile_check`."""
    first = checks[0]
    joinable = set(joinable)
    columns = []
    joins = []
    for j, check in enumerate(checks):
        condition = None
        if j in joinable and check.type == "relationships":
            # The parent exposes only its key (dq_ref_<j>): no name clash with scope's columns.
            alias = sql.Identifier(f"dq_parent_{j}")
            ref = sql.Identifier(f"dq_ref_{j}")
            col = sql.Identifier(check.columns[0])
            joins.append(
                sql.SQL(
                    " LEFT JOIN (SELECT {f} AS {r} FROM {t}) AS {a} ON {a}.{r} = scope.{c}"
                ).format(
                    f=sql.Identifier(check.params.get("field") or check.columns[0]),
                    t=sql.Identifier(*_split_table(check.params["to"], check.name)),
                    a=alias,
                    r=ref,
                    c=col,
                )
            )
            condition = sql.SQL("scope.{c} IS NOT NULL AND {a}.{r} IS NULL").format(
                c=col, a=alias, r=ref
            )
        columns.extend(_aggregates(check, catalog, condition))
    return sql.SQL("SELECT {} FROM {}{}").format(
        sql.SQL(", ").join(columns),
        _scope_from(first.schema, first.table, batches),
        sql.SQL("").join(joins),
    )


def compile_samples(
    checks: Sequence[Check],
    catalog: Mapping[str, str],
    sample_size: int = 5,
    batches: Sequence[str] | None = None,
) -> sql.Composed:
    """One query over a table's scope returning (check index, offending key), the first
    `sample_size` keys in key order per check, for the row-level checks that found failures."""
    values = sql.SQL(", ").join(
        sql.SQL("({}, {}, {})").format(
            sql.Literal(i),
            _key_expr(check.key),
            sql.SQL(" AND ").join(
                ([sql.SQL("({})").format(sql.SQL(check.where))] if check.where else [])
                + [sql.SQL("({})").format(_condition(check, catalog))]
            ),
        )
        for i, check in enumerate(checks)
    )
    first = checks[0]
    return sql.SQL(
        "SELECT i, k FROM (SELECT v.i, v.k, row_number() OVER (PARTITION BY v.i ORDER BY v.k)"
        " AS rn FROM {scope} CROSS JOIN LATERAL (VALUES {values}) AS v(i, k, bad)"
        " WHERE v.bad) AS s WHERE rn <= {limit} ORDER BY i, rn"
    ).format(
        scope=_scope_from(first.schema, first.table, batches),
        values=values,
        limit=sql.Literal(int(sample_size)),
    )


def compile_assert(
    check: Check, sample_size: int = 5, batches: Sequence[str] | None = None
) -> sql.Composed:
    """(rows of the table in scope, violating rows in scope[, sample of them as JSON text]).

    Whole table (batches None): one query with the sample. Scoped: the assert's `scope` column
    (a column of its table and of its result) restricts both counts; the sample is a second
    query (compile_assert_sample), run only when something fails."""
    table = sql.Identifier(check.params.get("table_schema", check.schema), check.table)
    body = sql.SQL(check.sql_text or "")
    if batches is None:
        return sql.SQL(
            "WITH violations AS ({body})"
            " SELECT (SELECT count(*) FROM {table}) AS total_rows,"
            " (SELECT count(*) FROM violations) AS failing_rows,"
            " ARRAY(SELECT to_jsonb(dq_violation)::text FROM violations AS dq_violation LIMIT {limit}) AS sample"
        ).format(body=body, table=table, limit=sql.Literal(int(sample_size)))
    column = sql.Identifier(check.params["scope_column"])
    within = sql.Literal(list(batches))
    return sql.SQL(
        "SELECT (SELECT count(*) FROM {table} WHERE {c} = ANY({b}::text[])) AS total_rows,"
        " (SELECT count(*) FROM ({body}) AS dq_violation"
        " WHERE dq_violation.{c} = ANY({b}::text[])) AS failing_rows"
    ).format(table=table, c=column, b=within, body=body)


def compile_assert_sample(check: Check, sample_size: int, batches: Sequence[str]) -> sql.Composed:
    return sql.SQL(
        "SELECT to_jsonb(dq_violation)::text FROM ({body}) AS dq_violation"
        " WHERE dq_violation.{c} = ANY({b}::text[]) LIMIT {n}"
    ).format(
        body=sql.SQL(check.sql_text or ""),
        c=sql.Identifier(check.params["scope_column"]),
        b=sql.Literal(list(batches)),
        n=sql.Literal(int(sample_size)),
    )


# ----------------------------------------------------------------------------------------------
# Running, scoring, reporting, gating
# ----------------------------------------------------------------------------------------------


def passes(total: int, failing: int, mostly: float) -> bool:
    """A check passes when the failing share is within the tolerated 1 - mostly."""
    if failing <= 0:
        return True
    if total <= 0:
        return False
    return failing / total <= (1 - mostly) + 1e-12


def _fetch(conn: psycopg2.extensions.connection, text: str, *, many: bool = False) -> Any:
    """Run one check query in a savepoint; psycopg2.Error propagates after the rollback."""
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT dq_check")
        try:
            cur.execute(text)
            rows = cur.fetchall() if many else cur.fetchone()
        except psycopg2.Error:
            cur.execute("ROLLBACK TO SAVEPOINT dq_check")
            raise
        cur.execute("RELEASE SAVEPOINT dq_check")
        return rows


def _broken(check: Check, exc: psycopg2.Error) -> ConfigError:
    message = (exc.diag.message_primary or str(exc)).strip()
    return ConfigError(
        f"quality check {check.name} could not run: {message}. Fix it in "
        f"{'sql/checks' if check.type == 'assert' else 'config/quality_checks.yaml'}"
    )


def _result(check: Check, total: int, failing: int, sample: list[Any], query: str) -> CheckResult:
    return CheckResult(
        name=check.name,
        type=check.type,
        layer=check.layer,
        table=f"{check.params.get('table_schema', check.schema)}.{check.table}",
        column=",".join(check.columns) or None,
        dimension=check.dimension,
        severity=check.severity,
        mostly=check.mostly,
        total_rows=int(total),
        failing_rows=int(failing),
        passed=passes(int(total), int(failing), check.mostly),
        sample=[_decode(s) for s in (sample or [])],
        query=query,
    )


def run_checks(
    conn: psycopg2.extensions.connection,
    checks: Iterable[Check],
    *,
    run_id: int | None,
    sample_size: int = 5,
    scope: Scope = ALL,
) -> list[CheckResult]:
    """Run the checks over their scope and record them in ops.dq_results (not committed).

    Per table: every declarative check except `unique` in ONE query (a count(*) FILTER per
    check), then one query for the samples of those that found failing rows; each `unique` check
    and each assert is one query over the same scope (a `unique` check on one column with a
    unique index counts its rows in the table's query). A table with nothing in scope is skipped:
    its checks return no result. Results come back in the order of `checks`."""
    checks = list(checks)

    # the catalogue, once per table and run (a table is asked for by its own checks, and as a
    # relationships' parent)
    @functools.cache
    def catalog(schema: str, table: str) -> dict[str, str]:
        return catalog_columns(conn, schema, table)

    @functools.cache
    def unique_keys(schema: str, table: str) -> set[str]:
        return unique_columns(conn, schema, table)

    def batches_of(schema: str, table: str) -> tuple[str, ...] | None:
        if BATCH_COLUMN not in catalog(schema, table):
            return None  # not fed by batches: the whole table
        return scope.batches_for(f"{schema}.{table}")

    # Validate everything first: a misspelt name is a configuration error before any query.
    for check in checks:
        if check.type == "assert":
            schema = check.params.get("table_schema", check.schema)
            if not catalog(schema, check.table):
                raise ConfigError(
                    f"quality check {check.name}: table {schema}.{check.table} does not exist"
                )
            column = check.params.get("scope_column")
            if column and column not in catalog(schema, check.table):
                raise ConfigError(
                    f"quality check {check.name}: {schema}.{check.table} has no column"
                    f" {column!r} (its '-- scope:' header)"
                )
        else:
            other = None
            if check.type == "relationships":
                other = catalog(*_split_table(check.params["to"], check.name))
            _validate(check, catalog(check.schema, check.table), other)

    results: dict[int, CheckResult] = {}
    tables: dict[tuple[str, str], list[int]] = {}
    for i, check in enumerate(checks):
        if check.type == "assert":
            results_i = _run_assert(conn, check, sample_size, scope)
            if results_i is not None:
                results[i] = results_i
        else:
            tables.setdefault((check.schema, check.table), []).append(i)

    for (schema, table), members in tables.items():
        batches = batches_of(schema, table)
        if batches is not None and not batches:
            continue  # nothing of this table in scope
        cat = catalog(schema, table)
        # a unique check on one column that a unique index enforces (a primary key) is counted
        # in the table's pass: its GROUP BY cannot find a duplicate (0.8 s at 1M order lines)
        enforced = unique_keys(schema, table)
        grouped = [
            i
            for i in members
            if checks[i].type == "unique"
            and not (len(checks[i].columns) == 1 and checks[i].columns[0] in enforced)
        ]
        one_pass = [i for i in members if i not in grouped]
        if one_pass:
            joinable = [
                j
                for j, i in enumerate(one_pass)
                if checks[i].type == "relationships"
                and (checks[i].params.get("field") or checks[i].columns[0])
                in unique_keys(*_split_table(checks[i].params["to"], checks[i].name))
            ]
            results.update(
                _run_table_pass(conn, checks, one_pass, cat, sample_size, batches, joinable)
            )
        for i in grouped:
            text = compile_check(checks[i], cat, sample_size, batches).as_string(conn)
            try:
                total, failing, sample = _fetch(conn, text)
            except psycopg2.Error as exc:
                raise _broken(checks[i], exc) from None
            results[i] = _result(checks[i], total, failing, sample, text)

    ordered = [results[i] for i in sorted(results)]
    if ordered:
        _store(conn, run_id, ordered)
    return ordered


def _run_table_pass(
    conn: psycopg2.extensions.connection,
    checks: Sequence[Check],
    members: Sequence[int],
    catalog: Mapping[str, str],
    sample_size: int,
    batches: Sequence[str] | None,
    joinable: Sequence[int] = (),
) -> dict[int, CheckResult]:
    group = [checks[i] for i in members]
    text = compile_table_pass(group, catalog, batches, joinable).as_string(conn)
    try:
        row = _fetch(conn, text)
    except psycopg2.Error as exc:
        # Name the broken check: run them one by one until one fails.
        for check in group:
            try:
                _fetch(conn, compile_check(check, catalog, sample_size, batches).as_string(conn))
            except psycopg2.Error as single:
                raise _broken(check, single) from None
        raise _broken(group[0], exc) from None
    counts = [(row[3 * j], row[3 * j + 1], row[3 * j + 2]) for j in range(len(group))]
    samples: dict[int, list[Any]] = {}
    failed = [
        j for j, (_t, failing, _n) in enumerate(counts)
        if failing and group[j].type not in ("row_count_min", "freshness")
    ]  # fmt: skip
    if failed and sample_size > 0:
        sample_text = compile_samples(
            [group[j] for j in failed], catalog, sample_size, batches
        ).as_string(conn)
        for k, key in _fetch(conn, sample_text, many=True):
            samples.setdefault(failed[k], []).append(key)
    out = {}
    for j, check in enumerate(group):
        total, failing, note = counts[j]
        sample = samples.get(j, []) if note is None else [note]
        query = compile_check(check, catalog, sample_size, batches).as_string(conn)
        out[members[j]] = _result(check, total, failing, sample, query)
    return out


def _run_assert(
    conn: psycopg2.extensions.connection,
    check: Check,
    sample_size: int,
    scope: Scope,
) -> CheckResult | None:
    schema = check.params.get("table_schema", check.schema)
    column = check.params.get("scope_column")
    batches = None if scope.is_all or not column else scope.batches_for(f"{schema}.{check.table}")
    if batches is not None and not batches:
        return None
    text = compile_assert(check, sample_size, batches).as_string(conn)
    try:
        if batches is None:
            total, failing, sample = _fetch(conn, text)
        else:
            total, failing = _fetch(conn, text)
            sample = []
            if failing and sample_size > 0:
                rows = _fetch(
                    conn,
                    compile_assert_sample(check, sample_size, batches).as_string(conn),
                    many=True,
                )
                sample = [r[0] for r in rows]
    except psycopg2.Error as exc:
        raise _broken(check, exc) from None
    return _result(check, total, failing, sample, text)


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _store(conn: psycopg2.extensions.connection, run_id: int | None, results: list[CheckResult]):
    rows = [
        {
            "run_id": run_id,
            "layer": r.layer,
            "check_name": r.name,
            "check_type": r.type,
            "table_name": r.table,
            "column_name": r.column,
            "dimension": r.dimension,
            "severity": r.severity,
            "mostly": r.mostly,
            "total_rows": r.total_rows,
            "failing_rows": r.failing_rows,
            "passed": r.passed,
            "sample": r.sample,
            "query": r.query,
        }
        for r in results
    ]
    with conn.cursor() as cur:
        # One statement for the whole result set (a handful of rows of metadata, not table data).
        cur.execute(
            "INSERT INTO ops.dq_results (run_id, layer, check_name, check_type, table_name,"
            " column_name, dimension, severity, mostly, total_rows, failing_rows, passed, sample,"
            " query) SELECT x.run_id, x.layer, x.check_name, x.check_type, x.table_name,"
            " x.column_name, x.dimension, x.severity, x.mostly, x.total_rows, x.failing_rows,"
            " x.passed, x.sample, x.query FROM jsonb_to_recordset(%s) AS x(run_id bigint,"
            " layer text, check_name text, check_type text, table_name text, column_name text,"
            " dimension text, severity text, mostly numeric, total_rows bigint,"
            " failing_rows bigint, passed boolean, sample jsonb, query text)",
            (Json(rows),),
        )


def grade(score: float) -> str:
    """A ≥ 90, B ≥ 80, C ≥ 70, D ≥ 60, else F."""
    for floor, letter in GRADES:
        if score >= floor:
            return letter
    return "F"


def score(results: Sequence[CheckResult], weights: Mapping[str, float]) -> dict[str, Any]:
    """Per-dimension scores (mean pass rate × 100), the weighted overall score and its grade."""
    unknown = set(weights) - set(DIMENSIONS)
    if unknown:
        raise ConfigError(
            f"setting quality.weights: unknown dimension {sorted(unknown)[0]!r}; "
            f"known: {', '.join(DIMENSIONS)}"
        )
    dimensions: dict[str, dict[str, Any]] = {}
    for dim in DIMENSIONS:
        members = [r for r in results if r.dimension == dim]
        if not members:
            continue
        dimensions[dim] = {
            "score": round(100 * sum(r.pass_rate for r in members) / len(members), 2),
            "checks": len(members),
            "failed": sum(1 for r in members if not r.passed),
            "weight": float(weights.get(dim, 0.0)),
        }
    total_weight = sum(d["weight"] for d in dimensions.values())
    if dimensions and total_weight > 0:
        overall = sum(d["score"] * d["weight"] for d in dimensions.values()) / total_weight
    elif dimensions:
        overall = sum(d["score"] for d in dimensions.values()) / len(dimensions)
    else:
        overall = 100.0
    overall = round(overall, 2)
    return {"overall_score": overall, "grade": grade(overall), "dimensions": dimensions}


def failed_errors(results: Iterable[CheckResult]) -> list[CheckResult]:
    return [r for r in results if not r.passed and r.severity == "error"]


def gate(results: Sequence[CheckResult], *, stage: str | None = None) -> None:
    """Raise QualityGateFailed naming every failed error check and a sample of its keys."""
    failed = failed_errors(results)
    if not failed:
        return
    parts = []
    for r in failed:
        sample = ", ".join(json.dumps(s) if not isinstance(s, str) else s for s in r.sample[:5])
        parts.append(
            f"{r.name} ({r.failing_rows} of {r.total_rows} rows failing"
            + (f"; e.g. {sample}" if sample else "")
            + ")"
        )
    raise QualityGateFailed(
        f"quality gate: {len(failed)} check(s) of severity error failed: {'; '.join(parts)}. "
        "The warehouse was not touched; see data_quality_report.json and ops.dq_results.",
        stage=stage,
        table=failed[0].table,
    )


def results_of_run(conn: psycopg2.extensions.connection, run_id: int) -> list[CheckResult]:
    """The results stored for a run (every layer checked so far), latest per check name."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT ON (check_name) check_name, check_type, layer, table_name,"
            " column_name, dimension, severity, mostly, total_rows, failing_rows, passed, sample,"
            " query FROM ops.dq_results WHERE run_id = %s ORDER BY check_name, result_id DESC",
            (run_id,),
        )
        rows = cur.fetchall()
    return [
        CheckResult(
            name=r[0],
            type=r[1],
            layer=r[2],
            table=r[3],
            column=r[4],
            dimension=r[5],
            severity=r[6],
            mostly=float(r[7]),
            total_rows=int(r[8]),
            failing_rows=int(r[9]),
            passed=bool(r[10]),
            sample=list(r[11] or []),
            query=r[12],
        )
        for r in rows
    ]


def build_report(results: Sequence[CheckResult], weights: Mapping[str, float], run_id: int | None):
    scored = score(results, weights)
    layers = {}
    for layer in sorted({r.layer for r in results}):
        members = [r for r in results if r.layer == layer]
        layers[layer] = score(members, weights) | {"checks": len(members)}
    failed = [r for r in results if not r.passed]
    return {
        "run_id": run_id,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **scored,
        "layers": layers,
        "checks_run": len(results),
        "checks_failed": len(failed),
        "gate": {
            "passed": not failed_errors(results),
            "failed_error_checks": [r.name for r in failed_errors(results)],
        },
        "checks": [
            {k: v for k, v in asdict(r).items() if k != "query"} | {"pass_rate": r.pass_rate}
            for r in sorted(results, key=lambda r: (r.layer, r.table, r.name))
        ],
    }


def write_report(settings: Settings, report: Mapping[str, Any]) -> Path:
    settings.processed_dir.mkdir(parents=True, exist_ok=True)
    path = settings.processed_dir / "data_quality_report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _latest_run_with_results(conn: psycopg2.extensions.connection, before: int) -> int | None:
    with conn.cursor() as cur:
        cur.execute("SELECT max(run_id) FROM ops.dq_results WHERE run_id < %s", (before,))
        return cur.fetchone()[0]


def _same_run_report(settings: Settings, run_id: int | None) -> dict[str, Any]:
    """The report an earlier layer of the same run wrote (to keep its scope), else {}."""
    if run_id is None:
        return {}
    try:
        report = json.loads((settings.processed_dir / "data_quality_report.json").read_text())
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) and report.get("run_id") == run_id else {}


def check_layer(
    conn: psycopg2.extensions.connection,
    settings: Settings,
    run_id: int | None,
    layer: str,
    *,
    stage: str | None = None,
    apply_gate: bool | None = None,
    full_refresh: bool = False,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> dict[str, Any]:
    """Run a layer's checks over its scope, store them, rewrite the run's report, then apply
    the gate.

    Scope (`resolve_scope`): quality.scope `new` checks the rows of the batches this run brings
    to the layer; `all`, or `full_refresh`, whole tables. A layer with nothing new runs no query:
    the report says "no new batches: <layer> checks skipped" (`skipped`), and when the run has
    no result at all it carries the latest real results forward (`carried_from_run`), so the
    score monitoring reads stays the last one measured.

    The results are committed before the gate raises, so a failed run keeps its evidence.
    Returns the report (scores over every layer checked in this run so far).
    """
    logger = logger or log
    started = time.perf_counter()
    checks = load_checks(settings, layer)
    scope = resolve_scope(conn, settings, layer, run_id, full_refresh=full_refresh)
    skipped = None
    if scope.is_empty:
        results: list[CheckResult] = []
        skipped = f"no new batches: {layer} checks skipped"
        logger.info(skipped)
    else:
        results = run_checks(
            conn, checks, run_id=run_id, sample_size=settings.quality.sample_size, scope=scope
        )
        batches = scope.all_batches
        logger.info(
            "%s checks: %d over %s in %.2fs",
            layer,
            len(results),
            "whole tables (scope all)"
            if scope.is_all
            else f"{len(batches)} new batch(es) ({', '.join(batches)})",
            time.perf_counter() - started,
        )
    everything = results_of_run(conn, run_id) if run_id is not None else results
    carried_from = None
    if not everything and run_id is not None:
        carried_from = _latest_run_with_results(conn, run_id)
        if carried_from is not None:
            everything = results_of_run(conn, carried_from)
    report = build_report(everything, settings.quality.weights, run_id)
    scopes = dict(_same_run_report(settings, run_id).get("scopes") or {})
    scopes[layer] = scope.describe() | {
        "checked_batches": "all" if scope.is_all else list(scope.all_batches),
        "checks_run": len(results),
        "skipped": skipped,
    }
    report["scope"] = scope.mode
    report["scopes"] = scopes
    report["skipped"] = sorted(name for name, s in scopes.items() if s.get("skipped"))
    report["layer_checked"] = layer
    report["layer_results"] = None if skipped else score(results, settings.quality.weights)
    if carried_from is not None:
        # Nothing new anywhere in this run: the latest real results stand, labelled as such.
        report["carried_from_run"] = carried_from
        report["checks_run"] = 0
        report["note"] = (
            f"nothing new in run {run_id}: no check ran; scores and checks are those of"
            f" run {carried_from}"
        )
        report["gate"] = {"passed": True, "failed_error_checks": []}
    write_report(settings, report)
    conn.commit()
    if settings.quality.gate if apply_gate is None else apply_gate:
        gate(results, stage=stage)
    return report
