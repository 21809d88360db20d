"""Load config/config.yaml, the environment and command-line overrides into one frozen Settings.

Precedence, highest first: explicit overrides (command-line flags) > environment variables
(DWH_<SECTION>__<KEY>, DATABASE_URL, PG*) > the YAML file > the defaults below. A git-ignored
`.env` file in the working directory is read into the environment first (it never overrides a
variable that is already set).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from dwh.exceptions import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "config.yaml"
ENV_PREFIX = "DWH_"


@dataclass(frozen=True)
class EmbeddedSettings:
    port: int = 0
    """TCP port on 127.0.0.1 of the embedded server; 0 = automatic (54329 or the next free one,
    remembered per data folder)."""
    database: str = "ecommerce_dwh"
    """Database created inside the embedded server."""
    start_timeout_s: int = 60
    """Seconds to wait for start or stop."""
    os_user_when_root: str = "dwh_postgres"
    """System user the server runs as when we are root."""


@dataclass(frozen=True)
class NextBatchSettings:
    transactions: int = 15
    """New orders in each --next-batch."""
    new_customers: int = 10
    """Customers first seen in each --next-batch."""
    new_products: int = 3
    """Products first seen in each --next-batch."""
    changed_customers: int = 5
    """Existing customers re-sent with a changed city or email."""
    changed_products: int = 3
    """Existing products re-sent with a changed price or category."""


@dataclass(frozen=True)
class GeneratorSettings:
    seed: int = 42
    """Random seed; the same seed and settings give byte-identical files."""
    customers: int = 1000
    """Customers in the history batch (before --scale)."""
    products: int = 500
    """Products in the history batch (before --scale)."""
    transactions: int = 10000
    """Transactions in the history batch (before --scale)."""
    max_items_per_transaction: int = 5
    """Order lines per transaction are drawn from 1..this."""
    start_date: dt.date = dt.date(2024, 1, 1)
    """First order date of the history batch."""
    end_date: dt.date = dt.date(2025, 12, 31)
    """Last order date of the history batch (capped at today)."""
    next_batch: NextBatchSettings = field(default_factory=NextBatchSettings)
    """Volumes of each --next-batch."""
    dirty_rate: float = 0.0
    """Share of rows that get an injected defect (0 = clean)."""
    chunk_rows: int = 200000
    """Most rows per chunk when writing CSV files (the generator caps it at 32,768)."""


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 4
    """Tries per stage for transient database errors (1 = no retry)."""
    base_delay_s: float = 1.0
    """First back-off delay; doubles on each retry, with full jitter."""
    max_delay_s: float = 30.0
    """Upper bound of one back-off delay."""


@dataclass(frozen=True)
class PipelineSettings:
    """How the orchestrator runs stages."""

    retry: RetrySettings = field(default_factory=RetrySettings)
    """Retries of transient errors (connection lost, server restarting, serialization, deadlock)."""


@dataclass(frozen=True)
class PriceCategorySettings:
    budget_below: float = 25.0
    """Products priced below this are 'Budget'."""
    premium_from: float = 100.0
    """Products priced at or above this are 'Premium'; the rest are 'Mid-range'."""


def _default_rules() -> dict[str, str]:
    return {
        "invalid_email": "default",
        "unknown_category": "default",
        "unknown_payment_method": "default",
        "unparseable_time": "default",
        "future_date": "critical",
        "line_total_mismatch": "critical",
    }


@dataclass(frozen=True)
class ProductionSettings:
    """Cleaning and promotion rules (the production stage)."""

    rules: dict[str, str] = field(default_factory=_default_rules)
    """Rules that may be critical (row quarantined) or default (row kept, value defaulted, counted)."""
    price_category: PriceCategorySettings = field(default_factory=PriceCategorySettings)
    """Price thresholds of products.price_category."""
    email_pattern: str = r"^[a-z0-9._%+'-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$"
    """POSIX regular expression a (trimmed, lowercased) email must match to be valid."""
    source_timezone: str = "UTC"
    """Time zone of the source's transaction dates and times; stored as UTC timestamptz."""
    line_total_tolerance: float = 0.01
    """Largest accepted |line_total - round(quantity * unit_price * (1 - discount/100), 2)|."""
    lookups_dir: str = "config/lookups"
    """Folder of the lookup YAML files (categories.yaml, payment_methods.yaml); relative to the project."""


