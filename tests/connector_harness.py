"""Helpers for tests and benchmarks of the connector (real NATS, real devservers; nothing mocked).

- ``FAST``: session timings shortened for tests (backoff ladder in tens of milliseconds);
- ``EventLog`` (from ``testkit.eventlog``): every event of a member as the member receives it (``oc.<member>.evt.>``, after
  JetStream de-duplication and republish), with ``wait_for`` to await a condition without sleeping;
- ``RequestLog``: every HTTP request the connector's ``httpx`` client sends (method, URL, headers),
  recorded by an httpx event hook on the real client;
- ``connector_harness``: a ``Connector`` bound to a bus, with its commands served, plus a second
  bus connection to call them as a member would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
from pydantic import BaseModel

from services.connector.app import bus_batch_sink, bus_sink, register
from services.connector.connector import Connector
from services.connector.previews import PreviewFetcher
from services.connector.session import Timing
from services.core.bus import Bus, CommandError, ConnectOptions
from services.core.contracts import subjects
from testkit.eventlog import EventLog as EventLog  # re-exported: the tests import it from here

T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)

FAST = Timing(
    backoff_s=(0.05, 0.1, 0.2, 0.3, 0.5),
    jitter=0.1,
    echo_wait_s=1.0,
    ws_ping_interval_s=5.0,
    ws_ping_timeout_s=5.0,
    open_timeout_s=5.0,
    reconcile_interval_s=0.0,
)


@dataclass
class RequestLog:
    requests: list[httpx.Request] = field(default_factory=list)

    async def hook(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=5.0), event_hooks={"request": [self.hook]}
        )

    def paths(self, method: str | None = None) -> list[str]:
        return [r.url.path for r in self.requests if method in (None, r.method)]


@dataclass
class Harness:
    bus: Bus
    member_bus: Bus
    connector: Connector
    requests: RequestLog
    logs: dict[str, EventLog] = field(default_factory=dict)  # attached before the connector started

    async def call(
        self, member: str, verb: str, args: BaseModel, result: type[R], timeout: float = 20.0
    ) -> R:
        return await self.member_bus.request(
            subjects.command(member, "connector", verb), args, result, timeout
        )

    async def events(self, member: str) -> EventLog:
        log = EventLog()
        await log.attach(self.member_bus, member)
        await self.member_bus.nc.flush()
        return log


async def _until_answering(harness: Harness) -> None:
    """Readiness: a member's request gets an answer (bounded). Seen once on a loaded CI machine:
    "no responders" right after the subscriptions were flushed; a real answer is the event."""
    from services.core.contracts.chat import ProfileGetArgs, ProfileGetResult

    for _ in range(50):
        try:
            await harness.call("readiness", "profile_get", ProfileGetArgs(), ProfileGetResult)
            return
        except CommandError as exc:
            if exc.code != "service_unavailable":
                return  # it answered (with an error): it is serving
            await asyncio.sleep(0.1)
    raise TimeoutError("the connector under test never answered")


@contextlib.asynccontextmanager
async def connector_harness(
    nats_url: str,
    tmp: Path,
    *,
    timing: Timing = FAST,
    stream: str = "OC_TEST_EVENTS",
    events_of: tuple[str, ...] = (),
    previews: PreviewFetcher | None = None,
) -> AsyncIterator[Harness]:
    """``events_of``: members whose events are recorded from before the connector starts (its
    sessions for servers joined earlier, with the same ``tmp`` home, publish at once)."""
    bus = await Bus.connect(ConnectOptions(url=nats_url, name="connector-test"), first_attempts=3)
    member_bus = await Bus.connect(ConnectOptions(url=nats_url, name="member-test"), first_attempts=3)
    for info in await bus.js.streams_info():
        if info.config.name is not None:
            await bus.js.delete_stream(info.config.name)
    await bus.ensure_events_stream(stream, duplicate_window_s=60)
    requests = RequestLog()
    connector = Connector(
        bus_sink(bus),
        tmp / "home",
        tmp / "secret.key",
        timing=timing,
        http=requests.client(),
        request_timeout_s=10,
        batch_sink=bus_batch_sink(bus),
        previews=previews,
    )
    await register(bus, connector)
    await bus.serve_commands()
    await bus.nc.flush()  # the command subscriptions are at the server before anyone calls
    harness = Harness(bus, member_bus, connector, requests)
    await _until_answering(harness)
    for member in events_of:
        harness.logs[member] = await harness.events(member)
    await connector.start()
    try:
        yield harness
    finally:
        await connector.close()
        await member_bus.close()
        await bus.close()
