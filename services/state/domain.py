"""The view reducer of the state service: plain, synchronous domain logic (no Redis, no bus).

``decode_event`` turns one stored stream message (ingest subject + bytes) into a validated,
size-bounded ``ParsedEvent`` or raises ``InvalidEvent``. ``Reducer.apply`` turns a parsed event
into a list of ``Op`` — small, explicit writes on the member's view, keyed by
``(member, server_id[, channel_id])`` — using and updating a compact in-memory ``ServerIndex``
(the sort keys of the message windows, presence, profile versions, typing expiries) so that
windows stay bounded, de-duplicated by message id and ordered by ``(created_at, id)`` without
reading the store. The Redis adapter (``services.state.store``) executes the ops; the unit tests
check them directly.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from services.core.contracts import events as ev
from services.core.contracts import subjects
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import (
    TYPING_EXPIRY_S,
    CapabilitySnapshot,
    ChannelsUpdated,
    ConnectionState,
    MembersUpdated,
    MessageCreated,
    MessageDeleted,
    MessagePreviews,
    PresenceChange,
    PresenceEntry,
    PresenceSnapshot,
    ProfileUpdated,
    ServerJoined,
    ServerLeft,
    ServerUpdated,
    Typing,
)
from services.core.contracts.events import envelope_model, view_payloads
from services.core.contracts.media import VoiceStatus
from services.core.contracts.presence import MAX_BATCH_ENTRIES, PresenceBatch

# -- bounds on what the bus may put into the view -------------------------------------------------
MAX_ID_CHARS = 256  # message ids, client ids, user uids, device ids
MAX_CHANNEL_ID_CHARS = 128
MAX_BODY_CHARS = 100_000
MAX_MESSAGE_ATTACHMENTS = 16
MAX_MESSAGE_PREVIEWS = 3  # link preview cards per message (each card's fields bounded by its contract)
MAX_CHANNELS = 2_000
MAX_PRESENCE_PER_CHANNEL = 5_000
MAX_MEMBER_ROWS = 20_000
MAX_PROFILES_PER_SERVER = 100_000
MAX_EVENT_BYTES = 1024 * 1024

SEP = "\x1f"  # separates key parts inside one Redis field / zset member (refused in ids)
SORT_KEY_PREFIX_LEN = 42  # 20 digits of microseconds + ":" + 20 digits of stream sequence + ":"
SORT_KEY_TIME_LEN = 20
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

PAYLOADS: dict[str, type[BaseModel]] = view_payloads()  # the events table's rows with ``in_view``


class InvalidEvent(ValueError):
    """A stream message the view cannot use; logged (without its body) and skipped."""


@dataclass(frozen=True)
class ParsedEvent:
    member: str
    server_id: str
    kind: str
    envelope: EventEnvelope[Any]
    seq: int = 0  # the stream sequence: arrival order, which breaks created_at ties

    @property
    def payload(self) -> Any:
        return self.envelope.payload


# -- ops: what the store executes ----------------------------------------------------------------
@dataclass(frozen=True)
class PutServer:
    member: str
    server_id: str
    record_json: str


@dataclass(frozen=True)
class DropServer:
    member: str
    server_id: str


@dataclass(frozen=True)
class PutMeta:
    member: str
    server_id: str
    name: str  # "conn" | "caps" | "groups" | "members" | "voice"
    value: str


@dataclass(frozen=True)
class WindowPut:
    member: str
    server_id: str
    channel_id: str
    message_id: str
    sort_key: str
    value: str


@dataclass(frozen=True)
class WindowRemove:
    member: str
    server_id: str
    channel_id: str
    message_id: str
    sort_key: str
    keep_previews: bool = False  # the message only moves (same id, other time): keep its cards


@dataclass(frozen=True)
class PutPreviews:
    """The link preview cards of a message in the window (``message.previews``); they replace
    the message's own ``link_previews`` when it is read, and go with it when it leaves."""

    member: str
    server_id: str
    channel_id: str
    message_id: str
    value: str  # JSON list of LinkPreview


