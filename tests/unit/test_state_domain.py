"""The state service's view reducer, as plain code: decoding, windows, typing, presence, profiles."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pydantic import BaseModel

from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import (
    ChatMessage,
    MessageCreated,
    MessageDeleted,
    PresenceChange,
    PresenceEntry,
    PresenceSnapshot,
    ProfileUpdated,
    ServerLeft,
    Typing,
    UserProfile,
)
from services.state import domain
from services.state.domain import (
    DelTyping,
    DropServer,
    InvalidEvent,
    ParsedEvent,
    PutPresence,
    PutProfile,
    PutTyping,
    Reducer,
    ServerIndex,
    WindowPut,
    WindowRemove,
    decode_event,
    sort_key,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def msg(
    mid: str, at: datetime, channel: str = "general", server: str = "srv_a", body: str = "hi"
) -> ChatMessage:
    return ChatMessage(
        id=mid, server_id=server, channel_id=channel, author_uid="u1", body=body, created_at=at
    )


def event(
    kind: str, payload: BaseModel, server: str = "srv_a", member: str = "alice", ts: datetime = T0
) -> ParsedEvent:
    env: EventEnvelope[Any] = cast(Any, EventEnvelope)[type(payload)](
        event_id=f"e:{kind}", server_id=server, type=kind, payload=payload, ts=ts
    )
    return ParsedEvent(member, server, kind, env)


def created(m: ChatMessage) -> ParsedEvent:
    return event("message.created", MessageCreated(message=m), server=m.server_id)


class Window:
    """Applies ops of one channel to a plain dict, as the store does."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}

    def run(self, ops: list[domain.Op]) -> None:
        for op in ops:
            if isinstance(op, WindowPut):
                self.keys[op.message_id] = op.sort_key
            elif isinstance(op, WindowRemove):
                assert self.keys.pop(op.message_id) == op.sort_key

    def ids(self) -> list[str]:
        return [mid for mid, _ in sorted(self.keys.items(), key=lambda kv: kv[1])]


def test_window_is_bounded_ordered_and_deduplicated() -> None:
    reducer = Reducer(window=10)
    index = ServerIndex()
    store = Window()
    # 30 messages arriving out of order, each twice
    order = [(i * 7) % 30 for i in range(30)]
    for i in order + order:
        ops, index = reducer.apply(index, created(msg(f"m{i:02d}", T0 + timedelta(seconds=i))), T0)
        store.run(ops)
    assert store.ids() == [f"m{i:02d}" for i in range(20, 30)]
    assert index.windows["general"].keys == sorted(index.windows["general"].keys)
    assert len(index.windows["general"].by_id) == 10


def test_same_timestamp_orders_by_id_and_older_than_full_window_is_dropped() -> None:
    reducer = Reducer(window=3)
    index, store = ServerIndex(), Window()
    for mid in ("c", "a", "b"):
        ops, index = reducer.apply(index, created(msg(mid, T0)), T0)
        store.run(ops)
    assert store.ids() == ["a", "b", "c"]
    ops, index = reducer.apply(index, created(msg("old", T0 - timedelta(days=1))), T0)
    assert ops == []
    ops, index = reducer.apply(index, created(msg("new", T0 + timedelta(seconds=1))), T0)
    store.run(ops)
    assert store.ids() == ["b", "c", "new"]


def test_delete_and_moved_message() -> None:
    reducer = Reducer(window=5)
    index, store = ServerIndex(), Window()
    for i in range(3):
        ops, index = reducer.apply(index, created(msg(f"m{i}", T0 + timedelta(seconds=i))), T0)
        store.run(ops)
    ops, index = reducer.apply(
        index, event("message.deleted", MessageDeleted(channel_id="general", message_id="m1")), T0
    )
    store.run(ops)
    assert store.ids() == ["m0", "m2"]
    # deleting again, or in another channel, does nothing
    ops, _ = reducer.apply(
        index, event("message.deleted", MessageDeleted(channel_id="general", message_id="m1")), T0
    )
    assert ops == []
    ops, _ = reducer.apply(
        index, event("message.deleted", MessageDeleted(channel_id="other", message_id="m2")), T0
    )
    assert ops == []
    # the same id with another created_at moves instead of duplicating
    ops, index = reducer.apply(index, created(msg("m0", T0 + timedelta(seconds=9))), T0)
    store.run(ops)
    assert store.ids() == ["m2", "m0"]


