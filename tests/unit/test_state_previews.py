"""``message.previews`` in the state service's reducer (plain code), and the notification service
ignoring it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from services.core.bus import Bus
from services.core.contracts.chat import (
    ChatMessage,
    LinkPreview,
    MessageCreated,
    MessageDeleted,
    MessagePreviews,
)
from services.notification.domain import Effects
from services.notification.service import CONSUMED_KINDS, NotificationService
from services.state.domain import (
    InvalidEvent,
    PutPreviews,
    Reducer,
    ServerIndex,
    WindowPut,
    WindowRemove,
    decode_event,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CARD = LinkPreview(url="https://a.test/", site_name="a.test", title="Hello", description="d")


def raw(kind: str, payload: dict[str, Any], channel_id: str | None = "general") -> bytes:
    body = {
        "event_id": "e1",
        "server_id": "srv_a",
        "type": kind,
        "payload": payload,
        "channel_id": channel_id,
    }
    return json.dumps(body).encode()


def created(mid: str, at: datetime) -> bytes:
    m = ChatMessage(
        id=mid, server_id="srv_a", channel_id="general", author_uid="u", body="https://a.test/", created_at=at
    )
    return raw("message.created", MessageCreated(message=m).model_dump(mode="json"))


def previews(mid: str, cards: list[LinkPreview], channel: str = "general") -> bytes:
    payload = MessagePreviews(channel_id=channel, message_id=mid, previews=cards)
    return raw("message.previews", payload.model_dump(mode="json"), channel_id=channel)


def apply(reducer: Reducer, index: ServerIndex, kind: str, data: bytes, seq: int) -> list[Any]:
    ev = decode_event(f"oc.sys.ev.alice.srv_a.{kind}", data, seq)
    assert ev is not None
    ops, _ = reducer.apply(index, ev, T0)
    return ops


def test_previews_of_a_message_in_the_window_are_stored() -> None:
    reducer, index = Reducer(window=2), ServerIndex()
    apply(reducer, index, "message.created", created("m1", T0), 1)
    ops = apply(reducer, index, "message.previews", previews("m1", [CARD]), 2)
    assert ops == [PutPreviews("alice", "srv_a", "general", "m1", f"[{CARD.model_dump_json()}]")]


def test_previews_of_a_message_not_in_the_window_are_ignored() -> None:
    reducer, index = Reducer(window=2), ServerIndex()
    assert apply(reducer, index, "message.previews", previews("never", [CARD]), 1) == []
    for i in range(3):  # m0 is evicted by the third message
        apply(reducer, index, "message.created", created(f"m{i}", T0 + timedelta(seconds=i)), i + 2)
    assert apply(reducer, index, "message.previews", previews("m0", [CARD]), 9) == []
    assert apply(reducer, index, "message.previews", previews("m2", [CARD], channel="other"), 10) == []


def test_a_message_leaving_the_window_takes_its_previews_a_moved_one_keeps_them() -> None:
    reducer, index = Reducer(window=5), ServerIndex()
    apply(reducer, index, "message.created", created("m1", T0), 1)
    moved = apply(reducer, index, "message.created", created("m1", T0 + timedelta(seconds=5)), 2)
    assert [type(op) for op in moved] == [WindowRemove, WindowPut]
    assert moved[0].keep_previews is True
    ev = decode_event(
        "oc.sys.ev.alice.srv_a.message.deleted",
        raw("message.deleted", MessageDeleted(channel_id="general", message_id="m1").model_dump()),
    )
    assert ev is not None
    gone, _ = reducer.apply(index, ev, T0)
    assert len(gone) == 1 and isinstance(gone[0], WindowRemove) and gone[0].keep_previews is False


def test_previews_payload_is_validated_and_bounded() -> None:
    good = MessagePreviews(channel_id="general", message_id="m1", previews=[CARD]).model_dump(mode="json")
    bad = [
        raw("message.previews", good, channel_id="other"),  # envelope channel disagrees
        raw("message.previews", {**good, "previews": [CARD.model_dump()] * 4}),
        raw("message.previews", {**good, "message_id": ""}),
        raw("message.previews", {**good, "channel_id": "a\x1fb"}, channel_id="a\x1fb"),
        raw("message.previews", {**good, "previews": [{**CARD.model_dump(), "title": "t" * 221}]}),
    ]
    for data in bad:
        with pytest.raises(InvalidEvent):
            decode_event("oc.sys.ev.alice.srv_a.message.previews", data)


def test_notification_service_ignores_previews(tmp_path: Path) -> None:
    assert "message.previews" not in CONSUMED_KINDS  # not even delivered to it …
    svc = NotificationService(cast(Bus, None), tmp_path / "registry.sqlite3")
    fx = svc.apply_event("oc.sys.ev.alice.srv_a.message.previews", previews("m1", [CARD]))
    assert fx == Effects()  # … and a no-op if it were
