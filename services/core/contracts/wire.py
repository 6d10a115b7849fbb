"""Pydantic models of every OpenChat backend payload (``shared/protocol/openchat-wire.md``).

Two audiences:

* the client side of the stack validates what a backend sends with these models.  They are
  **tolerant**: unknown keys are kept (``extra="allow"``) and every Profile B key is optional with a
  neutral default (``None`` / ``""``), so one model parses both the public backend (Profile A) and a
  fuller server (Profile B);
* the devserver builds its responses from them.  Field order is the order the public backend
  writes (Go struct order, or alphabetical where the backend serialises a map), so
  ``model_dump(exclude_none=True)`` — or ``exclude`` of the Profile B keys — reproduces the bytes of
  the golden fixtures.

Times are kept as the RFC 3339 strings the server sent (``created_at`` …); ids are opaque strings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AvatarAsset",
    "Capabilities",
    "CapabilityDisplayName",
    "CapabilityFeatures",
    "CapabilityLimits",
    "CapabilityProfile",
    "CapabilityRtc",
    "CapabilitySecurity",
    "CapabilityTransport",
    "CategoryCreatedEvent",
    "CategoryUpdatedEvent",
    "Channel",
    "ChannelCreatedEvent",
    "ChannelGroup",
    "ChannelLayoutUpdatedEvent",
    "ChannelList",
    "ChatErrorPayload",
    "ConnectionPolicy",
    "ErrorBody",
    "HealthStatus",
    "IceServer",
    "JoinTicket",
    "JoinTicketPermissions",
    "LeaveResult",
    "Member",
    "MemberList",
    "Mention",
    "MentionCandidate",
    "MentionRange",
    "MentionResolveResponse",
    "Message",
    "MessageCreateResponse",
    "MessageCreatedPayload",
    "MessageDeletedPayload",
    "MessageList",
    "Moderation",
    "OwnershipClaim",
    "OwnershipClaimed",
    "PongPayload",
    "PresenceChangePayload",
    "PresenceMember",
    "PresenceSnapshotPayload",
    "Profile",
    "ProfileBatch",
    "ProfileUpdatedPayload",
    "ReadAck",
    "ReadAckResponse",
    "ReadAckUpdatedPayload",
    "RealtimeEnvelope",
    "ReplyTo",
    "ServerCreateResponse",
    "ServerDirectory",
    "ServerEntry",
    "ServerSettings",
    "ServerUpdatedEvent",
    "SignalingEnvelope",
    "SubscriptionPayload",
    "TypingUpdatedPayload",
    "WireModel",
]


class WireModel(BaseModel):
    """Base of every wire model: tolerant of unknown keys (Profile B servers add some)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------- errors, health


class ErrorBody(WireModel):
    """The flat error envelope ``{code, message, retryable}``; Profile B may add ``details``."""

    code: str
    message: str = ""
    retryable: bool = False
    details: Any = None


class HealthStatus(WireModel):
    status: str


# --------------------------------------------------------------------------- directory


class ServerEntry(WireModel):
    """One ``GET /v1/servers`` entry. ``description``/``banner_preset`` are Profile B (default ``""``)."""

    server_id: str
    display_name: str
    icon_text: str = ""
    trust_state: str = ""
    identity_handshake_strategy: str = ""
    user_identifier_policy: str = ""
    description: str = ""
    banner_preset: str = ""


class ServerDirectory(WireModel):
    servers: list[ServerEntry]


class LeaveResult(WireModel):
    """``DELETE /v1/servers/{id}/membership`` (keys alphabetical on the wire)."""

    left: bool
    left_at: str
    server_id: str
    user_uid: str


# --------------------------------------------------------------------------- channels, members


class Channel(WireModel):
    id: str
    name: str
    type: Literal["text", "voice"] | str
    unread_count: int | None = None  # Profile B (``server_unread_counts``)


class ChannelGroup(WireModel):
    id: str
    label: str
    kind: Literal["text", "voice"] | str
    channels: list[Channel] = Field(default_factory=list)


