"""The pure, synchronous view model of the desktop app (no Dear PyGui, no asyncio).

It applies a ``Snapshot`` and then bus events (each with its ``Nats-Sequence``), and knows
everything the view draws: servers and their connection chips, the active server and channel
(remembered per server), channel tree with collapse state and filter, unread/mention counts,
grouped timeline rows (features 5.1, rule D13), typing labels (6.4), presence, toasts and banners,
keyboard navigation (Alt/Ctrl+Alt/Alt+Shift + arrows) and the Ctrl+K quick switcher.

Tests drive it directly; the view reads it every frame and redraws only what ``dirty`` names.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from services.core.contracts import events as ev
from services.core.contracts.chat import (
    CapabilitySnapshot,
    ChannelGroupInfo,
    ChannelInfo,
    ChannelsUpdated,
    ChatMessage,
    ConnectionState,
    MessageCreated,
    MessageDeleted,
    MessagePreviews,
    PresenceChange,
    PresenceEntry,
    PresenceSnapshot,
    ProfileUpdated,
    ServerJoined,
    ServerLeft,
    ServerRecord,
    ServerUpdated,
    ServerView,
    Snapshot,
    Typing,
    UserProfile,
)
from services.core.contracts.events import TypedEvent, decode_event
from services.core.contracts.notify import (
    MemberNotifyPrefs,
    Notification,
    NotifyPrefs,
    ServerPrefs,
    UnreadResult,
    UnreadUpdated,
)
from ui.state.notify_settings import NotifySettings
from ui.state.store import MessageLog

GROUP_WINDOW = timedelta(minutes=5)
TYPING_TTL_S = 6.0
TOAST_S = 2.2
BADGE_CAP = 99
MAX_MESSAGE_BYTES_DEFAULT = 64 * 1024
MAX_UPLOAD_BYTES_DEFAULT = 10 * 1024 * 1024
REPLY_PREVIEW_CHARS = 140

Area = Literal["rail", "channels", "timeline", "header", "members", "typing", "overlay", "banner", "dock"]
ALL_AREAS: frozenset[str] = frozenset(
    {"rail", "channels", "timeline", "header", "members", "typing", "overlay", "banner", "dock"}
)

GREEN = (59, 165, 93)
AMBER = (250, 166, 26)
RED = (237, 66, 69)
BRAND = (88, 101, 242)


# -- small pure helpers ---------------------------------------------------------------------------
def badge_text(count: int, cap: bool = True) -> str:
    if count <= 0:
        return ""
    return f"{BADGE_CAP}+" if cap and count > BADGE_CAP else str(count)


def short_uid(uid: str) -> str:
    """numbers.md: ≤ 12 characters as is; otherwise first 8 + "…" + last 4."""
    return uid if len(uid) <= 12 else f"{uid[:8]}…{uid[-4:]}"


def format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.2f} MB"


def clock_time(dt: datetime) -> str:
    hour = dt.hour % 12 or 12
    return f"{hour}:{dt.minute:02d} {'AM' if dt.hour < 12 else 'PM'}"


def header_time(created: datetime, now: datetime) -> str:
    """rule D13: "Today at 3:04 PM", "Yesterday at 3:04 PM", otherwise the date plus the time."""
    local = created.astimezone()
    today = now.astimezone().date()
    if local.date() == today:
        return f"Today at {clock_time(local)}"
    if local.date() == today - timedelta(days=1):
        return f"Yesterday at {clock_time(local)}"
    return f"{local.strftime('%x')} {clock_time(local)}"


def full_time(created: datetime) -> str:
    local = created.astimezone()
    return f"{local.strftime('%x')} {clock_time(local)}"


def typing_label(names: list[str]) -> str:
    """features 6.4 / ux.md §5 typing texts."""
    n = len(names)
    if n == 0:
        return ""
    if n == 1:
        return f"{names[0]} is typing..."
    if n == 2:
        return f"{names[0]} and {names[1]} are typing..."
    if n <= 5:
        return f"{', '.join(names[:-1])}, and {names[-1]} are typing..."
    return f"{names[0]} and {names[1]} plus {n - 2} others are typing..."


def fuzzy_score(query: str, text: str) -> int | None:
    """Subsequence match (case-insensitive); higher is better, ``None`` when it does not match."""
    q, t = query.lower().strip(), text.lower()
    if not q:
        return 0
    if q in t:
        return 1000 - t.index(q) * 2 - len(t)
    score, pos, prev = 0, 0, -2
    for ch in q:
        found = t.find(ch, pos)
        if found < 0:
            return None
        score += 10 if found == prev + 1 else 1
        if found == 0 or not t[found - 1].isalnum():
            score += 5
        prev, pos = found, found + 1
    return score - len(t) // 4


def mentions_me(message: ChatMessage, my_uid: str, my_name: str | None) -> bool:
    """rule D14: ``mentions[]`` when present; otherwise only explicit tokens, never a substring."""
    if message.mentions is not None:
        for m in message.mentions:
            if m.token in ("@here", "@channel"):
                return True
            if m.type == "user" and (m.target_id == my_uid or m.token in (my_uid, f"@{my_uid}")):
                return True
        return False
    names = [re.escape(my_uid), "here", "channel"]
    if my_name:
        names.append(re.escape(my_name))
    pattern = r"(?:^|(?<=[\s(\[{,.;:!?]))@(?:" + "|".join(names) + r")(?=$|[\s)\]},.;:!?'\"])"
    return re.search(pattern, message.body, re.IGNORECASE) is not None


# -- view records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimelineRow:
    message: ChatMessage
    compact: bool
    author: str
    time_text: str  # header time, or the inline time of a compact row
    full_time: str  # hover text
    quote: str | None  # "@author preview" line of a reply, or None
    highlight: bool  # mentions me
    own: bool


@dataclass(frozen=True)
class Chip:
    label: str
    color: tuple[int, int, int]
    tooltip: str


@dataclass
class Toast:
    text: str
    until: float
    error: bool = False


@dataclass
class Banner:
    key: str
    text: str
    level: Literal["info", "warning", "error"] = "warning"
    dismissible: bool = True


@dataclass(frozen=True)
class SwitchItem:
    kind: Literal["server", "channel"]
    server_id: str
    channel_id: str | None
    label: str
    detail: str


@dataclass
class ServerModel:
    record: ServerRecord
    connection: ConnectionState
    capabilities: CapabilitySnapshot | None = None
    groups: list[ChannelGroupInfo] = field(default_factory=list)
    logs: dict[str, MessageLog] = field(default_factory=dict)  # channel -> its bounded message log
    presence: dict[str, dict[str, PresenceEntry]] = field(default_factory=dict)
    typing: dict[str, dict[str, float]] = field(default_factory=dict)  # channel -> uid -> expiry
    profiles: dict[str, UserProfile] = field(default_factory=dict)
    unread: dict[str, int] = field(default_factory=dict)
    mentions: dict[str, int] = field(default_factory=dict)
    has_more: dict[str, bool] = field(default_factory=dict)
    loading: set[str] = field(default_factory=set)
    muted: bool = False

    @property
    def server_id(self) -> str:
        return self.record.server_id

    def log(self, channel_id: str) -> MessageLog:
        log = self.logs.get(channel_id)
        if log is None:
            log = self.logs[channel_id] = MessageLog()
        return log

    def window(self, channel_id: str) -> list[ChatMessage]:
        """The channel's messages held as objects (the rows the timeline can show), oldest first."""
        log = self.logs.get(channel_id)
        return log.window if log is not None else []

    def channel(self, channel_id: str) -> ChannelInfo | None:
        for g in self.groups:
            for c in g.channels:
                if c.id == channel_id:
                    return c
        return None

    def text_channels(self) -> list[ChannelInfo]:
        return [c for g in self.groups for c in g.channels if c.type == "text"]

    def unread_total(self) -> int:
        return sum(self.unread.values())

    def mention_total(self) -> int:
        return sum(self.mentions.values())

    def name_of(self, uid: str) -> str:
        if uid == self.record.user_uid:
            own = self.profiles.get(uid)
            return own.display_name if own and own.display_name else short_uid(uid)
        prof = self.profiles.get(uid)
        return prof.display_name if prof and prof.display_name else short_uid(uid)


