"""Presence at 1,000 sessions (issue 16, ADR 0032): presence frames parsed by hand and once per
distinct text for every session of a connector (the same result as the wire models), the
presence window that lengthens with the sessions, the one serialization of a published event,
and the services' event loop."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest

from services.connector.backend import BackendClient, Identity
from services.connector.presence import Change, PresenceFrames, Snapshot, entry_of
from services.connector.session import Session, Timing
from services.core.bus import encode, encoded
from services.core.contracts import events as ev
from services.core.contracts import wire
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import ChannelGroupInfo, ChannelInfo, PresenceEntry
from services.core.contracts.presence import PresenceBatch, PresenceDelta
from services.core.service import loop_factory
from testkit import fakes

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def member(n: int) -> dict[str, str]:
    return {"client_id": f"c{n}", "user_uid": f"uid_{n}", "device_id": f"d{n}"}


def change_frame(kind: str, channel_id: str, m: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"type": kind, "payload": {"channel_id": channel_id, "member": m}, **extra})


def snapshot_frame(channel_id: str, members: list[Any], **extra: Any) -> str:
    payload = {"channel_id": channel_id, "members": members}
    return json.dumps({"type": "chat.presence.snapshot", "payload": payload, **extra})


def by_the_wire_models(raw: str) -> tuple[str, str, list[PresenceEntry | None], Any]:
    """What the general path (pydantic wire models) makes of a presence frame."""
    env = wire.RealtimeEnvelope.model_validate_json(raw)
    if env.type == "chat.presence.snapshot":
        snap = wire.PresenceSnapshotPayload.model_validate(env.payload)
        members = snap.members
        return (
            env.type,
            snap.channel_id,
            [entry_of(m.client_id, m.user_uid, m.device_id) for m in members],
            env.event_id,
        )
    change = wire.PresenceChangePayload.model_validate(env.payload)
    m = change.member
    return env.type, change.channel_id, [entry_of(m.client_id, m.user_uid, m.device_id)], env.event_id


@pytest.mark.parametrize("seed", range(5))
def test_the_hand_parse_gives_what_the_wire_models_give(seed: int) -> None:
    rng = random.Random(seed)
    frames = PresenceFrames()
    for _ in range(300):
        extra: dict[str, Any] = {}
        if rng.random() < 0.5:
            extra["event_id"] = rng.choice([rng.randrange(10**6), f"e{rng.randrange(99)}"])
        if rng.random() < 0.3:
            extra["timestamp"] = "2026-03-01T09:00:00Z"  # Profile B's extra fields are tolerated
        channel = rng.choice(["ch_a", "ch_b"])
        if rng.random() < 0.2:
            people = [member(rng.randrange(50)) for _ in range(rng.randrange(6))]
            if rng.random() < 0.2:
                people.append({"client_id": "c\x07", "user_uid": "u", "device_id": "d"})  # unusable id
            raw = snapshot_frame(channel, people, **extra)
        else:
            m = member(rng.randrange(50))
            if rng.random() < 0.1:
                m["client_id"] = "x" * 300  # over the id bound: an unusable entry
            raw = change_frame(
                rng.choice(["chat.presence.joined", "chat.presence.left"]), channel, m, **extra
            )
        kind, channel_id, entries, event_id = by_the_wire_models(raw)
        found = frames.parse(raw)
        if isinstance(found, Snapshot):
            assert (kind, found.channel_id, found.entries, found.event_id) == (
                kind,
                channel_id,
                entries,
                event_id,
            )
        else:
            assert isinstance(found, Change)
            assert (found.kind, found.channel_id, [found.entry], found.event_id) == (
                kind,
                channel_id,
                entries,
                event_id,
            )


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '{"type": "chat.presence.joined", "payload": [1]}',
        change_frame("chat.presence.joined", "ch_a", {"client_id": 12, "user_uid": "u", "device_id": "d"}),
        change_frame("chat.presence.joined", "ch_a", {"client_id": "c1", "user_uid": "u"}),  # no device id
        change_frame("chat.presence.left", "ch_a", member(1), event_id=1.5),  # an event id of no kind
        change_frame("chat.typing.updated", "ch_a", member(1)),  # not presence
        snapshot_frame("ch_a", [member(1), "c2"]),  # a member that is no object
        json.dumps({"type": "chat.presence.snapshot", "payload": {"channel_id": 7, "members": []}}),
    ],
)
def test_what_is_not_plainly_a_presence_frame_is_left_to_the_general_path(raw: str) -> None:
    assert PresenceFrames().parse(raw) is None


def test_one_parse_serves_every_session_and_the_cache_stays_bounded() -> None:
    frames = PresenceFrames(size=8, max_chars=300)
    raw = change_frame("chat.presence.joined", "ch_a", member(1))
    first = frames.parse(raw)
    again = frames.parse("".join(list(raw)))  # another string object with the same text
    assert again is first and frames.hits == 1
    snap = snapshot_frame("ch_a", [member(1), member(2)])
    parsed = frames.parse(snap)
    assert isinstance(parsed, Snapshot) and isinstance(first, Change)
    assert parsed.entries[0] is first.entry  # entries are interned: one object per ids
    assert frames.parse(snap) is not parsed  # a snapshot goes to one socket: not kept
    for n in range(20):
        frames.parse(change_frame("chat.presence.left", "ch_a", member(n)))
    assert len(frames) == 8
    long = change_frame("chat.presence.joined", "ch_a", {**member(3), "device_id": "d" * 400})
    assert isinstance(frames.parse(long), Change) and long not in frames._frames
    assert len(frames._entries) <= 8 * 8


# -- the session ---------------------------------------------------------------------------------
PUBLISHED = asyncio.Event()  # set by every session's sink


def make_session(
    window_s: float, rate: float = 250.0, peers: int | None = None
) -> tuple[Session, list[EventEnvelope[Any]]]:
    record = fakes.session_record(T0)
    published: list[EventEnvelope[Any]] = []

    async def sink(member: str, envelope: EventEnvelope[Any]) -> None:
        published.append(envelope)
        PUBLISHED.set()

    client = BackendClient(httpx.AsyncClient(), record.base_url, Identity("uid_me", "dev_me"))
    timing = Timing(presence_window_s=window_s, presence_batches_per_s=rate)
    session = Session("alice", record, client, sink, timing, peers=None if peers is None else (lambda: peers))
    channels = [ChannelInfo(id=c, name=c, type="text", group_id="g") for c in ("ch_a", "ch_b")]
    session.groups = [ChannelGroupInfo(id="g", label="g", kind="text", channels=channels)]
    return session, published


async def test_two_sessions_fold_the_same_frame_each_for_its_own_member() -> None:
    alice, to_alice = make_session(0.0)
    bob, to_bob = make_session(0.0)
    raw = change_frame("chat.presence.joined", "ch_a", member(4), event_id=41)
    await alice.handle_frame(raw)
    await bob.handle_frame(raw)
    assert alice._last_event_id == bob._last_event_id == "41"
    for published in (to_alice, to_bob):
        [event] = published
        [delta] = cast(PresenceBatch, event.payload).channels
        assert delta.channel_id == "ch_a" and [e.client_id for e in delta.joined] == ["c4"]
    await alice.stop()
    await bob.stop()


async def test_a_snapshot_on_the_fast_path_drops_an_unusable_entry_and_keeps_the_rest() -> None:
    session, published = make_session(0.0)
    bad = {"client_id": "c\x07", "user_uid": "u", "device_id": "d"}
    await session.handle_frame(snapshot_frame("ch_b", [member(1), bad, member(2)], event_id=9))
    await session.handle_frame(snapshot_frame("ch_other", [member(3)]))  # not a text channel
    await session.handle_frame(snapshot_frame("ch_a", [member(1), "c2"]))  # malformed: dropped, logged
    [event] = published
    assert cast(PresenceBatch, event.payload).channels == [
        PresenceDelta(channel_id="ch_b", snapshot=[PresenceEntry(**member(1)), PresenceEntry(**member(2))])
    ]
    assert session.rejected == 1 and session._last_event_id == "9"
    await session.stop()


def test_the_presence_window_lengthens_past_the_connectors_batch_rate() -> None:
    assert make_session(0.5, 250.0, peers=10)[0].presence_window() == 0.5
    assert make_session(0.5, 250.0, peers=1000)[0].presence_window() == 4.0
    assert make_session(0.5, 0.0, peers=1000)[0].presence_window() == 0.5  # 0: never longer
    assert make_session(0.5, 250.0)[0].presence_window() == 0.5  # no session count known


async def test_a_session_publishes_once_per_lengthened_window() -> None:
    session, published = make_session(0.01, rate=100.0, peers=20)  # 20 sessions / 100 per s: 0.2 s
    assert session.presence_window() == pytest.approx(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(30):
        await session.handle_frame(change_frame("chat.presence.joined", "ch_a", member(n)))
    assert published == []  # within the window: held
    PUBLISHED.clear()
    await asyncio.wait_for(PUBLISHED.wait(), 5)
    assert loop.time() - started >= 0.2
    [event] = published
    assert len(cast(PresenceBatch, event.payload).channels[0].joined) == 30
    await session.stop()


# -- one serialization per published event; the event loop -----------------------------------------
def test_an_event_measured_before_publishing_is_serialized_once() -> None:
    batch = PresenceBatch(channels=[PresenceDelta(channel_id="ch_a", joined=[PresenceEntry(**member(1))])])
    envelope = ev.PRESENCE_BATCH.envelope("srv_a", batch)
    data = encoded(envelope)
    assert encode(envelope) is data  # the sink's encode reuses it
    twin = envelope.model_copy()
    assert encode(twin) == data and encode(twin) is not data  # equal, but not the same object


def test_services_run_on_uvloop_unless_told_otherwise() -> None:
    import uvloop

    assert loop_factory("asyncio") is None
    factory = loop_factory("auto")
    assert factory is uvloop.new_event_loop and loop_factory("uvloop") is factory

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(which()).startswith("uvloop")
