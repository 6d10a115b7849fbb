"""The events stream's per-subject limit (ADR 0009) against a real nats-server: an existing
stream (created by an older release, without it) is migrated in place on start, keeps its events,
its duplicate window and its republish; a subject over the limit drops only its own oldest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg

from services.core.bus import Bus, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.bus import Contract, EventEnvelope

pytestmark = pytest.mark.faults

STREAM = "OC_LIMITS"


class Note(Contract):
    n: int


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(ConnectOptions(url=nats_url, name="limits"), first_attempts=3)
    for info in await b.js.streams_info():
        if info.config.name is not None:
            await b.js.delete_stream(info.config.name)
    yield b
    await b.close()


def note(member_server: str, n: int) -> EventEnvelope[Note]:
    return EventEnvelope[Note](event_id=f"n{n}", server_id=member_server, type="note", payload=Note(n=n))


async def test_existing_stream_is_migrated_and_per_subject_limit_evicts_only_its_own(bus: Bus) -> None:
    # the stream as the previous release created it: no per-subject limit
    await bus.ensure_events_stream(STREAM, duplicate_window_s=60)
    before = await bus.js.stream_info(STREAM)
    assert before.config.max_msgs_per_subject in (None, -1, 0)
    for n in range(3):
        await bus.publish_event("bob", note("srv_b", n))
    for n in range(4):
        await bus.publish_event("alice", note("srv_a", n))

    # upgrade: the same call every service makes at start, now with the limit
    await bus.ensure_events_stream(STREAM, duplicate_window_s=60, max_msgs_per_subject=4)
    info = await bus.js.stream_info(STREAM)
    assert info.config.max_msgs_per_subject == 4
    assert info.config.duplicate_window == 60
    assert info.config.republish is not None and info.config.republish.dest == subjects.REPUBLISH_DEST
    assert info.state.messages == 7  # migrated in place: nothing lost

    received: list[tuple[str, int]] = []
    arrived = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        received.append((msg.subject, int((msg.headers or {}).get("Nats-Sequence", "0"))))
        arrived.set()

    await bus.nc.subscribe("oc.alice.evt.>", cb=on_msg)
    await bus.nc.flush()
    # alice floods her own subject: her oldest go, bob's three stay
    for n in range(4, 50):
        await bus.publish_event("alice", note("srv_a", n))
    # the dedupe window still holds: a re-publish is neither stored nor delivered
    ack = await bus.publish_event("alice", note("srv_a", 49))
    assert ack.duplicate
    await bus.nc.flush()
    bob = await bus.js.stream_info(STREAM, subjects_filter="oc.sys.ev.bob.>")
    alice = await bus.js.stream_info(STREAM, subjects_filter="oc.sys.ev.alice.>")
    assert bob.state.subjects == {subjects.ingest("bob", "srv_b", "note"): 3}
    assert alice.state.subjects == {subjects.ingest("alice", "srv_a", "note"): 4}
    first_bob = await bus.js.get_msg(STREAM, 1)
    assert first_bob.subject == subjects.ingest("bob", "srv_b", "note")  # never evicted by alice

    async def all_arrived() -> None:
        while True:
            arrived.clear()  # cleared before the check: no wake-up is lost
            if len(received) >= 46:
                return
            await arrived.wait()

    await asyncio.wait_for(all_arrived(), 10)
    assert len(received) == 46 and all(s == "oc.alice.evt.srv_a.note" for s, _ in received)
    assert [q for _, q in received] == sorted(q for _, q in received)