def _default_weights() -> dict[str, float]:
    return {
        "completeness": 0.20,
        "uniqueness": 0.20,
        "validity": 0.20,
        "consistency": 0.15,
        "referential_integrity": 0.15,
        "timeliness": 0.10,
    }


@dataclass(frozen=True)
class QualitySettings:
    """Data-quality checks, scoring and the quality gate (the quality stage)."""

    checks_file: str = "config/quality_checks.yaml"
    """Declarative checks (per layer, table and column); relative to the project."""
    checks_dir: str = "sql/checks"
    """Folder of bespoke checks assert_*.sql (queries returning the violating rows)."""
    weights: dict[str, float] = field(default_factory=_default_weights)
    """Weight of each dimension in the overall score (renormalised over the dimensions checked)."""
    sample_size: int = 5
    """Offending keys kept per failed check (ops.dq_results.sample, the report, the gate message)."""
    gate: bool = True
    """Stop the run when a check of severity error fails (exit code 5)."""
    scope: str = "new"
    """Rows the checks look at: `new` (the batches this run brings to the layer; a layer with
    nothing new is skipped) or `all` (whole tables, as --full-refresh does)."""

    def __post_init__(self) -> None:
        if self.scope not in ("new", "all"):
            raise ConfigError(f"setting quality.scope: {self.scope!r} is not one of new, all")


@dataclass(frozen=True)
class CitusSettings:
    """Distribution of the warehouse over a Citus cluster (docs/scaling.md). Opt-in."""

    enabled: bool = False
    """Issue create_reference_table / create_distributed_table when the citus extension is
    installed in the database (checked in pg_extension; without it: logged and skipped)."""
    distribution_column: str = "item_id"
    """fact_sales column the fact is sharded by: item_id, its natural key, never changes, so
    the upsert's ON CONFLICT (item_id) stays valid and no update moves a row between shards."""
    shard_count: int = 0
    """Shards of fact_sales; 0 = the cluster's citus.shard_count."""


