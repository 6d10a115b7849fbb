"""The events table of the stack: kind -> payload model -> event-id rule -> publisher.

Every event on the bus (``oc.<member>.evt.<server_id>.<kind>``, ingested on
``oc.sys.ev.<member>.<server_id>.<kind>``) is one row of ``EVENTS``. Publishers build their
envelopes with ``EventSpec.envelope`` (so the kind and the ``event_id`` formula are written once,
here); consumers decode with ``EventSpec.decode`` / ``decode_event`` (so the payload model of a kind
is written once, here). The state service materializes the kinds with ``in_view`` set, the
notification service the kinds it lists, the desktop and the CLI decode everything they show.

A new event (another service's) is one more ``EventSpec`` passed to ``register_event``; the
existing rows are never changed in place (a stored stream keeps old events).

Event-id rules (``EventEnvelope.event_id`` is the de-duplication key, ``Nats-Msg-Id``):

- ``fresh``: ``<prefix>:<uuid4 hex>``: every publication is a new event;
- ``time``: ``<prefix>:<ISO time>``: the time of the change (given by the publisher);
- a key function of the payload: ``<prefix>:<key>``: the same change published twice (live and by
  gap fill, or by two connectors) is stored once.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, NamedTuple, TypeVar, cast

from pydantic import BaseModel

from services.core.contracts.bus import EventEnvelope, utcnow
from services.core.contracts.chat import (
    CapabilitySnapshot,
    ChannelsUpdated,
    ConnectionState,
    MembersUpdated,
    MessageCreated,
    MessageDeleted,
    MessagePreviews,
    PresenceChange,
    PresenceSnapshot,
    ProfileUpdated,
    ServerJoined,
    ServerLeft,
    ServerUpdated,
    Typing,
    message_identity,
)
from services.core.contracts.media import VoiceSpeaking, VoiceStatus
from services.core.contracts.notify import (
    MemberNotifyPrefs,
    Notification,
    ReadAckUpdated,
    ServerPrefs,
    UnreadUpdated,
)
from services.core.contracts.presence import PresenceBatch
from services.core.contracts.search import HistoryPage, history_page_event_id

P = TypeVar("P", bound=BaseModel)
IdRule = Literal["fresh", "time"]


@functools.cache
def envelope_model(payload: type[BaseModel]) -> type[EventEnvelope[Any]]:
    """``EventEnvelope[payload]``, built once per payload type (not per event)."""
    return cast("type[EventEnvelope[Any]]", cast(Any, EventEnvelope)[payload])


@dataclass(frozen=True)
class EventSpec(Generic[P]):
    """One row of the events table."""

    kind: str
    payload: type[P]
    prefix: str  # of the event id
    rule: IdRule | Callable[[P], str]
    publisher: str  # the service that publishes it
    in_view: bool = True  # materialized into the member's view by the state service
    doc: str = ""
    channel_of: Callable[[P], str | None] | None = field(default=None, compare=False)

    @property
    def rule_text(self) -> str:
        """The event-id formula as the docs write it."""
        if self.rule == "fresh":
            return f"{self.prefix}:<uuid>"
        if self.rule == "time":
            return f"{self.prefix}:<ts>"
        return f"{self.prefix}:<{self.doc or 'key'}>"

    def event_id(self, payload: P | None = None, *, key: str | None = None) -> str:
        """The event id of ``payload`` by this kind's rule (``key`` overrides the rule's key:
        the time of a ``time`` rule, or a key a publisher already has)."""
        if key is not None:
            return f"{self.prefix}:{key}"
        if self.rule == "fresh":
            return f"{self.prefix}:{uuid.uuid4().hex}"
        if self.rule == "time":
            return f"{self.prefix}:{utcnow().isoformat()}"
        if payload is None:
            raise ValueError(f"the event id of {self.kind} is derived from its payload")
        return f"{self.prefix}:{self.rule(payload)}"

    @property
    def envelope_model(self) -> type[EventEnvelope[P]]:
        return cast("type[EventEnvelope[P]]", envelope_model(self.payload))

    def envelope(
        self,
        server_id: str,
        payload: P,
        *,
        channel_id: str | None = None,
        event_id: str | None = None,
        key: str | None = None,
    ) -> EventEnvelope[P]:
        """The envelope to publish: this kind, the payload, the id by the rule (or as given)."""
        if channel_id is None and self.channel_of is not None:
            channel_id = self.channel_of(payload)
        return self.envelope_model(
            event_id=event_id if event_id is not None else self.event_id(payload, key=key),
            server_id=server_id,
            channel_id=channel_id,
            type=self.kind,
            payload=payload,
        )

    def decode(self, data: bytes | str) -> EventEnvelope[P]:
        """A stored envelope's JSON, validated (``pydantic.ValidationError`` when invalid)."""
        return self.envelope_model.model_validate_json(data)

    def decode_payload(self, payload: Mapping[str, Any] | BaseModel) -> P:
        """An already parsed payload (a dict from JSON, or the model itself)."""
        if isinstance(payload, self.payload):
            return payload
        return self.payload.model_validate(payload)


