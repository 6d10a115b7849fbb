"""The events table, the commands table and the SQLite store base (services/core)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.core.contracts import commands as cmd
from services.core.contracts import events as ev
from services.core.contracts.chat import (
    ChatMessage,
    MessageCreated,
    MessageDeleted,
    ProfileUpdated,
    ServerJoined,
    ServerLeft,
    UserProfile,
)
from services.core.contracts.notify import ReadAckUpdated, read_ack_event_id
from services.core.db import SqliteStore
from testkit import fakes

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def message(mid: str = "m1") -> ChatMessage:
    return fakes.msg("srv_a", "ch_1", mid, "uid_x", "hi", NOW)


def test_event_ids_follow_each_kinds_rule() -> None:
    created = MessageCreated(message=message("m42"))
    # id and creation time: backend ids repeat (ADR 0029)
    assert ev.MESSAGE_CREATED.event_id(created) == "msg:m42@20261204T120000.000000Z"
    deleted = MessageDeleted(channel_id="ch_1", message_id="m42")
    assert ev.MESSAGE_DELETED.event_id(deleted) == "del:m42"
    rec = fakes.record("srv_a", "A", "A", "uid_me")
    assert ev.SERVER_JOINED.event_id(ServerJoined(server=rec)) == f"joined:{rec.joined_at.isoformat()}"
    profile = ProfileUpdated(profile=UserProfile(user_uid="uid_x", display_name="X", profile_version=7))
    assert ev.PROFILE_UPDATED.event_id(profile) == "profile:uid_x:7"
    ack = ReadAckUpdated(channel_id="ch_1", user_uid="uid_me", cursor_index=12)
    assert ev.READ_ACK_UPDATED.event_id(ack) == read_ack_event_id(ack) == "ack:ch_1:uid_me:12"
    a, b = (ev.SERVER_CONNECTION.event_id() for _ in range(2))
    assert a != b and re.fullmatch(r"conn:[0-9a-f]{32}", a)  # fresh: every publication is new
    left = ev.SERVER_LEFT.event_id(ServerLeft(server_id="srv_a"))
    assert left.startswith("left:") and datetime.fromisoformat(left[5:]).tzinfo is not None
    assert ev.SERVER_LEFT.event_id(key="2026-01-01T00:00:00+00:00") == "left:2026-01-01T00:00:00+00:00"


def test_envelopes_carry_the_kind_and_the_channel() -> None:
    env = ev.MESSAGE_CREATED.envelope("srv_a", MessageCreated(message=message()))
    assert (env.type, env.event_id, env.channel_id, env.server_id) == (
        "message.created",
        "msg:m1@20261204T120000.000000Z",
        "ch_1",
        "srv_a",
    )
    back = ev.MESSAGE_CREATED.decode(env.model_dump_json())
    assert back.payload.message.id == "m1"
    with pytest.raises(ValidationError):
        ev.MESSAGE_DELETED.decode(env.model_dump_json())  # another kind's payload


def test_decode_event_types_known_kinds_and_keeps_unknown_ones() -> None:
    doc = fakes.event("message.created", "srv_a", MessageCreated(message=message()), "msg:m1", "ch_1")
    typed = ev.decode_event(5, doc)
    assert isinstance(typed.payload, MessageCreated) and typed.seq == 5 and typed.channel_id == "ch_1"
    unknown = ev.decode_event(6, {**doc, "type": "voice.started", "payload": {"x": 1}})
    assert unknown.payload is None and unknown.kind == "voice.started"
    bad = {**doc, "payload": {"message": {"id": "m1"}}}
    with pytest.raises(ev.InvalidEventError, match=re.escape("an invalid message.created event")):
        ev.decode_event(7, bad)
    assert ev.decode_event(7, bad, strict=False).payload is None


def test_the_tables_list_every_kind_and_command_once() -> None:
    kinds = [row[0] for row in ev.table_rows()]
    assert len(kinds) == len(set(kinds)) >= 19
    assert set(ev.view_payloads()) < set(kinds)
    assert {s.kind for s in ev.published_by("notification")} == {
        "unread.updated",
        "notification",
        "notify.prefs",
        "notify.member",
    }
    assert {s.kind for s in ev.published_by("media")} == {"voice.state", "voice.speaking"}
    assert "voice.state" in ev.view_payloads() and "voice.speaking" not in ev.view_payloads()
    names = [f"{s}.{v}" for s, v, _a, _r in cmd.table_rows()]
    assert len(names) == len(set(names))
    assert cmd.CONSENT.result.__name__ == "JoinResult"  # what the connector answers, for every client
    assert cmd.SET_MUTE.result.__name__ == "NotifyPrefs"
    assert cmd.SEND.subject("alice") == "oc.alice.cmd.connector.send"


def test_registering_is_additive_and_refuses_a_changed_row() -> None:
    spec = ev.EventSpec("test.added", MessageDeleted, "tadd", "fresh", "media", in_view=False)
    try:
        assert ev.register_event(spec) is spec and ev.spec_of("test.added") is spec
        ev.register_event(spec)  # the same row again
        with pytest.raises(ValueError, match="already registered"):
            ev.register_event(ev.EventSpec("test.added", ServerLeft, "x", "fresh", "media"))
    finally:
        ev.EVENTS.pop("test.added", None)
    row = cmd.CommandSpec("media", "test_verb", MessageDeleted, ServerLeft)
    try:
        cmd.register_command(row)
        with pytest.raises(ValueError, match="already registered"):
            cmd.register_command(cmd.CommandSpec("media", "test_verb", ServerLeft, ServerLeft))
    finally:
        cmd.COMMANDS.pop(("media", "test_verb"), None)


class _Notes(SqliteStore):
    SCHEMA = "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"


class _DurableNotes(_Notes):
    DURABLE = True


def test_sqlite_store_base_creates_the_schema_and_opens_short_connections(tmp_path: Path) -> None:
    store = _Notes(tmp_path / "deep" / "notes.db")
    with store._db() as db:
        db.execute("INSERT INTO notes (body) VALUES ('a')")
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = _Notes(tmp_path / "deep" / "notes.db")  # the schema again: kept rows
    with again._db() as db:
        assert db.execute("SELECT body FROM notes").fetchall() == [("a",)]
    with _DurableNotes(tmp_path / "durable.db")._db() as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_message_identity_is_the_id_and_the_instant_of_creation() -> None:
    """Backend ids repeat (32 bits, ADR 0029): the identity adds the creation time, the same
    instant however it is spelled (offset, naive UTC), another instant another identity."""
    from datetime import timedelta, timezone

    from services.core.contracts.chat import message_identity

    at = datetime(2026, 12, 4, 12, 0, 5, tzinfo=UTC)
    same = at.astimezone(timezone(timedelta(hours=2)))
    assert message_identity("msg_1", at) == message_identity("msg_1", same) == "msg_1@20261204T120005.000000Z"
    assert message_identity("msg_1", at.replace(tzinfo=None)) == message_identity("msg_1", at)
    assert message_identity("msg_1", at + timedelta(seconds=1)) != message_identity("msg_1", at)
    assert message_identity("msg_2", at) != message_identity("msg_1", at)
