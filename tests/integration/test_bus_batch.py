"""``Bus.publish_events``: pipelined, acked event publishing against a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DiscardPolicy
from nats.js.errors import APIError, NoStreamResponseError

from services.connector.app import bus_batch_sink
from services.core.bus import Bus, CommandError, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.bus import MAX_BUS_PAYLOAD_BYTES, Contract, EventEnvelope

STREAM = "OC_TEST_EVENTS"


class Note(Contract):
    n: int
    text: str = ""


NoteEnvelope = EventEnvelope[Note]


def notes(first: int, count: int, channel: str = "ch_general") -> list[EventEnvelope[Note]]:
    return [
        NoteEnvelope(
            event_id=f"msg_{i:06d}",
            server_id="srv_a",
            channel_id=channel,
            type="message.created",
            payload=Note(n=i),
        )
        for i in range(first, first + count)
    ]


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(ConnectOptions(url=nats_url, name="test-batch"), first_attempts=3)
    yield b
    await b.close()


@pytest.fixture
async def stream(bus: Bus) -> str:
    for info in await bus.js.streams_info():
        assert info.config.name is not None
        await bus.js.delete_stream(info.config.name)
    await bus.ensure_events_stream(STREAM, duplicate_window_s=60)
    return STREAM


async def stored_ns(bus: Bus, count: int) -> list[int]:
    """The ``n`` of every stored event, in stream order."""
    out: list[int] = []
    for seq in range(1, count + 1):
        msg = await bus.js.get_msg(STREAM, seq)
        assert msg.data is not None
        out.append(NoteEnvelope.model_validate_json(msg.data).payload.n)
    return out


async def test_order_is_kept_in_the_stream_and_acks_come_back_in_order(bus: Bus, stream: str) -> None:
    envelopes = notes(0, 1000)
    acks = await bus.publish_events("alice", envelopes, window=64)
    assert [a.seq for a in acks] == list(range(1, 1001))
    assert not any(a.duplicate for a in acks)
    assert all(a.stream == stream for a in acks)
    assert await stored_ns(bus, 1000) == list(range(1000))


async def test_a_window_that_does_not_divide_the_batch_and_mixed_subjects(bus: Bus, stream: str) -> None:
    envelopes = [
        env.model_copy(update={"type": "typing" if env.payload.n % 3 == 0 else "message.created"})
        for env in notes(0, 95)
    ]
    envelopes += [env.model_copy(update={"server_id": "srv_b"}) for env in notes(95, 5)]
    acks = await bus.publish_events("alice", envelopes, window=10)
    assert [a.seq for a in acks] == list(range(1, 101))
    assert await stored_ns(bus, 100) == list(range(100))
    typing = await bus.js.get_msg(stream, 1)
    assert typing.subject == subjects.ingest("alice", "srv_a", "typing")
    other = await bus.js.get_msg(stream, 100)
    assert other.subject == subjects.ingest("alice", "srv_b", "message.created")


async def test_stored_events_are_republished_to_the_member_in_order(bus: Bus, stream: str) -> None:
    got: list[Msg] = []
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        got.append(msg)
        if len(got) == 300:
            done.set()

    await bus.nc.subscribe(subjects.events_of_member("alice"), cb=on_msg)
    await bus.nc.flush()
    await bus.publish_events("alice", notes(0, 300), window=50)
    await asyncio.wait_for(done.wait(), 10)
    assert [NoteEnvelope.model_validate_json(m.data).payload.n for m in got] == list(range(300))
    assert {m.subject for m in got} == {"oc.alice.evt.srv_a.message.created"}


async def test_duplicates_are_deduplicated_by_msg_id(bus: Bus, stream: str) -> None:
    first = await bus.publish_events("alice", notes(0, 200), window=32)
    # re-publish an overlapping batch (a gap fill that failed half-way and starts again)
    again = await bus.publish_events("alice", notes(100, 200), window=32)
    assert [a.duplicate for a in again[:100]] == [True] * 100
    assert [a.seq for a in again[:100]] == [a.seq for a in first[100:]]
    assert not any(a.duplicate for a in again[100:])
    assert [a.seq for a in again[100:]] == list(range(201, 301))
    # the same ids for another member are other events (the key is scoped by member)
    other = await bus.publish_events("bob", notes(0, 10))
    assert not any(a.duplicate for a in other)
    info = await bus.js.stream_info(stream)
    assert info.state.messages == 310
    assert await stored_ns(bus, 300) == list(range(300))


async def test_empty_batch_publishes_nothing(bus: Bus, stream: str) -> None:
    assert await bus.publish_events("alice", []) == []
    assert (await bus.js.stream_info(stream)).state.messages == 0


async def test_an_error_ack_mid_batch_raises(bus: Bus, stream: str) -> None:
    info = await bus.js.stream_info(stream)
    config = info.config
    config.max_msgs = 150
    config.discard = DiscardPolicy.NEW  # the 151st event is refused with an error ack
    await bus.js.update_stream(config)
    with pytest.raises(APIError):
        await bus.publish_events("alice", notes(0, 400), window=100)
    assert (await bus.js.stream_info(stream)).state.messages == 150
    assert await stored_ns(bus, 150) == list(range(150))


async def test_no_stream_raises(bus: Bus, stream: str) -> None:
    await bus.js.delete_stream(stream)
    with pytest.raises(NoStreamResponseError):
        await bus.publish_events("alice", notes(0, 20))


async def test_no_ack_within_the_timeout_raises(bus: Bus, stream: str) -> None:
    # a plain subscriber takes the subjects instead of the stream: it listens, never acks
    await bus.js.delete_stream(stream)
    silent = await bus.nc.subscribe(subjects.INGEST_WILDCARD)
    await bus.nc.flush()
    with pytest.raises(NatsTimeoutError):
        await bus.publish_events("alice", notes(0, 20), timeout=0.3)
    await silent.unsubscribe()
    # the pending-publish slots were released: a later batch works
    await bus.ensure_events_stream(STREAM, duplicate_window_s=60)
    assert len(await bus.publish_events("alice", notes(0, 20))) == 20


async def test_an_event_too_large_publishes_nothing(bus: Bus, stream: str) -> None:
    envelopes = notes(0, 5)
    big = envelopes[2].model_copy(update={"payload": Note(n=2, text="x" * MAX_BUS_PAYLOAD_BYTES)})
    with pytest.raises(CommandError) as refused:
        await bus.publish_events("alice", [*envelopes[:2], big, *envelopes[3:]])
    assert refused.value.code == "payload_too_large"
    assert (await bus.js.stream_info(stream)).state.messages == 0


async def test_window_must_be_positive(bus: Bus, stream: str) -> None:
    with pytest.raises(ValueError):
        await bus.publish_events("alice", notes(0, 1), window=0)


async def test_the_connector_batch_sink_drops_only_an_event_too_large(bus: Bus, stream: str) -> None:
    envelopes = notes(0, 5)
    big = envelopes[2].model_copy(update={"payload": Note(n=2, text="x" * MAX_BUS_PAYLOAD_BYTES)})
    await bus_batch_sink(bus)("alice", [*envelopes[:2], big, *envelopes[3:]])
    assert (await bus.js.stream_info(stream)).state.messages == 4
    assert await stored_ns(bus, 4) == [0, 1, 3, 4]