@dataclass(frozen=True)
class PutPresence:
    member: str
    server_id: str
    channel_id: str
    value: str  # JSON list of PresenceEntry


@dataclass(frozen=True)
class PutTyping:
    member: str
    server_id: str
    key: str  # typing_key(channel, uid, device)
    value: str  # JSON of Typing with expires_at set


@dataclass(frozen=True)
class DelTyping:
    member: str
    server_id: str
    key: str


@dataclass(frozen=True)
class PutProfile:
    member: str
    server_id: str
    user_uid: str
    value: str


Op = (
    PutServer
    | DropServer
    | PutMeta
    | WindowPut
    | WindowRemove
    | PutPreviews
    | PutPresence
    | PutTyping
    | DelTyping
    | PutProfile
)

META_FIELDS = ("conn", "caps", "groups", "members", "voice")


# -- keys and ordering ---------------------------------------------------------------------------
def check_text_id(value: str, what: str, max_chars: int = MAX_ID_CHARS) -> str:
    """An id used inside keys: non-empty, bounded, no control characters."""
    if not value or len(value) > max_chars or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidEvent(f"invalid {what}")
    return value


def sort_key(created_at: datetime, message_id: str, seq: int = 0) -> str:
    """Orders a window by ``created_at``, then by arrival (stream sequence), then id, as plain
    string comparison (Redis lex order). Backend timestamps have whole seconds, so many
    messages share one: the sequence keeps the backend's own order among them."""
    ts = created_at if created_at.tzinfo is not None else created_at.replace(tzinfo=UTC)
    micros = max(0, (ts - EPOCH) // timedelta(microseconds=1))
    return f"{min(micros, 10**20 - 1):020d}:{min(seq, 10**20 - 1):020d}:{message_id}"


def message_id_of(key: str) -> str:
    return key[SORT_KEY_PREFIX_LEN:]


def typing_key(channel_id: str, user_uid: str, device_id: str) -> str:
    return f"{channel_id}{SEP}{user_uid}{SEP}{device_id}"


def channel_of_typing_key(key: str) -> str:
    return key.split(SEP, 1)[0]


def typing_expiry(event_ts: datetime, typing: Typing) -> datetime:
    """When an indicator disappears: 6 s after its event, earlier if the payload says so."""
    ts = event_ts if event_ts.tzinfo is not None else event_ts.replace(tzinfo=UTC)
    limit = ts + timedelta(seconds=TYPING_EXPIRY_S)
    if typing.expires_at is not None:
        given = typing.expires_at if typing.expires_at.tzinfo else typing.expires_at.replace(tzinfo=UTC)
        return min(given, limit)
    return limit


def typing_visible(typing: Typing, now: datetime) -> bool:
    return typing.is_typing and typing.expires_at is not None and typing.expires_at > now


# -- decoding -----------------------------------------------------------------------------------
def parse_ingest_subject(subject: str) -> tuple[str, str, str]:
    """``oc.sys.ev.<member>.<server_id>.<kind>`` → ``(member, server_id, kind)``."""
    parts = subject.split(".")
    if len(parts) < 6 or parts[:3] != ["oc", "sys", "ev"]:
        raise InvalidEvent("not an ingest subject")
    try:
        member = subjects.check_member(parts[3])
        server_id = subjects.check_token(parts[4], "server id")
        kind = subjects.kind_tokens(".".join(parts[5:]))
    except subjects.SubjectError as exc:
        raise InvalidEvent(str(exc)) from exc
    return member, server_id, kind


def decode_event(subject: str, data: bytes, seq: int = 0) -> ParsedEvent | None:
    """Validate one stored event. ``None``: a kind the view does not use (ignored)."""
    member, server_id, kind = parse_ingest_subject(subject)
    model = PAYLOADS.get(kind)
    if model is None:
        return None
    if len(data) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event of {len(data)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        envelope: EventEnvelope[Any] = envelope_model(model).model_validate_json(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
        raise InvalidEvent(f"invalid {kind} event ({fields})") from None
    if envelope.server_id != server_id or envelope.type != kind:
        raise InvalidEvent("envelope server_id/type disagree with the subject")
    event = ParsedEvent(member, server_id, kind, envelope, seq)
    _check_payload(event)
    return event


def _check_payload(event: ParsedEvent) -> None:
    p = event.payload
    env_channel = event.envelope.channel_id
    if isinstance(p, ServerJoined | ServerUpdated):
        if p.server.server_id != event.server_id:
            raise InvalidEvent("server record id disagrees with the subject")
    elif isinstance(p, ServerLeft):
        if p.server_id != event.server_id:
            raise InvalidEvent("left server id disagrees with the subject")
    elif isinstance(p, MessageCreated):
        m = p.message
        if m.server_id != event.server_id:
            raise InvalidEvent("message server id disagrees with the subject")
        check_text_id(m.channel_id, "channel id", MAX_CHANNEL_ID_CHARS)
        check_text_id(m.id, "message id")
        if env_channel is not None and env_channel != m.channel_id:
            raise InvalidEvent("envelope channel disagrees with the message")
        if len(m.body) > MAX_BODY_CHARS or len(m.attachments) > MAX_MESSAGE_ATTACHMENTS:
            raise InvalidEvent("message exceeds the view's bounds")
    elif isinstance(p, MessageDeleted):
        check_text_id(p.channel_id, "channel id", MAX_CHANNEL_ID_CHARS)
        check_text_id(p.message_id, "message id")
    elif isinstance(p, MessagePreviews):
        check_text_id(p.channel_id, "channel id", MAX_CHANNEL_ID_CHARS)
        check_text_id(p.message_id, "message id")
        if env_channel is not None and env_channel != p.channel_id:
            raise InvalidEvent("envelope channel disagrees with the previews")
        if len(p.previews) > MAX_MESSAGE_PREVIEWS:
            raise InvalidEvent("too many link previews")
    elif isinstance(p, Typing):
        check_text_id(p.channel_id, "channel id", MAX_CHANNEL_ID_CHARS)
        check_text_id(p.user_uid, "user uid")
        if p.device_id:
            check_text_id(p.device_id, "device id")
    elif isinstance(p, PresenceSnapshot):
        check_text_id(p.channel_id, "channel id", MAX_CHANNEL_ID_CHARS)
        if len(p.members) > MAX_PRESENCE_PER_CHANNEL:
            raise InvalidEvent("presence snapshot too large")
        for entry in p.members:
            check_text_id(entry.client_id, "client id")
    elif isinstance(p, PresenceChange):
        check_text_id(p.channel_id, "channel id", MAX_CHANNEL_ID_CHARS)
        check_text_id(p.member.client_id, "client id")
    elif isinstance(p, PresenceBatch):
        if sum(max(1, d.size) for d in p.channels) > MAX_BATCH_ENTRIES:
            raise InvalidEvent("presence batch too large")
        for delta in p.channels:
            check_text_id(delta.channel_id, "channel id", MAX_CHANNEL_ID_CHARS)
            for entry in (*(delta.snapshot or ()), *delta.joined, *delta.left):
                check_text_id(entry.client_id, "client id")
    elif isinstance(p, ChannelsUpdated):
        count = 0
        for group in p.groups:
            for ch in group.channels:
                check_text_id(ch.id, "channel id", MAX_CHANNEL_ID_CHARS)
                count += 1
        if count > MAX_CHANNELS:
            raise InvalidEvent("channel tree too large")
    elif isinstance(p, MembersUpdated):
        if len(p.members) > MAX_MEMBER_ROWS:
            raise InvalidEvent("member list too large")
    elif isinstance(p, ProfileUpdated):
        check_text_id(p.profile.user_uid, "user uid")


# -- the in-memory index and the reducer ---------------------------------------------------------
@dataclass
class ChannelWindow:
    keys: list[str] = field(default_factory=list)  # sorted sort keys
    by_id: dict[str, str] = field(default_factory=dict)  # message id -> sort key


@dataclass
class ServerIndex:
    """What the reducer must know of one (member, server) view to emit exact ops."""

    windows: dict[str, ChannelWindow] = field(default_factory=dict)
    presence: dict[str, dict[str, PresenceEntry]] = field(default_factory=dict)
    profile_versions: dict[str, int] = field(default_factory=dict)
    typing_expiry: dict[str, datetime] = field(default_factory=dict)

    def add_window_key(self, channel_id: str, key: str) -> None:
        win = self.windows.setdefault(channel_id, ChannelWindow())
        bisect.insort(win.keys, key)
        win.by_id[message_id_of(key)] = key


class Reducer:
    """Applies events to ``ServerIndex`` objects and returns the ops that make the store match."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("window must be positive")
        self.window = window

    def apply(self, index: ServerIndex, event: ParsedEvent, now: datetime) -> tuple[list[Op], ServerIndex]:
        """Ops for ``event`` and the index to keep for its (member, server) afterwards."""
        m, s, p = event.member, event.server_id, event.payload
        if isinstance(p, ServerJoined | ServerUpdated):  # a record changed: uid (UID mode), consent, name
            return [PutServer(m, s, p.server.model_dump_json())], index
        if isinstance(p, ServerLeft):
            return [DropServer(m, s)], ServerIndex()
        if isinstance(p, ConnectionState):
            return [PutMeta(m, s, "conn", p.model_dump_json())], index
        if isinstance(p, CapabilitySnapshot):
            return [PutMeta(m, s, "caps", p.model_dump_json())], index
        if isinstance(p, ChannelsUpdated):
            return [PutMeta(m, s, "groups", p.model_dump_json())], index
        if isinstance(p, MembersUpdated):
            return [PutMeta(m, s, "members", p.model_dump_json())], index
        if isinstance(p, VoiceStatus):
            if p.server_id is not None and p.server_id != s:
                raise InvalidEvent("voice state server id disagrees with the subject")
            return [PutMeta(m, s, "voice", p.model_dump_json())], index
        if isinstance(p, MessageCreated):
            return self._put_message(index, event, p), index
        if isinstance(p, MessageDeleted):
            return self._delete_message(index, m, s, p.channel_id, p.message_id), index
        if isinstance(p, MessagePreviews):
            win = index.windows.get(p.channel_id)
            if win is None or p.message_id not in win.by_id:
                return [], index  # not in the window (evicted, deleted, never seen): nothing to do
            body = "[" + ",".join(card.model_dump_json() for card in p.previews) + "]"
            return [PutPreviews(m, s, p.channel_id, p.message_id, body)], index
        if isinstance(p, Typing):
            return self._typing(index, event, p, now), index
        if isinstance(p, PresenceSnapshot):
            index.presence[p.channel_id] = {e.client_id: e for e in p.members}
            return [self._presence_op(index, m, s, p.channel_id)], index
        if isinstance(p, PresenceChange):
            entries = index.presence.setdefault(p.channel_id, {})
            if event.kind == ev.PRESENCE_JOINED.kind:
                if p.member.client_id not in entries and len(entries) >= MAX_PRESENCE_PER_CHANNEL:
                    raise InvalidEvent("presence list full")
                entries[p.member.client_id] = p.member
            else:
                entries.pop(p.member.client_id, None)
            return [self._presence_op(index, m, s, p.channel_id)], index
        if isinstance(p, PresenceBatch):
            return self._presence_batch(index, m, s, p), index
        if isinstance(p, ProfileUpdated):
            uid = p.profile.user_uid
            known = index.profile_versions.get(uid)
            if known is not None and p.profile.profile_version < known:
                return [], index  # an older version arriving late
            if known is None and len(index.profile_versions) >= MAX_PROFILES_PER_SERVER:
                raise InvalidEvent("too many profiles")
            index.profile_versions[uid] = p.profile.profile_version
            return [PutProfile(m, s, uid, p.profile.model_dump_json())], index
        raise InvalidEvent(f"unhandled kind {event.kind}")

    def _put_message(self, index: ServerIndex, event: ParsedEvent, p: MessageCreated) -> list[Op]:
        msg = p.message
        m, s, ch = event.member, event.server_id, msg.channel_id
        win = index.windows.setdefault(ch, ChannelWindow())
        key = sort_key(msg.created_at, msg.id, event.seq)
        ops: list[Op] = []
        old = win.by_id.get(msg.id)
        if old is not None and old[:SORT_KEY_TIME_LEN] == key[:SORT_KEY_TIME_LEN]:
            key = old  # the same message again (replay, rehydrate): it keeps its place
        if old is not None and old != key:  # same id, other time: move it
            ops.extend(self._delete_message(index, m, s, ch, msg.id, keep_previews=True))
        if old is None or old != key:
            if len(win.keys) >= self.window and key < win.keys[0]:
                return ops  # older than the whole (full) window: not kept
            bisect.insort(win.keys, key)
            win.by_id[msg.id] = key
        ops.append(WindowPut(m, s, ch, msg.id, key, msg.model_dump_json()))  # same id: replace (dedup)
        while len(win.keys) > self.window:
            gone = win.keys.pop(0)
            gone_id = message_id_of(gone)
            del win.by_id[gone_id]
            ops.append(WindowRemove(m, s, ch, gone_id, gone))
        return ops

    @staticmethod
    def _delete_message(
        index: ServerIndex, m: str, s: str, ch: str, message_id: str, *, keep_previews: bool = False
    ) -> list[Op]:
        win = index.windows.get(ch)
        if win is None or message_id not in win.by_id:
            return []
        key = win.by_id.pop(message_id)
        pos = bisect.bisect_left(win.keys, key)
        if pos < len(win.keys) and win.keys[pos] == key:
            win.keys.pop(pos)
        return [WindowRemove(m, s, ch, message_id, key, keep_previews)]

    def _presence_batch(self, index: ServerIndex, m: str, s: str, p: PresenceBatch) -> list[Op]:
        """``presence.batch``: each delta applied in order (snapshot, joins, lefts); one write per
        channel touched. Joins past ``MAX_PRESENCE_PER_CHANNEL`` are left out (as single
        ``presence.joined`` events past it are refused), the rest of the batch is applied."""
        touched: list[str] = []
        for delta in p.channels:
            if delta.snapshot is not None:
                index.presence[delta.channel_id] = {e.client_id: e for e in delta.snapshot}
            entries = index.presence.setdefault(delta.channel_id, {})
            for entry in delta.joined:
                if entry.client_id in entries or len(entries) < MAX_PRESENCE_PER_CHANNEL:
                    entries[entry.client_id] = entry
            for entry in delta.left:
                entries.pop(entry.client_id, None)
            if delta.channel_id not in touched:
                touched.append(delta.channel_id)
        return [self._presence_op(index, m, s, ch) for ch in touched]

    @staticmethod
    def _presence_op(index: ServerIndex, m: str, s: str, ch: str) -> PutPresence:
        entries = list(index.presence.get(ch, {}).values())
        body = "[" + ",".join(e.model_dump_json() for e in entries) + "]"
        return PutPresence(m, s, ch, body)

    @staticmethod
    def _typing(index: ServerIndex, event: ParsedEvent, p: Typing, now: datetime) -> list[Op]:
        m, s = event.member, event.server_id
        ops: list[Op] = []
        for key, expires in list(index.typing_expiry.items()):  # prune what expired
            if expires <= now:
                del index.typing_expiry[key]
                ops.append(DelTyping(m, s, key))
        key = typing_key(p.channel_id, p.user_uid, p.device_id)
        expires_at = typing_expiry(event.envelope.ts, p)
        if not p.is_typing or expires_at <= now:
            if index.typing_expiry.pop(key, None) is not None:
                ops.append(DelTyping(m, s, key))
            return ops
        index.typing_expiry[key] = expires_at
        stored = p.model_copy(update={"expires_at": expires_at})
        ops.append(PutTyping(m, s, key, stored.model_dump_json()))
        return ops
