"""Domain of the notification service: counting, read cursors, mentions and policy.

Plain synchronous code without I/O, so every rule is table-tested (tests/unit). The service
(``services.notification.service``) feeds it events and commands and carries out the returned
``Effects`` (publish ``unread.updated`` / ``notification``, PUT/GET read-acks, persist).

Rules (features.md §7 and decisions rule D4, rule D5, rule D6, rule D9, rule D14):

* Counts are kept per ``(member, server_id, channel_id)`` (rule D3), for text channels only (7.1).
* A message whose author is the member's uid on that server is never unread, never a mention and
  never notifies (rule D5); it marks its channel read up to itself, as a send does in the reference
  client (7.5: read-ack PUT after a send), also when sent from another device with that uid.
* A message in the active channel of a focused and visible UI of the member is read at once; a
  UI that (re)focuses, or switches to, a channel clears it (rule D4). Focus reports expire after
  ``FOCUS_TTL_S`` unless re-sent, so a crashed UI does not swallow unread counts for ever.
* Server-provided ``unread_count`` seeds a channel's badge (rule D6) when the server also keeps read
  state (read-acks advertised) or when the channel is seen for the first time; otherwise the
  local count wins (a server without read-acks never learns what the member read, so its count
  only grows).
* Read cursors move forward only: a read-ack (event or GET/PUT answer) applies when its
  ``cursor_index`` is at least the one held (numbers.md §5).
* Mentions come from ``mentions[]`` metadata when present; otherwise only explicit tokens count:
  ``@<uid>`` (exactly the member's uid on that server), ``@<display name>`` (case-insensitive,
  only where the member consented to profile sync), ``@here``/``@channel`` (and ``@everyone``
  when the server lists it); a token is bounded by start/whitespace/punctuation on both sides,
  never a substring (rule D14).
* Notification policy (7.6, 7.7, rule D9): none for own messages, a muted server or channel, level
  ``nothing`` (or ``mentions`` for a non-mention), a non-mention in a focused active channel,
  Do Not Disturb, quiet hours in the member's time zone, or a message older than
  ``NOTIFY_MAX_AGE`` (a backlog replayed after downtime). Badges keep counting in every case
  but one: a muted **channel** neither notifies nor counts (issue 18) — messages that arrive while
  it is muted are not unread, and muting it clears its badge (locally: no read-ack is sent).
* Mutes may be timed (``muted_until``); an expired mute is no mute, and ``expire_mutes`` turns it
  off for good (the service calls it when the earliest one is due).
* The member's status (Online / Idle / Do Not Disturb / Invisible) is stored with the prefs;
  ``dnd`` is true exactly when the status is ``dnd``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field, model_validator

from services.core.contracts.chat import (
    AttachmentRef,
    CapabilitySnapshot,
    ChannelGroupInfo,
    ChatMessage,
    MentionRef,
    ServerRecord,
    UserProfile,
)
from services.core.contracts.notify import (
    AUDIENCE_TOKENS_DEFAULT,
    DEFAULT_LEVEL,
    FEATURE_MENTION_EVERYONE,
    FEATURE_READ_ACKS,
    FOCUS_TTL_S,
    NOTIFICATION_BODY_MAX,
    ChannelCounts,
    ChannelPrefs,
    FocusArgs,
    MemberNotifyPrefs,
    MemberStatus,
    Notification,
    NotifyLevel,
    NotifyPrefs,
    QuietHours,
    ReadAckResult,
    ReadAckUpdated,
    ServerCounts,
    ServerPrefs,
    UnreadResult,
    UnreadUpdated,
    notification_tag,
)

MAX_ENTRIES_PER_CHANNEL = 2000  # older unread messages are kept as a plain count
MAX_NAMES_PER_SERVER = 1000
NOTIFY_MAX_AGE = timedelta(minutes=10)


def utcnow() -> datetime:
    return datetime.now(UTC)


def mute_active(muted: bool, until: datetime | None, now: datetime) -> bool:
    """A mute counts while it is set and, when timed, not yet over."""
    return muted and (until is None or _aware(now) < _aware(until))


# -- mentions: metadata, else explicit tokens only, never a substring (rule D14) -----------------------------
def has_token(text: str, token: str, *, ignore_case: bool) -> bool:
    """True when ``@token`` occurs in ``text`` as an explicit token: preceded by the start of the
    text, whitespace or punctuation, and followed by the end, whitespace or punctuation (a word
    character, ``_`` included, on either side makes it a different word: never a substring)."""
    if not token:
        return False
    pattern = r"(?<!\w)@" + re.escape(token) + r"(?!\w)"
    return re.search(pattern, text, re.IGNORECASE if ignore_case else 0) is not None


def audience_tokens(features: dict[str, bool]) -> frozenset[str]:
    tokens = set(AUDIENCE_TOKENS_DEFAULT)
    if features.get(FEATURE_MENTION_EVERYONE):
        tokens.add("everyone")
    return frozenset(tokens)


@dataclass(frozen=True)
class MentionContext:
    uid: str | None
    display_name: str | None  # only when the member consented to profile sync on that server
    audience: frozenset[str]


def _norm_token(value: str) -> str:
    return value.removeprefix("@").strip().casefold()


def is_mention(body: str, mentions: list[MentionRef] | None, ctx: MentionContext) -> bool:
    if mentions is not None:  # the server sent metadata: it is authoritative
        for m in mentions:
            if m.type == "user":
                if ctx.uid and (m.target_id == ctx.uid or m.token.removeprefix("@") == ctx.uid):
                    return True
            elif _norm_token(m.token) in ctx.audience or _norm_token(m.target_id) in ctx.audience:
                return True
        return False
    if ctx.uid and has_token(body, ctx.uid, ignore_case=False):
        return True
    if ctx.display_name and has_token(body, ctx.display_name.strip(), ignore_case=True):
        return True
    return any(has_token(body, word, ignore_case=True) for word in ctx.audience)


# -- notification content (7.6) ------------------------------------------------------------------
def notification_body(body: str, attachments: list[AttachmentRef]) -> str:
    text = body.strip()
    if text:
        if len(text) > NOTIFICATION_BODY_MAX:
            return text[: NOTIFICATION_BODY_MAX - 3] + "..."
        return text
    if len(attachments) == 1:
        return "Sent an image."
    if attachments:
        return f"Sent {len(attachments)} attachments."
    return "New message."


def notification_title(author: str, channel_name: str) -> str:
    return f"{author} in #{channel_name}"


# -- policy: own, muted, focused non-mention, DND and quiet hours never notify (7.6, 7.7, D9) ----------------
def in_quiet_hours(now: datetime, quiet: QuietHours, timezone: str) -> bool:
    """``now`` (aware) falls in the daily window ``[start, end)`` in ``timezone``; a window
    whose end is before its start runs over midnight; ``start == end`` is an empty window."""
    return quiet.covers(now, timezone)


@dataclass(frozen=True)
class PolicyInput:
    own: bool = False
    mention: bool = False
    server_muted: bool = False
    channel_muted: bool = False
    server_level: NotifyLevel = DEFAULT_LEVEL
    channel_level: NotifyLevel | None = None
    focused_active: bool = False
    dnd: bool = False
    quiet: bool = False
    stale: bool = False
    text_channel: bool = True


def decide(p: PolicyInput) -> tuple[bool, str]:
    """Whether a message notifies, and the rule that decided it."""
    if p.own:
        return False, "own_message"
    if not p.text_channel:
        return False, "not_text_channel"
    if p.stale:
        return False, "stale"
    if p.server_muted:
        return False, "server_muted"
    if p.channel_muted:
        return False, "channel_muted"
    level = p.channel_level or p.server_level
    if level == "nothing":
        return False, "level_nothing"
    if level == "mentions" and not p.mention:
        return False, "level_mentions"
    if p.focused_active and not p.mention:
        return False, "focused_active_channel"
    if p.dnd:
        return False, "dnd"
    if p.quiet:
        return False, "quiet_hours"
    return True, "mention" if p.mention else "message"


# -- state ---------------------------------------------------------------------------------------
class ChannelState(BaseModel):
    channel_id: str
    name: str = ""
    kind: str = "text"
    listed: bool = False  # appeared in a channel list of the server
    base_unread: int = 0  # unread messages known only as a number (server seed, overflow)
    base_mentions: int = 0
    entries: list[tuple[str, bool]] = Field(default_factory=list)  # (message id, mention), after cursor
    newest_message_id: str | None = None
    last_read_message_id: str | None = None
    cursor_index: int | None = None  # the server's read-ack position, when it has read-acks
    muted: bool = False
    muted_until: datetime | None = None
    level: NotifyLevel | None = None
    revision: int = 0

    @property
    def unread(self) -> int:
        return self.base_unread + len(self.entries)

    @property
    def mentions(self) -> int:
        return self.base_mentions + sum(1 for _, m in self.entries if m)

    def add(self, message_id: str, mention: bool) -> None:
        self.entries.append((message_id, mention))
        if len(self.entries) > MAX_ENTRIES_PER_CHANNEL:
            _, old_mention = self.entries.pop(0)
            self.base_unread += 1
            self.base_mentions += int(old_mention)

    def clear(self, up_to: str | None) -> bool:
        """Mark read up to ``up_to`` (None: the newest known message). Unknown ids are ignored
        unless they are the newest message. Returns whether anything changed."""
        before = (self.unread, self.mentions, self.last_read_message_id)
        target = up_to or self.newest_message_id
        if target is None:
            self.base_unread = self.base_mentions = 0
            self.entries.clear()
            return before != (self.unread, self.mentions, self.last_read_message_id)
        ids = [mid for mid, _ in self.entries]
        if target in ids:
            del self.entries[: ids.index(target) + 1]
            self.base_unread = self.base_mentions = 0
        elif target == self.newest_message_id or up_to is None:
            self.entries.clear()
            self.base_unread = self.base_mentions = 0
        else:
            return False
        self.last_read_message_id = target
        return before != (self.unread, self.mentions, self.last_read_message_id)

    def counts(self, server_id: str) -> ChannelCounts:
        return ChannelCounts(
            server_id=server_id,
            channel_id=self.channel_id,
            name=self.name,
            unread=self.unread,
            mentions=self.mentions,
            last_read_message_id=self.last_read_message_id,
            revision=self.revision,
        )


class ServerState(BaseModel):
    server_id: str
    user_uid: str | None = None
    profile_consent: bool | None = None
    display_name: str | None = None  # the member's own display name there (profile.updated)
    joined_at: datetime | None = None  # messages created before the member joined are history, not unread
    features: dict[str, bool] = Field(default_factory=dict)
    muted: bool = False
    muted_until: datetime | None = None
    level: NotifyLevel = DEFAULT_LEVEL
    names: dict[str, str] = Field(default_factory=dict)  # uid -> display name (bounded)
    channels: dict[str, ChannelState] = Field(default_factory=dict)

    @property
    def read_acks(self) -> bool:
        return bool(self.features.get(FEATURE_READ_ACKS))

    def mention_context(self) -> MentionContext:
        name = self.display_name if self.profile_consent else None
        return MentionContext(self.user_uid, name, audience_tokens(self.features))

    def channel(self, channel_id: str) -> ChannelState:
        ch = self.channels.get(channel_id)
        if ch is None:
            ch = self.channels[channel_id] = ChannelState(channel_id=channel_id)
        return ch

    def remember_name(self, uid: str, name: str) -> None:
        self.names.pop(uid, None)
        self.names[uid] = name
        while len(self.names) > MAX_NAMES_PER_SERVER:
            self.names.pop(next(iter(self.names)))

    def prefs(self) -> ServerPrefs:
        return ServerPrefs(
            server_id=self.server_id,
            muted=self.muted,
            muted_until=self.muted_until if self.muted else None,
            level=self.level,
            channels=[
                ChannelPrefs(
                    channel_id=c.channel_id,
                    muted=c.muted,
                    muted_until=c.muted_until if c.muted else None,
                    level=c.level,
                )
                for c in self.channels.values()
                if c.muted or c.level is not None
            ],
        )

    def counts(self, only: Iterable[str] | None = None) -> ServerCounts:
        text = [c for c in self.channels.values() if c.kind == "text"]
        wanted = set(only) if only is not None else None
        return ServerCounts(
            server_id=self.server_id,
            unread=sum(c.unread for c in text),
            mentions=sum(c.mentions for c in text),
            channels=[c.counts(self.server_id) for c in text if wanted is None or c.channel_id in wanted],
        )


class MemberPrefs(BaseModel):
    dnd: bool = False
    quiet_hours: QuietHours = Field(default_factory=QuietHours)
    timezone: str = "UTC"
    status: MemberStatus = "online"
    hide_muted_channels: bool = False

    @model_validator(mode="after")
    def _status_of_old_rows(self) -> MemberPrefs:
        if self.dnd and self.status != "dnd":  # stored before the status existed
            self.status = "dnd"
        return self

    def public(self) -> MemberNotifyPrefs:
        return MemberNotifyPrefs(
            status=self.status,
            dnd=self.dnd,
            quiet_hours=self.quiet_hours,
            timezone=self.timezone,
            hide_muted_channels=self.hide_muted_channels,
        )


@dataclass
class Focus:
    server_id: str | None
    channel_id: str | None
    focused: bool
    visible: bool
    at: datetime


@dataclass
class MemberState:
    prefs: MemberPrefs = field(default_factory=MemberPrefs)
    servers: dict[str, ServerState] = field(default_factory=dict)
    focus: dict[str, Focus] = field(default_factory=dict)  # client id -> what that UI shows


@dataclass
class Effects:
    """What the service must do after a domain call."""

    changed: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (member, server) -> channels
    notifications: list[tuple[str, Notification]] = field(default_factory=list)
    ack_puts: list[tuple[str, str, str, str]] = field(default_factory=list)  # member, server, channel, msg
    ack_gets: list[tuple[str, str, str]] = field(default_factory=list)
    prefs_changed: set[tuple[str, str]] = field(default_factory=set)
    member_prefs_changed: set[str] = field(default_factory=set)  # publish ``notify.member``

    def touch(self, member: str, server_id: str, channel_id: str) -> None:
        self.changed.setdefault((member, server_id), set()).add(channel_id)

    def merge(self, other: Effects) -> Effects:
        for key, chans in other.changed.items():
            self.changed.setdefault(key, set()).update(chans)
        self.notifications += other.notifications
        self.ack_puts += other.ack_puts
        self.ack_gets += other.ack_gets
        self.prefs_changed |= other.prefs_changed
        self.member_prefs_changed |= other.member_prefs_changed
        return self

    def __bool__(self) -> bool:
        return bool(
            self.changed
            or self.notifications
            or self.ack_puts
            or self.ack_gets
            or self.prefs_changed
            or self.member_prefs_changed
        )


ServerLoader = Callable[[str, str], ServerRecord | None]


class Engine:
    """Every member's counts, cursors and policy, with dirty tracking for persistence."""

    def __init__(
        self, clock: Callable[[], datetime] = utcnow, server_loader: ServerLoader | None = None
    ) -> None:
        self.clock = clock
        self.server_loader = server_loader
        self.members: dict[str, MemberState] = {}
        self.dirty_members: set[str] = set()
        self.dirty_servers: set[tuple[str, str]] = set()
        self.dirty_channels: set[tuple[str, str, str]] = set()
        self.deleted_servers: set[tuple[str, str]] = set()

    # -- access ------------------------------------------------------------------------------
    def forget_member(self, member: str) -> None:
        """A removed member: nothing of it is kept (nor written back by a pending flush)."""
        self.members.pop(member, None)
        self.dirty_members.discard(member)
        self.dirty_servers = {k for k in self.dirty_servers if k[0] != member}
        self.dirty_channels = {k for k in self.dirty_channels if k[0] != member}
        self.deleted_servers = {k for k in self.deleted_servers if k[0] != member}

    def member(self, member: str) -> MemberState:
        st = self.members.get(member)
        if st is None:
            st = self.members[member] = MemberState()
        return st

    def server(self, member: str, server_id: str) -> ServerState:
        ms = self.member(member)
        sv = ms.servers.get(server_id)
        if sv is None:
            sv = ms.servers[server_id] = ServerState(server_id=server_id)
            record = self.server_loader(member, server_id) if self.server_loader else None
            if record is not None:
                sv.user_uid, sv.profile_consent = record.user_uid, record.profile_consent
            self.dirty_servers.add((member, server_id))
            self.deleted_servers.discard((member, server_id))
        return sv

    def _bump(self, fx: Effects, member: str, server_id: str, ch: ChannelState) -> None:
        ch.revision += 1
        self.dirty_channels.add((member, server_id, ch.channel_id))
        fx.touch(member, server_id, ch.channel_id)

    def focused_active(self, member: str, server_id: str, channel_id: str) -> bool:
        now = self.clock()
        ttl = timedelta(seconds=FOCUS_TTL_S)
        return any(
            f.focused
            and f.visible
            and f.server_id == server_id
            and f.channel_id == channel_id
            and now - f.at <= ttl
            for f in self.member(member).focus.values()
        )

    # -- events ------------------------------------------------------------------------------
    def on_server_joined(self, member: str, record: ServerRecord) -> Effects:
        sv = self.server(member, record.server_id)
        sv.user_uid, sv.profile_consent = record.user_uid, record.profile_consent
        sv.joined_at = record.joined_at
        self.dirty_servers.add((member, record.server_id))
        fx = Effects()
        fx.changed.setdefault((member, record.server_id), set())
        return fx

    def on_server_left(self, member: str, server_id: str) -> Effects:
        ms = self.member(member)
        if ms.servers.pop(server_id, None) is not None:
            self.deleted_servers.add((member, server_id))
            self.dirty_servers.discard((member, server_id))
            self.dirty_channels = {k for k in self.dirty_channels if k[:2] != (member, server_id)}
        return Effects()

    def on_capabilities(self, member: str, server_id: str, caps: CapabilitySnapshot) -> Effects:
        sv = self.server(member, server_id)
        if sv.features != caps.features:
            sv.features = dict(caps.features)
            self.dirty_servers.add((member, server_id))
        return Effects()

    def on_channels(self, member: str, server_id: str, groups: list[ChannelGroupInfo]) -> Effects:
        sv = self.server(member, server_id)
        fx = Effects()
        fx.changed.setdefault((member, server_id), set())
        for group in groups:
            for info in group.channels:
                first_sight = info.id not in sv.channels
                ch = sv.channel(info.id)
                changed = (ch.name, ch.kind, ch.listed) != (info.name, info.type, True)
                ch.name, ch.kind, ch.listed = info.name, info.type, True
                if (
                    info.unread_count is not None
                    and info.type == "text"
                    and not mute_active(ch.muted, ch.muted_until, self.clock())
                    and (sv.read_acks or first_sight)
                    and info.unread_count != ch.unread
                ):
                    # the server's count seeds the badge (rule D6): the server's count for this
                    # uid replaces ours (positions unknown).
                    mentions = min(ch.mentions, info.unread_count)
                    ch.entries.clear()
                    ch.base_unread, ch.base_mentions = info.unread_count, mentions
                    changed = True
                if changed:
                    self._bump(fx, member, server_id, ch)
                if sv.read_acks and info.type == "text":
                    fx.ack_gets.append((member, server_id, info.id))
        return fx

    def on_profile(self, member: str, server_id: str, profile: UserProfile) -> Effects:
        sv = self.server(member, server_id)
        sv.remember_name(profile.user_uid, profile.display_name)
        if profile.user_uid == sv.user_uid:
            sv.display_name = profile.display_name
        self.dirty_servers.add((member, server_id))
        return Effects()

    def on_message(self, member: str, msg: ChatMessage) -> Effects:
        fx = Effects()
        sv = self.server(member, msg.server_id)
        ch = sv.channel(msg.channel_id)
        if ch.kind != "text" or msg.id == ch.newest_message_id or any(m == msg.id for m, _ in ch.entries):
            return fx
        ch.newest_message_id = msg.id
        own = sv.user_uid is not None and msg.author_uid == sv.user_uid
        if sv.joined_at is not None and _aware(msg.created_at) < _aware(sv.joined_at).replace(microsecond=0):
            # History the member found on joining: read, silent (the reference client counts only
            # messages that arrive after it connects).
            ch.clear(msg.id)
            self._bump(fx, member, msg.server_id, ch)
            return fx
        now = self.clock()
        mention = not own and is_mention(msg.body, msg.mentions, sv.mention_context())
        active = self.focused_active(member, msg.server_id, msg.channel_id)
        channel_muted = mute_active(ch.muted, ch.muted_until, now)
        if own or active:
            ch.clear(msg.id)
            if sv.read_acks:
                fx.ack_puts.append((member, msg.server_id, msg.channel_id, msg.id))
            self._bump(fx, member, msg.server_id, ch)
        elif channel_muted:
            # a muted channel does not count (issue 18): only its newest message id moves
            self.dirty_channels.add((member, msg.server_id, msg.channel_id))
        else:
            ch.add(msg.id, mention)
            self._bump(fx, member, msg.server_id, ch)
        prefs = self.member(member).prefs
        ok, _reason = decide(
            PolicyInput(
                own=own,
                mention=mention,
                server_muted=mute_active(sv.muted, sv.muted_until, now),
                channel_muted=channel_muted,
                server_level=sv.level,
                channel_level=ch.level,
                focused_active=active,
                dnd=prefs.dnd,
                quiet=in_quiet_hours(now, prefs.quiet_hours, prefs.timezone),
                stale=now - _aware(msg.created_at) > NOTIFY_MAX_AGE,
            )
        )
        if ok:
            author = sv.names.get(msg.author_uid) or msg.author_uid
            fx.notifications.append(
                (
                    member,
                    Notification(
                        server_id=msg.server_id,
                        channel_id=msg.channel_id,
                        message_id=msg.id,
                        author_uid=msg.author_uid,
                        title=notification_title(author, ch.name or msg.channel_id),
                        body=notification_body(msg.body, msg.attachments),
                        tag=notification_tag(msg.server_id, msg.channel_id),
                        mention=mention,
                        created_at=msg.created_at,
                    ),
                )
            )
        return fx

    def on_message_deleted(self, member: str, server_id: str, channel_id: str, message_id: str) -> Effects:
        fx = Effects()
        sv = self.member(member).servers.get(server_id)
        ch = sv.channels.get(channel_id) if sv else None
        if ch is None:
            return fx
        kept = [(m, x) for m, x in ch.entries if m != message_id]
        if len(kept) != len(ch.entries):
            ch.entries = kept
            self._bump(fx, member, server_id, ch)
        return fx

    def on_read_ack(self, member: str, server_id: str, ack: ReadAckUpdated) -> Effects:
        sv = self.member(member).servers.get(server_id)
        if sv is None or sv.user_uid is None or ack.user_uid != sv.user_uid:
            return Effects()  # only our own uid's acks (7.5)
        return self._apply_ack(member, server_id, ack.channel_id, ack.last_read_message_id, ack.cursor_index)

    def on_read_ack_result(self, member: str, result: ReadAckResult) -> Effects:
        if not result.supported:
            return Effects()
        return self._apply_ack(
            member, result.server_id, result.channel_id, result.last_read_message_id, result.cursor_index
        )

    def _apply_ack(
        self, member: str, server_id: str, channel_id: str, message_id: str | None, cursor: int | None
    ) -> Effects:
        fx = Effects()
        sv = self.member(member).servers.get(server_id)
        if sv is None or message_id is None:
            return fx
        ch = sv.channel(channel_id)
        if cursor is not None and ch.cursor_index is not None and cursor < ch.cursor_index:
            return fx  # stale: cursors only move forward
        if cursor is not None and cursor != ch.cursor_index:
            ch.cursor_index = cursor
            self.dirty_channels.add((member, server_id, channel_id))
        known = message_id in {m for m, _ in ch.entries} or message_id == ch.newest_message_id
        changed = ch.clear(message_id if known else None)
        if changed:
            ch.last_read_message_id = message_id
            self._bump(fx, member, server_id, ch)
        return fx

    # -- commands ----------------------------------------------------------------------------
    def mark_read(
        self, member: str, server_id: str, channel_id: str | None = None, message_id: str | None = None
    ) -> Effects:
        fx = Effects()
        sv = self.member(member).servers.get(server_id)
        if sv is None:
            return fx
        targets = [sv.channel(channel_id)] if channel_id else list(sv.channels.values())
        for ch in targets:
            if ch.kind != "text":
                continue
            had = ch.unread > 0 or (ch.newest_message_id not in (None, ch.last_read_message_id))
            if ch.clear(message_id if channel_id else None) or had:
                self._bump(fx, member, server_id, ch)
                if sv.read_acks and ch.last_read_message_id:
                    fx.ack_puts.append((member, server_id, ch.channel_id, ch.last_read_message_id))
        return fx

    def focus(self, member: str, args: FocusArgs) -> Effects:
        ms = self.member(member)
        previous = ms.focus.get(args.client_id)
        ms.focus[args.client_id] = Focus(
            args.server_id, args.channel_id, args.focused, args.visible, self.clock()
        )
        if not (args.focused and args.visible and args.server_id and args.channel_id):
            return Effects()
        if args.server_id not in ms.servers:
            return Effects()
        same = (
            previous is not None
            and previous.focused
            and previous.visible
            and (previous.server_id, previous.channel_id) == (args.server_id, args.channel_id)
        )
        ch = ms.servers[args.server_id].channels.get(args.channel_id)
        if same and (ch is None or ch.unread == 0):
            return Effects()  # a heartbeat with nothing to clear
        return self.mark_read(member, args.server_id, args.channel_id)

    def forget_client(self, member: str, client_id: str) -> None:
        self.member(member).focus.pop(client_id, None)

    def set_mute(
        self,
        member: str,
        server_id: str,
        channel_id: str | None,
        muted: bool,
        duration: timedelta | None = None,
    ) -> Effects:
        """Mute (for ``duration``, or until unmuted) or unmute a server or one channel. Muting a
        channel clears its badge: a muted channel does not count as unread."""
        sv = self.server(member, server_id)
        until = self.clock() + duration if muted and duration is not None else None
        fx = Effects(prefs_changed={(member, server_id)})
        if channel_id is None:
            sv.muted, sv.muted_until = muted, until
            self.dirty_servers.add((member, server_id))
        else:
            ch = sv.channel(channel_id)
            ch.muted, ch.muted_until = muted, until
            self.dirty_channels.add((member, server_id, channel_id))
            if muted and (ch.unread or ch.mentions):
                ch.entries.clear()
                ch.base_unread = ch.base_mentions = 0
                self._bump(fx, member, server_id, ch)
        return fx

    def next_mute_expiry(self) -> datetime | None:
        """The earliest end of a timed mute (any member), or None."""
        ends = [
            until
            for ms in self.members.values()
            for sv in ms.servers.values()
            for until in [sv.muted_until if sv.muted else None]
            + [c.muted_until if c.muted else None for c in sv.channels.values()]
            if until is not None
        ]
        return min((_aware(u) for u in ends), default=None)

    def expire_mutes(self) -> Effects:
        """Turn off every timed mute that is over (its server's prefs change)."""
        now = _aware(self.clock())
        fx = Effects()
        for member, ms in self.members.items():
            for sv in ms.servers.values():
                if sv.muted and sv.muted_until is not None and _aware(sv.muted_until) <= now:
                    sv.muted, sv.muted_until = False, None
                    self.dirty_servers.add((member, sv.server_id))
                    fx.prefs_changed.add((member, sv.server_id))
                for ch in sv.channels.values():
                    if ch.muted and ch.muted_until is not None and _aware(ch.muted_until) <= now:
                        ch.muted, ch.muted_until = False, None
                        self.dirty_channels.add((member, sv.server_id, ch.channel_id))
                        fx.prefs_changed.add((member, sv.server_id))
        return fx

    def set_level(
        self, member: str, server_id: str, channel_id: str | None, level: NotifyLevel | None
    ) -> Effects:
        sv = self.server(member, server_id)
        if channel_id is None:
            sv.level = level or DEFAULT_LEVEL
            self.dirty_servers.add((member, server_id))
        else:
            sv.channel(channel_id).level = level
            self.dirty_channels.add((member, server_id, channel_id))
        return Effects(prefs_changed={(member, server_id)})

    def set_dnd(self, member: str, dnd: bool) -> Effects:
        """DND on sets the status ``dnd``; off goes back to ``online`` (from ``dnd`` only)."""
        prefs = self.member(member).prefs
        if dnd:
            return self.set_status(member, "dnd")
        return self.set_status(member, "online" if prefs.status == "dnd" else prefs.status)

    def set_status(self, member: str, status: MemberStatus) -> Effects:
        prefs = self.member(member).prefs
        prefs.status = status
        prefs.dnd = status == "dnd"
        self.dirty_members.add(member)
        return Effects(member_prefs_changed={member})

    def set_hide_muted(self, member: str, hide: bool) -> Effects:
        self.member(member).prefs.hide_muted_channels = hide
        self.dirty_members.add(member)
        return Effects(member_prefs_changed={member})

    def set_quiet_hours(self, member: str, quiet: QuietHours, timezone: str | None) -> Effects:
        prefs = self.member(member).prefs
        prefs.quiet_hours = quiet
        if timezone is not None:
            prefs.timezone = timezone
        self.dirty_members.add(member)
        return Effects(member_prefs_changed={member})

    # -- queries -----------------------------------------------------------------------------
    def unread(self, member: str, server_id: str | None = None) -> UnreadResult:
        servers = self.member(member).servers
        chosen = [servers[server_id]] if server_id in servers else [] if server_id else servers.values()
        return UnreadResult(servers=[sv.counts() for sv in chosen])

    def unread_updated(self, member: str, server_id: str, channels: set[str]) -> UnreadUpdated | None:
        sv = self.member(member).servers.get(server_id)
        if sv is None:
            return None
        counts = sv.counts(channels)
        return UnreadUpdated(
            server_id=server_id, unread=counts.unread, mentions=counts.mentions, channels=counts.channels
        )

    def prefs(self, member: str) -> NotifyPrefs:
        ms = self.member(member)
        return NotifyPrefs(
            dnd=ms.prefs.dnd,
            quiet_hours=ms.prefs.quiet_hours,
            timezone=ms.prefs.timezone,
            servers=[sv.prefs() for sv in ms.servers.values()],
            status=ms.prefs.status,
            hide_muted_channels=ms.prefs.hide_muted_channels,
        )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def new_event_id(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex}"
