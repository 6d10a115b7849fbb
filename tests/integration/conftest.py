"""A NATS server configured exactly as ``openchat up`` configures it (accounts file from the
member registry, system account for reloads), in a private ``OPENCHAT_HOME``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.cli.home import SECRET_VARS, Home
from services.core import natsconf
from services.core.procs import ManagedProcess, free_port, nats_process
from services.core.service import Service, ServiceContext, serve
from services.core.settings import Settings
from services.devserver.runner import DevserverHandle, arunning_devserver
from tests.connector_harness import Harness, connector_harness


@dataclass
class StackNats:
    home: Home
    proc: ManagedProcess
    url: str

    @property
    def service_password(self) -> str:
        return self.home.secret_env[natsconf.SERVICE_PASSWORD_VAR]


@pytest.fixture
def stack_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    for var in ("OPENCHAT_NATS_URL", "OPENCHAT_REDIS_URL", "OPENCHAT_PUBLIC_NATS_URL", *SECRET_VARS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENCHAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENCHAT_SECRET_KEY_FILE", str(tmp_path / "keys" / "secret.key"))
    return Home.load()


@pytest.fixture
def stack_nats(stack_home: Home, monkeypatch: pytest.MonkeyPatch) -> Iterator[StackNats]:
    layout = stack_home.layout
    port, monitor = free_port(), free_port()
    stack_home.write_accounts()
    layout.nats_conf.write_text(
        natsconf.render_local_conf("127.0.0.1", port, monitor, layout.jetstream_dir, layout.accounts_conf)
    )
    proc = nats_process(
        layout.nats_conf, "127.0.0.1", port, stack_home.secret_env, layout.logs_dir / "nats.log"
    )
    proc.start()
    url = f"nats://127.0.0.1:{port}"
    monkeypatch.setenv("OPENCHAT_NATS_URL", url)
    home = Home.load()
    try:
        yield StackNats(home, proc, url)
    finally:
        proc.stop()


# -- the connector against devservers (shared by the connector test modules) ---------------------
@pytest.fixture
async def harness(nats_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with connector_harness(nats_url, tmp_path) as h:
        yield h


@pytest.fixture
async def family() -> AsyncIterator[DevserverHandle]:
    async with arunning_devserver(seed="family", admin=True) as srv:
        yield srv


@pytest.fixture
async def harbor() -> AsyncIterator[DevserverHandle]:
    async with arunning_devserver(seed="harbor", admin=True) as srv:
        yield srv


async def until(pred: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll state that has no event (a backend's record, a devserver's client count, a command's
    answer)."""

    async def loop() -> None:
        while not await pred():  # noqa: ASYNC110 - HTTP/command state: nothing to await
            await asyncio.sleep(0.05)

    await asyncio.wait_for(loop(), timeout)


@contextlib.asynccontextmanager
async def connector_running(stack: StackNats) -> AsyncIterator[None]:
    """The connector service as ``openchat up`` runs it; yields once its commands are served."""
    from services.connector.app import SERVICE as CONNECTOR

    assert CONNECTOR.setup is not None
    setup = CONNECTOR.setup
    ready = asyncio.Event()
    contexts: list[ServiceContext] = []

    async def setup_then_ready(ctx: ServiceContext) -> None:
        contexts.append(ctx)
        await setup(ctx)
        assert ctx.bus is not None
        await ctx.bus.serve_commands()  # what ``serve`` does next (idempotent)
        await ctx.bus.nc.flush()
        ready.set()

    settings = Settings(service_password=stack.service_password, nats_url=stack.url, http_port=0)
    service = Service(CONNECTOR.name, False, setup_then_ready, teardown=CONNECTOR.teardown)
    task = asyncio.create_task(serve(service, settings))
    try:
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if task in done:
                task.result()  # the service failed to start: raise its error
            raise TimeoutError("the connector service did not start")
        yield
    finally:
        for ctx in contexts:
            ctx.stopping.set()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
