"""docker-compose.yml and deploy/Dockerfile cannot run here (no Docker); check what can be checked statically."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infraprism.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
WORKERS = ["aggregator", "detector", "api"]


def test_compose_has_kafka_kraft_redis_aof_and_the_three_workers():
    assert set(SERVICES) == {"kafka", "redis", *WORKERS}
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, one node
    assert "PLAINTEXT://kafka:9092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    redis_command = SERVICES["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in SERVICES["redis"]["volumes"])


@pytest.mark.parametrize("name", ["kafka", "redis", *WORKERS])
def test_every_service_has_a_health_check(name):
    assert SERVICES[name]["healthcheck"]["test"]


@pytest.mark.parametrize("name", WORKERS)
def test_workers_run_a_real_subcommand_from_the_one_image_against_the_compose_services(name):
    service = SERVICES[name]
    assert service["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert service["environment"]["INFRAPRISM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert service["environment"]["INFRAPRISM_REDIS_URL"] == "redis://redis:6379/0"
    assert service["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    command = service["command"]
    assert command[:2] == ["infraprism", name]
    build_parser().parse_args(command[1:])  # the arguments exist (exits on an unknown one)


def test_the_image_installs_the_three_packages_and_the_readme_it_needs():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for part in ("pyproject.toml README.md", "infraprism", "pipeline", "api"):
        assert f"COPY {part}" in dockerfile
    assert "pip install ." in dockerfile
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split()
    assert {"!infraprism/", "!pipeline/", "!api/", "!pyproject.toml", "!README.md"} <= set(ignore)
