"""Bus contracts of unread counts, read cursors, mentions and notification policy (issue #6).

Served by the notification service on ``oc.<member>.cmd.notification.<verb>``:

==================  =====================  ==================  ==========================================
verb                args                   result              what it does
==================  =====================  ==================  ==========================================
``unread``          ``UnreadArgs``         ``UnreadResult``    counts per server and channel (+ revisions)
``mark_read``       ``MarkReadArgs``       ``UnreadResult``    mark a channel, or a whole server, read
``focus``           ``FocusArgs``          ``UnreadResult``    a UI reports focus/visibility/active channel
``prefs``           ``Empty``              ``NotifyPrefs``     the member's notification policy
``set_mute``        ``SetMuteArgs``        ``NotifyPrefs``     mute/unmute a server or one channel
``set_level``       ``SetLevelArgs``       ``NotifyPrefs``     all / mentions / nothing (server, channel)
``set_dnd``         ``SetDndArgs``         ``NotifyPrefs``     Do Not Disturb (the member's status)
``set_quiet_hours`` ``SetQuietHoursArgs``  ``NotifyPrefs``     daily quiet hours in the member's time zone
``set_status``      ``SetStatusArgs``      ``NotifyPrefs``     Online / Idle / Do Not Disturb / Invisible
``set_hide_muted``  ``SetHideMutedArgs``   ``NotifyPrefs``     the "Hide Muted Channels" preference
==================  =====================  ==================  ==========================================

``set_mute`` takes an optional ``duration_s`` (the menus offer ``MUTE_DURATIONS_S``: 15 min, 1 h,
8 h, 24 h; without it: until turned back on); the mute then carries ``muted_until`` and ends by
itself (the service publishes ``notify.prefs`` when it does). A muted **channel** neither notifies
nor counts as unread (messages arriving while it is muted are not counted; muting it clears its
badge); a muted **server** only stops notifications, its badges keep counting (7.7).

Events it publishes (``oc.<member>.evt.<server_id>.<kind>``):

====================  ====================  ===================================================
kind                  payload               ``event_id``
====================  ====================  ===================================================
``unread.updated``    ``UnreadUpdated``     ``unread:<uuid>``
``notification``      ``Notification``      ``notify:<message id>``
``notify.prefs``      ``ServerPrefs``       ``nprefs:<uuid>``
``notify.member``     ``MemberNotifyPrefs`` ``nmember:<uuid>`` (server id ``MEMBER_SCOPE``: ``_member``)
====================  ====================  ===================================================

``notify.member`` carries the member-wide settings (status, DND, quiet hours, time zone, "Hide
Muted Channels") after every change, so every desktop of the member shows them at once.

Counts are absolute, and every channel carries a ``revision`` that grows with each change: a UI
keeps, per ``(server_id, channel_id)``, the counts with the highest revision it has seen, so the
order in which it gets the ``unread`` reply and ``unread.updated`` events does not matter.

What the notification service needs from the **connector** (Profile B read-acks, wire §0.2):

==========================================  ===================  ==================
subject                                     args                 result
==========================================  ===================  ==================
``oc.<member>.cmd.connector.read_ack_get``  ``ReadAckGetArgs``   ``ReadAckResult``
``oc.<member>.cmd.connector.read_ack_put``  ``ReadAckPutArgs``   ``ReadAckResult``
==========================================  ===================  ==================

and the realtime ``chat.read_ack.updated`` forwarded as the event kind ``read_ack.updated``
(payload ``ReadAckUpdated``, ``event_id`` ``ack:<channel_id>:<user_uid>:<cursor_index or
last_read_message_id>``). A server without read-acks answers ``ReadAckResult(supported=False)``
(or the command is simply not served yet): the service then keeps its cursors locally.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from services.core.contracts.bus import Contract
from services.core.contracts.chat import ChannelId, ServerId

SERVICE = "notification"
NotifyLevel = Literal["all", "mentions", "nothing"]
DEFAULT_LEVEL: NotifyLevel = "all"

# Event kinds.
KIND_UNREAD_UPDATED = "unread.updated"
KIND_NOTIFICATION = "notification"
KIND_PREFS = "notify.prefs"
KIND_READ_ACK_UPDATED = "read_ack.updated"  # published by the connector
KIND_MEMBER_PREFS = "notify.member"
MEMBER_SCOPE = "_member"  # the server id of member-wide events (no server id starts with "_" here)

MemberStatus = Literal["online", "idle", "dnd", "invisible"]
MEMBER_STATUSES: tuple[MemberStatus, ...] = ("online", "idle", "dnd", "invisible")
MUTE_DURATIONS_S = (15 * 60, 60 * 60, 8 * 3600, 24 * 3600)  # the menus' choices (+ "until turned back on")
MUTE_MAX_S = 366 * 86400

# Capability feature names the service reads from ``CapabilitySnapshot.features``.
FEATURE_READ_ACKS = "read_acks"
FEATURE_MENTIONS = "mentions"
FEATURE_MENTION_EVERYONE = "mention_everyone"  # the server lists ``@everyone`` as an audience token
AUDIENCE_TOKENS_DEFAULT = ("here", "channel")  # numbers.md §5

FOCUS_TTL_S = 90.0  # a UI re-sends ``focus`` at least every 30 s; a silent UI stops counting as focused
BADGE_CAP = 99  # "99+" (rendered by the UI; counts themselves are exact)
NOTIFICATION_BODY_MAX = 120
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


# -- counts --------------------------------------------------------------------------------------
class ChannelCounts(Contract):
    server_id: ServerId
    channel_id: ChannelId
    name: str = ""
    unread: int = Field(ge=0)
    mentions: int = Field(ge=0)
    last_read_message_id: str | None = None
    revision: int = Field(ge=0)


class ServerCounts(Contract):
    server_id: ServerId
    unread: int = Field(ge=0)  # sum over text channels
    mentions: int = Field(ge=0)
    channels: list[ChannelCounts]


class UnreadArgs(Contract):
    server_id: ServerId | None = None  # None: every joined server


class UnreadResult(Contract):
    servers: list[ServerCounts]


class MarkReadArgs(Contract):
    server_id: ServerId
    channel_id: ChannelId | None = None  # None: every channel of the server ("Mark As Read")
    message_id: str | None = None  # read up to this message (default: the newest known)


class FocusArgs(Contract):
    """What one UI shows. ``client_id`` identifies a desktop (or any UI) of the member; a UI
    re-sends its focus at least every 30 s (``FOCUS_TTL_S``) and ``focused=False`` on blur/quit."""

    client_id: str = Field(min_length=1, max_length=128)
    server_id: ServerId | None = None
    channel_id: ChannelId | None = None
    focused: bool
    visible: bool = True


class UnreadUpdated(Contract):
    """Absolute counts of the channels that changed, plus the server totals."""

    server_id: ServerId
    unread: int = Field(ge=0)
    mentions: int = Field(ge=0)
    channels: list[ChannelCounts]


# -- notifications -------------------------------------------------------------------------------
class Notification(Contract):
    """An OS notification for the member's UIs (features.md 7.6): one per channel, replacing the
    previous one with the same ``tag``; silent."""

    server_id: ServerId
    channel_id: ChannelId
    message_id: str
    author_uid: str
    title: str
    body: str
    tag: str
    mention: bool
    silent: bool = True
    created_at: datetime


# -- policy --------------------------------------------------------------------------------------
class ChannelPrefs(Contract):
    channel_id: ChannelId
    muted: bool = False
    muted_until: datetime | None = None  # a timed mute ends by itself at this instant (UTC)
    level: NotifyLevel | None = None  # None: the server's level


class ServerPrefs(Contract):
    server_id: ServerId
    muted: bool = False
    muted_until: datetime | None = None
    level: NotifyLevel = DEFAULT_LEVEL
    channels: list[ChannelPrefs] = Field(default_factory=list)  # only channels with an override


class QuietHours(Contract):
    enabled: bool = False
    start: str = Field(default="22:00", pattern=_HHMM)
    end: str = Field(default="07:00", pattern=_HHMM)

    def covers(self, now: datetime, timezone: str) -> bool:
        """``now`` (aware) falls in the daily window ``[start, end)`` read in ``timezone`` (UTC when
        unknown); a window whose end is before its start runs over midnight; ``start == end`` is an
        empty window. The one rule of the notification service and the desktop."""
        if not self.enabled or self.start == self.end:
            return False
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        local = now.astimezone(zone).time().replace(second=0, microsecond=0)
        start, end = time.fromisoformat(self.start), time.fromisoformat(self.end)
        if start < end:
            return start <= local < end
        return local >= start or local < end


class NotifyPrefs(Contract):
    dnd: bool = False  # True exactly when ``status`` is ``dnd``
    quiet_hours: QuietHours = Field(default_factory=QuietHours)
    timezone: str = "UTC"
    servers: list[ServerPrefs] = Field(default_factory=list)
    status: MemberStatus = "online"
    hide_muted_channels: bool = False


class MemberNotifyPrefs(Contract):
    """The member-wide part of ``NotifyPrefs`` (payload of ``notify.member``)."""

    status: MemberStatus = "online"
    dnd: bool = False
    quiet_hours: QuietHours = Field(default_factory=QuietHours)
    timezone: str = "UTC"
    hide_muted_channels: bool = False


class SetMuteArgs(Contract):
    server_id: ServerId
    channel_id: ChannelId | None = None  # None: the whole server
    muted: bool
    duration_s: int | None = Field(default=None, ge=1, le=MUTE_MAX_S)  # None: until turned back on


class SetStatusArgs(Contract):
    """Online / Idle / Do Not Disturb / Invisible. The status lives on the member's stack (every
    desktop shows it); ``dnd`` silences notifications while badges keep counting. No server of
    the wire protocol receives a status: it is only visible to the member (D9)."""

    status: MemberStatus


class SetHideMutedArgs(Contract):
    hide: bool


class SetLevelArgs(Contract):
    server_id: ServerId
    channel_id: ChannelId | None = None
    level: NotifyLevel | None  # None on a channel: follow the server


class SetDndArgs(Contract):
    dnd: bool


class SetQuietHoursArgs(Contract):
    enabled: bool
    start: str = Field(default="22:00", pattern=_HHMM)
    end: str = Field(default="07:00", pattern=_HHMM)
    timezone: str | None = Field(default=None, max_length=64)  # IANA name; None keeps the current one

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


# -- connector read-acks (Profile B) -------------------------------------------------------------
class ReadAckGetArgs(Contract):
    server_id: ServerId
    channel_id: ChannelId


class ReadAckPutArgs(Contract):
    server_id: ServerId
    channel_id: ChannelId
    last_read_message_id: str


class ReadAckResult(Contract):
    """The backend's read-ack record for the member's uid on that server. ``supported=False``:
    the server has no read-acks (404/405/501 or not advertised); the other fields are then empty."""

    server_id: ServerId
    channel_id: ChannelId
    supported: bool = True
    last_read_message_id: str | None = None
    cursor_index: int | None = None
    applied: bool | None = None


class ReadAckUpdated(Contract):
    """``chat.read_ack.updated`` from the backend (any of the uid's clients acked)."""

    channel_id: ChannelId
    user_uid: str
    last_read_message_id: str | None = None
    cursor_index: int | None = None
    acked_at: str | None = None


def read_ack_event_id(ack: ReadAckUpdated) -> str:
    pos = ack.cursor_index if ack.cursor_index is not None else (ack.last_read_message_id or "")
    return f"ack:{ack.channel_id}:{ack.user_uid}:{pos}"


def notification_tag(server_id: str, channel_id: str) -> str:
    return f"openchat:{server_id}:{channel_id}"
