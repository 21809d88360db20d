"""Alerts: open once, escalate, repeat rarely, announce recovery; deliver to the configured sinks.

An alert belongs to one check (e.g. `last_success`, `volume.revenue`, `scheduler.job`). Each time
the checks run, `process` compares their findings with the open alerts and sends only the
changes: a new problem (`open`), a worse one (`escalated`), a reminder after
`alerts.repeat_hours` (`repeat`), and a problem gone (`recovered`). A check that could not be
evaluated this time (status unknown / not_applicable) leaves its alert as it is.

The open alerts live in `<data_dir>/alert_state.json` (so deduplication works when the database
is down, the case that matters most) and are mirrored to `ops.alerts` whenever the database is
reachable. Sinks: a JSON-lines log file (always), a webhook (HTTP POST of JSON via urllib) and
email (smtplib). A sink that fails is logged; it never breaks the caller.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from dwh.settings import Settings

log = logging.getLogger("dwh.alerts")

SEVERITY_RANK = {"warning": 1, "critical": 2}
STATE_FILE = "alert_state.json"
SOURCE = "ecommerce-dwh"


@dataclass(frozen=True)
class Finding:
    """What one check says now: severity None means healthy."""

    severity: str | None
    message: str


@dataclass
class AlertEvent:
    """One notification: an alert opened, escalated, repeated or recovered."""

    check: str
    kind: str  # open | escalated | repeat | recovered
    severity: str  # warning | critical (for a recovery: the severity it had)
    message: str
    opened_at: str
    at: str

    def line(self) -> str:
        verb = {"recovered": "RECOVERED"}.get(self.kind, self.severity.upper())
        return f"[{verb}] {self.check}: {self.message}"


def state_path(settings: Settings) -> Path:
    return settings.data_dir / STATE_FILE


def _load_state(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("alert state %s unreadable (%s): starting with no open alerts", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _save_state(path: Path, state: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def process(
    settings: Settings,
    findings: Mapping[str, Finding],
    *,
    now: datetime | None = None,
    conn: psycopg2.extensions.connection | None = None,
) -> list[AlertEvent]:
    """Compare `findings` with the open alerts, send what changed, return the events sent."""
    now = now or datetime.now(timezone.utc)
    path = state_path(settings)
    state = _load_state(path)
    repeat = timedelta(hours=settings.alerts.repeat_hours)
    events: list[AlertEvent] = []
    recovered: list[tuple[str, dict[str, Any]]] = []
    for check, finding in sorted(findings.items()):
        current = state.get(check)
        if finding.severity is None:
            if current is not None:
                events.append(
                    AlertEvent(
                        check,
                        "recovered",
                        current["severity"],
                        f"recovered (was: {current['message']})",
                        current["opened_at"],
                        _iso(now),
                    )
                )
                recovered.append((check, current))
                del state[check]
            continue
        if finding.severity not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {finding.severity!r} for check {check}")
        if current is None:
            kind: str | None = "open"
            current = state[check] = {"opened_at": _iso(now), "notified_at": None}
        elif SEVERITY_RANK[finding.severity] > SEVERITY_RANK[current["severity"]]:
            kind = "escalated"
        elif (
            settings.alerts.repeat_hours > 0
            and current.get("notified_at")
            and now - datetime.fromisoformat(current["notified_at"]) >= repeat
        ):
            kind = "repeat"
        else:
            kind = None
        current.update(severity=finding.severity, message=finding.message, last_seen_at=_iso(now))
        if kind is not None:
            current["notified_at"] = _iso(now)
            events.append(
                AlertEvent(
                    check, kind, finding.severity, finding.message, current["opened_at"], _iso(now)
                )
            )
    _save_state(path, state)
    if events:
        deliver(settings, events)
    if conn is not None:
        try:
            _mirror(conn, state, recovered, now)
        except psycopg2.Error as exc:
            conn.rollback()
            log.warning("could not record alerts in ops.alerts: %s", str(exc).strip())
    return events


def _mirror(
    conn: psycopg2.extensions.connection,
    state: Mapping[str, Mapping[str, Any]],
    recovered: list[tuple[str, Mapping[str, Any]]],
    now: datetime,
) -> None:
    """Make ops.alerts show the open alerts of `state` and close the recovered ones."""
    with conn.cursor() as cur:
        for check, alert in state.items():
            cur.execute(
                "INSERT INTO ops.alerts (check_name, severity, message, opened_at, last_seen_at,"
                " notified_at) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (check_name) WHERE resolved_at IS NULL DO UPDATE SET"
                " severity = EXCLUDED.severity, message = EXCLUDED.message,"
                " last_seen_at = EXCLUDED.last_seen_at, notified_at = EXCLUDED.notified_at",
                (
                    check,
                    alert["severity"],
                    alert["message"],
                    alert["opened_at"],
                    alert.get("last_seen_at") or alert["opened_at"],
                    alert.get("notified_at"),
                ),
            )
        for check, alert in recovered:
            cur.execute(
                "UPDATE ops.alerts SET resolved_at = %s WHERE check_name = %s"
                " AND resolved_at IS NULL",
                (now, check),
            )
            if cur.rowcount == 0:  # opened and closed while the database was away
                cur.execute(
                    "INSERT INTO ops.alerts (check_name, severity, message, opened_at,"
                    " last_seen_at, notified_at, resolved_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (
                        check,
                        alert["severity"],
                        alert["message"],
                        alert["opened_at"],
                        alert.get("last_seen_at") or alert["opened_at"],
                        alert.get("notified_at"),
                        now,
                    ),
                )
    conn.commit()


# -- sinks -----------------------------------------------------------------------------------


def deliver(settings: Settings, events: list[AlertEvent]) -> None:
    """Send events to the log file (always), and to the webhook and email when configured."""
    _to_log_file(settings, events)
    floor = SEVERITY_RANK.get(settings.alerts.min_severity, 1)
    outgoing = [e for e in events if SEVERITY_RANK[e.severity] >= floor]
    if not outgoing:
        return
    url = os.environ.get(settings.alerts.webhook_url_env or "", "").strip()
    if url:
        for event in outgoing:
            _to_webhook(url, event, settings.alerts.webhook_timeout_s)
    cfg = settings.alerts
    recipients = [a.strip() for a in cfg.email_to.split(",") if a.strip()]
    if cfg.smtp_host and cfg.email_from and recipients:
        _to_email(settings, recipients, outgoing)


def _payload(event: AlertEvent) -> dict[str, Any]:
    return {"source": SOURCE, "host": socket.gethostname(), "text": event.line(), **asdict(event)}


def _to_log_file(settings: Settings, events: list[AlertEvent]) -> None:
    for event in events:
        level = logging.INFO if event.kind == "recovered" else logging.WARNING
        if event.severity == "critical" and event.kind != "recovered":
            level = logging.ERROR
        log.log(level, "alert %s", event.line())
    try:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        with open(settings.log_dir / settings.alerts.log_file, "a", encoding="utf-8") as handle:
            for event in events:
                handle.write(json.dumps(_payload(event), sort_keys=True) + "\n")
    except OSError as exc:
        log.error("cannot write the alert log in %s: %s", settings.log_dir, exc)


def _to_webhook(url: str, event: AlertEvent, timeout: float) -> None:
    body = json.dumps(_payload(event)).encode("utf-8")
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        # The URL may hold a token: name only its scheme and host.
        target = urllib.parse.urlsplit(url)
        log.error("webhook alert to %s://%s failed: %s", target.scheme, target.hostname, exc)


def _to_email(settings: Settings, recipients: list[str], events: list[AlertEvent]) -> None:
    cfg = settings.alerts
    worst = max(events, key=lambda e: (e.kind != "recovered", SEVERITY_RANK[e.severity]))
    message = EmailMessage()
    message["Subject"] = f"[{SOURCE}] {worst.line()}" + (
        f" (+{len(events) - 1} more)" if len(events) > 1 else ""
    )
    message["From"] = cfg.email_from
    message["To"] = ", ".join(recipients)
    message.set_content("\n".join(e.line() + f"  (at {e.at})" for e in events) + "\n")
    user = os.environ.get(cfg.smtp_user_env or "", "")
    password = os.environ.get(cfg.smtp_password_env or "", "")
    try:
        with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=30) as smtp:
            if cfg.smtp_starttls:
                smtp.starttls()
            if user:
                smtp.login(user, password)
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        log.error("email alert via %s:%s failed: %s", cfg.smtp_host, cfg.smtp_port, exc)
