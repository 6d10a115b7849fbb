"""The member's notification settings as the desktop shows them (issue 18; features 2.10, 4.6,
6.5, 7.7, D9). Pure: no Dear PyGui, no I/O.

The settings live on the home stack (the notification service); every desktop of the member
holds a copy, filled from ``notification.prefs`` and kept current by the events ``notify.member``
(status, DND, quiet hours, "Hide Muted Channels") and ``notify.prefs`` (one server's mute and
levels). A change made here is applied to the copy at once (optimistic) and sent as a command;
the command's answer (the whole ``NotifyPrefs``) and the events then overwrite the copy, so every
desktop converges on what the stack holds.

The service decides notifications (DND, quiet hours, mutes, levels); ``allows`` repeats the
member-wide part on the desktop so that a notification already in flight when DND was switched
on is not shown either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.core.contracts.notify import (
    MUTE_DURATIONS_S,
    ChannelPrefs,
    MemberNotifyPrefs,
    MemberStatus,
    Notification,
    NotifyLevel,
    NotifyPrefs,
    QuietHours,
    ServerPrefs,
)

# The mute submenu (Discord's wording), in the order of MUTE_DURATIONS_S, then "until turned on".
MUTE_CHOICES: tuple[tuple[str, int | None], ...] = (
    *zip(("For 15 Minutes", "For 1 Hour", "For 8 Hours", "For 24 Hours"), MUTE_DURATIONS_S, strict=True),
    ("Until I turn it back on", None),
)
LEVEL_CHOICES: tuple[tuple[NotifyLevel, str], ...] = (
    ("all", "All Messages"),
    ("mentions", "Only @mentions"),
    ("nothing", "Nothing"),
)
LEVEL_LABELS: dict[str, str] = dict(LEVEL_CHOICES)
FOLLOW_SERVER = "Use Server Default"

# ux.md "Profile card and status" plus the D9 scope note (servers receive no status).
STATUS_CHOICES: tuple[tuple[MemberStatus, str, str], ...] = (
    ("online", "Online", ""),
    ("idle", "Idle", ""),
    ("dnd", "Do Not Disturb", "You will not receive desktop notifications"),
    ("invisible", "Invisible", "You will appear offline"),
)
STATUS_LABELS: dict[str, str] = {k: label for k, label, _ in STATUS_CHOICES}
STATUS_SCOPE = "Only visible to you on this server."
STATUS_COLORS: dict[str, tuple[int, int, int]] = {
    "online": (59, 165, 93),
    "idle": (250, 166, 26),
    "dnd": (237, 66, 69),
    "invisible": (116, 127, 141),
}


def in_quiet_hours(now: datetime, quiet: QuietHours, timezone: str) -> bool:
    """Whether ``now`` falls in the daily quiet hours (``start`` inclusive, ``end`` exclusive;
    a window past midnight wraps), read in the member's time zone."""
    return quiet.covers(now, timezone)


def parse_quiet_hours(text: str) -> QuietHours:
    """``HH:MM-HH:MM`` (enabled) or ``off``; ``ValueError`` with a message to show otherwise."""
    value = text.strip().lower()
    if value in ("", "off"):
        return QuietHours(enabled=False)
    start, sep, end = value.partition("-")
    if not sep:
        raise ValueError("Quiet hours look like 22:00-07:00.")
    try:
        return QuietHours(enabled=True, start=start.strip(), end=end.strip())
    except ValueError as exc:
        raise ValueError("Quiet hours look like 22:00-07:00 (24-hour clock).") from exc


def _active(muted: bool, until: datetime | None, now: datetime) -> bool:
    return muted and (until is None or until > now)


