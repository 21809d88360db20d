"""Health checks of the pipeline: `pipeline_orchestrator.py monitor` and the end of every run.

`run_checks(settings)` runs every check, scores them, writes
`<data_dir>/processed/monitoring_report.json` and a row in ops.health_reports, and hands the
findings to `dwh.alerts` (which sends only what changed). The SQL is set-based and kept inline
here: each check is one or two small queries on the ledger (ops.*) or on an indexed column.

Check statuses: ok, warning, critical, unknown (could not be evaluated: no data yet, or the
database is down) and not_applicable (the layer or table does not exist). Overall health is
critical when any check is critical, degraded when any is warning, else healthy. The health
score is the mean over evaluated checks of ok = 100, warning = 50, critical = 0.

A check never raises: a table that does not exist yet makes it not_applicable, a query error
makes it unknown. An unreachable database still gives a report (health critical).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from dwh import alerts, db
from dwh.exceptions import first_line
from dwh.settings import Settings, mask_url

log = logging.getLogger("dwh.monitoring")

REPORT_NAME = "monitoring_report.json"
QUALITY_REPORT_NAME = "data_quality_report.json"
EXIT_HEALTHY = 0
EXIT_DEGRADED = 7
EXIT_CRITICAL = 8
STATUS_POINTS = {"ok": 100.0, "warning": 50.0, "critical": 0.0}
HEALTH_EXIT = {"healthy": EXIT_HEALTHY, "degraded": EXIT_DEGRADED, "critical": EXIT_CRITICAL}
# Which successful stages (ops.stage_runs) load each derived layer.
LAYER_STAGES: dict[str, tuple[str, ...]] = {
    "production": ("production",),
    "warehouse": ("warehouse", "aggregates"),
}
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution * 1.4826 = its standard deviation
MEAN_AD_TO_SIGMA = 1.2533  # fallback when MAD is 0 (more than half the days are equal)


@dataclass
class CheckResult:
    name: str
    status: str  # ok | warning | critical | unknown | not_applicable
    message: str
    value: float | str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class HealthReport:
    checked_at: str
    health: str  # healthy | degraded | critical
    score: float
    database: str
    checks: list[CheckResult]
    alerts_sent: list[dict[str, Any]] = field(default_factory=list)
    report_path: str = ""

    @property
    def exit_code(self) -> int:
        return HEALTH_EXIT[self.health]

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- scoring ---------------------------------------------------------------------------------


def grade(value: float, degraded: float, critical: float, *, higher_is_worse: bool = True) -> str:
    """ok / warning / critical for a value against two thresholds."""
    if higher_is_worse:
        return "critical" if value >= critical else "warning" if value >= degraded else "ok"
    return "critical" if value < critical else "warning" if value < degraded else "ok"


def overall(checks: list[CheckResult]) -> tuple[str, float]:
    """(health, score) of a set of checks."""
    statuses = [c.status for c in checks]
    health = (
        "critical" if "critical" in statuses else "degraded" if "warning" in statuses else "healthy"
    )
    points = [STATUS_POINTS[s] for s in statuses if s in STATUS_POINTS]
    score = round(sum(points) / len(points), 1) if points else 100.0
    return health, score


def robust_z(value: float, median: float, mad: float, mean_ad: float) -> float:
    """Robust z-score of `value` against a window summarised by its median, MAD and mean AD."""
    scale = MAD_TO_SIGMA * mad if mad > 0 else MEAN_AD_TO_SIGMA * mean_ad
    if scale <= 0:
        return 0.0 if value == median else float("inf")
    return (value - median) / scale


# -- helpers ---------------------------------------------------------------------------------


def _exists(cur: psycopg2.extensions.cursor, *tables: str) -> bool:
    for table in tables:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        if not cur.fetchone()[0]:
            return False
    return True


def _has_tables(cur: psycopg2.extensions.cursor, schema: str) -> bool:
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables"
        " WHERE table_schema = %s AND table_type = 'BASE TABLE')",
        (schema,),
    )
    return bool(cur.fetchone()[0])


def _hours(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 2)


def ensure_ddl(conn: psycopg2.extensions.connection) -> None:
    """db.apply_ddl, waiting at most a few seconds for table locks; while a run holds them, only
    the schemas and the operations tables (which no stage locks)."""
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '5s'")
        conn.commit()
        try:
            db.apply_ddl(conn)
        except psycopg2.Error as exc:
            conn.rollback()
            log.warning(
                "full DDL not applied (%s): applying the operations tables only",
                str(exc).strip().splitlines()[0] if str(exc).strip() else exc,
            )
            with conn:
                db.run_sql_file(conn, "ddl/00_schemas.sql")
                db.run_sql_file(conn, "ddl/70_operations.sql")
    finally:
        try:
            with conn.cursor() as cur:
                cur.execute("RESET lock_timeout")
            conn.commit()
        except psycopg2.Error:
            conn.rollback()


def _connect(url: str, timeout_s: int) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url, application_name="dwh-monitor", connect_timeout=timeout_s)
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    conn.commit()
    return conn


# -- checks ----------------------------------------------------------------------------------

Check = Callable[
    [psycopg2.extensions.cursor, Settings, datetime], "CheckResult | list[CheckResult]"
]


def check_last_success(cur, settings: Settings, now: datetime) -> CheckResult:
    if not _exists(cur, "ops.pipeline_runs"):
        return CheckResult("last_success", "not_applicable", "no run ledger yet")
    cur.execute(
        "SELECT max(finished_at) FILTER (WHERE status = 'success'), count(*) FROM ops.pipeline_runs"
    )
    last, runs = cur.fetchone()
    cfg = settings.monitoring
    if last is None:
        if runs == 0:
            return CheckResult("last_success", "unknown", "no run recorded yet")
        return CheckResult(
            "last_success", "warning", f"no successful run yet ({runs} runs recorded)"
        )
    age = _hours(now - last)
    status = grade(age, cfg.last_success_degraded_hours, cfg.last_success_critical_hours)
    limit = {
        "ok": "",
        "warning": f" (over {cfg.last_success_degraded_hours:g} h)",
        "critical": f" (over {cfg.last_success_critical_hours:g} h)",
    }[status]
    return CheckResult(
        "last_success",
        status,
        f"last successful run finished {age:g} h ago{limit}",
        age,
        {"finished_at": last.isoformat()},
    )


def check_failed_runs(cur, settings: Settings, now: datetime) -> CheckResult:
    if not _exists(cur, "ops.pipeline_runs", "ops.stage_runs"):
        return CheckResult("failed_runs", "not_applicable", "no run ledger yet")
    limit = max(settings.monitoring.failed_runs_critical, 1)
    cur.execute(
        "SELECT run_id, status, error FROM ops.pipeline_runs"
        " WHERE status IN ('success', 'failed') ORDER BY run_id DESC LIMIT %s",
        (limit,),
    )
    runs = cur.fetchall()
    if not runs:
        return CheckResult("failed_runs", "unknown", "no finished run yet")
    streak = 0
    for _, status, _ in runs:
        if status != "failed":
            break
        streak += 1
    if streak == 0:
        return CheckResult("failed_runs", "ok", f"latest run {runs[0][0]} succeeded", 0)
    cur.execute(
        "SELECT stage, coalesce(error, '') FROM ops.stage_runs"
        " WHERE run_id = %s AND status = 'failed' ORDER BY started_at",
        (runs[0][0],),
    )
    failed = cur.fetchall()
    stages = ", ".join(f"{s}: {e[:200]}" for s, e in failed) or (runs[0][2] or "")[:200]
    status = "critical" if streak >= settings.monitoring.failed_runs_critical else "warning"
    return CheckResult(
        "failed_runs",
        status,
        f"{streak} failed run(s) in a row; run {runs[0][0]} failed ({stages})",
        streak,
        {"run_id": runs[0][0], "failed_stages": [s for s, _ in failed]},
    )


def check_freshness(cur, settings: Settings, now: datetime) -> list[CheckResult]:
    cfg = settings.monitoring
    results = []
    loads: dict[str, tuple[bool, datetime | None]] = {}
    ledger = _exists(cur, "ops.stage_runs")
    if _has_tables(cur, "staging") and _exists(cur, "ops.ingested_files"):
        cur.execute("SELECT max(loaded_at) FROM ops.ingested_files")
        loads["staging"] = (True, cur.fetchone()[0])
    else:
        loads["staging"] = (False, None)
    for layer, stages in LAYER_STAGES.items():
        if not _has_tables(cur, layer) or not ledger:
            loads[layer] = (False, None)
            continue
        cur.execute(
            "SELECT max(finished_at) FROM ops.stage_runs"
            " WHERE status = 'success' AND stage = ANY(%s)",
            (list(stages),),
        )
        loads[layer] = (True, cur.fetchone()[0])
    for layer, (applicable, last) in loads.items():
        name = f"freshness.{layer}"
        if not applicable:
            results.append(CheckResult(name, "not_applicable", f"no {layer} layer yet"))
        elif last is None:
            results.append(CheckResult(name, "unknown", f"{layer} has never been loaded"))
        else:
            age = _hours(now - last)
            status = grade(age, cfg.freshness_degraded_hours, cfg.freshness_critical_hours)
            results.append(
                CheckResult(
                    name,
                    status,
                    f"{layer} last loaded {age:g} h ago",
                    age,
                    {"loaded_at": last.isoformat()},
                )
            )
    return results


_DAILY_SOURCES = (
    (
        "warehouse.agg_daily_sales",
        "SELECT to_date(date_key::text, 'YYYYMMDD') AS d, sum(transactions)::numeric AS orders,"
        " sum(revenue)::numeric AS revenue FROM warehouse.agg_daily_sales"
        " WHERE date_key > 0 AND date_key >= to_char((SELECT to_date(max(date_key)::text,"
        " 'YYYYMMDD') FROM warehouse.agg_daily_sales WHERE date_key > 0)"
        " - %(window)s, 'YYYYMMDD')::integer GROUP BY 1",
    ),
    (
        "production.transactions",
        "SELECT transaction_date AS d, count(*)::numeric AS orders,"
        " sum(total_amount)::numeric AS revenue FROM production.transactions"
        " WHERE transaction_date >= (SELECT max(transaction_date) FROM production.transactions)"
        " - %(window)s GROUP BY 1",
    ),
)

_VOLUME_SQL = """
WITH daily AS ({source}),
latest AS (SELECT max(d) AS d FROM daily),
trail AS (
    SELECT g::date AS d,
           coalesce(x.orders, 0)  AS orders,
           coalesce(x.revenue, 0) AS revenue,
           x.d IS NOT NULL        AS has_data
    FROM latest
    CROSS JOIN LATERAL generate_series(
        greatest((SELECT min(d) FROM daily), latest.d - %(window)s), latest.d - 1, interval '1 day'
    ) AS g
    LEFT JOIN daily AS x ON x.d = g::date
),
med AS (
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY orders)  AS m_orders,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY revenue) AS m_revenue,
           count(*) FILTER (WHERE has_data)                     AS days
    FROM trail
),
dev AS (
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(orders - m_orders))   AS mad_orders,
           avg(abs(orders - m_orders))                                           AS mean_ad_orders,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(revenue - m_revenue)) AS mad_revenue,
           avg(abs(revenue - m_revenue))                                         AS mean_ad_revenue
    FROM trail CROSS JOIN med
)
SELECT latest.d, cur.orders, cur.revenue, med.days,
       med.m_orders, dev.mad_orders, dev.mean_ad_orders,
       med.m_revenue, dev.mad_revenue, dev.mean_ad_revenue