def _message_key(p: MessageCreated) -> str:
    return message_identity(p.message.id, p.message.created_at)  # ids repeat: ADR 0029


# -- the table --------------------------------------------------------------------------------------
SERVER_JOINED = EventSpec(
    "server.joined",
    ServerJoined,
    "joined",
    lambda p: p.server.joined_at.isoformat(),
    "connector",
    doc="joined_at",
)
SERVER_LEFT = EventSpec("server.left", ServerLeft, "left", "time", "connector")
SERVER_UPDATED = EventSpec("server.updated", ServerUpdated, "srvupd", "fresh", "connector")
SERVER_CONNECTION = EventSpec("server.connection", ConnectionState, "conn", "fresh", "connector")
CAPABILITIES = EventSpec("capabilities", CapabilitySnapshot, "caps", "fresh", "connector")
CHANNELS_UPDATED = EventSpec("channels.updated", ChannelsUpdated, "channels", "fresh", "connector")
MEMBERS_UPDATED = EventSpec("members.updated", MembersUpdated, "members", "fresh", "connector")
MESSAGE_CREATED = EventSpec(
    "message.created",
    MessageCreated,
    "msg",
    _message_key,
    "connector",
    doc="message id@created_at (ADR 0029)",
    channel_of=lambda p: p.message.channel_id,
)
MESSAGE_DELETED = EventSpec(
    "message.deleted",
    MessageDeleted,
    "del",
    lambda p: p.message_id,
    "connector",
    doc="message id",
    channel_of=lambda p: p.channel_id,
)
MESSAGE_PREVIEWS = EventSpec(
    "message.previews",
    MessagePreviews,
    "previews",
    lambda p: p.message_id,
    "connector",
    doc="message id",
    channel_of=lambda p: p.channel_id,
)
TYPING = EventSpec("typing", Typing, "typing", "fresh", "connector", channel_of=lambda p: p.channel_id)
PRESENCE_SNAPSHOT = EventSpec(
    "presence.snapshot", PresenceSnapshot, "presence", "fresh", "connector", channel_of=lambda p: p.channel_id
)
PRESENCE_JOINED = EventSpec(
    "presence.joined", PresenceChange, "presence", "fresh", "connector", channel_of=lambda p: p.channel_id
)
PRESENCE_LEFT = EventSpec(
    "presence.left", PresenceChange, "presence", "fresh", "connector", channel_of=lambda p: p.channel_id
)
# the presence changes of one (member, server) over a window, coalesced (issue 16, ADR 0022); the
# connector publishes this instead of the three kinds above, which stay for stored streams
PRESENCE_BATCH = EventSpec("presence.batch", PresenceBatch, "presence", "fresh", "connector")
PROFILE_UPDATED = EventSpec(
    "profile.updated",
    ProfileUpdated,
    "profile",
    lambda p: f"{p.profile.user_uid}:{p.profile.profile_version}",
    "connector",
    doc="uid>:<profile_version",
)


def _ack_key(p: ReadAckUpdated) -> str:
    pos = p.cursor_index if p.cursor_index is not None else (p.last_read_message_id or "")
    return f"{p.channel_id}:{p.user_uid}:{pos}"


READ_ACK_UPDATED = EventSpec(
    "read_ack.updated",
    ReadAckUpdated,
    "ack",
    _ack_key,
    "connector",
    in_view=False,
    doc="channel_id>:<user_uid>:<cursor_index or last_read_message_id",
    channel_of=lambda p: p.channel_id,
)
UNREAD_UPDATED = EventSpec("unread.updated", UnreadUpdated, "unread", "fresh", "notification", in_view=False)
NOTIFICATION = EventSpec(
    "notification",
    Notification,
    "notify",
    lambda p: p.message_id,
    "notification",
    in_view=False,
    doc="message id",
    channel_of=lambda p: p.channel_id,
)
NOTIFY_PREFS = EventSpec("notify.prefs", ServerPrefs, "nprefs", "fresh", "notification", in_view=False)
# member-wide settings (status, DND, quiet hours, hide muted) on the reserved server id ``_member``
NOTIFY_MEMBER = EventSpec(
    "notify.member", MemberNotifyPrefs, "nmember", "fresh", "notification", in_view=False
)
# a history page fetched on the member's demand: for the search index only (not in the view)
HISTORY_PAGE = EventSpec(
    "history.page",
    HistoryPage,
    "page",
    lambda p: history_page_event_id(p.channel_id, p.messages[0].id, p.messages[-1].id).removeprefix("page:"),
    "connector",
    in_view=False,
    doc="channel>:<first id>:<last id",
    channel_of=lambda p: p.channel_id,
)
# the media service's whole call state on every change; the view keeps the latest (late clients)
VOICE_STATE = EventSpec("voice.state", VoiceStatus, "vstate", "fresh", "media")
# speaking changes: core NATS only, never stored (ADR 0011)
VOICE_SPEAKING = EventSpec("voice.speaking", VoiceSpeaking, "vspeak", "fresh", "media", in_view=False)

