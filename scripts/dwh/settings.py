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
    port: int = 54329
    """TCP port on 127.0.0.1 of the embedded server."""
    database: str = "ecommerce_dwh"
    """Database created inside the embedded server."""
    start_timeout_s: int = 60
    """Seconds to wait for start or stop."""
    os_user_when_root: str = "dwh_postgres"
    """System user the server runs as when we are root."""


@dataclass(frozen=True)
class NextBatchSettings:
    transactions: int = 300
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
    """Rows per chunk when writing CSV files."""


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
            f"generator={self.generator})"
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
        if not name.startswith(ENV_PREFIX) or name == "DWH_CONFIG":
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
    return Settings(**base, embedded=sections.embedded, generator=sections.generator)


@dataclass(frozen=True)
class _Sections:
    """The YAML sections (everything but the top-level paths)."""

    embedded: EmbeddedSettings = field(default_factory=EmbeddedSettings)
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