class ViewModel:
    """Everything the desktop shows, as plain data. Not thread-safe: main thread only."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime] | None = None
    ):
        self.clock = clock
        self.now = now or (lambda: datetime.now(UTC))
        self.servers: dict[str, ServerModel] = {}
        self.order: list[str] = []
        self.active_server: str | None = None
        self.active_channel: dict[str, str] = {}
        self.collapsed: set[tuple[str, str]] = set()
        self.filters: dict[str, str] = {}
        self.last_seq = 0
        self.snapshot_loaded = False
        self.stack_online = False
        self.stack_detail = ""
        self.from_cache = False
        self.focused = True
        self.toasts: list[Toast] = []
        self.banners: dict[str, Banner] = {}
        self.dismissed: set[str] = set()
        self.status_history: list[str] = []
        self.dirty: set[str] = set(ALL_AREAS)
        self.display_name: str | None = None
        self.members_open = True
        self.on_channel_opened: Callable[[str, str], None] | None = None
        self.counts_from_service = False  # the notification service owns unread/mention counts
        self.count_revisions: dict[tuple[str, str], int] = {}
        self.notifications: list[Notification] = []  # to show (OS or toast), taken by the app
        self.notify = NotifySettings()  # the member's notification settings (issue 18)
        # bumped by every change that can alter already-drawn rows (names, quotes, neighbours)
        self.rows_version = 0

    # -- dirty tracking ----------------------------------------------------------------------
    def touch(self, *areas: str) -> None:
        self.dirty.update(areas or ALL_AREAS)

    def redraw_rows(self, *areas: str) -> None:
        """Something drawn rows show changed outside the events (an avatar arrived, the
        member's own profile): rows are drawn again, and ``areas`` with the timeline."""
        self.rows_version += 1
        self.touch("timeline", *areas)

    def take_dirty(self) -> set[str]:
        d, self.dirty = self.dirty, set()
        return d

    # -- snapshot and events -----------------------------------------------------------------
    def apply_snapshot(self, snap: Snapshot, *, from_cache: bool = False) -> None:
        """Replace the view with ``snap`` (keeps local UI state: active channel, collapse…)."""
        self.rows_version += 1
        previous = self.servers
        self.servers = {}
        self.order = []
        for view in snap.servers:
            sm = self._server_from_view(view)
            old = previous.get(sm.server_id)
            if old is not None:
                sm.muted = old.muted
                # counts are local until the notification service owns them
                sm.unread = {k: v for k, v in old.unread.items() if sm.channel(k)}
                sm.mentions = {k: v for k, v in old.mentions.items() if sm.channel(k)}
            self.servers[sm.server_id] = sm
            self.order.append(sm.server_id)
        self.last_seq = snap.seq
        self.snapshot_loaded = True
        self.from_cache = from_cache
        if self.active_server not in self.servers:
            self.active_server = self.order[0] if self.order else None
        for sid in self.order:
            self._ensure_channel(sid)
        self._refresh_banners()
        self.touch()

    def _server_from_view(self, view: ServerView) -> ServerModel:
        sm = ServerModel(
            record=view.server,
            connection=view.connection,
            capabilities=view.capabilities,
            groups=list(view.groups),
            profiles=dict(view.profiles),
        )
        for ch, msgs in view.messages.items():
            sm.logs[ch] = MessageLog(msgs)
            sm.has_more[ch] = True
        for ch, entries in view.presence.items():
            sm.presence[ch] = {e.client_id: e for e in entries}
        now = self.clock()
        for ch, typers in view.typing.items():
            for t in typers:
                if t.is_typing and t.user_uid != view.server.user_uid:
                    sm.typing.setdefault(ch, {})[t.user_uid] = self._typing_expiry(t, now)
        for g in sm.groups:
            for c in g.channels:
                if c.unread_count:
                    sm.unread[c.id] = c.unread_count  # rule D6: seed from the server's count
        return sm

    def _typing_expiry(self, t: Typing, now: float) -> float:
        if t.expires_at is not None:
            remaining = (t.expires_at - self.now()).total_seconds()
            return now + max(0.0, min(TYPING_TTL_S, remaining))
        return now + TYPING_TTL_S

    def apply(self, event: TypedEvent) -> bool:
        """The one place where an event changes the view (the events table decoded it: chat,
        unread counts, notifications, notification preferences). Applies it only if it is newer
        than what the view holds; returns whether it was newer."""
        if event.seq <= self.last_seq:
            return False
        self.last_seq = event.seq
        payload = event.payload
        if payload is None:
            return True  # an unknown kind or an invalid payload: skipped, still counted as seen
        handler = self._HANDLERS.get(event.kind)
        if handler is not None:
            handler(self, event.server_id, payload, event)
        return True

    def apply_event(self, seq: int, envelope: dict[str, Any]) -> bool:
        """``apply`` for an envelope still in JSON form (tests, the benchmark, the cache)."""
        if seq <= self.last_seq:
            return False
        return self.apply(decode_event(seq, envelope, strict=False))

    # handlers ----------------------------------------------------------------------------------
    def _on_joined(self, sid: str, ev: ServerJoined, _ev: TypedEvent) -> None:
        self.server_joined(ev.server)

    def server_joined(self, rec: ServerRecord) -> None:
        """A joined server (the event, or the join command's answer ahead of it)."""
        if rec.server_id in self.servers:
            self.servers[rec.server_id].record = rec
        else:
            self.servers[rec.server_id] = ServerModel(
                record=rec, connection=ConnectionState(state="connecting")
            )
            self.order.append(rec.server_id)
        if self.active_server is None:
            self.active_server = rec.server_id
        self._refresh_banners()
        self.touch()

    def _on_left(self, sid: str, ev: ServerLeft, _ev: TypedEvent) -> None:
        self.remove_server(ev.server_id)

    def remove_server(self, sid: str) -> None:
        if sid not in self.servers:
            return
        del self.servers[sid]
        self.order.remove(sid)
        self.active_channel.pop(sid, None)
        self.filters.pop(sid, None)
        self.collapsed = {k for k in self.collapsed if k[0] != sid}
        self.notify.forget_server(sid)
        for key in [k for k in self.banners if k.endswith(f":{sid}")]:
            del self.banners[key]
        if self.active_server == sid:
            self.active_server = self.order[0] if self.order else None
            if self.active_server:
                self._ensure_channel(self.active_server)
        self.touch()

    def _on_updated(self, sid: str, ev: ServerUpdated, _ev: TypedEvent) -> None:
        self.rows_version += 1
        if ev.server.server_id in self.servers:
            self.servers[ev.server.server_id].record = ev.server
            self.touch("rail", "channels", "header", "dock")

    def _on_connection(self, sid: str, ev: ConnectionState, _ev: TypedEvent) -> None:
        sm = self.servers.get(sid)
        if sm is None:
            return
        sm.connection = ev
        self._refresh_banners()
        self.touch("rail", "header", "banner")

    def _on_caps(self, sid: str, ev: CapabilitySnapshot, _ev: TypedEvent) -> None:
        sm = self.servers.get(sid)
        if sm is not None:
            sm.capabilities = ev
            self.touch("channels", "header")

    def _on_channels(self, sid: str, ev: ChannelsUpdated, _ev: TypedEvent) -> None:
        sm = self.servers.get(sid)
        if sm is None:
            return
        sm.groups = list(ev.groups)
        for g in sm.groups:
            for c in g.channels:
                if c.unread_count and c.id not in sm.unread:
                    sm.unread[c.id] = c.unread_count
        self._ensure_channel(sid)
        self.touch("channels", "rail", "header", "timeline")

    def _on_message(self, sid: str, ev: MessageCreated, _ev: TypedEvent) -> None:
        self.add_message(ev.message)

    def add_message(self, m: ChatMessage) -> bool:
        sm = self.servers.get(m.server_id)
        if sm is None:
            return False
        log = sm.log(m.channel_id)
        if not log.add(m):
            return False
        shown = self.active_server == m.server_id and self.active_channel.get(m.server_id) == m.channel_id
        if not shown:  # the timeline bounds the shown channel's log around its rows
            log.trim(len(log), len(log), following=True)
        typers = sm.typing.get(m.channel_id)
        if typers:
            typers.pop(m.author_uid, None)
        own = m.author_uid == sm.record.user_uid
        visible = (
            self.focused
            and self.active_server == m.server_id
            and self.active_channel.get(m.server_id) == m.channel_id
        )
        ch = sm.channel(m.channel_id)
        if not own and not visible and not self.counts_from_service and (ch is None or ch.type == "text"):
            sm.unread[m.channel_id] = sm.unread.get(m.channel_id, 0) + 1
            if mentions_me(m, sm.record.user_uid, self._my_name(sm)):
                sm.mentions[m.channel_id] = sm.mentions.get(m.channel_id, 0) + 1
            self.touch("rail", "channels")
        if self.active_server == m.server_id and self.active_channel.get(m.server_id) == m.channel_id:
            self.touch("timeline", "typing")
        return True

    def _on_deleted(self, sid: str, ev: MessageDeleted, _ev: TypedEvent) -> None:
        self.rows_version += 1
        sm = self.servers.get(sid)
        if sm is None:
            return
        log = sm.logs.get(ev.channel_id)
        if log is not None and log.delete(ev.message_id):
            self.touch("timeline")

    def _on_previews(self, sid: str, ev: MessagePreviews, _ev: TypedEvent) -> None:
        sm = self.servers.get(sid)
        log = sm.logs.get(ev.channel_id) if sm is not None else None
        m = log.find(ev.message_id) if log is not None else None
        if log is None or m is None:
            return  # not held as an object (paged out or never loaded): the stack's copy has them
        log.replace(m.model_copy(update={"link_previews": ev.previews}))
        self.rows_version += 1
        self.touch("timeline")

    def _on_typing(self, sid: str, ev: Typing, _ev: TypedEvent) -> None:
        sm = self.servers.get(sid)
        if sm is None or ev.user_uid == sm.record.user_uid:
            return
        typers = sm.typing.setdefault(ev.channel_id, {})
        if ev.is_typing:
            typers[ev.user_uid] = self._typing_expiry(ev, self.clock())
        else:
            typers.pop(ev.user_uid, None)
        self.touch("typing")

    def _on_presence_snapshot(self, sid: str, ev: PresenceSnapshot, _ev: TypedEvent) -> None:
        sm = self.servers.get(sid)
        if sm is None:
            return
        sm.presence[ev.channel_id] = {e.client_id: e for e in ev.members}
        present = {e.user_uid for e in ev.members}
        typers = sm.typing.get(ev.channel_id, {})
        for uid in [u for u in typers if u not in present]:
            del typers[uid]
        self.touch("members", "typing")

    def _on_presence_joined(self, sid: str, ev: PresenceChange, _ev: TypedEvent) -> None:
        sm = self.servers.get(sid)
        if sm is not None:
            sm.presence.setdefault(ev.channel_id, {})[ev.member.client_id] = ev.member
            self.touch("members")

    def _on_presence_left(self, sid: str, ev: PresenceChange, _ev: TypedEvent) -> None:
        sm = self.servers.get(sid)
        if sm is None:
            return
        sm.presence.get(ev.channel_id, {}).pop(ev.member.client_id, None)
        sm.typing.get(ev.channel_id, {}).pop(ev.member.user_uid, None)
        self.touch("members", "typing")

    def _on_profile(self, sid: str, ev: ProfileUpdated, _ev: TypedEvent) -> None:
        self.rows_version += 1
        sm = self.servers.get(sid)
        if sm is not None:
            sm.profiles[ev.profile.user_uid] = ev.profile
            self.touch("timeline", "members", "dock", "typing")

    # -- unread counts, notifications, preferences (the notification service's events) ------------
    def _on_unread(self, sid: str, ev: UnreadUpdated, _ev: TypedEvent) -> None:
        self.counts_from_service = True
        for cc in ev.channels:
            self.set_count(ev.server_id, cc.channel_id, cc.unread, cc.mentions, cc.revision)
        self.touch("rail", "channels")

    def apply_counts(self, result: UnreadResult) -> None:
        """The ``notification.unread`` answer (absolute counts with revisions)."""
        self.counts_from_service = True
        for sc in result.servers:
            if sc.server_id not in self.servers:
                continue
            for cc in sc.channels:
                self.set_count(sc.server_id, cc.channel_id, cc.unread, cc.mentions, cc.revision)
        self.touch("rail", "channels")

    def set_count(self, sid: str, ch: str, unread: int, mentions: int, revision: int) -> None:
        """Keep the counts with the highest revision seen; the channel on screen in a focused
        window stays at zero."""
        sm = self.servers.get(sid)
        if sm is None:
            return
        key = (sid, ch)
        if self.count_revisions.get(key, -1) > revision:
            return
        self.count_revisions[key] = revision
        visible = self.focused and self.active_server == sid and self.channel_id == ch
        sm.unread[ch] = 0 if visible else unread
        sm.mentions[ch] = 0 if visible else mentions

    def _on_notification(self, sid: str, n: Notification, _ev: TypedEvent) -> None:
        """7.6: shown unless it is a non-mention about the channel on screen in the focused
        window; the app takes them (``take_notifications``) to the OS or a toast."""
        if (
            self.focused
            and n.server_id == self.active_server
            and n.channel_id == self.channel_id
            and not n.mention
        ):
            return
        self.notifications.append(n)

    def take_notifications(self) -> list[Notification]:
        out, self.notifications = self.notifications, []
        return out

    def _on_server_prefs(self, sid: str, prefs: ServerPrefs, _ev: TypedEvent) -> None:
        self.apply_server_prefs(prefs)

    def apply_server_prefs(self, prefs: ServerPrefs) -> None:
        self.notify.apply_server(prefs)
        sm = self.servers.get(prefs.server_id)
        if sm is not None:
            sm.muted = prefs.muted
        self.touch("rail", "channels", "overlay")

    def _on_member_prefs(self, sid: str, prefs: MemberNotifyPrefs, _ev: TypedEvent) -> None:
        self.apply_member_prefs(prefs)

    def apply_member_prefs(self, prefs: MemberNotifyPrefs) -> None:
        """``notify.member``: status, DND, quiet hours, "Hide Muted Channels" (issue 18)."""
        self.notify.apply_member(prefs)
        self.touch("dock", "channels", "overlay")

    def apply_notify_prefs(self, prefs: NotifyPrefs) -> None:
        """The whole ``NotifyPrefs`` (``notification.prefs`` and every settings command's answer)."""
        self.notify.apply_all(prefs)
        for sp in prefs.servers:
            sm = self.servers.get(sp.server_id)
            if sm is not None:
                sm.muted = sp.muted
        self.touch("dock", "rail", "channels", "overlay")

    _HANDLERS: dict[str, Callable[[ViewModel, str, Any, TypedEvent], None]] = {
        ev.SERVER_JOINED.kind: _on_joined,
        ev.SERVER_LEFT.kind: _on_left,
        ev.SERVER_UPDATED.kind: _on_updated,
        ev.SERVER_CONNECTION.kind: _on_connection,
        ev.CAPABILITIES.kind: _on_caps,
        ev.CHANNELS_UPDATED.kind: _on_channels,
        ev.MESSAGE_CREATED.kind: _on_message,
        ev.MESSAGE_DELETED.kind: _on_deleted,
        ev.MESSAGE_PREVIEWS.kind: _on_previews,
        ev.TYPING.kind: _on_typing,
        ev.PRESENCE_SNAPSHOT.kind: _on_presence_snapshot,
        ev.PRESENCE_JOINED.kind: _on_presence_joined,
        ev.PRESENCE_LEFT.kind: _on_presence_left,
        ev.PROFILE_UPDATED.kind: _on_profile,
        ev.UNREAD_UPDATED.kind: _on_unread,
        ev.NOTIFICATION.kind: _on_notification,
        ev.NOTIFY_PREFS.kind: _on_server_prefs,
        ev.NOTIFY_MEMBER.kind: _on_member_prefs,
    }

    def prepend_history(
        self, server_id: str, channel_id: str, msgs: Iterable[ChatMessage], has_more: bool
    ) -> int:
        """Older messages (a history page); returns how many were new."""
        self.rows_version += 1
        sm = self.servers.get(server_id)
        if sm is None:
            return 0
        log = sm.log(channel_id)
        added = log.prepend(m for m in msgs if m.server_id == server_id and m.channel_id == channel_id)
        sm.has_more[channel_id] = has_more
        sm.loading.discard(channel_id)
        self.touch("timeline")
        return added

    # -- stack reachability -------------------------------------------------------------------
    def set_stack_online(self, online: bool, detail: str = "") -> None:
        if online == self.stack_online and detail == self.stack_detail:
            return
        self.stack_online = online
        self.stack_detail = detail
        if online:
            self.from_cache = False
        self._refresh_banners()
        self.touch("banner", "header", "rail", "overlay")

    @property
    def read_only(self) -> bool:
        return not self.stack_online

    def _refresh_banners(self) -> None:
        for key in [k for k in self.banners if k.startswith(("offline:", "stack", "https:"))]:
            del self.banners[key]
        if not self.stack_online:
            what = "the last saved view" if self.snapshot_loaded else "nothing yet"
            detail = f" ({self.stack_detail})" if self.stack_detail else ""
            self.banners["stack"] = Banner(
                "stack",
                f"Home stack unreachable{detail}: showing {what}, read-only. Reconnecting...",
                "error",
                dismissible=False,
            )
        for sid in self.order:
            sm = self.servers[sid]
            if sm.connection.state == "offline":
                n = self.retry_in(sm)
                retry = f"Retrying in {n}s…" if n is not None else "Retrying…"
                self.banners[f"offline:{sid}"] = Banner(
                    f"offline:{sid}", f"{sm.record.display_name} is unreachable. {retry}", "error", False
                )
            if sm.record.base_url.startswith("http://") and not _is_local(sm.record.base_url):
                key = f"https:{sid}"
                if key not in self.dismissed:
                    self.banners[key] = Banner(
                        key,
                        "Connection is not HTTPS. Network operators and server admins may inspect traffic metadata.",
                        "warning",
                    )

    def dismiss_banner(self, key: str) -> None:
        b = self.banners.get(key)
        if b is not None and b.dismissible:
            del self.banners[key]
            self.dismissed.add(key)
            self.touch("banner")

    def visible_banners(self) -> list[Banner]:
        sid = self.active_server
        out = []
        for key, b in self.banners.items():
            if ":" in key and sid is not None and not key.endswith(f":{sid}"):
                continue
            out.append(b)
        return out

    # -- toasts ---------------------------------------------------------------------------------
    def toast(self, text: str, error: bool = False, history: bool = False) -> None:
        self.toasts.append(Toast(text, self.clock() + TOAST_S * (2 if error else 1), error))
        self.toasts = self.toasts[-4:]
        if history:
            self.status_history = [*self.status_history, text][-10:]
        self.touch("overlay")

    def tick(self) -> None:
        """Expire toasts and typing entries; call once per frame."""
        now = self.clock()
        if self.toasts and any(t.until <= now for t in self.toasts):
            self.toasts = [t for t in self.toasts if t.until > now]
            self.touch("overlay")
        sid = self.active_server
        for sm in self.servers.values():
            for ch, typers in sm.typing.items():
                expired = [u for u, exp in typers.items() if exp <= now]
                for u in expired:
                    del typers[u]
                if expired and sid == sm.server_id and self.active_channel.get(sid) == ch:
                    self.touch("typing")

    # -- selection and navigation --------------------------------------------------------------
    @property
    def server(self) -> ServerModel | None:
        return self.servers.get(self.active_server) if self.active_server else None

    @property
    def channel_id(self) -> str | None:
        return self.active_channel.get(self.active_server) if self.active_server else None

    def _ensure_channel(self, sid: str) -> None:
        sm = self.servers[sid]
        current = self.active_channel.get(sid)
        ch = sm.channel(current) if current else None
        if ch is None or ch.type != "text":
            texts = sm.text_channels()
            if texts:
                self.active_channel[sid] = texts[0].id
            else:
                self.active_channel.pop(sid, None)

    def select_server(self, sid: str) -> None:
        if sid not in self.servers:
            return
        self.active_server = sid
        self._ensure_channel(sid)
        ch = self.active_channel.get(sid)
        if ch:
            self.mark_read(sid, ch)
            if self.on_channel_opened:
                self.on_channel_opened(sid, ch)
        self.touch()

    def select_channel(self, channel_id: str, sid: str | None = None) -> bool:
        sid = sid or self.active_server
        sm = self.servers.get(sid) if sid else None
        if sm is None or sid is None:
            return False
        ch = sm.channel(channel_id)
        if ch is None:
            return False
        if ch.type == "voice":
            return False  # voice rows go to the voice controller (ui/voice.py)
        self.active_server = sid
        self.active_channel[sid] = channel_id
        self.mark_read(sid, channel_id)
        if self.on_channel_opened:
            self.on_channel_opened(sid, channel_id)
        self.touch()
        return True

    def mark_read(self, sid: str, channel_id: str | None = None) -> None:
        sm = self.servers.get(sid)
        if sm is None:
            return
        if channel_id is None:
            sm.unread.clear()
            sm.mentions.clear()
        else:
            sm.unread.pop(channel_id, None)
            sm.mentions.pop(channel_id, None)
        self.touch("rail", "channels")

    def mark_unread(self, sid: str, channel_id: str) -> None:
        sm = self.servers.get(sid)
        if sm is not None:
            sm.unread[channel_id] = max(1, sm.unread.get(channel_id, 0))
            self.toast("Channel marked as unread.")
            self.touch("rail", "channels")

    def set_focus(self, focused: bool) -> None:
        """rule D4: regaining focus clears the active channel's counts."""
        if focused == self.focused:
            return
        self.focused = focused
        if focused and self.active_server and self.channel_id:
            self.mark_read(self.active_server, self.channel_id)

    def visible_channels(self, sid: str | None = None) -> list[tuple[ChannelGroupInfo, list[ChannelInfo]]]:
        """Groups in order with the channels that pass the filter (collapsed groups keep none
        but the active channel)."""
        sid = sid or self.active_server
        sm = self.servers.get(sid) if sid else None
        if sm is None or sid is None:
            return []
        flt = self.filters.get(sid, "").strip().lower()
        out = []
        active = self.active_channel.get(sid)
        now = self.now()
        for g in sm.groups:
            chans = [c for c in g.channels if not flt or flt in c.name.lower()]
            chans = [c for c in chans if not self.notify.hidden(sid, c.id, now)]  # Hide Muted Channels
            if flt and not chans:
                continue
            if (sid, g.id) in self.collapsed and not flt:
                chans = [c for c in chans if c.id == active]
            out.append((g, chans))
        return out

    def toggle_collapsed(self, group_id: str, sid: str | None = None) -> None:
        sid = sid or self.active_server
        if sid is None:
            return
        key = (sid, group_id)
        if key in self.collapsed:
            self.collapsed.discard(key)
        else:
            self.collapsed.add(key)
        self.touch("channels")

    def set_filter(self, text: str) -> None:
        if self.active_server:
            self.filters[self.active_server] = text
            self.touch("channels")

    def move_channel(self, step: int, unread_only: bool = False) -> bool:
        """Alt+↑/↓ (step ±1) within the active server; Alt+Shift+↑/↓ to the next unread channel
        across servers."""
        if unread_only:
            return self._next_unread(step)
        sm = self.server
        if sm is None:
            return False
        texts = sm.text_channels()
        if not texts:
            return False
        ids = [c.id for c in texts]
        cur = self.channel_id
        idx = ids.index(cur) if cur in ids else -1
        nxt = ids[(idx + step) % len(ids)]
        return self.select_channel(nxt)

    def _next_unread(self, step: int) -> bool:
        seq = [(sid, c.id) for sid in self.order for c in self.servers[sid].text_channels()]
        if not seq:
            return False
        cur = (self.active_server, self.channel_id)
        start = seq.index(cur) if cur in seq else -1  # type: ignore[arg-type,unused-ignore]
        for k in range(1, len(seq) + 1):
            sid, ch = seq[(start + step * k) % len(seq)]
            sm = self.servers[sid]
            if sm.unread.get(ch, 0) or sm.mentions.get(ch, 0):
                return self.select_channel(ch, sid)
        return False

    def move_server(self, step: int) -> bool:
        if not self.order:
            return False
        idx = self.order.index(self.active_server) if self.active_server in self.order else -1
        self.select_server(self.order[(idx + step) % len(self.order)])
        return True

    def quick_switch(self, query: str, limit: int = 12) -> list[SwitchItem]:
        scored: list[tuple[int, int, SwitchItem]] = []
        n = 0
        for sid in self.order:
            sm = self.servers[sid]
            s = fuzzy_score(query, sm.record.display_name)
            if s is not None:
                scored.append((s, n, SwitchItem("server", sid, None, sm.record.display_name, "server")))
                n += 1
            for c in sm.text_channels():
                s = fuzzy_score(query, c.name)
                if s is not None:
                    item = SwitchItem("channel", sid, c.id, f"# {c.name}", sm.record.display_name)
                    scored.append((s, n, item))
                    n += 1
        scored.sort(key=lambda t: (-t[0], t[1]))
        return [t[2] for t in scored[:limit]]

    def choose(self, item: SwitchItem) -> None:
        if item.kind == "server":
            self.select_server(item.server_id)
        elif item.channel_id:
            self.select_channel(item.channel_id, item.server_id)

    # -- derived view data ----------------------------------------------------------------------
    def display_of(self, sm: ServerModel, uid: str) -> str:
        """features 5.1: the synced profile's name, but your own local profile for your messages."""
        if uid == sm.record.user_uid and self.display_name:
            return self.display_name
        return sm.name_of(uid)

    def _my_name(self, sm: ServerModel) -> str | None:
        prof = sm.profiles.get(sm.record.user_uid)
        return prof.display_name if prof and prof.display_name else self.display_name

    def messages(self, sid: str | None = None, channel_id: str | None = None) -> list[ChatMessage]:
        sid = sid or self.active_server
        sm = self.servers.get(sid) if sid else None
        if sm is None:
            return []
        ch = channel_id or self.active_channel.get(sm.server_id)
        return sm.window(ch) if ch else []

    def row(self, msgs: list[ChatMessage], i: int, sm: ServerModel | None = None) -> TimelineRow:
        """The display row of ``msgs[i]`` (grouping needs only the previous message)."""
        sm = sm or self.server
        assert sm is not None
        m = msgs[i]
        prev = msgs[i - 1] if i > 0 else None
        compact = (
            prev is not None
            and prev.author_uid == m.author_uid
            and m.reply_to is None
            and timedelta(0) <= m.created_at - prev.created_at <= GROUP_WINDOW
            and prev.created_at.astimezone().date() == m.created_at.astimezone().date()
        )
        quote = None
        if m.reply_to is not None:
            ref = m.reply_to
            if ref.is_unavailable:
                quote = "Original message unavailable"
            else:
                text = ref.preview_text
                author = ref.author_uid
                if not text:
                    original = self._find(sm, m.channel_id, ref.message_id)
                    if original is not None:
                        text, author = original.body, original.author_uid
                if text or author:
                    preview = " ".join(text.split())[:REPLY_PREVIEW_CHARS]
                    quote = f"@{sm.name_of(author)} {preview}".rstrip() if author else preview
                else:
                    quote = "Original message unavailable"
        own = m.author_uid == sm.record.user_uid
        return TimelineRow(
            message=m,
            compact=compact,
            author=self.display_of(sm, m.author_uid),
            time_text=clock_time(m.created_at.astimezone())
            if compact
            else header_time(m.created_at, self.now()),
            full_time=full_time(m.created_at),
            quote=quote,
            highlight=not own and mentions_me(m, sm.record.user_uid, self._my_name(sm)),
            own=own,
        )

    def rows(self, sid: str | None = None, channel_id: str | None = None) -> list[TimelineRow]:
        sid = sid or self.active_server
        sm = self.servers.get(sid) if sid else None
        if sm is None:
            return []
        msgs = self.messages(sid, channel_id)
        return [self.row(msgs, i, sm) for i in range(len(msgs))]

    def find_on_screen(self, message_id: str) -> ChatMessage | None:
        """A message of the channel on screen, by id."""
        sm = self.server
        ch = self.channel_id
        return self._find(sm, ch, message_id) if sm and ch else None

    def message_link(self, message_id: str) -> str | None:
        """A message's link (features 5.8): ``{server base URL}/channels/{channel id}?message_id=
        {message id}``, ids URL-quoted; None for a message not on screen."""
        from urllib.parse import quote

        sm = self.server
        msg = self.find_on_screen(message_id)
        if sm is None or msg is None:
            return None
        base = sm.record.base_url.rstrip("/")
        return f"{base}/channels/{quote(msg.channel_id, safe='')}?message_id={quote(msg.id, safe='')}"

    @staticmethod
    def _find(sm: ServerModel, channel_id: str, message_id: str) -> ChatMessage | None:
        log = sm.logs.get(channel_id)
        return log.find(message_id) if log is not None else None

    def timeline_state(self) -> str:
        """ "Loading messages...", "No messages yet." or "" when there are rows."""
        sm = self.server
        ch = self.channel_id
        if sm is None or ch is None:
            return ""
        if sm.window(ch):
            return ""
        if ch in sm.loading:
            return "Loading messages..."
        return "No messages yet."

    def retry_in(self, sm: ServerModel) -> int | None:
        at = sm.connection.next_retry_at
        if at is None:
            return None
        return max(0, math.ceil((at - self.now()).total_seconds()))

    def chip(self, sid: str | None = None) -> Chip:
        sid = sid or self.active_server
        sm = self.servers.get(sid) if sid else None
        if not self.stack_online:
            return Chip("Offline", RED, self.stack_detail or "Home stack unreachable")
        if sm is None:
            return Chip("Offline", RED, "Realtime offline")
        st = sm.connection.state
        if st == "live":
            return Chip("Live", GREEN, "Realtime connected")
        if st in ("reconnecting", "connecting"):
            n = self.retry_in(sm)
            if n is None:
                return Chip(
                    "Reconnecting", AMBER, sm.connection.reason or "Realtime disconnected. Reconnecting..."
                )
            return Chip(f"Reconnecting in {n}s", AMBER, f"Realtime disconnected. Reconnecting in {n}s...")
        return Chip("Offline", RED, sm.connection.reason or "Realtime offline")

    def typing_text(self, sid: str | None = None, channel_id: str | None = None) -> str:
        sid = sid or self.active_server
        sm = self.servers.get(sid) if sid else None
        ch = channel_id or (self.active_channel.get(sid) if sid else None)
        if sm is None or ch is None:
            return ""
        now = self.clock()
        typers = sm.typing.get(ch, {})
        names = [sm.name_of(u) for u, exp in typers.items() if exp > now and u != sm.record.user_uid]
        return typing_label(names)

    def members(self) -> tuple[str, str, list[str], str]:
        """(title, subtitle, names, empty-state text) of the members pane."""
        sm = self.server
        ch = self.channel_id
        if sm is None or ch is None:
            return ("Online - 0", "", [], "Select a text channel to see active users.")
        entries = sm.presence.get(ch, {})
        seen: dict[str, str] = {}
        for e in entries.values():
            seen.setdefault(e.client_id or f"{e.user_uid}:{e.device_id}", self.display_of(sm, e.user_uid))
        channel = sm.channel(ch)
        sub = f"#{channel.name.upper()}" if channel else ""
        names = sorted(set(seen.values()), key=str.lower)
        empty = "" if names else "No users currently active in this text channel."
        return (f"Online - {len(names)}", sub, names, empty)

    def rail_badge(self, sid: str) -> tuple[str, bool]:
        """(text, is_mention) of a rail badge: mentions win over unread (7.2)."""
        sm = self.servers[sid]
        m = sm.mention_total()
        if m:
            return (badge_text(m), True)
        return (badge_text(sm.unread_total()), False)

    def channel_badge(self, sid: str, channel_id: str) -> tuple[str, bool]:
        sm = self.servers[sid]
        m = sm.mentions.get(channel_id, 0)
        if m:
            return (badge_text(m), True)
        return (badge_text(sm.unread.get(channel_id, 0), cap=False), False)

    def build_label(self, sid: str | None = None) -> str:
        sm = self.servers.get(sid or self.active_server or "")
        caps = sm.capabilities if sm else None
        if caps is None:
            return "build unknown · unknown"
        return f"build {caps.build_version or 'unknown'} · {caps.build_commit[:12] or 'unknown'}"

    def limits(self) -> tuple[int, int]:
        caps = self.server.capabilities if self.server else None
        mmb = (caps.max_message_bytes if caps else None) or MAX_MESSAGE_BYTES_DEFAULT
        mub = (caps.max_upload_bytes if caps else None) or MAX_UPLOAD_BYTES_DEFAULT
        return mmb, mub

    def can_delete(self, m: ChatMessage) -> bool:
        """features 5.8: your own message on a server that advertises deletion (no per-message
        permissions in this stack's contract); hidden against the public backend."""
        sm = self.servers.get(m.server_id)
        caps = sm.capabilities if sm is not None else None
        return bool(sm is not None and caps is not None and caps.features.get("message_delete")) and (
            sm is not None and m.author_uid == sm.record.user_uid
        )

    def attachments_enabled(self) -> bool:
        caps = self.server.capabilities if self.server else None
        return caps is None or caps.features.get("attachments", True)

    def mention_candidates(self, draft: str, limit: int = 12) -> list[tuple[str, str]]:
        """Mention autocomplete (features 7.3; without a server endpoint, locally known users, rule
        D14): ``@prefix`` at the end of the draft (not preceded by a name character) →
        ``[(token, label)]`` from locally known users (profiles, presence, recent authors)."""
        m = re.search(r"(?:^|(?<=[^A-Za-z0-9_.\-]))@([A-Za-z0-9_.\-]*)$", draft)
        sm = self.server
        ch = self.channel_id
        if m is None or sm is None:
            return []
        prefix = m.group(1).lower()
        uids: dict[str, None] = {}
        if ch:
            for e in sm.presence.get(ch, {}).values():
                uids[e.user_uid] = None
            for msg in reversed(sm.window(ch)[-200:]):
                uids[msg.author_uid] = None
        for uid in sm.profiles:
            uids[uid] = None
        out: list[tuple[str, str]] = []
        for uid in uids:
            if uid == sm.record.user_uid:
                continue
            name = sm.name_of(uid)
            if not prefix or uid.lower().startswith(prefix) or name.lower().startswith(prefix):
                out.append((f"@{uid}", f"{name}  User mention"))
        for token in ("here", "channel"):
            if token.startswith(prefix):
                out.append((f"@{token}", "Channel mention"))
        return out[:limit]

    def to_snapshot(self, per_channel: int = 200) -> Snapshot:
        """The current view as a ``Snapshot`` (for the local read-only cache)."""
        views = []
        for sid in self.order:
            sm = self.servers[sid]
            views.append(
                ServerView(
                    server=sm.record,
                    connection=sm.connection,
                    capabilities=sm.capabilities,
                    groups=sm.groups,
                    messages={k: log.latest(per_channel) for k, log in sm.logs.items()},
                    profiles=sm.profiles,
                )
            )
        return Snapshot(seq=self.last_seq, servers=views)


def _is_local(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1")
