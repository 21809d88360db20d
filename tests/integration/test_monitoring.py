"""Monitoring on a real PostgreSQL: run age, volume spikes, quality score, an unreachable
database, alert de-duplication over a real local webhook, and a database with only staging."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import psycopg2
import pytest

from dwh import db
from dwh.cli import main as cli_main
from dwh.monitoring import run_checks
from dwh.settings import Settings, load_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def settings_for(tmp_path: Path):
    def build(url: str, **sections: dict) -> Settings:
        return load_settings(
            data_dir=tmp_path / "data", database_url=url, environ={}, overrides=sections
        )

    return build


def _ddl(url: str) -> None:
    conn = db.connect(url)
    try:
        db.apply_ddl(conn)
    finally:
        conn.close()


def _run_finished(url: str, hours_ago: float, status: str = "success") -> None:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ops.pipeline_runs (status, started_at, finished_at, stages)"
            " VALUES (%s, now() - make_interval(secs => %s + 60),"
            " now() - make_interval(secs => %s), ARRAY['ingest'])",
            (status, hours_ago * 3600, hours_ago * 3600),
        )
    conn.close()


def test_last_success_age_against_config_thresholds(db_url, settings_for) -> None:
    _ddl(db_url)
    _run_finished(db_url, 26)
    report = run_checks(settings_for(db_url), send_alerts=False)
    assert report.check("last_success").status == "critical"
    assert report.health == "critical"
    assert report.exit_code == 8

    # The thresholds come from config: with a 30 h limit the same run is only degraded.
    relaxed = settings_for(db_url, monitoring={"last_success_critical_hours": 30})
    assert run_checks(relaxed, send_alerts=False).check("last_success").status == "warning"

    _run_finished(db_url, 1)
    report = run_checks(settings_for(db_url), send_alerts=False)
    assert report.check("last_success").status == "ok"
    assert report.check("database").status == "ok"
    assert report.health == "healthy", [(c.name, c.status, c.message) for c in report.checks]
    assert report.exit_code == 0

    # The report lands in processed/ and in ops.health_reports.
    saved = json.loads(Path(report.report_path).read_text())
    assert saved["health"] == "healthy" and saved["score"] == 100.0
    conn = psycopg2.connect(db_url)
    with conn.cursor() as cur:
        cur.execute("SELECT health FROM ops.health_reports ORDER BY report_id")
        assert [r[0] for r in cur.fetchall()] == ["critical", "degraded", "healthy"]
    conn.close()


def _sales(url: str, spike: float) -> None:
    """28 days of ~20 orders a day with some noise, then a latest day with revenue x spike."""
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO production.customers (customer_id, first_name, last_name,"
            " is_email_valid, registration_date, _batch_id, _source_line)"
            " VALUES ('C1', 'A', 'B', true, DATE '2024-01-01', 'b1', 2)"
        )
        cur.execute(
            """
            INSERT INTO production.transactions (transaction_id, customer_id, transaction_date,
                transaction_at, payment_method, total_amount, _batch_id, _source_line)
            SELECT format('T%%s-%%s', d, n), 'C1', DATE '2025-03-01' + d,
                   (DATE '2025-03-01' + d)::timestamptz, 'UPI',
                   CASE WHEN d = 28 THEN 50 * %(spike)s ELSE 45 + (d * 7 + n * 3) %% 11 END,
                   'b1', d * 100 + n
            FROM generate_series(0, 28) AS d
            CROSS JOIN LATERAL generate_series(1, 18 + (d * 5) %% 5 + d %% 4) AS n
            """,
            {"spike": spike},
        )
    conn.close()


def test_an_injected_revenue_spike_is_flagged(db_url, settings_for) -> None:
    _ddl(db_url)
    _run_finished(db_url, 1)
    _sales(db_url, spike=5)
    report = run_checks(settings_for(db_url), send_alerts=False)
    revenue = report.check("volume.revenue")
    assert revenue.status in ("warning", "critical"), revenue.message
    assert revenue.value > 3.5
    assert "revenue spike" in revenue.message and "2025-03-29" in revenue.message
    assert report.check("volume.orders").status == "ok"
    assert report.health != "healthy"


def test_normal_volume_is_not_flagged(db_url, settings_for) -> None:
    _ddl(db_url)
    _run_finished(db_url, 1)
    _sales(db_url, spike=1)
    report = run_checks(settings_for(db_url), send_alerts=False)
    assert report.check("volume.revenue").status == "ok", report.check("volume.revenue").message
    assert report.check("volume.orders").status == "ok"


def test_quality_score_below_threshold_degrades_health(db_url, settings_for) -> None:
    _ddl(db_url)
    _run_finished(db_url, 1)
    settings = settings_for(db_url)
    settings.processed_dir.mkdir(parents=True)
    report_file = settings.processed_dir / "data_quality_report.json"
    report_file.write_text(json.dumps({"overall_score": 82.5}))
    report = run_checks(settings, send_alerts=False)
    assert report.check("quality_score").status == "warning"
    assert report.check("quality_score").value == 82.5
    assert report.health == "degraded" and report.exit_code == 7

    report_file.write_text(json.dumps({"overall_score": 97.0}))
    assert run_checks(settings, send_alerts=False).health == "healthy"


def test_unreachable_database_still_gives_a_critical_report(tmp_path, settings_for) -> None:
    settings = settings_for("postgresql://postgres@127.0.0.1:9/nowhere")
    report = run_checks(settings)
    assert report.health == "critical"
    assert report.check("database").status == "critical"
    assert "cannot connect" in report.check("database").message
    assert report.check("last_success").status == "unknown"
    saved = json.loads((settings.processed_dir / "monitoring_report.json").read_text())
    assert saved["health"] == "critical"
    # The alert still went to the alert log (no database needed for that).
    lines = (settings.log_dir / "alerts.log").read_text().splitlines()
    assert [json.loads(line)["check"] for line in lines] == ["database"]


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook(monkeypatch) -> Iterator[list[dict]]:
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TEST_DWH_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hook?t=s3cret")
    try:
        yield _Hook.received
    finally:
        server.shutdown()
        server.server_close()


def test_an_open_alert_is_sent_once_and_its_recovery_announced(
    db_url, settings_for, webhook
) -> None:
    _ddl(db_url)
    _run_finished(db_url, 26)
    settings = settings_for(db_url, alerts={"webhook_url_env": "TEST_DWH_WEBHOOK"})
    for _ in range(3):
        report = run_checks(settings)
        assert report.health == "critical"
    assert [(p["check"], p["kind"], p["severity"]) for p in webhook] == [
        ("last_success", "open", "critical")
    ]

    _run_finished(db_url, 0.5)
    run_checks(settings)
    run_checks(settings)
    assert [(p["check"], p["kind"]) for p in webhook] == [
        ("last_success", "open"),
        ("last_success", "recovered"),
    ]
    conn = psycopg2.connect(db_url)
    with conn.cursor() as cur:
        cur.execute("SELECT check_name, severity, resolved_at IS NOT NULL FROM ops.alerts")
        assert cur.fetchall() == [("last_success", "critical", True)]
    conn.close()


def test_monitoring_works_on_a_database_with_only_staging(db_url, settings_for) -> None:
    conn = db.connect(db_url)
    with conn:
        for name in ("00_schemas.sql", "10_ops.sql", "20_staging.sql"):
            db.run_sql_file(conn, f"ddl/{name}")
    conn.close()
    report = run_checks(settings_for(db_url), send_alerts=False, apply_ddl=False)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["database"] == "ok"
    assert statuses["freshness.production"] == "not_applicable"
    assert statuses["freshness.warehouse"] == "not_applicable"
    assert statuses["freshness.staging"] == "unknown"  # tables, but nothing loaded yet
    assert statuses["volume.revenue"] == "unknown"
    assert statuses["quarantine_rate"] == "not_applicable"
    assert statuses["scheduler"] == "not_applicable"
    assert report.health == "healthy"


def test_monitor_subcommand_exit_codes(db_url, tmp_path, capsys) -> None:
    _ddl(db_url)
    _run_finished(db_url, 26)
    args = ["monitor", "--database-url", db_url, "--data-dir", str(tmp_path / "d"), "--no-alerts"]
    assert cli_main(args) == 8
    assert "critical" in capsys.readouterr().out
    _run_finished(db_url, 1)
    assert cli_main(args) == 0
    capsys.readouterr()
    bad = ["monitor", "--database-url", "postgresql://postgres@127.0.0.1:9/x", "--json"]
    assert cli_main([*bad, "--data-dir", str(tmp_path / "d"), "--no-alerts"]) == 8
    printed = json.loads(capsys.readouterr().out)
    assert printed["health"] == "critical" and printed["checks"][0]["name"] == "database"