def test_channels_are_separate_windows() -> None:
    reducer = Reducer(window=2)
    index, a, b = ServerIndex(), Window(), Window()
    for i in range(4):
        ops, index = reducer.apply(index, created(msg(f"x{i}", T0 + timedelta(seconds=i), channel="a")), T0)
        a.run([o for o in ops if getattr(o, "channel_id", None) == "a"])
        ops, index = reducer.apply(index, created(msg(f"y{i}", T0 + timedelta(seconds=i), channel="b")), T0)
        b.run([o for o in ops if getattr(o, "channel_id", None) == "b"])
    assert a.ids() == ["x2", "x3"] and b.ids() == ["y2", "y3"]


def test_typing_expires_after_six_seconds_and_stops() -> None:
    reducer = Reducer(window=10)
    index = ServerIndex()
    t = Typing(channel_id="general", user_uid="u2", device_id="d", is_typing=True)
    ops, index = reducer.apply(index, event("typing", t, ts=T0), T0 + timedelta(seconds=1))
    (put,) = ops
    assert isinstance(put, PutTyping)
    stored = Typing.model_validate_json(put.value)
    assert stored.expires_at == T0 + timedelta(seconds=6)
    assert domain.typing_visible(stored, T0 + timedelta(seconds=5.9))
    assert not domain.typing_visible(stored, T0 + timedelta(seconds=6))
    # a later event prunes the expired indicator
    other = Typing(channel_id="general", user_uid="u3", is_typing=True)
    ops, index = reducer.apply(
        index, event("typing", other, ts=T0 + timedelta(seconds=7)), T0 + timedelta(seconds=7)
    )
    assert isinstance(ops[0], DelTyping) and ops[0].key == put.key
    # an explicit stop removes it
    stop = other.model_copy(update={"is_typing": False})
    ops, index = reducer.apply(
        index, event("typing", stop, ts=T0 + timedelta(seconds=8)), T0 + timedelta(seconds=8)
    )
    assert [type(o) for o in ops] == [DelTyping]
    # a replayed old event is not shown at all
    ops, index = reducer.apply(index, event("typing", t, ts=T0), T0 + timedelta(minutes=5))
    assert ops == []


def test_presence_snapshot_join_leave() -> None:
    reducer = Reducer(window=10)
    index = ServerIndex()
    e1 = PresenceEntry(client_id="c1", user_uid="u1", device_id="d1")
    e2 = PresenceEntry(client_id="c2", user_uid="u2", device_id="d2")
    ops, index = reducer.apply(
        index, event("presence.snapshot", PresenceSnapshot(channel_id="g", members=[e1])), T0
    )
    ops, index = reducer.apply(index, event("presence.joined", PresenceChange(channel_id="g", member=e2)), T0)
    ops, index = reducer.apply(index, event("presence.joined", PresenceChange(channel_id="g", member=e2)), T0)
    (op,) = ops
    assert isinstance(op, PutPresence)
    assert [e["client_id"] for e in json.loads(op.value)] == ["c1", "c2"]
    ops, index = reducer.apply(index, event("presence.left", PresenceChange(channel_id="g", member=e1)), T0)
    assert [e["client_id"] for e in json.loads(ops[0].value)] == ["c2"]  # type: ignore[union-attr]


def test_profile_versions_never_go_back() -> None:
    reducer = Reducer(window=10)
    index = ServerIndex()
    v2 = UserProfile(user_uid="u1", display_name="New", profile_version=2)
    v1 = UserProfile(user_uid="u1", display_name="Old", profile_version=1)
    ops, index = reducer.apply(index, event("profile.updated", ProfileUpdated(profile=v2)), T0)
    assert isinstance(ops[0], PutProfile)
    ops, index = reducer.apply(index, event("profile.updated", ProfileUpdated(profile=v1)), T0)
    assert ops == []


def test_server_left_drops_everything_of_that_server() -> None:
    reducer = Reducer(window=10)
    index = ServerIndex()
    _, index = reducer.apply(index, created(msg("m1", T0)), T0)
    ops, index = reducer.apply(index, event("server.left", ServerLeft(server_id="srv_a")), T0)
    assert ops == [DropServer("alice", "srv_a")]
    assert index.windows == {}


