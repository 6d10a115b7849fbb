"""``openchat version``: the CLI's version, the home stack's, and each service's (issue 18).

The CLI's version is its own installation's; the stack's and the services' come over the bus
(``oc.<member>.cmd.stack.version`` / ``oc.<member>.cmd.<service>.version``, contracts/version.py)
with the member's connection file, so it shows what the running stack actually is. A service
that does not answer within the timeout is listed as not answering (exit status 1).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from services.cli.chat import MemberClient, connection_option, json_option, member_option, run
from services.core.bus import CommandError
from services.core.contracts import commands as cmd
from services.core.contracts.bus import Empty
from services.core.contracts.subjects import SERVICES
from services.core.contracts.version import VERB, ServiceVersion, StackVersion
from services.core.version import is_newer, package_version

VERSION_TIMEOUT_S = 3.0


async def collect(c: MemberClient) -> dict[str, Any]:
    async def one(service: str) -> ServiceVersion | str:
        try:
            spec: cmd.CommandSpec[Empty, ServiceVersion] = cmd.COMMANDS[(service, VERB)]
            return await c.call(spec, Empty(), timeout=VERSION_TIMEOUT_S)
        except CommandError as exc:
            return exc.code

    async def stack() -> StackVersion | str:
        try:
            return await c.call(cmd.STACK_VERSION, Empty(), timeout=VERSION_TIMEOUT_S)
        except CommandError as exc:
            return exc.code

    stack_v, *answers = await asyncio.gather(stack(), *(one(s) for s in SERVICES))
    return {"stack": stack_v, "services": dict(zip(SERVICES, answers, strict=True))}


def register(main: click.Group) -> None:
    @main.command()
    @member_option
    @connection_option
    @json_option
    def version(member: str | None, connection: Path | None, as_json: bool) -> None:
        """Versions of this CLI, of the home stack and of each of its services."""
        import json

        mine = package_version()
        found: dict[str, Any] = run(member, connection, collect)
        stack = found["stack"]
        services: dict[str, ServiceVersion | str] = found["services"]
        ok = isinstance(stack, StackVersion) and all(isinstance(v, ServiceVersion) for v in services.values())
        if as_json:
            doc = {
                "cli": mine,
                "stack": stack.model_dump(mode="json") if isinstance(stack, StackVersion) else None,
                "services": {
                    name: v.model_dump(mode="json") if isinstance(v, ServiceVersion) else {"error": v}
                    for name, v in services.items()
                },
                "update_available": isinstance(stack, StackVersion) and is_newer(stack.version, mine),
            }
            click.echo(json.dumps(doc, indent=2))
        else:
            click.echo(f"cli           {mine}")
            if isinstance(stack, StackVersion):
                newer = (
                    f"  (newer than this CLI: {stack.release_url or 'ask who runs your home stack'})"
                    if is_newer(stack.version, mine)
                    else ""
                )
                click.echo(f"stack         {stack.version}{newer}")
            else:
                click.echo(f"stack         not answering ({stack})")
            for name, v in services.items():
                if isinstance(v, ServiceVersion):
                    click.echo(
                        f"{name:<13} {v.version}  (python {v.python}, up since {v.started_at:%Y-%m-%d %H:%M} UTC)"
                    )
                else:
                    click.echo(f"{name:<13} not answering ({v})")
        sys.exit(0 if ok else 1)