class ChannelList(WireModel):
    """``GET /v1/servers/{id}/channels`` (``groups`` before ``server_id`` on the wire)."""

    groups: list[ChannelGroup]
    server_id: str


class Member(WireModel):
    id: str
    name: str
    status: str


class MemberList(WireModel):
    members: list[Member]
    server_id: str


# --------------------------------------------------------------------------- messages


class ReplyTo(WireModel):
    """``reply_to`` block; ``author_display_name`` holds the author's **uid** on the public backend."""

    message_id: str
    author_uid: str = ""
    author_display_name: str = ""
    preview_text: str = ""
    is_unavailable: bool = False


class Attachment(WireModel):
    attachment_id: str
    file_name: str
    url: str
    width: int
    height: int
    content_type: str
    bytes: int


class MentionRange(WireModel):
    start: int
    end: int


class Mention(WireModel):
    """Profile B mention metadata on a message."""

    type: Literal["user", "channel"] | str
    token: str = ""
    target_id: str = ""
    display_text: str = ""
    range: MentionRange | None = None


def _body_text(value: Any) -> Any:
    """Profile B bodies may be objects ``{text|markdown|value|body}``; reduce them to text."""
    if isinstance(value, dict):
        for key in ("text", "markdown", "value", "body"):
            inner = value.get(key)
            if isinstance(inner, str):
                return inner
        return ""
    if value is None:
        return ""
    return value


class Message(WireModel):
    """A chat message (§7). ``reply_to``/``attachments`` are omitted when empty; ``mentions``,
    ``deleted_at`` … are Profile B."""

    id: str
    channel_id: str
    author_uid: str
    body: str = ""
    created_at: str
    reply_to: ReplyTo | None = None
    mentions: list[Mention] | None = None
    attachments: list[Attachment] | None = None

    @field_validator("body", mode="before")
    @classmethod
    def _coerce_body(cls, value: Any) -> Any:
        return _body_text(value)


class MessageList(WireModel):
    """History page. ``next_cursor`` is Profile B (``cursors``): pass it as ``before`` for older pages."""

    channel_id: str
    messages: list[Message]
    next_cursor: str | None = None


class MessageCreateResponse(WireModel):
    message: Message


# --------------------------------------------------------------------------- profiles


class Profile(WireModel):
    user_uid: str
    display_name: str
    avatar_mode: Literal["generated", "uploaded"] | str
    avatar_preset_id: str | None = None
    avatar_asset_id: str | None = None
    avatar_url: str | None = None
    profile_version: int
    updated_at: str


class ProfileBatch(WireModel):
    profiles: list[Profile]


class AvatarAsset(WireModel):
    avatar_asset_id: str
    avatar_url: str
    width: int
    height: int
    content_type: str
    bytes: int


# --------------------------------------------------------------------------- capabilities


class CapabilityTransport(WireModel):
    websocket: bool = False
    sse: bool = False
    polling: bool = False


class CapabilityFeatures(WireModel):
    """``features``; Profile B flags (``server_creation`` …) are absent on the public backend."""

    messaging: bool = False
    presence: bool = False
    attachments: bool = False
    notifications: bool = False
    server_creation: bool | None = None


class CapabilityLimits(WireModel):
    max_message_bytes: int | None = None
    max_upload_bytes: int | None = None
    rate_limit_per_minute: int | None = None
    max_call_participants: int | None = None


class CapabilitySecurity(WireModel):
    https_required: bool = False
    certificate_pinning: str = ""