def test_server_updated_replaces_the_record() -> None:
    """A UID mode switch (or a consent change) re-states the record: the view keeps the new one."""
    from services.core.contracts.chat import ServerRecord, ServerUpdated
    from services.state.domain import PutServer

    rec = ServerRecord(
        server_id="srv_a",
        base_url="http://127.0.0.1:1",
        display_name="A",
        icon_text="A",
        trust_state="verified",
        user_uid="uid_0000beef",
        device_id="dev_1",
        profile_consent=None,
        joined_at=T0,
    )
    reducer = Reducer(window=10)
    ops, _ = reducer.apply(ServerIndex(), event("server.updated", ServerUpdated(server=rec)), T0)
    assert ops == [PutServer("alice", "srv_a", rec.model_dump_json())]
    wrong = raw(
        "server.updated", {"server": rec.model_copy(update={"server_id": "srv_b"}).model_dump(mode="json")}
    )
    with pytest.raises(InvalidEvent):
        decode_event("oc.sys.ev.alice.srv_a.server.updated", wrong)


def raw(kind: str, payload: dict[str, Any], server: str = "srv_a", **env: Any) -> bytes:
    body = {"event_id": "e1", "server_id": server, "type": kind, "payload": payload, **env}
    return json.dumps(body).encode()


def test_decode_validates_and_bounds() -> None:
    good = msg("m1", T0).model_dump(mode="json")
    ev = decode_event("oc.sys.ev.alice.srv_a.message.created", raw("message.created", {"message": good}))
    assert ev is not None and ev.member == "alice" and ev.server_id == "srv_a"
    # unknown kinds are ignored, not errors
    assert decode_event("oc.sys.ev.alice.srv_a.voice.speaking", raw("voice.speaking", {})) is None
    bad_cases = [
        ("oc.sys.ev.alice.srv_a.message.created", b"not json"),
        ("oc.sys.ev.alice.srv_a.message.created", raw("message.created", {"message": {"id": "x"}})),
        # envelope server disagrees with the subject
        (
            "oc.sys.ev.alice.srv_b.message.created",
            raw("message.created", {"message": good}, server="srv_b").replace(b'"srv_a"', b'"srv_c"'),
        ),
        # message of another server than the subject says
        ("oc.sys.ev.alice.srv_b.message.created", raw("message.created", {"message": good}, server="srv_b")),
        # control characters in a channel id (would break keys)
        (
            "oc.sys.ev.alice.srv_a.message.created",
            raw("message.created", {"message": {**good, "channel_id": "a\x1fb"}}),
        ),
        (
            "oc.sys.ev.alice.srv_a.message.created",
            raw("message.created", {"message": {**good, "body": "x" * 100_001}}),
        ),
        (
            "oc.sys.ev.alice.srv_a.typing",
            raw("typing", {"channel_id": "", "user_uid": "u", "is_typing": True}),
        ),
        (
            "oc.sys.ev.sys.srv_a.typing",
            raw("typing", {"channel_id": "g", "user_uid": "u", "is_typing": True}),
        ),
        ("oc.alice.evt.srv_a.typing", b"{}"),
    ]
    for subject, data in bad_cases:
        with pytest.raises(InvalidEvent):
            decode_event(subject, data)


def test_sort_key_orders_by_time_then_id() -> None:
    keys = [
        sort_key(T0, "b"),
        sort_key(T0, "a"),
        sort_key(T0 + timedelta(microseconds=1), "a"),
        sort_key(T0.replace(tzinfo=None) - timedelta(hours=1), "z"),  # naive: taken as UTC
    ]
    assert sorted(keys) == [keys[3], keys[1], keys[0], keys[2]]
    assert domain.message_id_of(keys[0]) == "b"


def test_same_timestamp_keeps_arrival_order_and_a_replay_keeps_its_place() -> None:
    reducer = Reducer(window=10)
    index, store = ServerIndex(), Window()
    for seq, mid in enumerate(("msg_f0", "msg_0a", "msg_77"), start=1):  # ids in no particular order
        ev = created(msg(mid, T0))
        ops, index = reducer.apply(index, ParsedEvent(ev.member, ev.server_id, ev.kind, ev.envelope, seq), T0)
        store.run(ops)
    assert store.ids() == ["msg_f0", "msg_0a", "msg_77"]
    again = created(msg("msg_f0", T0))  # republished later (rehydrate): a higher sequence
    ops, index = reducer.apply(
        index, ParsedEvent(again.member, again.server_id, again.kind, again.envelope, 99), T0
    )
    store.run(ops)
    assert store.ids() == ["msg_f0", "msg_0a", "msg_77"]
