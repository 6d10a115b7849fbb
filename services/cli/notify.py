"""``openchat unread`` and ``openchat read``: thin bus clients of the notification service.

Like every chat command, they connect with the member's connection file and only send
``oc.<member>.cmd.notification.*`` commands (contracts/notify.py); nothing is computed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from services.cli.chat import MemberClient, connection_option, emit, json_option, member_option, run
from services.core.contracts import commands as cmd
from services.core.contracts.notify import BADGE_CAP, MarkReadArgs, UnreadArgs, UnreadResult


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
