"""Session publishing: gap-filled pages in acked batches, anchors moved only after the acks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.connector.anchors import AnchorStore
from services.connector.backend import BackendClient, Identity
from services.connector.session import MessageEnvelope, Session, Timing, envelope_class
from services.core.contracts import wire
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import (
    ChannelGroupInfo,
    ChannelInfo,
    ConnectionState,
    MessageCreated,
    message_identity,
)
from testkit import fakes

T0 = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)


def ident(i: int) -> str:
    """The identity of ``wire_page``'s i-th message (id and creation time: ADR 0029)."""
    return message_identity(f"m{i:05d}", T0 + timedelta(seconds=i))


class Sinks:
    """Records what the session publishes; ``fail_batches`` makes the next batches raise."""

    def __init__(self) -> None:
        self.single: list[EventEnvelope[Any]] = []
        self.batches: list[list[EventEnvelope[Any]]] = []
        self.fail_batches = 0

    async def sink(self, member: str, envelope: EventEnvelope[Any]) -> None:
        self.single.append(envelope)

    async def batch(self, member: str, envelopes: Sequence[EventEnvelope[Any]]) -> None:
        if self.fail_batches:
            self.fail_batches -= 1
            raise TimeoutError("no PubAck")
        self.batches.append(list(envelopes))


def wire_page(first: int, count: int, channel: str = "ch_general") -> list[wire.Message]:
    return [
        wire.Message(
            id=f"m{i:05d}",
            channel_id=channel,
            author_uid="uid_poster",
            body=f"hello {i}",
            created_at=(T0 + timedelta(seconds=i)).isoformat(),
        )
        for i in range(first, first + count)
    ]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def session(
    http: httpx.AsyncClient, sinks: Sinks, *, batched: bool = True, anchors: AnchorStore | None = None
) -> Session:
    record = fakes.session_record(T0)
    backend = BackendClient(http, record.base_url, Identity(record.user_uid, record.device_id))
    return Session(
        "alice",
        record,
        backend,
        sinks.sink,
        Timing(publish_window=100),
        anchors=anchors,
        batch_sink=sinks.batch if batched else None,
    )


async def test_a_page_is_published_in_order_in_batches_of_the_window(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    sinks = Sinks()
    store = AnchorStore(tmp_path / "registry.sqlite3", interval_s=60)
    s = session(http, sinks, anchors=store)
    assert await s._publish_page(wire_page(0, 250)) == 250
    assert [len(b) for b in sinks.batches] == [100, 100, 50]
    flat = [e for b in sinks.batches for e in b]
    assert all(type(e) is MessageEnvelope for e in flat)  # the concrete class, no generic lookup
    assert [e.event_id for e in flat] == [f"msg:{ident(i)}" for i in range(250)]
    assert {e.type for e in flat} == {"message.created"}
    assert sinks.single == []  # live publishing is untouched: nothing went one by one
    assert s.known.newest("ch_general") == ident(249)
    assert store.load("alice", "srv_a")["ch_general"].message_id == "m00249"

    # what is known is not published again; a page repeating an id publishes it once
    page = wire_page(200, 60)
    assert await s._publish_page([*page, page[-1]]) == 10
    assert [e.event_id for e in sinks.batches[-1]] == [f"msg:{ident(i)}" for i in range(250, 260)]


async def test_a_failed_batch_moves_neither_known_nor_the_anchor(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    sinks = Sinks()
    store = AnchorStore(tmp_path / "registry.sqlite3", interval_s=60)
    s = session(http, sinks, anchors=store)
    await s._publish_page(wire_page(0, 100))
    sinks.fail_batches = 1
    with pytest.raises(TimeoutError):
        await s._publish_page(wire_page(100, 150))
    # the first window (100..199) failed: nothing of it, nor of what follows, counts as published
    assert s.known.newest("ch_general") == ident(99)
    assert ("ch_general", ident(100)) not in s.known
    assert store.load("alice", "srv_a")["ch_general"].message_id == "m00099"
    # the next gap fill publishes them all again, in order
    assert await s._publish_page(wire_page(100, 150)) == 150
    assert [e.event_id for e in sinks.batches[-2] + sinks.batches[-1]] == [
        f"msg:{ident(i)}" for i in range(100, 250)
    ]
    assert s.known.newest("ch_general") == ident(249)


async def test_without_a_batch_sink_events_go_one_by_one(http: httpx.AsyncClient) -> None:
    sinks = Sinks()
    s = session(http, sinks, batched=False)
    assert await s._publish_page(wire_page(0, 5)) == 5
    assert [e.event_id for e in sinks.single] == [f"msg:{ident(i)}" for i in range(5)]


async def test_late_messages_do_not_move_the_anchor_back(http: httpx.AsyncClient) -> None:
    sinks = Sinks()
    s = session(http, sinks)
    await s._publish_page(wire_page(10, 5))
    await s._publish_page(wire_page(0, 3))  # older messages a backend dropped: published late
    assert s._newest["ch_general"].message_id == "m00014"
    assert s.known.count("ch_general") == 8


async def test_a_batch_wakes_the_echo_waiter_of_a_sent_message(http: httpx.AsyncClient) -> None:
    sinks = Sinks()
    s = session(http, sinks)
    waiter = s._waiters.setdefault("m00003", asyncio.Event())
    await s._publish_page(wire_page(0, 5))
    assert waiter.is_set() and "m00003" not in s._waiters


async def test_text_channels_are_computed_once_per_channel_tree(http: httpx.AsyncClient) -> None:
    def tree(*ids: str) -> list[ChannelGroupInfo]:
        channels = [ChannelInfo(id=i, name=i, type="text", group_id="g") for i in ids]
        voice = ChannelInfo(id="ch_voice", name="v", type="voice", group_id="g")
        return [ChannelGroupInfo(id="g", label="G", kind="text", channels=[*channels, voice])]

    s = session(http, Sinks())
    assert s.text_channels() == []
    s.groups = tree("ch_a", "ch_b")
    first = s.text_channels()
    assert first == ["ch_a", "ch_b"] and s.text_channels() is first
    assert s.is_text_channel("ch_b") and not s.is_text_channel("ch_voice")
    s.groups = tree("ch_a", "ch_c")  # a new tree (refresh_channels assigns a new list)
    assert s.text_channels() == ["ch_a", "ch_c"]
    assert not s.is_text_channel("ch_b") and s.is_text_channel("ch_c")


def test_envelope_classes_are_looked_up_once() -> None:
    assert envelope_class(MessageCreated) is envelope_class(MessageCreated)
    assert envelope_class(ConnectionState) is EventEnvelope[ConnectionState]