@dataclass(frozen=True)
class WarehouseSettings:
    """The star schema, aggregates, analytics and BI access (docs/warehouse.md)."""

    holidays: tuple[dt.date, ...] = (
        dt.date(2024, 1, 1),
        dt.date(2024, 1, 26),
        dt.date(2024, 8, 15),
        dt.date(2024, 10, 2),
        dt.date(2024, 12, 25),
        dt.date(2025, 1, 1),
        dt.date(2025, 1, 26),
        dt.date(2025, 8, 15),
        dt.date(2025, 10, 2),
        dt.date(2025, 12, 25),
    )
    """Dates flagged is_holiday in dim_date (ISO dates in YAML)."""
    fiscal_year_start_month: int = 4
    """First month (1-12) of the fiscal year; a fiscal year is named by the year it ends in."""
    date_padding_years: int = 0
    """Whole years added to dim_date before the first and after the last order year."""
    first_version_effective_from: dt.date = dt.date(1900, 1, 1)
    """effective_from of an entity's first SCD2 version, so every earlier order date resolves."""
    rfm_recency_days: tuple[int, ...] = (30, 90, 180, 365)
    """Days since the last purchase at or below which the recency score is 5, 4, 3, 2 (else 1)."""
    rfm_frequency_orders: tuple[int, ...] = (2, 4, 8, 12)
    """Orders from which the frequency score is 2, 3, 4, 5 (below the first: 1)."""
    rfm_monetary_spent: tuple[float, ...] = (250.0, 1000.0, 2500.0, 5000.0)
    """Total spent from which the monetary score is 2, 3, 4, 5 (below the first: 1)."""
    vip_min_total_spent: float = 5000.0
    """customer_segment VIP from this total spent on."""
    regular_min_transactions: int = 2
    """customer_segment Regular from this many orders (fewer, and not VIP: New)."""
    citus: CitusSettings = field(default_factory=CitusSettings)
    """Opt-in distribution over Citus (docs/scaling.md)."""

    def __post_init__(self) -> None:
        try:
            holidays = tuple(
                d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d))
                for d in self.holidays
            )
        except (TypeError, ValueError):
            raise ConfigError(
                f"setting warehouse.holidays: {self.holidays!r} is not a list of ISO dates"
            ) from None
        object.__setattr__(self, "holidays", tuple(sorted(set(holidays))))
        if not 1 <= self.fiscal_year_start_month <= 12:
            raise ConfigError("setting warehouse.fiscal_year_start_month: must be 1..12")
        if self.date_padding_years < 0:
            raise ConfigError("setting warehouse.date_padding_years: must be 0 or more")
        for name, kind in (
            ("rfm_recency_days", int),
            ("rfm_frequency_orders", int),
            ("rfm_monetary_spent", float),
        ):
            value = getattr(self, name)
            try:
                bounds = tuple(kind(v) for v in value)
            except (TypeError, ValueError):
                bounds = ()
            if len(bounds) != 4 or list(bounds) != sorted(set(bounds)):
                raise ConfigError(
                    f"setting warehouse.{name}: expected 4 increasing numbers, got {value!r}"
                )
            object.__setattr__(self, name, bounds)


@dataclass(frozen=True)
class SchedulerSettings:
    """The scheduler daemon (scripts/scheduler.py)."""

    daily_at: str = "02:00"
    """Run once a day at this HH:MM wall-clock time in `timezone`; "" = no daily run."""
    timezone: str = "UTC"
    """IANA time zone of daily_at, e.g. Europe/Berlin (daylight saving handled)."""
    every_minutes: int = 0
    """Also run every N minutes, on slots aligned to midnight UTC; 0 = off."""
    catch_up: bool = True
    """At start, run once if a slot was missed while the daemon was down."""
    next_batch: bool = True
    """With the generator as source, write the next business day's batch on each tick."""
    heartbeat_seconds: int = 30
    """Seconds between heartbeats (ops.scheduler_heartbeat and <data_dir>/scheduler.heartbeat)."""
    cleanup_after_run: bool = True
    """Run the retention clean-up after each successful scheduled run."""
    monitor_after_run: bool = True
    """Run the monitoring checks (and send alerts) after each scheduled tick."""


