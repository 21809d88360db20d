"""docker-compose.yml structure (no Docker engine runs here, so the file itself is checked)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_postgres_service_has_healthcheck_volume_and_env_credentials() -> None:
    postgres = _compose()["services"]["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    env = postgres["environment"]
    assert set(env) >= {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    # credentials come from .env / the environment, never written in the file
    assert all(str(value).startswith("${") for value in env.values())


def test_pipeline_waits_for_a_healthy_database_and_runs_the_orchestrator() -> None:
    compose = _compose()
    pipeline = compose["services"]["pipeline"]
    assert pipeline["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "scripts/pipeline_orchestrator.py run" in " ".join(pipeline["command"])
    url = pipeline["environment"]["DATABASE_URL"]
    assert re.fullmatch(
        r"postgresql://\$\{[^}]+\}:\$\{POSTGRES_PASSWORD\}@postgres:5432/\$\{[^}]+\}", url
    )
    for name in compose.get("volumes", {}):
        assert any(
            v.startswith(f"{name}:")
            for s in compose["services"].values()
            for v in s.get("volumes", [])
        )


def test_env_example_documents_every_variable_compose_uses() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", example, flags=re.M))
    assert used <= documented, used - documented
