"""INFRAPRISM_TEST_SERVICES: which services the session fixtures start (tests/conftest.py).

The container path itself needs a Docker engine, which this machine lacks
(docs/testing.md); the choice, the engine probe and the early usage error are
checked here.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from tests.conftest import (
    SERVICES_VARIABLE,
    _kafka_container_class,
    _redis_container_class,
    choose_services,
    docker_engine_answers,
)

CONFTEST = Path(__file__).with_name("conftest.py")


def engine(answer: bool) -> tuple[list[int], object]:
    """A probe that answers `answer`, and the list its calls are counted in."""
    calls: list[int] = []

    def probe() -> bool:
        calls.append(1)
        return answer

    return calls, probe


@pytest.mark.parametrize("value", [None, "", "auto", " AUTO "])
def test_auto_uses_containers_when_an_engine_answers_and_local_processes_otherwise(value):
    assert choose_services(value, engine(True)[1]) == "docker"
    assert choose_services(value, engine(False)[1]) == "local"


def test_local_is_local_without_asking_docker():
    calls, probe = engine(True)
    assert choose_services("local", probe) == "local"
    assert calls == []


def test_docker_with_an_engine_is_docker():
    assert choose_services("docker", engine(True)[1]) == "docker"


def test_docker_without_an_engine_is_a_usage_error_that_says_what_to_do():
    with pytest.raises(pytest.UsageError, match="no Docker engine answers") as raised:
        choose_services("docker", engine(False)[1])
    assert f"{SERVICES_VARIABLE}=local" in str(raised.value)


@pytest.mark.parametrize("value", ["dokcer", "containers", "1", "local,docker"])
def test_an_unknown_value_is_a_usage_error_naming_the_choices(value):
    calls, probe = engine(True)
    with pytest.raises(pytest.UsageError, match="expected one of auto, docker, local"):
        choose_services(value, probe)
    assert calls == []


def test_the_probe_says_no_when_nothing_listens(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    assert docker_engine_answers(timeout_s=1) is False


def test_the_probe_says_no_without_the_docker_sdk(monkeypatch):
    monkeypatch.setitem(sys.modules, "docker", None)  # `import docker` raises ImportError
    assert docker_engine_answers() is False


def test_the_container_classes_have_what_the_fixtures_call():
    """No engine, so no container is made; at least testcontainers' API is the one the fixtures use."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the current module, not a deprecated alias
        kafka, redis = _kafka_container_class(), _redis_container_class()
    for cls, methods in [
        (kafka, ["with_kraft", "with_env", "start", "stop", "get_bootstrap_server"]),
        (redis, ["start", "stop", "get_container_host_ip", "get_exposed_port"]),
    ]:
        assert all(callable(getattr(cls, name, None)) for name in methods), cls
    assert "timeout" in inspect.signature(kafka.start).parameters


# --- the whole conftest, in a pytest run of its own -------------------------------------------


def run_session(tmp_path: Path, value: str, test: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_probe.py").write_text(textwrap.dedent(test))
    env = {**os.environ, SERVICES_VARIABLE: value, "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}"}
    env.pop("INFRAPRISM_TEST_KAFKA_BOOTSTRAP", None)
    env.pop("INFRAPRISM_TEST_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("value", "message"), [("docker", "no Docker engine answers"), ("podman", "expected one of")])
def test_a_bad_choice_stops_the_run_before_any_test(tmp_path, value, message):
    result = run_session(tmp_path, value, "def test_never_runs():\n    raise AssertionError('ran')\n")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert message in result.stderr
    assert "ran" not in result.stdout


def test_auto_without_an_engine_hands_out_local_services(tmp_path):
    test = """
        from infraprism.dev.local_services import Service

        def test_local(services_backend, redis_service, redis_url):
            assert services_backend == "local"
            assert isinstance(redis_service, Service)
            assert redis_url == redis_service.address
    """
    result = run_session(tmp_path, "auto", test)
    assert result.returncode == 0, result.stdout + result.stderr
