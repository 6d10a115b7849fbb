"""``openchat identity mode``: the member's UID mode, over the bus (features 1.4, 1.5).

A thin bus client of the connector (``oc.<member>.cmd.connector.identity_get`` / ``uid_mode``),
so the running sessions are re-bound at once: every server whose projected uid changes gets its
realtime socket closed and is hydrated again under the new uid. ``identity import`` and
``identity show`` (``main.py``) work on the home directory directly.
"""

from __future__ import annotations

from pathlib import Path

import click

from services.cli.chat import MemberClient, connection_option, emit, json_option, member_option, run
from services.core.contracts import commands as cmd
from services.core.contracts.chat import IdentityGetArgs, IdentityInfo, UidModeArgs

MODES = ("server_scoped", "global")


def identity_text(info: IdentityInfo) -> str:
    if not info.exists:
        return "no identity yet (the desktop app's first run creates one; openchat identity import sets one)"
    lines = [f"uid mode: {info.uid_mode}", f"device id: {info.device_id}"]
    if not info.servers:
        lines.append("no servers joined")
    lines += [f"  {s.server_id:<20} {s.user_uid}" for s in info.servers]
    return "\n".join(lines)


def register(identity: click.Group) -> None:
    @identity.command("mode")
    @click.argument("mode", required=False, type=click.Choice(MODES))
    @member_option
    @connection_option
    @json_option
    def mode_(mode: str | None, member: str | None, connection: Path | None, as_json: bool) -> None:
        """Show the UID mode and each server's uid; with MODE, switch to it first.

        server_scoped (the default): every server sees a different uid. global: every server
        sees the same uid. Switching re-binds every server to its new uid at once (the stack
        must be running); switching back restores the previous uids."""

        async def work(c: MemberClient) -> IdentityInfo:
            if mode is None:
                return await c.call(cmd.IDENTITY_GET, IdentityGetArgs())
            args = UidModeArgs.model_validate({"mode": mode})
            return await c.call(cmd.UID_MODE, args)

        result: IdentityInfo = run(member, connection, work)
        emit(as_json, result, lambda: click.echo(identity_text(result)))
