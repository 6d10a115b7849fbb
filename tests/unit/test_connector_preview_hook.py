"""Which published messages a session offers for link previews: live ones, gap-filled ones at
most 10 minutes old (never a whole history), never a message published before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from services.connector.backend import BackendClient
from services.connector.session import PREVIEW_MAX_AGE, Session
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import ChatMessage, ServerRecord, message_event_id


def record() -> ServerRecord:
    return ServerRecord(
        server_id="srv_a",
        base_url="http://127.0.0.1:1",
        display_name="A",
        icon_text="A",
        trust_state="verified",
        user_uid="uid_a",
        device_id="dev",
        joined_at=datetime.now(UTC),
    )


def message(mid: str, age: timedelta) -> ChatMessage:
    return ChatMessage(
        id=mid,
        server_id="srv_a",
        channel_id="general",
        author_uid="u",
        body="https://a.test/",
        created_at=datetime.now(UTC) - age,
    )


async def test_gap_fill_offers_only_recent_messages_and_each_once() -> None:
    published: list[str] = []
    offered: list[str] = []

    async def sink(member: str, envelope: EventEnvelope[Any]) -> None:
        published.append(envelope.event_id)

    session = Session(
        "alice",
        record(),
        cast(BackendClient, None),
        sink,
        on_new_message=lambda s, m: offered.append(m.id),
    )
    old = message("old", PREVIEW_MAX_AGE + timedelta(minutes=1))
    recent = message("recent", PREVIEW_MAX_AGE - timedelta(minutes=1))
    assert await session.publish_messages([old, recent]) == 2
    assert offered == ["recent"]
    assert await session.publish_messages([old, recent]) == 0  # known: nothing offered again
    assert await session.publish_message(recent, again=True)  # a rehydrate re-publish
    assert offered == ["recent"]
    assert published == [
        message_event_id(old.id, old.created_at),
        message_event_id(recent.id, recent.created_at),
        message_event_id(recent.id, recent.created_at),
    ]