@dataclass(frozen=True)
class MonitoringSettings:
    """Health checks of `pipeline_orchestrator.py monitor` and the end of every run."""

    last_success_degraded_hours: float = 24.5
    """Age of the last successful run above which health is degraded."""
    last_success_critical_hours: float = 25.0
    """Age of the last successful run above which health is critical."""
    freshness_degraded_hours: float = 25.0
    """Hours since a layer was last loaded above which health is degraded."""
    freshness_critical_hours: float = 49.0
    """Hours since a layer was last loaded above which health is critical."""
    failed_runs_critical: int = 3
    """Consecutive failed runs that make health critical (one failed run: degraded)."""
    volume_window_days: int = 28
    """Trailing days the latest day's orders and revenue are compared with."""
    volume_min_days: int = 7
    """Fewer trailing days with data than this: the volume check is skipped."""
    volume_z_degraded: float = 3.5
    """Robust z-score (median/MAD) of the latest day above which health is degraded."""
    volume_z_critical: float = 6.0
    """Robust z-score above which health is critical."""
    quality_score_degraded: float = 90.0
    """Overall data-quality score (0..100) below which health is degraded."""
    quality_score_critical: float = 70.0
    """Overall data-quality score below which health is critical."""
    quarantine_rate_degraded: float = 0.05
    """Share of the latest batch's staged rows quarantined above which health is degraded."""
    quarantine_rate_critical: float = 0.20
    """Quarantined share above which health is critical."""
    db_latency_degraded_ms: float = 500.0
    """Round-trip time of SELECT 1 above which health is degraded."""
    connect_timeout_s: int = 5
    """Seconds to wait for the database before calling it unreachable."""
    heartbeat_stale_factor: float = 3.0
    """A running scheduler whose heartbeat is older than this many intervals is degraded."""


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts go. Secrets are never here: only the names of the variables holding them."""

    log_file: str = "alerts.log"
    """Alert log (JSON lines) in log_dir; always written."""
    min_severity: str = "warning"
    """Lowest severity sent to the webhook and email: warning or critical."""
    repeat_hours: float = 24.0
    """Re-send a still-open alert after this many hours; 0 = never."""
    webhook_url_env: str = "DWH_ALERT_WEBHOOK_URL"
    """Environment variable holding the webhook URL (it may embed a token); unset = no webhook."""
    webhook_timeout_s: float = 10.0
    """Seconds to wait for the webhook."""
    smtp_host: str = ""
    """SMTP server for email alerts; "" = no email."""
    smtp_port: int = 587
    """SMTP port."""
    smtp_starttls: bool = True
    """Upgrade the SMTP connection with STARTTLS."""
    smtp_user_env: str = "DWH_SMTP_USER"
    """Environment variable holding the SMTP user name (unset = no login)."""
    smtp_password_env: str = "DWH_SMTP_PASSWORD"
    """Environment variable holding the SMTP password."""
    email_from: str = ""
    """Sender address of alert emails."""
    email_to: str = ""
    """Recipients of alert emails, comma-separated."""


@dataclass(frozen=True)
class RetentionSettings:
    """What scripts/cleanup_old_data.py removes, by age in days (0 = keep forever)."""

    raw_batch_days: int = 30
    """Raw batch folders of promoted batches loaded more than this many days ago."""
    staging_days: int = 90
    """Staging rows of promoted batches loaded more than this many days ago."""
    quarantine_resolved_days: int = 90
    """Quarantine rows resolved more than this many days ago."""
    reports_days: int = 30
    """Files in <data_dir>/processed last modified more than this many days ago."""
    logs_days: int = 30
    """Files in log_dir last modified more than this many days ago."""
    health_reports_days: int = 90
    """Rows of ops.health_reports and resolved ops.alerts older than this."""


@dataclass(frozen=True)
class Settings:
    config_path: Path
    """The YAML file these settings came from."""
    data_dir: Path
    """Folder of raw batches, reports and the embedded cluster."""
    log_dir: Path
    """Folder of log files."""
    database_url: str | None = field(default=None, repr=False)
    """Connection URL of an external server; None means the embedded server. Secret."""
    embedded: EmbeddedSettings = field(default_factory=EmbeddedSettings)
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    production: ProductionSettings = field(default_factory=ProductionSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "processed"

    @property
    def pgdata_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def uses_embedded(self) -> bool:
        return self.database_url is None

    def __repr__(self) -> str:
        url = mask_url(self.database_url) if self.database_url else "embedded"
        return (
            f"Settings(config_path={self.config_path}, data_dir={self.data_dir}, "
            f"log_dir={self.log_dir}, database={url}, embedded={self.embedded}, "
            f"generator={self.generator}, production={self.production}, "
            f"quality={self.quality}, warehouse={self.warehouse}, "
            f"scheduler={self.scheduler}, monitoring={self.monitoring}, "
            f"alerts={self.alerts}, retention={self.retention})"
        )

    __str__ = __repr__


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def load_dotenv(path: Path) -> None:
    """Read KEY=VALUE lines of a .env file into os.environ, never overriding what is set."""
    if not path.is_file():
        return
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ConfigError(f"{path} line {number}: expected KEY=VALUE, got {line!r}")
        key, value = line.split("=", 1)
        key = key.strip().removeprefix("export ").strip()
        value = value.strip().strip("'\"")
        os.environ.setdefault(key, value)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """DWH_A__B=v → {"a": {"b": v}}, values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        # DWH_BI_READER_PASSWORD is a secret read by the warehouse stage, not a setting.
        if not name.startswith(ENV_PREFIX) or name in ("DWH_CONFIG", "DWH_BI_READER_PASSWORD"):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        try:
            node[path[-1]] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment variable {name}: not a valid value ({exc})") from exc
    return tree


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Instantiate a settings dataclass from a mapping, checking names and types."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"setting {where}: expected a mapping of keys, got {values!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown setting {where + '.' if where else ''}{unknown[0]}; "
            f"known keys here: {', '.join(sorted(known))}"
        )
    kwargs: dict[str, Any] = {}
    defaults = cls.__dataclass_fields__
    for name, value in values.items():
        key = f"{where}.{name}" if where else name
        default = defaults[name].default
        if default is not None and default.__class__.__name__ == "_MISSING_TYPE":
            default = defaults[name].default_factory()  # type: ignore[misc]
        kwargs[name] = _coerce(default, value, key)
    return cls(**kwargs)


