"""Coalesced presence (issue 16, ADR 0022): the connector's ``PresenceCoalescer``, the
``presence.batch`` contract, the state reducer and the desktop's model agree with applying every
original change one by one; the per-member join locks of the connector."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest

from services.connector.backend import BackendClient, Identity
from services.connector.connector import KeyedLocks
from services.connector.presence import PresenceCoalescer
from services.connector.session import Session, Timing
from services.core.contracts import events as ev
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import ChannelGroupInfo, ChannelInfo, PresenceEntry, Typing
from services.core.contracts.presence import (
    MAX_BATCH_ENTRIES,
    PresenceBatch,
    PresenceDelta,
    apply_delta,
)
from services.state.domain import InvalidEvent, ParsedEvent, PutPresence, Reducer, ServerIndex, decode_event
from testkit import fakes
from ui.state.model import ViewModel

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
Change = tuple[str, str, list[PresenceEntry]]  # (kind, channel, entries)


def entry(n: int, uid: int | None = None) -> PresenceEntry:
    return PresenceEntry(client_id=f"c{n}", user_uid=f"uid_{n if uid is None else uid}", device_id=f"d{n}")


def one_by_one(changes: list[Change]) -> dict[str, dict[str, PresenceEntry]]:
    """What a consumer of the old kinds ends with: every change applied in order."""
    view: dict[str, dict[str, PresenceEntry]] = {}
    for kind, ch, entries in changes:
        if kind == "snapshot":
            view[ch] = {e.client_id: e for e in entries}
        elif kind == "joined":
            view.setdefault(ch, {})[entries[0].client_id] = entries[0]
        else:
            view.setdefault(ch, {}).pop(entries[0].client_id, None)
    return view


def fold(co: PresenceCoalescer, changes: list[Change]) -> None:
    for kind, ch, entries in changes:
        if kind == "snapshot":
            co.snapshot(ch, entries)
        elif kind == "joined":
            co.joined(ch, entries[0])
        else:
            co.left(ch, entries[0])


def apply_batches(view: dict[str, dict[str, PresenceEntry]], batches: list[PresenceBatch]) -> None:
    for batch in batches:
        for delta in batch.channels:
            view[delta.channel_id] = apply_delta(view.get(delta.channel_id), delta)


def random_changes(rng: random.Random, count: int, clients: int = 30) -> list[Change]:
    out: list[Change] = []
    for _ in range(count):
        ch = rng.choice(["ch_a", "ch_b", "ch_c"])
        roll = rng.random()
        if roll < 0.05:
            members = rng.sample(range(clients), rng.randint(0, clients // 2))
            out.append(("snapshot", ch, [entry(n) for n in members]))
        else:
            n = rng.randrange(clients)
            out.append(("joined" if roll < 0.6 else "left", ch, [entry(n)]))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_batches_give_exactly_the_view_of_every_change_applied_in_order(seed: int) -> None:
    rng = random.Random(seed)
    changes = random_changes(rng, 400)
    co = PresenceCoalescer()
    view: dict[str, dict[str, PresenceEntry]] = {}
    expected_prefix: list[Change] = []
    position = 0
    while position < len(changes):  # windows of random length, taken in between
        step = rng.randint(1, 60)
        fold(co, changes[position : position + step])
        expected_prefix += changes[position : position + step]
        position += step
        pending = co.entries
        batches = co.take(max_entries=rng.choice([3, 17, MAX_BATCH_ENTRIES]))
        assert pending == sum(d.size for batch in batches for d in batch.channels)
        apply_batches(view, batches)
        assert not co and co.entries == 0
        want = one_by_one(expected_prefix)
        assert {ch: v for ch, v in view.items() if v or ch in want} == {
            ch: v for ch, v in want.items() if v or ch in view
        }


def test_a_window_of_many_changes_is_one_small_event() -> None:
    co = PresenceCoalescer()
    for n in range(200):  # 200 clients come and go, 50 stay
        co.joined("ch_a", entry(n))
    for n in range(50, 200):
        co.left("ch_a", entry(n))
    co.joined("ch_a", entry(7))  # again: the last change wins
    assert co.frames == 351
    [batch] = co.take()
    [delta] = batch.channels
    assert delta.snapshot is None
    assert sorted(e.client_id for e in delta.joined) == sorted(f"c{n}" for n in range(50))
    assert len(delta.left) == 150  # lefts are kept: a desktop clears those users' typing
    assert not {e.client_id for e in delta.joined} & {e.client_id for e in delta.left}


def test_a_snapshot_supersedes_earlier_changes_and_absorbs_later_joins() -> None:
    co = PresenceCoalescer()
    co.joined("ch_a", entry(1))
    co.left("ch_a", entry(2))
    co.snapshot("ch_a", [entry(3), entry(4)])
    co.joined("ch_a", entry(5))
    co.left("ch_a", entry(3))
    [batch] = co.take()
    [delta] = batch.channels
    assert [e.client_id for e in delta.snapshot or []] == ["c4", "c5"]
    assert delta.joined == [] and [e.client_id for e in delta.left] == ["c3"]
    assert set(apply_delta({"c9": entry(9)}, delta)) == {"c4", "c5"}


def test_big_deltas_are_split_within_the_bound_and_keep_their_meaning() -> None:
    co = PresenceCoalescer()
    co.snapshot("ch_a", [entry(n) for n in range(2_500)])
    for n in range(2_500, 3_100):
        co.joined("ch_a", entry(n))
    co.left("ch_a", entry(0))
    co.joined("ch_b", entry(1))
    batches = co.take()
    assert all(sum(max(1, d.size) for d in b.channels) <= MAX_BATCH_ENTRIES for b in batches)
    assert next(d.snapshot is not None for b in batches for d in b.channels if d.channel_id == "ch_a")
    view: dict[str, dict[str, PresenceEntry]] = {}
    apply_batches(view, batches)
    assert set(view["ch_a"]) == {f"c{n}" for n in range(1, 3_100)} and set(view["ch_b"]) == {"c1"}
    for batch in batches:  # each within the state service's event limit (1 MiB) at the id bounds
        envelope = ev.PRESENCE_BATCH.envelope("srv_a", batch)
        assert len(envelope.model_dump_json()) < 1024 * 1024


def test_an_emptied_channel_is_published_as_an_empty_snapshot() -> None:
    co = PresenceCoalescer()
    co.snapshot("ch_a", [])
    [batch] = co.take()
    assert batch.channels == [PresenceDelta(channel_id="ch_a", snapshot=[])]
    assert apply_delta({"c1": entry(1)}, batch.channels[0]) == {}


def test_restored_batches_go_under_newer_changes() -> None:
    co = PresenceCoalescer()
    co.joined("ch_a", entry(1))
    co.joined("ch_a", entry(2))
    failed = co.take()  # the bus refused them
    co.left("ch_a", entry(1))  # newer
    co.snapshot("ch_b", [entry(3)])
    co.restore(failed)
    view: dict[str, dict[str, PresenceEntry]] = {}
    apply_batches(view, co.take())
    assert set(view["ch_a"]) == {"c2"} and set(view["ch_b"]) == {"c3"}


def test_has_left_names_a_pending_left_of_the_user() -> None:
    co = PresenceCoalescer()
    co.left("ch_a", entry(1, uid=42))
    assert co.has_left("ch_a", "uid_42") and not co.has_left("ch_b", "uid_42")
    co.joined("ch_a", entry(1, uid=42))
    assert not co.has_left("ch_a", "uid_42")


# -- the state service's reducer ----------------------------------------------------------------------
def parsed(batch: PresenceBatch, seq: int = 1) -> ParsedEvent:
    envelope: EventEnvelope[PresenceBatch] = ev.PRESENCE_BATCH.envelope("srv_a", batch)
    data = envelope.model_dump_json().encode()
    event = decode_event("oc.sys.ev.alice.srv_a.presence.batch", data, seq)
    assert event is not None
    return event


def test_the_reducer_applies_a_batch_with_one_write_per_channel() -> None:
    reducer, index = Reducer(window=10), ServerIndex()
    first = PresenceBatch(
        channels=[
            PresenceDelta(channel_id="g", snapshot=[entry(1), entry(2)]),
            PresenceDelta(channel_id="h", joined=[entry(3)]),
        ]
    )
    ops, index = reducer.apply(index, parsed(first), T0)
    assert [type(op) for op in ops] == [PutPresence, PutPresence]
    second = PresenceBatch(channels=[PresenceDelta(channel_id="g", joined=[entry(4)], left=[entry(1)])])
    ops, index = reducer.apply(index, parsed(second, 2), T0)
    assert [op.channel_id for op in ops if isinstance(op, PutPresence)] == ["g"]
    assert set(index.presence["g"]) == {"c2", "c4"} and set(index.presence["h"]) == {"c3"}


def test_the_state_service_refuses_a_batch_over_the_bound() -> None:
    too_big = PresenceBatch(
        channels=[PresenceDelta(channel_id="g", joined=[entry(n) for n in range(MAX_BATCH_ENTRIES + 1)])]
    )
    with pytest.raises(InvalidEvent, match="too large"):
        parsed(too_big)
    bad_id = PresenceBatch(
        channels=[PresenceDelta(channel_id="g", joined=[entry(1).model_copy(update={"client_id": "a\x00"})])]
    )
    with pytest.raises(InvalidEvent, match="client id"):
        parsed(bad_id)


# -- per-member locks ------------------------------------------------------------------------------
async def test_keyed_locks_exclude_one_key_and_let_others_run() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    release = asyncio.Event()

    async def hold(key: str, name: str) -> None:
        async with locks.hold(key):
            order.append(f"{name} in")
            if name == "a1":
                await release.wait()
            order.append(f"{name} out")

    a1 = asyncio.create_task(hold("alice", "a1"))
    await asyncio.sleep(0)
    a2 = asyncio.create_task(hold("alice", "a2"))
    b1 = asyncio.create_task(hold("bob", "b1"))
    await b1  # bob's runs while alice's first is held
    assert order == ["a1 in", "b1 in", "b1 out"] and locks.locked("alice") and not a2.done()
    release.set()
    await asyncio.gather(a1, a2)
    assert order[3:] == ["a1 out", "a2 in", "a2 out"]
    assert len(locks) == 0  # nobody holds or waits: nothing kept


# -- the session's presence path (no backend is called: frames are handed to it) -------------------
def make_session(window_s: float = 0.0) -> tuple[Session, list[EventEnvelope[Any]]]:
    record = fakes.session_record(T0)
    published: list[EventEnvelope[Any]] = []

    async def sink(member: str, envelope: EventEnvelope[Any]) -> None:
        published.append(envelope)

    client = BackendClient(httpx.AsyncClient(), record.base_url, Identity("uid_me", "dev_me"))
    session = Session("alice", record, client, sink, Timing(presence_window_s=window_s))
    channels = [ChannelInfo(id=c, name=c, type="text", group_id="g") for c in ("ch_a", "ch_b")]
    session.groups = [ChannelGroupInfo(id="g", label="g", kind="text", channels=channels)]
    return session, published


def frame(kind: str, channel_id: str, client_id: Any, **extra: Any) -> str:
    member = {"client_id": client_id, "user_uid": "uid_x", "device_id": "dev_x"}
    return json.dumps({"type": kind, "payload": {"channel_id": channel_id, "member": member}, **extra})


async def test_presence_frames_become_batches_and_bad_ones_are_dropped() -> None:
    session, published = make_session()
    await session.handle_frame(frame("chat.presence.joined", "ch_a", "c1", event_id=7))
    assert session._last_event_id == "7"
    await session.handle_frame(frame("chat.presence.joined", "ch_a", 12))  # not a string: refused
    await session.handle_frame(frame("chat.presence.joined", "ch_a", "c" * 300))  # over the id bound
    await session.handle_frame(frame("chat.presence.joined", "ch_a", "c\x07"))  # a control character
    await session.handle_frame(frame("chat.presence.joined", "ch_other", "c2"))  # not a text channel
    await session.handle_frame(frame("chat.presence.left", "ch_a", "c1"))
    await session.handle_frame('{"type": "chat.presence.joined", "payload": [1]}')  # malformed
    kinds = [e.type for e in published]
    assert kinds == ["presence.batch", "presence.batch"]
    first, second = (cast(PresenceBatch, e.payload) for e in published)
    assert [e.client_id for d in first.channels for e in d.joined] == ["c1"]
    assert [e.client_id for d in second.channels for e in d.left] == ["c1"]
    assert session.rejected == 1  # the unusable ids: counted (and logged) once
    await session.stop()


async def test_a_window_folds_a_burst_into_one_event_and_typing_does_not_overtake_a_left() -> None:
    session, published = make_session(window_s=3600.0)  # the window never ends in this test
    for n in range(50):
        await session.handle_frame(frame("chat.presence.joined", "ch_b", f"c{n}"))
    await session.handle_frame(frame("chat.presence.left", "ch_b", "c3"))
    assert published == [] and session.presence.entries == 50
    typing = {
        "type": "chat.typing.updated",
        "payload": {
            "channel_id": "ch_b",
            "is_typing": True,
            "member": {"client_id": "c9", "user_uid": "uid_x", "device_id": "d"},
        },
    }
    await session.handle_frame(json.dumps(typing))  # uid_x has a pending left: presence first
    assert [e.type for e in published] == ["presence.batch", "typing"]
    [delta] = cast(PresenceBatch, published[0].payload).channels
    assert len(delta.joined) == 49 and [e.client_id for e in delta.left] == ["c3"]
    await session.stop()


# -- the desktop's model ----------------------------------------------------------------------------
def test_the_desktop_applies_a_batch_with_the_typing_rules_of_the_old_kinds() -> None:
    model = ViewModel()
    model.apply_snapshot(fakes.snapshot(seq=10))
    sid, ch = "srv_testlab", "ch_general"
    for seq, uid in ((11, "uid_a"), (12, "uid_b"), (13, "uid_c")):
        typing = Typing(channel_id=ch, user_uid=uid, is_typing=True)
        model.apply_event(seq, fakes.event("typing", sid, typing))
    a, b, c = (PresenceEntry(client_id=f"c_{u}", user_uid=f"uid_{u}", device_id="d") for u in "abc")
    first = PresenceBatch(channels=[PresenceDelta(channel_id=ch, snapshot=[a, b, c])])
    model.apply_event(14, fakes.event("presence.batch", sid, first))
    assert set(model.servers[sid].presence[ch]) == {"c_a", "c_b", "c_c"}
    second = PresenceBatch(channels=[PresenceDelta(channel_id=ch, left=[b])])  # b left: not typing
    model.apply_event(15, fakes.event("presence.batch", sid, second))
    third = PresenceBatch(channels=[PresenceDelta(channel_id=ch, snapshot=[a])])  # c absent now
    model.apply_event(16, fakes.event("presence.batch", sid, third))
    assert set(model.servers[sid].presence[ch]) == {"c_a"}
    assert set(model.servers[sid].typing[ch]) == {"uid_a"}