@dataclass
class NotifySettings:
    """The desktop's copy of the member's notification settings."""

    member: MemberNotifyPrefs = field(default_factory=MemberNotifyPrefs)
    servers: dict[str, ServerPrefs] = field(default_factory=dict)
    known: bool = False  # read from the stack at least once
    version: int = 0  # bumped by every change (panes redraw what depends on it)

    # -- from the stack ---------------------------------------------------------------------------
    def apply_all(self, prefs: NotifyPrefs) -> None:
        self.member = MemberNotifyPrefs(
            status=prefs.status,
            dnd=prefs.dnd,
            quiet_hours=prefs.quiet_hours,
            timezone=prefs.timezone,
            hide_muted_channels=prefs.hide_muted_channels,
        )
        self.servers = {sp.server_id: sp for sp in prefs.servers}
        self.known = True
        self.version += 1

    def apply_member(self, prefs: MemberNotifyPrefs) -> None:
        self.member = prefs
        self.known = True
        self.version += 1

    def apply_server(self, prefs: ServerPrefs) -> None:
        self.servers[prefs.server_id] = prefs
        self.version += 1

    def forget_server(self, sid: str) -> None:
        if self.servers.pop(sid, None) is not None:
            self.version += 1

    # -- optimistic local changes (the stack's answer follows) ---------------------------------------
    def set_status(self, status: MemberStatus) -> None:
        self.apply_member(self.member.model_copy(update={"status": status, "dnd": status == "dnd"}))

    def set_hide_muted(self, hide: bool) -> None:
        self.apply_member(self.member.model_copy(update={"hide_muted_channels": hide}))

    def set_quiet_hours(self, quiet: QuietHours) -> None:
        self.apply_member(self.member.model_copy(update={"quiet_hours": quiet}))

    def server(self, sid: str) -> ServerPrefs:
        return self.servers.get(sid) or ServerPrefs(server_id=sid)

    def set_mute(self, sid: str, ch: str | None, muted: bool, until: datetime | None) -> None:
        sp = self.server(sid)
        if ch is None:
            self.apply_server(sp.model_copy(update={"muted": muted, "muted_until": until if muted else None}))
            return
        cp = self.channel(sid, ch) or ChannelPrefs(channel_id=ch)
        cp = cp.model_copy(update={"muted": muted, "muted_until": until if muted else None})
        self.apply_server(self._with_channel(sp, cp))

    def set_level(self, sid: str, ch: str | None, level: NotifyLevel | None) -> None:
        sp = self.server(sid)
        if ch is None:
            self.apply_server(sp.model_copy(update={"level": level or "all"}))
            return
        cp = (self.channel(sid, ch) or ChannelPrefs(channel_id=ch)).model_copy(update={"level": level})
        self.apply_server(self._with_channel(sp, cp))

    @staticmethod
    def _with_channel(sp: ServerPrefs, cp: ChannelPrefs) -> ServerPrefs:
        rest = [c for c in sp.channels if c.channel_id != cp.channel_id]
        keep = cp.muted or cp.level is not None
        return sp.model_copy(update={"channels": [*rest, cp] if keep else rest})

    # -- reads --------------------------------------------------------------------------------------
    @property
    def status(self) -> MemberStatus:
        return self.member.status

    @property
    def dnd(self) -> bool:
        return self.member.dnd or self.member.status == "dnd"

    @property
    def hide_muted(self) -> bool:
        return self.member.hide_muted_channels

    def channel(self, sid: str, ch: str) -> ChannelPrefs | None:
        sp = self.servers.get(sid)
        if sp is None:
            return None
        for cp in sp.channels:
            if cp.channel_id == ch:
                return cp
        return None

    def server_muted(self, sid: str, now: datetime) -> bool:
        sp = self.servers.get(sid)
        return sp is not None and _active(sp.muted, sp.muted_until, now)

    def channel_muted(self, sid: str, ch: str, now: datetime) -> bool:
        cp = self.channel(sid, ch)
        return cp is not None and _active(cp.muted, cp.muted_until, now)

    def server_level(self, sid: str) -> NotifyLevel:
        sp = self.servers.get(sid)
        return sp.level if sp is not None else "all"

    def channel_level(self, sid: str, ch: str) -> NotifyLevel | None:
        """The channel's own level (None: it follows the server)."""
        cp = self.channel(sid, ch)
        return cp.level if cp is not None else None

    def effective_level(self, sid: str, ch: str) -> NotifyLevel:
        return self.channel_level(sid, ch) or self.server_level(sid)

    def hidden(self, sid: str, ch: str, now: datetime) -> bool:
        """ "Hide Muted Channels": a muted channel leaves the channel list."""
        return self.member.hide_muted_channels and self.channel_muted(sid, ch, now)

    def quiet_now(self, now: datetime) -> bool:
        return in_quiet_hours(now, self.member.quiet_hours, self.member.timezone)

    def allows(self, n: Notification, now: datetime) -> bool:
        """Whether the desktop may show ``n`` (the service decided it; this catches the ones in
        flight when a setting changed): never under DND or in quiet hours, never for a muted
        server or channel, never against the level."""
        if self.dnd or self.quiet_now(now):
            return False
        if self.server_muted(n.server_id, now) or self.channel_muted(n.server_id, n.channel_id, now):
            return False
        level = self.effective_level(n.server_id, n.channel_id)
        return level == "all" or (level == "mentions" and n.mention)

    # -- texts --------------------------------------------------------------------------------------
    @staticmethod
    def mute_text(muted: bool, until: datetime | None, now: datetime) -> str:
        if not _active(muted, until, now):
            return ""
        if until is None:
            return "Muted"
        local = until.astimezone()
        same_day = local.date() == now.astimezone().date()
        return f"Muted until {local:%H:%M}" if same_day else f"Muted until {local:%a %H:%M}"

    def channel_mute_text(self, sid: str, ch: str, now: datetime) -> str:
        cp = self.channel(sid, ch)
        return self.mute_text(cp.muted, cp.muted_until, now) if cp is not None else ""

    def server_mute_text(self, sid: str, now: datetime) -> str:
        sp = self.servers.get(sid)
        return self.mute_text(sp.muted, sp.muted_until, now) if sp is not None else ""

    def status_line(self) -> tuple[str, str]:
        """(label, note) of the dock's status."""
        for key, label, note in STATUS_CHOICES:
            if key == self.status:
                return label, note
        return "Online", ""

    def quiet_text(self) -> str:
        q = self.member.quiet_hours
        return f"{q.start}-{q.end}" if q.enabled else "off"


def now_utc() -> datetime:
    return datetime.now(UTC)