FROM latest
JOIN daily AS cur ON cur.d = latest.d
CROSS JOIN med
CROSS JOIN dev
"""


def check_volume(cur, settings: Settings, now: datetime) -> list[CheckResult]:
    cfg = settings.monitoring
    names = ("volume.orders", "volume.revenue")
    source = None
    for table, query in _DAILY_SOURCES:
        if _exists(cur, table):
            cur.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
            if cur.fetchone()[0]:
                source = (table, query)
                break
    if source is None:
        return [CheckResult(n, "unknown", "no sales loaded yet") for n in names]
    table, query = source
    cur.execute(_VOLUME_SQL.format(source=query), {"window": cfg.volume_window_days})
    row = cur.fetchone()
    if row is None or not row[3] or row[3] < cfg.volume_min_days:
        days = row[3] if row else 0
        return [
            CheckResult(
                n,
                "unknown",
                f"only {days} trailing day(s) with sales in {table}; need {cfg.volume_min_days}",
            )
            for n in names
        ]
    day, orders, revenue, days = row[0], float(row[1]), float(row[2]), int(row[3])
    results = []
    for name, value, median, mad, mean_ad in (
        ("volume.orders", orders, row[4], row[5], row[6]),
        ("volume.revenue", revenue, row[7], row[8], row[9]),
    ):
        median, mad, mean_ad = float(median), float(mad), float(mean_ad)
        z = robust_z(value, median, mad, mean_ad)
        status = grade(abs(z), cfg.volume_z_degraded, cfg.volume_z_critical)
        what = name.split(".")[1]
        ratio = f"{value / median:.1f}x" if median else "n/a"
        direction = "spike" if z > 0 else "drop"
        message = (
            f"{what} on {day}: {value:,.2f} vs median {median:,.2f} of {days} trailing days "
            f"({ratio}, robust z {z:+.1f})"
        )
        if status != "ok":
            message = f"{what} {direction}: " + message
        results.append(
            CheckResult(
                name,
                status,
                message,
                round(z, 2) if z != float("inf") else "inf",
                {
                    "date": day.isoformat(),
                    "value": value,
                    "median": median,
                    "mad": mad,
                    "trailing_days": days,
                    "source": table,
                },
            )
        )
    return results


def _find_score(report: Any) -> float | None:
    if not isinstance(report, dict):
        return None
    for key in ("overall_score", "quality_score", "score"):
        value = report.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, dict):
            nested = _find_score(value)
            if nested is not None:
                return nested
    for key in ("summary", "overall", "scores"):
        nested = _find_score(report.get(key))
        if nested is not None:
            return nested
    return None


def check_quality_score(cur, settings: Settings, now: datetime) -> CheckResult:
    cfg = settings.monitoring
    path = settings.processed_dir / QUALITY_REPORT_NAME
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return CheckResult("quality_score", "unknown", f"no {QUALITY_REPORT_NAME} yet")
    except (OSError, ValueError) as exc:
        return CheckResult("quality_score", "unknown", f"{path} unreadable: {exc}")
    score = _find_score(report)
    if score is None:
        return CheckResult("quality_score", "unknown", f"{path} has no overall score")
    if 0 <= score <= 1:  # a share rather than a percentage
        score *= 100
    status = grade(
        score, cfg.quality_score_degraded, cfg.quality_score_critical, higher_is_worse=False
    )
    return CheckResult(
        "quality_score",
        status,
        f"data-quality score {score:.1f} (degraded below {cfg.quality_score_degraded:g},"
        f" critical below {cfg.quality_score_critical:g})",
        round(score, 1),
    )


def check_quarantine_rate(cur, settings: Settings, now: datetime) -> CheckResult:
    cfg = settings.monitoring
    if not _exists(cur, "ops.quarantine", "ops.ingested_files"):
        return CheckResult("quarantine_rate", "not_applicable", "no quarantine yet")
    cur.execute(
        "WITH latest AS (SELECT batch_id FROM ops.ingested_files"
        "                ORDER BY loaded_at DESC, file_id DESC LIMIT 1)"
        " SELECT latest.batch_id,"
        "  (SELECT sum(row_count) FROM ops.ingested_files f WHERE f.batch_id = latest.batch_id),"
        "  (SELECT count(*) FROM ops.quarantine q WHERE q.batch_id = latest.batch_id)"
        " FROM latest"
    )
    row = cur.fetchone()
    if row is None or not row[1]:
        return CheckResult("quarantine_rate", "unknown", "no rows loaded yet")
    batch, staged, rejected = row[0], int(row[1]), int(row[2])
    rate = rejected / staged
    status = grade(rate, cfg.quarantine_rate_degraded, cfg.quarantine_rate_critical)
    return CheckResult(
        "quarantine_rate",
        status,
        f"{rejected:,} of {staged:,} rows of batch {batch} quarantined ({rate:.1%})",
        round(rate, 4),
        {"batch_id": batch, "staged": staged, "quarantined": rejected},
    )


def check_scheduler(cur, settings: Settings, now: datetime) -> CheckResult:
    if not _exists(cur, "ops.scheduler_heartbeat"):
        return CheckResult("scheduler", "not_applicable", "no scheduler heartbeat table")
    cur.execute(
        "SELECT scheduler_name, state, host, pid, beat_at, interval_s"
        " FROM ops.scheduler_heartbeat WHERE state <> 'stopped' ORDER BY beat_at"
    )
    rows = cur.fetchall()
    if not rows:
        return CheckResult("scheduler", "not_applicable", "no scheduler running")
    factor = settings.monitoring.heartbeat_stale_factor
    stale = [r for r in rows if (now - r[4]).total_seconds() > factor * max(r[5], 1)]
    if not stale:
        return CheckResult("scheduler", "ok", f"{len(rows)} scheduler(s) alive")
    name, state, host, pid, beat, _ = stale[0]
    return CheckResult(
        "scheduler",
        "warning",
        f"scheduler {name} (pid {pid} on {host}, state {state}) last beat "
        f"{(now - beat).total_seconds() / 60:.0f} min ago: is the daemon dead?",
        round((now - beat).total_seconds()),
    )


CHECKS: tuple[Check, ...] = (
    check_last_success,
    check_failed_runs,
    check_freshness,
    check_volume,
    check_quality_score,
    check_quarantine_rate,
    check_scheduler,
)
CHECK_NAMES = (
    "last_success",
    "failed_runs",
    "freshness.staging",
    "freshness.production",
    "freshness.warehouse",
    "volume.orders",
    "volume.revenue",
    "quality_score",
    "quarantine_rate",
    "scheduler",
)


# -- entry point -----------------------------------------------------------------------------


def run_checks(
    settings: Settings,
    url: str | None = None,
    *,
    now: datetime | None = None,
    send_alerts: bool = True,
    apply_ddl: bool = True,
) -> HealthReport:
    """Run every check; write the JSON report, ops.health_reports and alerts; never raises for
    an unreachable database (that is a critical check)."""
    now = now or datetime.now(timezone.utc)
    if url is None:
        url = db.resolve_url(settings, start_embedded=False)
    checks: list[CheckResult] = []
    conn = None
    t0 = time.monotonic()
    try:
        conn = _connect(url, settings.monitoring.connect_timeout_s)
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
        latency_ms = round((time.monotonic() - t0) * 1000, 1)
        status = "warning" if latency_ms >= settings.monitoring.db_latency_degraded_ms else "ok"
        checks.append(
            CheckResult(
                "database",
                status,
                f"reachable; connect and SELECT 1 took {latency_ms:g} ms",
                latency_ms,
            )
        )
    except psycopg2.Error as exc:
        reason = first_line(exc)
        checks.append(
            CheckResult("database", "critical", f"cannot connect to {mask_url(url)}: {reason}")
        )
        checks.extend(CheckResult(n, "unknown", "database unreachable") for n in CHECK_NAMES)
        if conn is not None:
            conn.close()
            conn = None

    if conn is not None:
        try:
            if apply_ddl:
                ensure_ddl(conn)
            for check in CHECKS:
                try:
                    with conn.cursor() as cur:
                        result = check(cur, settings, now)
                    conn.rollback()
                except psycopg2.Error as exc:
                    conn.rollback()
                    name = check.__name__.removeprefix("check_")
                    result = CheckResult(name, "unknown", f"check failed: {str(exc).strip()}")
                checks.extend(result if isinstance(result, list) else [result])
        except psycopg2.Error as exc:  # the connection itself broke mid-way
            log.error("monitoring queries failed: %s", str(exc).strip())
            checks.append(CheckResult("queries", "critical", f"monitoring failed: {exc}"))

    health, score = overall(checks)
    report = HealthReport(
        checked_at=now.isoformat(timespec="seconds"),
        health=health,
        score=score,
        database=mask_url(url),
        checks=checks,
        report_path=str(settings.processed_dir / REPORT_NAME),
    )
    try:
        if conn is not None:
            _record(conn, report)
        if send_alerts:
            findings = {
                c.name: alerts.Finding(c.status if c.status != "ok" else None, c.message)
                for c in checks
                if c.status in ("ok", "warning", "critical")
            }
            events = alerts.process(settings, findings, now=now, conn=conn)
            report.alerts_sent = [asdict(e) for e in events]
    finally:
        if conn is not None:
            conn.close()
    write_report(settings, report)
    level = {"healthy": logging.INFO, "degraded": logging.WARNING}.get(health, logging.ERROR)
    log.log(level, "health %s (score %.1f)", health, score)
    return report


def _record(conn: psycopg2.extensions.connection, report: HealthReport) -> None:
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO ops.health_reports (checked_at, health, score, checks)"
                " VALUES (%s, %s, %s, %s)",
                (
                    report.checked_at,
                    report.health,
                    report.score,
                    json.dumps([asdict(c) for c in report.checks], default=str),
                ),
            )
        conn.commit()
    except psycopg2.Error as exc:
        conn.rollback()
        log.warning("could not record the health report in ops: %s", str(exc).strip())


def write_report(settings: Settings, report: HealthReport) -> Path:
    settings.processed_dir.mkdir(parents=True, exist_ok=True)
    path = settings.processed_dir / REPORT_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def describe(report: HealthReport) -> str:
    """Human-readable summary for the console."""
    lines = [f"health: {report.health} (score {report.score:g}) at {report.checked_at}"]
    for c in report.checks:
        lines.append(f"  {c.status:<14} {c.name:<22} {c.message}")
    for event in report.alerts_sent:
        lines.append(f"  alert sent: [{event['kind']}] {event['check']} ({event['severity']})")
    lines.append(f"  report: {report.report_path}")
    return "\n".join(lines)
