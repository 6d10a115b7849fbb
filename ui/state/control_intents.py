"""Intents of the member's controls (issue 18): status, notification settings, identity backup,
update check. Dispatched like ``ui.state.intents`` (``Controller.dispatch``); handled by
``ui.controls.Controls``."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.core.contracts.notify import MemberStatus, NotifyLevel

__all__ = ["MemberStatus", "NotifyLevel"]


@dataclass(frozen=True)
class SetStatus:
    status: MemberStatus


@dataclass(frozen=True)
class SetNotifyMute:
    """Mute or unmute a server (``channel_id`` None) or one channel, for ``duration_s`` or until
    turned back on (None)."""

    server_id: str
    channel_id: str | None
    muted: bool
    duration_s: int | None = None


@dataclass(frozen=True)
class SetNotifyLevel:
    server_id: str
    channel_id: str | None
    level: NotifyLevel | None  # None on a channel: follow the server


@dataclass(frozen=True)
class SetHideMuted:
    hide: bool


@dataclass(frozen=True)
class SetQuietHours:
    text: str  # "HH:MM-HH:MM" or "off"
    timezone: str | None = None


@dataclass(frozen=True)
class CheckUpdate:
    pass


@dataclass(frozen=True)
class ExportIdentity:
    path: str
    passphrase: str = field(repr=False)
    repeat: str = field(repr=False)


@dataclass(frozen=True)
class ImportIdentity:
    path: str
    passphrase: str = field(repr=False)


ControlIntent = (
    SetStatus
    | SetNotifyMute
    | SetNotifyLevel
    | SetHideMuted
    | SetQuietHours
    | CheckUpdate
    | ExportIdentity
    | ImportIdentity
)