class IceServer(WireModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None
    credential_type: str | None = None
    expires_at: str | None = None


class ConnectionPolicy(WireModel):
    join_timeout_ms: int | None = None
    answer_timeout_ms: int | None = None
    ice_restart_enabled: bool | None = None
    reconnect_backoff_ms: list[int] | None = None


class RtcFeatures(WireModel):
    voice: bool = False
    video: bool = False
    screenshare: bool = False
    simulcast: bool = False


class CapabilityRtc(WireModel):
    protocol_version: str = ""
    signaling_url: str = ""
    signaling_transport: str = ""
    topologies: list[str] = Field(default_factory=list)
    features: RtcFeatures = Field(default_factory=RtcFeatures)
    ice_servers: list[IceServer] = Field(default_factory=list)
    connection_policy: ConnectionPolicy | None = None
    subscribe_receive_policy: dict[str, Any] | None = None  # Profile B


class ModerationActions(WireModel):
    immediate: list[str] = Field(default_factory=list)
    vote_required: list[str] = Field(default_factory=list)


class VotePolicy(WireModel):
    threshold: int
    quorum: int
    window_seconds: int


class EvidencePolicy(WireModel):
    report_bundle_required: bool
    plaintext_disclosure_optional: bool


class Moderation(WireModel):
    enabled: bool = False
    actions: ModerationActions | None = None
    vote_policy: VotePolicy | None = None
    evidence_policy: EvidencePolicy | None = None


class CapabilityDisplayName(WireModel):
    min_length: int
    max_length: int


class CapabilityAvatarUpload(WireModel):
    max_bytes: int
    mime_types: list[str]
    max_width: int
    max_height: int


class CapabilityProfile(WireModel):
    enabled: bool = False
    scope: str = ""
    fields: list[str] = Field(default_factory=list)
    avatar_modes: list[str] = Field(default_factory=list)
    display_name: CapabilityDisplayName | None = None
    avatar_upload: CapabilityAvatarUpload | None = None
    realtime_event: str = ""
    message_author_profile_mode: str = ""


class Capabilities(WireModel):
    """``GET /v1/client/capabilities``. ``read_acks``/``mentions`` are Profile B keys (any truthy value)."""

    server_name: str
    server_id: str
    api_version: str = ""
    build_version: str = ""
    build_commit: str = ""
    identity_handshake_modes: list[str] = Field(default_factory=list)
    user_uid_policy: str = ""
    profile_data_policy: str = ""
    transport: CapabilityTransport = Field(default_factory=CapabilityTransport)
    features: CapabilityFeatures = Field(default_factory=CapabilityFeatures)
    limits: CapabilityLimits = Field(default_factory=CapabilityLimits)
    security: CapabilitySecurity = Field(default_factory=CapabilitySecurity)
    rtc: CapabilityRtc | None = None
    moderation: Moderation | None = None
    profile: CapabilityProfile | None = None
    read_acks: Any = None
    mentions: Any = None

    def feature_on(self, name: str) -> bool:
        """True when Profile B ``name`` is advertised (top-level key or ``features.<name>``)."""
        top = (
            getattr(self, name, None)
            if name in type(self).model_fields
            else (self.model_extra or {}).get(name)
        )
        if top:
            return True
        return bool(getattr(self.features, name, None) or (self.features.model_extra or {}).get(name))


# --------------------------------------------------------------------------- RTC (HTTP side)


class JoinTicketPermissions(WireModel):
    speak: bool = False
    video: bool = False
    screenshare: bool = False


class JoinTicket(WireModel):
    """``POST /v1/rtc/channels/{id}/join-ticket`` (keys alphabetical on the wire)."""

    channel_id: str
    device_id: str
    expires_at: str
    ice_servers: list[IceServer] = Field(default_factory=list)
    permissions: JoinTicketPermissions = Field(default_factory=JoinTicketPermissions)
    server_id: str
    signaling_url: str
    ticket: str
    user_uid: str
    subscribe_receive_policy: dict[str, Any] | None = None  # Profile B


class SignalingEnvelope(WireModel):
    """Frame of ``/v1/rtc/signaling``; ``channel_id`` is filled by the server after the join."""

    type: str = ""
    request_id: str | None = None
    channel_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("payload", mode="before")
    @classmethod
    def _object_payload(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- realtime


class RealtimeEnvelope(WireModel):
    """A ``/v1/realtime`` frame. Profile B adds ``event_id`` (monotonic), ``event_type``,
    ``server_id`` and ``timestamp``; the public backend sends only ``type``/``request_id``/``payload``."""

    type: str = ""
    request_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    event_id: int | str | None = None
    event_type: str | None = None
    server_id: str | None = None
    timestamp: str | None = None

    @field_validator("payload", mode="before")
    @classmethod
    def _object_payload(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {}


class PresenceMember(WireModel):
    client_id: str
    user_uid: str
    device_id: str


class SubscriptionPayload(WireModel):
    """``chat.subscribed`` / ``chat.unsubscribed``."""

    channel_id: str


class PresenceSnapshotPayload(WireModel):
    channel_id: str
    members: list[PresenceMember]


class PresenceChangePayload(WireModel):
    """``chat.presence.joined`` / ``chat.presence.left``."""

    channel_id: str
    member: PresenceMember


class TypingUpdatedPayload(WireModel):
    channel_id: str
    is_typing: bool
    member: PresenceMember


class MessageCreatedPayload(WireModel):
    message: Message


class ProfileUpdatedPayload(WireModel):
    """``profile_updated`` (keys alphabetical on the wire)."""

    avatar_asset_id: str | None = None
    avatar_mode: str
    avatar_preset_id: str | None = None
    avatar_url: str | None = None
    display_name: str
    profile_version: int
    updated_at: str
    user_uid: str


class PongPayload(WireModel):
    ts: str


class ChatErrorPayload(WireModel):
    code: str
    message: str = ""
    retryable: bool = False


# --------------------------------------------------------------------------- Profile B


class ReadAck(WireModel):
    """Read-ack record. ``cursor_index`` is the position of ``last_read_message_id`` in the channel."""

    channel_id: str
    user_uid: str
    last_read_message_id: str | None = None
    acked_at: str | None = None
    cursor_index: int | None = None


class ReadAckResponse(WireModel):
    """``GET``/``PUT /v1/channels/{id}/read-ack``."""

    read_ack: ReadAck
    applied: bool | None = None
    channel_id: str | None = None


class ReadAckUpdatedPayload(ReadAck):
    """``chat.read_ack.updated``: the record flat in ``payload`` or nested under ``payload.read_ack``."""

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("read_ack"), dict):
            merged = {k: v for k, v in data.items() if k != "read_ack"}
            merged.update(data["read_ack"])
            return merged
        return data


class MentionCandidate(WireModel):
    type: Literal["user", "channel"] | str
    token: str = ""
    target_id: str = ""
    display_text: str = ""


class MentionResolveResponse(WireModel):
    results: list[MentionCandidate]
    channel_id: str | None = None
    query: str | None = None


class MessageDeletedPayload(WireModel):
    """``chat.message.deleted`` (devserver Profile B extension)."""

    channel_id: str
    message_id: str
    deleted_at: str | None = None
    deleted_by_uid: str | None = None


class OwnershipClaim(WireModel):
    token: str
    expires_at: str


class ServerCreateResponse(WireModel):
    server: ServerEntry
    created_by_uid: str
    created_at: str
    ownership_claim: OwnershipClaim


class OwnershipClaimed(WireModel):
    server_id: str
    owner_user_uid: str
    claimed_at: str


class ServerSettings(WireModel):
    server_id: str
    display_name: str
    description: str = ""
    banner_preset: str = ""


class ChannelCreatedEvent(WireModel):
    """``chat.channel.created`` payload and ``POST /v1/servers/{id}/channels`` response."""

    server_id: str
    group_id: str
    channel: Channel
    created_by_uid: str = ""
    created_at: str = ""


class CategoryCreatedEvent(WireModel):
    server_id: str
    group: ChannelGroup
    created_by_uid: str = ""
    created_at: str = ""


class CategoryUpdatedEvent(WireModel):
    server_id: str
    group: ChannelGroup
    updated_by_uid: str = ""
    updated_at: str = ""


class ChannelLayoutUpdatedEvent(WireModel):
    server_id: str
    groups: list[ChannelGroup]
    updated_by_uid: str = ""
    updated_at: str = ""


class ServerUpdatedEvent(WireModel):
    """``chat.server.updated`` (patches name, description, banner)."""

    server_id: str
    display_name: str | None = None
    description: str | None = None
    banner_preset: str | None = None
    updated_by_uid: str = ""
    updated_at: str = ""
