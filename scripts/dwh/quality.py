"""Data-quality checks: load them, compile each to one SQL query, run, score, report, gate.

Two kinds of checks, both run by `run_checks` and stored in ops.dq_results:

- declarative checks in config/quality_checks.yaml, per table and column: not_null, unique (also
  composite), relationships, accepted_values, range, regex, expression, row_count_min,
  freshness — each compiled to one query with psycopg2.sql (identifiers quoted, names checked
  against the catalog first);
- bespoke checks sql/checks/assert_*.sql: a query returning the violating rows, with a header
  of `-- key: value` lines (layer, table, severity, dimension, mostly).

Every check yields total rows, failing rows and a sample of offending keys. A check passes when
failing / total <= 1 - mostly. Scores: per dimension the mean pass rate of its checks (0-100),
overall the weighted mean of the dimensions present, graded A ≥ 90, B ≥ 80, C ≥ 70, D ≥ 60, F.
`gate` raises QualityGateFailed (exit code 5) for a failed check of severity error.

Callers pick a layer (the schema: staging, production, warehouse): `load_checks(..., layer=)`.
"""

from __future__ import annotations

import json
import re
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
    return Check(
        name=path.stem,
        type="assert",
        schema=meta.get("layer", schema),
        table=table,
        severity=severity,
        mostly=mostly,
        dimension=dimension,
        sql_text=body,
        params={"table_schema": schema},
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


def compile_check(
    check: Check,
    catalog: Mapping[str, str],
    sample_size: int = 5,
) -> sql.Composed:
    """One query returning (total_rows, failing_rows, sample text[]) for a declarative check."""
    table = sql.Identifier(check.schema, check.table)
    scope = sql.SQL("SELECT t.ctid AS dq_row_id, t.* FROM {} AS t").format(table)
    if check.where:
        scope = sql.SQL("{} WHERE ({})").format(scope, sql.SQL(check.where))
    limit = sql.Literal(int(sample_size))
    key = _key_expr(check.key)
    col = sql.Identifier(check.columns[0]) if check.columns else None
    params = check.params
    kind = check.type

    if kind == "row_count_min":
        return sql.SQL(
            "WITH scope AS ({scope}), n AS (SELECT count(*) AS n FROM scope)"
            " SELECT 1::bigint, (n < {min})::int::bigint,"
            " CASE WHEN n < {min} THEN ARRAY['rows: ' || n] ELSE ARRAY[]::text[] END FROM n"
        ).format(scope=scope, min=sql.Literal(int(params["min"])))
    if kind == "freshness":
        hours = sql.Literal(float(params["max_age_hours"]))
        return sql.SQL(
            "WITH scope AS ({scope}), m AS (SELECT max({col})::timestamptz AS newest FROM scope)"
            " SELECT 1::bigint,"
            " (newest IS NULL OR newest < now() - {hours} * interval '1 hour')::int::bigint,"
            " CASE WHEN newest IS NULL OR newest < now() - {hours} * interval '1 hour'"
            " THEN ARRAY['newest: ' || coalesce(newest::text, 'none')] ELSE ARRAY[]::text[] END"
            " FROM m"
        ).format(scope=scope, col=col, hours=hours)
    if kind == "unique":
        cols = sql.SQL(", ").join(map(sql.Identifier, check.columns))
        not_null = sql.SQL(" AND ").join(
            sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in check.columns
        )
        return sql.SQL(
            "WITH scope AS ({scope}),"
            " keyed AS (SELECT {cols} FROM scope WHERE {not_null}),"
            " dup AS (SELECT {key} AS k, count(*) AS n FROM keyed GROUP BY {cols} HAVING count(*) > 1)"
            " SELECT (SELECT count(*) FROM keyed), coalesce((SELECT sum(n) FROM dup), 0)::bigint,"
            " ARRAY(SELECT k FROM dup ORDER BY k LIMIT {limit})"
        ).format(
            scope=scope, cols=cols, not_null=not_null, key=_key_expr(check.columns), limit=limit
        )

    if kind == "not_null":
        blank = catalog.get(check.columns[0]) in ("text", "character varying", "character")
        condition = (
            sql.SQL("{c} IS NULL OR btrim({c}) = ''").format(c=col)
            if blank
            else sql.SQL("{} IS NULL").format(col)
        )
    elif kind == "accepted_values":
        values = [str(v) for v in params["values"]]
        if params.get("ignore_case"):
            condition = sql.SQL("{c} IS NOT NULL AND lower({c}::text) <> ALL({v}::text[])").format(
                c=col, v=sql.Literal([v.lower() for v in values])
            )
        else:
            condition = sql.SQL("{c} IS NOT NULL AND {c}::text <> ALL({v}::text[])").format(
                c=col, v=sql.Literal(values)
            )
    elif kind == "range":
        parts = []
        if params.get("min") is not None:
            parts.append(sql.SQL("{} < {}").format(col, sql.Literal(params["min"])))
        if params.get("max") is not None:
            parts.append(sql.SQL("{} > {}").format(col, sql.Literal(params["max"])))
        condition = sql.SQL("{} IS NOT NULL AND ({})").format(col, sql.SQL(" OR ").join(parts))
    elif kind == "regex":
        condition = sql.SQL("{c} IS NOT NULL AND {c}::text !~ {p}").format(
            c=col, p=sql.Literal(str(params["pattern"]))
        )
    elif kind == "expression":
        condition = sql.SQL("({}) IS NOT TRUE").format(sql.SQL(str(params["expression"])))
    elif kind == "relationships":
        other_schema, other_table = _split_table(params["to"], check.name)
        ref = sql.Identifier(params.get("field") or check.columns[0])
        condition = sql.SQL(
            "{c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {t} AS parent WHERE parent.{r} = scope.{c})"
        ).format(c=col, t=sql.Identifier(other_schema, other_table), r=ref)
    else:  # pragma: no cover - guarded by _make_check
        raise ConfigError(f"quality check {check.name}: unknown type {kind}")

    return sql.SQL(
        "WITH scope AS ({scope}), failing AS (SELECT {key} AS k FROM scope WHERE {condition})"
        " SELECT (SELECT count(*) FROM scope), (SELECT count(*) FROM failing),"
        " ARRAY(SELECT k FROM failing ORDER BY k LIMIT {limit})"
    ).format(scope=scope, key=key, condition=condition, limit=limit)


def compile_assert(check: Check, sample_size: int = 5) -> sql.Composed:
    """(total rows of the table, violating rows, sample of violating rows as JSON text)."""
    table = sql.Identifier(check.params.get("table_schema", check.schema), check.table)
    return sql.SQL(
        "WITH violations AS ({body})"
        " SELECT (SELECT count(*) FROM {table}), (SELECT count(*) FROM violations),"
        " ARRAY(SELECT to_jsonb(v)::text FROM violations AS v LIMIT {limit})"
    ).format(body=sql.SQL(check.sql_text or ""), table=table, limit=sql.Literal(int(sample_size)))


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


def run_checks(
    conn: psycopg2.extensions.connection,
    checks: Iterable[Check],
    *,
    run_id: int | None,
    sample_size: int = 5,
) -> list[CheckResult]:
    """Run each check (one query each) and record it in ops.dq_results (not committed)."""
    results: list[CheckResult] = []
    catalogs: dict[tuple[str, str], dict[str, str]] = {}

    def catalog(schema: str, table: str) -> dict[str, str]:
        if (schema, table) not in catalogs:
            catalogs[schema, table] = catalog_columns(conn, schema, table)
        return catalogs[schema, table]

    for check in checks:
        if check.type == "assert":
            schema = check.params.get("table_schema", check.schema)
            if not catalog(schema, check.table):
                raise ConfigError(
                    f"quality check {check.name}: table {schema}.{check.table} does not exist"
                )
            query = compile_assert(check, sample_size)
        else:
            other = None
            if check.type == "relationships":
                other = catalog(*_split_table(check.params["to"], check.name))
            _validate(check, catalog(check.schema, check.table), other)
            query = compile_check(check, catalog(check.schema, check.table), sample_size)
        text = query.as_string(conn)
        with conn.cursor() as cur:
            try:
                cur.execute("SAVEPOINT dq_check")
                cur.execute(text)
                total, failing, sample = cur.fetchone()
                cur.execute("RELEASE SAVEPOINT dq_check")
            except psycopg2.Error as exc:
                cur.execute("ROLLBACK TO SAVEPOINT dq_check")
                message = (exc.diag.message_primary or str(exc)).strip()
                raise ConfigError(
                    f"quality check {check.name} could not run: {message}. Fix it in "
                    f"{'sql/checks' if check.type == 'assert' else 'config/quality_checks.yaml'}"
                ) from None
        sample = [_decode(s) for s in (sample or [])]
        result = CheckResult(
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
            sample=sample,
            query=text,
        )
        results.append(result)
    if results:
        _store(conn, run_id, results)
    return results


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


def check_layer(
    conn: psycopg2.extensions.connection,
    settings: Settings,
    run_id: int | None,
    layer: str,
    *,
    stage: str | None = None,
    apply_gate: bool | None = None,
) -> dict[str, Any]:
    """Run a layer's checks, store them, rewrite the run's report, then apply the gate.

    The results are committed before the gate raises, so a failed run keeps its evidence.
    Returns the report (scores over every layer checked in this run so far).
    """
    checks = load_checks(settings, layer)
    results = run_checks(conn, checks, run_id=run_id, sample_size=settings.quality.sample_size)
    everything = results_of_run(conn, run_id) if run_id is not None else results
    report = build_report(everything, settings.quality.weights, run_id)
    report["layer_checked"] = layer
    report["layer_results"] = score(results, settings.quality.weights)
    write_report(settings, report)
    conn.commit()
    if settings.quality.gate if apply_gate is None else apply_gate:
        gate(results, stage=stage)
    return report
