"""Fixtures and helpers of the state service's integration tests (no tests here).

Each test gets its own events stream (the stream owns ``oc.sys.ev.>``, so other streams are
removed first, as in test_bus.py) and hence its own key prefix in Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from nats.js.api import PubAck
from pydantic import BaseModel

from services.core.bus import Bus, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import (
    AttachmentRef,
    ChatMessage,
    MessageCreated,
    ServerJoined,
    ServerRecord,
)
from services.state.app import StateRuntime
from services.state.settings import StateSettings

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand (typing expiry)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def fresh_stream(bus: Bus) -> str:
    for info in await bus.js.streams_info():
        assert info.config.name is not None
        await bus.js.delete_stream(info.config.name)
    name = f"OC_ST_{uuid.uuid4().hex[:12]}"
    await bus.ensure_events_stream(name, duplicate_window_s=60)
    return name


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(ConnectOptions(url=nats_url, name="state-test"), first_attempts=3)
    yield b
    await b.close()


@pytest.fixture
async def stream(bus: Bus) -> str:
    return await fresh_stream(bus)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


def state_settings(tmp_path: Path, stream: str, **over: Any) -> StateSettings:
    return StateSettings(
        home=tmp_path / "home", events_stream=stream, message_window=over.pop("window", 20), **over
    )


@pytest.fixture
async def make_state(
    bus: Bus, redis: aioredis.Redis, stream: str, tmp_path: Path, clock: Clock
) -> AsyncIterator[Callable[..., Awaitable[StateRuntime]]]:
    """Start a state runtime (``make_state(window=..., redis_client=...)``), stopped at teardown."""
    started: list[StateRuntime] = []

    async def make(redis_client: aioredis.Redis | None = None, **over: Any) -> StateRuntime:
        rt = StateRuntime(bus, redis_client or redis, state_settings(tmp_path, stream, **over), clock=clock)
        await rt.start()
        started.append(rt)
        await rt.materializer.wait_for(lambda m: m.caught_up)
        return rt

    yield make
    for rt in started:
        await rt.stop()


def record(server_id: str, base_url: str = "http://127.0.0.1:9", uid: str = "uid_alice") -> ServerRecord:
    return ServerRecord(
        server_id=server_id,
        base_url=base_url,
        display_name=server_id.title(),
        icon_text=server_id[:2],
        user_uid=uid,
        device_id="dev_1",
        joined_at=T0,
    )


def message(
    mid: str,
    server_id: str = "srv_a",
    channel_id: str = "general",
    at: datetime | None = None,
    attachments: list[AttachmentRef] | None = None,
) -> ChatMessage:
    return ChatMessage(
        id=mid,
        server_id=server_id,
        channel_id=channel_id,
        author_uid="uid_someone",
        body=f"body of {mid}",
        created_at=at or T0,
        attachments=attachments or [],
    )


async def emit(
    bus: Bus,
    member: str,
    server_id: str,
    kind: str,
    payload: BaseModel,
    event_id: str | None = None,
    ts: datetime | None = None,
    channel_id: str | None = None,
) -> PubAck:
    env: EventEnvelope[Any] = cast(Any, EventEnvelope)[type(payload)](
        event_id=event_id or f"{kind}:{uuid.uuid4().hex}",
        server_id=server_id,
        channel_id=channel_id,
        type=kind,
        payload=payload,
        ts=ts or T0,
    )
    return await bus.publish_event(member, env)


async def join(bus: Bus, member: str, server_id: str, **kw: Any) -> PubAck:
    return await emit(bus, member, server_id, "server.joined", ServerJoined(server=record(server_id, **kw)))


async def post(bus: Bus, member: str, m: ChatMessage, event_id: str | None = None) -> PubAck:
    return await emit(
        bus, member, m.server_id, "message.created", MessageCreated(message=m), event_id or f"msg:{m.id}"
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def applied(rt: StateRuntime, seq: int) -> None:
    await rt.materializer.wait_for(lambda m: m.applied_seq >= seq)


def cmd(member: str, verb: str) -> str:
    return subjects.command(member, "state", verb)