EVENTS: dict[str, EventSpec[Any]] = {}


def register_event(spec: EventSpec[Any]) -> EventSpec[Any]:
    """Add a row (a new kind); the same row again is harmless, another row for a kind is refused."""
    current = EVENTS.get(spec.kind)
    if current is not None and current != spec:
        raise ValueError(f"event kind {spec.kind!r} is already registered differently")
    EVENTS[spec.kind] = spec
    return spec


for _spec in (
    SERVER_JOINED,
    SERVER_LEFT,
    SERVER_UPDATED,
    SERVER_CONNECTION,
    CAPABILITIES,
    CHANNELS_UPDATED,
    MEMBERS_UPDATED,
    MESSAGE_CREATED,
    MESSAGE_DELETED,
    MESSAGE_PREVIEWS,
    TYPING,
    PRESENCE_SNAPSHOT,
    PRESENCE_JOINED,
    PRESENCE_LEFT,
    PRESENCE_BATCH,
    PROFILE_UPDATED,
    READ_ACK_UPDATED,
    UNREAD_UPDATED,
    NOTIFICATION,
    NOTIFY_PREFS,
    NOTIFY_MEMBER,
    HISTORY_PAGE,
    VOICE_STATE,
    VOICE_SPEAKING,
):
    register_event(_spec)


def spec_of(kind: str) -> EventSpec[Any] | None:
    return EVENTS.get(kind)


def view_payloads() -> dict[str, type[BaseModel]]:
    """The kinds the state service materializes, with their payload models."""
    return {k: s.payload for k, s in EVENTS.items() if s.in_view}


def published_by(service: str) -> list[EventSpec[Any]]:
    return [s for s in EVENTS.values() if s.publisher == service]


class TypedEvent(NamedTuple):
    """An event as it crosses into a client (the desktop's thread boundary, the CLI's tail):
    the stream sequence, the envelope's fields and the payload already validated against its
    kind's model. ``payload`` is ``None`` for a kind this build does not know (kept, not dropped,
    so a newer stack does not break an older client). A tuple: made once per event, cheaply."""

    seq: int
    kind: str
    server_id: str
    channel_id: str | None
    event_id: str
    payload: BaseModel | None


class InvalidEventError(ValueError):
    """An event whose envelope or payload does not match its kind's contract."""


def decode_event(seq: int, doc: Mapping[str, Any], *, strict: bool = True) -> TypedEvent:
    """One received envelope (parsed JSON) as a ``TypedEvent``. An envelope whose payload does
    not validate against its kind's model raises ``InvalidEventError`` (the message says which
    kind, never the payload's content); with ``strict=False`` it comes back with ``payload``
    ``None`` instead (a client still counts it as seen, and skips it)."""
    kind = doc.get("type")
    if type(kind) is not str or not kind:
        if strict:
            raise InvalidEventError("an event without a type")
        kind = ""
    payload: BaseModel | None = None
    spec = EVENTS.get(kind)
    if spec is not None:
        raw_payload = doc.get("payload") or {}
        try:
            if type(raw_payload) is dict:
                payload = spec.payload.model_validate(raw_payload)
            elif isinstance(raw_payload, Mapping | BaseModel):
                payload = spec.decode_payload(raw_payload)
            else:
                raise InvalidEventError(f"a {kind} event without a payload")
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            if strict:
                raise InvalidEventError(f"an invalid {kind} event") from exc
    server_id = doc.get("server_id")
    channel_id = doc.get("channel_id")
    event_id = doc.get("event_id")
    return TypedEvent(
        seq,
        kind,
        server_id if type(server_id) is str else "",
        channel_id if type(channel_id) is str else None,
        event_id if type(event_id) is str else "",
        payload,
    )


def table_rows(specs: Iterable[EventSpec[Any]] | None = None) -> list[tuple[str, str, str, str]]:
    """``(kind, payload model, event id rule, publisher)`` rows (docs, tests)."""
    return [
        (s.kind, s.payload.__name__, s.rule_text, s.publisher)
        for s in (EVENTS.values() if specs is None else specs)
    ]
