"""Snapshot and event builders for the UI tests and the UI benchmark (contract objects only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import (
    AttachmentRef,
    CapabilitySnapshot,
    ChannelGroupInfo,
    ChannelInfo,
    ChatMessage,
    ConnectionState,
    MentionRef,
    PresenceEntry,
    ReplyRef,
    ServerRecord,
    ServerView,
    Snapshot,
    UserProfile,
)

NOW = datetime.now(UTC).replace(microsecond=0)
ME_TL = "uid_2c203bed"
ME_OP = "uid_77aa0d11"


def record(sid: str, name: str, icon: str, uid: str, url: str = "https://chat.example.test") -> ServerRecord:
    return ServerRecord(
        server_id=sid,
        base_url=url,
        display_name=name,
        icon_text=icon,
        trust_state="verified",
        user_uid=uid,
        device_id="desktop_abcd1234",
        profile_consent=True,
        joined_at=NOW - timedelta(days=3),
    )


def session_record(joined_at: datetime) -> ServerRecord:
    """The one server (``srv_a``, member ``uid_me``) of the connector's session-level unit tests;
    its backend address is never called."""
    return ServerRecord(
        server_id="srv_a",
        base_url="http://127.0.0.1:9",
        display_name="A",
        icon_text="A",
        user_uid="uid_me",
        device_id="dev_me",
        joined_at=joined_at,
    )


def caps(name: str) -> CapabilitySnapshot:
    return CapabilitySnapshot(
        server_name=name,
        build_version="main",
        build_commit="a5ab8f8885bc99",
        max_message_bytes=65536,
        max_upload_bytes=10 * 1024 * 1024,
        features={"attachments": True},
        fetched_at=NOW,
    )


def msg(
    sid: str,
    ch: str,
    mid: str,
    author: str,
    body: str,
    at: datetime,
    *,
    reply_to: ReplyRef | None = None,
    attachments: list[AttachmentRef] | None = None,
    mentions: list[MentionRef] | None = None,
) -> ChatMessage:
    return ChatMessage(
        id=mid,
        server_id=sid,
        channel_id=ch,
        author_uid=author,
        body=body,
        created_at=at,
        reply_to=reply_to,
        attachments=attachments or [],
        mentions=mentions,
    )


def testlab_view(n_messages: int = 0) -> ServerView:
    sid = "srv_testlab"
    groups = [
        ChannelGroupInfo(
            id="grp_voice",
            label="Voice Channels",
            kind="voice",
            channels=[
                ChannelInfo(id="ch_huddle", name="Huddle Room", type="voice", group_id="grp_voice"),
                ChannelInfo(id="ch_pair", name="Pairing Booth", type="voice", group_id="grp_voice"),
            ],
        ),
        ChannelGroupInfo(
            id="grp_text",
            label="test boards",
            kind="text",
            channels=[
                ChannelInfo(id="ch_general", name="test-general", type="text", group_id="grp_text"),
                ChannelInfo(id="ch_qa", name="qa-playground", type="text", group_id="grp_text"),
            ],
        ),
    ]
    yesterday = (NOW - timedelta(days=1)).replace(hour=18, minute=35, second=0)
    today = NOW - timedelta(minutes=30)
    messages = [
        msg(sid, "ch_general", "m1", "uid_tl_1", "TestLab server online.", yesterday),
        msg(
            sid,
            "ch_general",
            "m2",
            "uid_tl_2",
            "Use this channel for integration testing.",
            yesterday + timedelta(minutes=7),
        ),
        msg(sid, "ch_general", "m3", ME_TL, "Whats going on man check this new logo out", today),
        msg(sid, "ch_general", "m4", ME_TL, "asdasdasd", today + timedelta(minutes=2)),
        msg(
            sid,
            "ch_general",
            "m5",
            ME_TL,
            "**bold** _italic_ ~~gone~~ `code` :fire: see https://example.org/x.",
            today + timedelta(minutes=3),
        ),
        msg(
            sid,
            "ch_general",
            "m6",
            "uid_tl_1",
            "Привет, мир! Ελληνικά 你好世界 こんにちは 한국어 and a reply",
            today + timedelta(minutes=4),
            reply_to=ReplyRef(
                message_id="m3", author_uid=ME_TL, preview_text="Whats going on man check this new logo out"
            ),
        ),
        msg(
            sid,
            "ch_general",
            "m7",
            "uid_tl_2",
            "@uid_2c203bed can you check, @uid_tl_1 too?",
            today + timedelta(minutes=12),
        ),
    ]
    for i in range(n_messages):
        messages.append(
            msg(
                sid,
                "ch_general",
                f"bulk{i:06d}",
                f"uid_bulk_{i % 7}",
                f"bulk message number {i}",
                today + timedelta(seconds=300 + i),
            )
        )
    profiles = {
        ME_TL: UserProfile(user_uid=ME_TL, display_name="Vinnie"),
        "uid_tl_1": UserProfile(user_uid="uid_tl_1", display_name="User tl_1"),
        "uid_tl_2": UserProfile(user_uid="uid_tl_2", display_name="User tl_2"),
    }
    presence = {"ch_general": [PresenceEntry(client_id="c1", user_uid=ME_TL, device_id="d1")]}
    return ServerView(
        server=record(sid, "TestLab Server", "TL", ME_TL),
        connection=ConnectionState(state="live"),
        capabilities=caps("TestLab Server"),
        groups=groups,
        messages={"ch_general": messages},
        presence=presence,
        profiles=profiles,
    )


def harbor_view() -> ServerView:
    sid = "srv_harbor"
    groups = [
        ChannelGroupInfo(
            id="grp_text",
            label="general",
            kind="text",
            channels=[
                ChannelInfo(id="ch_general", name="harbor-general", type="text", group_id="grp_text"),
                ChannelInfo(id="ch_ops", name="ops", type="text", group_id="grp_text"),
            ],
        )
    ]
    return ServerView(
        server=record(sid, "Harbor", "OP", ME_OP),
        connection=ConnectionState(state="live"),
        capabilities=caps("Harbor"),
        groups=groups,
        messages={
            "ch_general": [
                msg(sid, "ch_general", "h1", "uid_h_1", "Harbor says hi", NOW - timedelta(hours=2))
            ]
        },
    )


def snapshot(seq: int = 10, n_messages: int = 0) -> Snapshot:
    return Snapshot(seq=seq, servers=[testlab_view(n_messages), harbor_view()])


def event(
    kind: str, sid: str, payload: Any, event_id: str = "e", channel_id: str | None = None
) -> dict[str, Any]:
    env = EventEnvelope[Any](
        event_id=event_id, server_id=sid, channel_id=channel_id, type=kind, payload=payload
    )
    return dict(env.model_dump(mode="json"))
