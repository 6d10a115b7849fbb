"""``openchat unread``, ``read``, ``notify …`` and ``presence``: thin bus clients of the
notification service.

Like every chat command, they connect with the member's connection file and only send
``oc.<member>.cmd.notification.*`` commands (contracts/notify.py); nothing is computed here.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import click
from pydantic import BaseModel

from services.cli.chat import MemberClient, connection_option, emit, json_option, member_option, run
from services.core.contracts import commands as cmd
from services.core.contracts.bus import Empty
from services.core.contracts.notify import (
    BADGE_CAP,
    MEMBER_STATUSES,
    MUTE_MAX_S,
    SERVICE,
    MarkReadArgs,
    NotifyLevel,
    NotifyPrefs,
    QuietHours,
    SetDndArgs,
    SetHideMutedArgs,
    SetLevelArgs,
    SetMuteArgs,
    SetQuietHoursArgs,
    SetStatusArgs,
    UnreadArgs,
    UnreadResult,
)

LEVELS: tuple[str, ...] = get_args(NotifyLevel)


def badge(n: int) -> str:
    return f"{BADGE_CAP}+" if n > BADGE_CAP else str(n)


def unread_rows(result: UnreadResult) -> list[dict[str, Any]]:
    return [
        {
            "server_id": s.server_id,
            "unread": s.unread,
            "mentions": s.mentions,
            "channels": [
                {
                    "channel_id": c.channel_id,
                    "name": c.name,
                    "unread": c.unread,
                    "mentions": c.mentions,
                    "last_read_message_id": c.last_read_message_id,
                }
                for c in s.channels
            ],
        }
        for s in result.servers
    ]


def unread_text(result: UnreadResult) -> str:
    lines: list[str] = []
    for s in result.servers:
        lines.append(f"{s.server_id:<24} unread {badge(s.unread):>4}  mentions {badge(s.mentions):>4}")
        for c in s.channels:
            if c.unread or c.mentions:
                mention = f"  @{c.mentions}" if c.mentions else ""
                lines.append(f"  #{c.name or c.channel_id:<22} {c.unread:>4}{mention}")
    return "\n".join(lines) if lines else "no joined servers"


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--server", "server_id", help="Only this server.")
    @member_option
    @connection_option
    @json_option
    def unread(server_id: str | None, member: str | None, connection: Path | None, as_json: bool) -> None:
        """Unread and mention counts per server and channel."""

        async def work(c: MemberClient) -> UnreadResult:
            return await c.call(cmd.UNREAD, UnreadArgs(server_id=server_id))

        result: UnreadResult = run(member, connection, work)
        emit(as_json, unread_rows(result), lambda: click.echo(unread_text(result)))

    @main.command()
    @click.argument("server_id")
    @click.argument("channel_id", required=False)
    @member_option
    @connection_option
    @json_option
    def read(
        server_id: str, channel_id: str | None, member: str | None, connection: Path | None, as_json: bool
    ) -> None:
        """Mark CHANNEL of SERVER read (the whole server without CHANNEL), on every desktop."""

        async def work(c: MemberClient) -> UnreadResult:
            args = MarkReadArgs(server_id=server_id, channel_id=channel_id)
            return await c.call(cmd.MARK_READ, args)

        result: UnreadResult = run(member, connection, work)
        what = f"{server_id} #{channel_id}" if channel_id else server_id
        emit(as_json, unread_rows(result), lambda: click.echo(f"marked {what} read"))


# -- notification settings and status (issue 18) --------------------------------------------------
DURATION_RE = re.compile(r"^(\d{1,6})\s*(s|sec|m|min|h|d)$")
FOREVER = ("forever", "always", "until-unmuted", "off")
UNITS_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int | None:
    """``15m``, ``1h``, ``8h``, ``24h``, ``90s``, ``2d`` → seconds; ``forever`` → None."""
    value = text.strip().lower()
    if value in FOREVER:
        return None
    match = DURATION_RE.match(value)
    if match is None:
        raise click.BadParameter(f"{text!r}: say 15m, 1h, 8h, 24h (any N s/m/h/d) or forever")
    seconds = int(match.group(1)) * UNITS_S[match.group(2)]
    if not 1 <= seconds <= MUTE_MAX_S:
        raise click.BadParameter(f"{text!r}: between 1 s and {MUTE_MAX_S // 86400} days")
    return seconds


def parse_quiet(text: str) -> tuple[bool, str, str]:
    value = text.strip().lower()
    if value == "off":
        return False, "22:00", "07:00"
    match = re.match(r"^(\d{2}:\d{2})-(\d{2}:\d{2})$", value)
    if match is None:
        raise click.BadParameter(f"{text!r}: say HH:MM-HH:MM (e.g. 22:00-07:00) or off")
    start, end = match.groups()
    try:
        QuietHours(enabled=True, start=start, end=end)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: hours 00-23, minutes 00-59") from exc
    return True, start, end


def _until(value: datetime | None) -> str:
    return f" until {value.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if value else ""


def prefs_text(p: NotifyPrefs) -> str:
    q = p.quiet_hours
    lines = [
        f"status:              {STATUS_LABELS[p.status]}",
        f"do not disturb:      {'on' if p.dnd else 'off'}",
        f"quiet hours:         {f'{q.start}-{q.end} ({p.timezone})' if q.enabled else 'off'}",
        f"hide muted channels: {'on' if p.hide_muted_channels else 'off'}",
    ]
    for s in p.servers:
        mute = f"muted{_until(s.muted_until)}" if s.muted else "not muted"
        lines.append(f"{s.server_id:<24} level {s.level:<8} {mute}")
        for c in s.channels:
            level = c.level or "(server)"
            cmute = f"muted{_until(c.muted_until)}" if c.muted else "not muted"
            lines.append(f"  #{c.channel_id:<22} level {level:<8} {cmute}")
    return "\n".join(lines)


STATUS_LABELS = {
    "online": "Online",
    "idle": "Idle",
    "dnd": "Do Not Disturb (no desktop notifications; badges still count)",
    "invisible": "Invisible (only visible to you: servers receive no status)",
}


def _prefs_call(verb: str, args: BaseModel) -> Callable[[MemberClient], Awaitable[NotifyPrefs]]:
    async def work(c: MemberClient) -> NotifyPrefs:
        spec: cmd.CommandSpec[BaseModel, NotifyPrefs] = cmd.COMMANDS[(SERVICE, verb)]
        return await c.call(spec, args)

    return work


def _show(as_json: bool, prefs: NotifyPrefs, done: str) -> None:
    emit(as_json, prefs, lambda: click.echo(done))


def register_settings(main: click.Group) -> None:
    @main.group()
    def notify() -> None:
        """Notification settings: do not disturb, mute (also for a while), levels, quiet hours.

        Every setting lives on the stack (it survives restarts) and reaches every desktop of
        the member at once."""

    @notify.command("show")
    @member_option
    @connection_option
    @json_option
    def show(member: str | None, connection: Path | None, as_json: bool) -> None:
        """Every notification setting of the member."""
        prefs: NotifyPrefs = run(member, connection, _prefs_call("prefs", Empty()))
        emit(as_json, prefs, lambda: click.echo(prefs_text(prefs)))

    @notify.command("dnd")
    @click.argument("state", type=click.Choice(["on", "off"]))
    @member_option
    @connection_option
    @json_option
    def dnd(state: str, member: str | None, connection: Path | None, as_json: bool) -> None:
        """Do Not Disturb: no notifications (badges still count). Same as presence dnd/online."""
        prefs: NotifyPrefs = run(member, connection, _prefs_call("set_dnd", SetDndArgs(dnd=state == "on")))
        _show(as_json, prefs, f"do not disturb {state}")

    @notify.command("mute")
    @click.argument("server_id")
    @click.argument("channel_id", required=False)
    @click.option(
        "--for",
        "duration",
        default="forever",
        show_default=True,
        help="15m, 1h, 8h, 24h (any N s/m/h/d), or forever (until unmuted).",
    )
    @member_option
    @connection_option
    @json_option
    def mute(
        server_id: str,
        channel_id: str | None,
        duration: str,
        member: str | None,
        connection: Path | None,
        as_json: bool,
    ) -> None:
        """Mute SERVER, or only CHANNEL of it. A muted channel neither notifies nor counts as
        unread; a muted server does not notify (its badges keep counting)."""
        seconds = parse_duration(duration)
        args = SetMuteArgs(server_id=server_id, channel_id=channel_id, muted=True, duration_s=seconds)
        prefs: NotifyPrefs = run(member, connection, _prefs_call("set_mute", args))
        what = f"{server_id} #{channel_id}" if channel_id else server_id
        _show(as_json, prefs, f"muted {what}" + (f" for {duration}" if seconds else " until unmuted"))

    @notify.command("unmute")
    @click.argument("server_id")
    @click.argument("channel_id", required=False)
    @member_option
    @connection_option
    @json_option
    def unmute(
        server_id: str, channel_id: str | None, member: str | None, connection: Path | None, as_json: bool
    ) -> None:
        """Unmute SERVER, or only CHANNEL of it."""
        args = SetMuteArgs(server_id=server_id, channel_id=channel_id, muted=False)
        prefs: NotifyPrefs = run(member, connection, _prefs_call("set_mute", args))
        _show(as_json, prefs, f"unmuted {f'{server_id} #{channel_id}' if channel_id else server_id}")

    @notify.command("level")
    @click.argument("words", nargs=-1, required=True, metavar="SERVER [CHANNEL] all|mentions|nothing|server")
    @member_option
    @connection_option
    @json_option
    def level(words: tuple[str, ...], member: str | None, connection: Path | None, as_json: bool) -> None:
        """Which messages notify: all, only mentions, or nothing. On a channel, ``server``
        drops the channel's own level (it follows the server again)."""
        if len(words) not in (2, 3):
            raise click.UsageError("say: openchat notify level SERVER [CHANNEL] all|mentions|nothing")
        server_id, channel_id, choice = words[0], words[1] if len(words) == 3 else None, words[-1]
        if choice not in (*LEVELS, "server") or (choice == "server" and channel_id is None):
            raise click.BadParameter(f"{choice!r}: all, mentions or nothing (server: only for a channel)")
        args = SetLevelArgs.model_validate(
            {
                "server_id": server_id,
                "channel_id": channel_id,
                "level": None if choice == "server" else choice,
            }
        )
        prefs: NotifyPrefs = run(member, connection, _prefs_call("set_level", args))
        what = f"{server_id} #{channel_id}" if channel_id else server_id
        _show(as_json, prefs, f"{what}: notify on {choice}")

    @notify.command("quiet")
    @click.argument("window")
    @click.option("--tz", "timezone", help="IANA time zone of the window (default: keep the current one).")
    @member_option
    @connection_option
    @json_option
    def quiet(
        window: str, timezone: str | None, member: str | None, connection: Path | None, as_json: bool
    ) -> None:
        """Daily quiet hours HH:MM-HH:MM (over midnight is fine), or off."""
        enabled, start, end = parse_quiet(window)
        try:
            args = SetQuietHoursArgs(enabled=enabled, start=start, end=end, timezone=timezone)
        except ValueError as exc:
            raise click.BadParameter(f"unknown time zone {timezone!r}") from exc
        prefs: NotifyPrefs = run(member, connection, _prefs_call("set_quiet_hours", args))
        _show(as_json, prefs, f"quiet hours {f'{start}-{end} ({prefs.timezone})' if enabled else 'off'}")

    @notify.command("hide-muted")
    @click.argument("state", type=click.Choice(["on", "off"]))
    @member_option
    @connection_option
    @json_option
    def hide_muted(state: str, member: str | None, connection: Path | None, as_json: bool) -> None:
        """Hide Muted Channels in every desktop's channel tree."""
        args = SetHideMutedArgs(hide=state == "on")
        prefs: NotifyPrefs = run(member, connection, _prefs_call("set_hide_muted", args))
        _show(as_json, prefs, f"hide muted channels {state}")

    @main.command()
    @click.argument("status", required=False, type=click.Choice(list(MEMBER_STATUSES)))
    @member_option
    @connection_option
    @json_option
    def presence(status: str | None, member: str | None, connection: Path | None, as_json: bool) -> None:
        """The member's status: online, idle, dnd (no notifications) or invisible.

        Without STATUS: show it. The status lives on the stack and every desktop shows it;
        servers receive no status (only visible to you)."""
        if status is None:
            prefs: NotifyPrefs = run(member, connection, _prefs_call("prefs", Empty()))
        else:
            args = SetStatusArgs.model_validate({"status": status})
            prefs = run(member, connection, _prefs_call("set_status", args))
        emit(as_json, prefs, lambda: click.echo(f"status: {STATUS_LABELS[prefs.status]}"))