def _coerce(default: Any, value: Any, key: str) -> Any:
    if is_dataclass(default):
        return _build(type(default), value, key)
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            raise ValueError
        if isinstance(default, int):
            if isinstance(value, bool) or int(value) != float(value):
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, dt.date):
            return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting {key}: {value!r} is not a valid {type(default).__name__}"
        ) from None
    return value


def database_url_from_env(environ: Mapping[str, str]) -> str | None:
    """DATABASE_URL, or a URL built from PG* variables when PGHOST is set; else None."""
    if environ.get("DATABASE_URL"):
        return environ["DATABASE_URL"]
    if environ.get("PGHOST"):
        # libpq reads PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE itself from an empty DSN.
        return "postgresql://"
    return None


def load_settings(
    config_path: str | Path | None = None,
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the Settings: defaults < YAML < environment < explicit arguments."""
    if environ is None:
        load_dotenv(Path.cwd() / ".env")
        environ = os.environ
    path = Path(config_path or environ.get("DWH_CONFIG") or DEFAULT_CONFIG)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        from_file = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(from_file, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")

    merged = _merge(from_file, _env_overrides(environ))
    if overrides:
        merged = _merge(merged, overrides)
    if data_dir is not None:
        merged["data_dir"] = str(data_dir)
    for forbidden in ("database_url", "password"):
        if forbidden in merged:
            raise ConfigError(
                f"setting {forbidden} is not allowed in {path}: secrets come from the "
                "environment (DATABASE_URL, PG*, .env) or --database-url"
            )
    resolved_data_dir = Path(merged.pop("data_dir", "./data")).expanduser().resolve()
    log_dir = Path(merged.pop("log_dir", "./logs")).expanduser()
    if not log_dir.is_absolute():
        log_dir = (resolved_data_dir.parent / log_dir).resolve()

    url = database_url or database_url_from_env(environ)
    base = {
        "config_path": path.resolve(),
        "data_dir": resolved_data_dir,
        "log_dir": log_dir,
        "database_url": url,
    }
    sections = _build(_Sections, merged, "")
    return Settings(
        **base,
        embedded=sections.embedded,
        generator=sections.generator,
        pipeline=sections.pipeline,
        production=sections.production,
        quality=sections.quality,
        warehouse=sections.warehouse,
        scheduler=sections.scheduler,
        monitoring=sections.monitoring,
        alerts=sections.alerts,
        retention=sections.retention,
    )


@dataclass(frozen=True)
class _Sections:
    """The YAML sections (everything but the top-level paths)."""

    embedded: EmbeddedSettings = field(default_factory=EmbeddedSettings)
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    production: ProductionSettings = field(default_factory=ProductionSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
