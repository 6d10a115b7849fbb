"""``openchat profile show|set|share``: the member's own display name and avatar.

Thin bus clients of the connector (``oc.<member>.cmd.connector.profile_get`` / ``profile_set`` /
``consent``). The profile is kept on this host; a server sees it only after the member agreed to
share it with that server (``openchat profile share SERVER``, rule D18), UID-only otherwise.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path

import click

from services.cli.chat import MemberClient, connection_option, emit, json_option, member_option, run
from services.core.contracts import commands as cmd
from services.core.contracts.chat import (
    AVATAR_PRESETS,
    ConsentArgs,
    JoinResult,
    ProfileGetArgs,
    ProfileGetResult,
    ProfileSetArgs,
    UploadedImage,
)


def profile_text(result: ProfileGetResult) -> str:
    p = result.profile
    if p is None:
        lines = ["no profile yet (openchat profile set --name NAME)"]
    else:
        avatar = (
            f"generated ({p.avatar_preset_id})"
            if p.avatar_mode == "generated"
            else f"uploaded ({p.avatar_content_type}, {p.avatar_bytes} bytes)"
        )
        lines = [
            f"name:   {p.display_name}",
            f"avatar: {avatar}",
            f"revision {p.revision}, {p.updated_at:%Y-%m-%d %H:%M}",
        ]
    for s in result.servers:
        shared = {True: "shared", False: "private", None: "not asked"}[s.consent]
        version = f" v{s.profile_version}" if s.profile_version is not None else ""
        code = f" ({s.code})" if s.code else ""
        lines.append(f"  {s.server_id:<20} {shared:<10} {s.state}{version}{code}")
    return "\n".join(lines)


def register(main: click.Group) -> None:
    @main.group()
    def profile() -> None:
        """Your display name and avatar; shared only with the servers you allow."""

    @profile.command("show")
    @member_option
    @connection_option
    @json_option
    def show(member: str | None, connection: Path | None, as_json: bool) -> None:
        """The profile and where it is published."""

        async def work(c: MemberClient) -> ProfileGetResult:
            return await c.call(cmd.PROFILE_GET, ProfileGetArgs())

        result: ProfileGetResult = run(member, connection, work)
        emit(as_json, result, lambda: click.echo(profile_text(result)))

    @profile.command("set")
    @click.option("--name", help="Display name: 2-32 letters, digits, spaces, '.', '_' or '-'.")
    @click.option("--preset", type=click.Choice(AVATAR_PRESETS), help="A generated avatar.")
    @click.option(
        "--avatar",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="An image (PNG, JPEG or WEBP, at most 2 MB), kept on this host.",
    )
    @member_option
    @connection_option
    @json_option
    def set_(
        name: str | None,
        preset: str | None,
        avatar: Path | None,
        member: str | None,
        connection: Path | None,
        as_json: bool,
    ) -> None:
        """Change the profile; servers you share it with are updated."""
        if preset is not None and avatar is not None:
            raise click.UsageError("--preset and --avatar exclude each other")
        if name is None and preset is None and avatar is None:
            raise click.UsageError("nothing to change: give --name, --preset or --avatar")
        image = None
        if avatar is not None:
            data = avatar.read_bytes()
            image = UploadedImage(
                file_name=avatar.name[:255],
                content_type=mimetypes.guess_type(avatar.name)[0] or "application/octet-stream",
                data_b64=base64.b64encode(data).decode(),
            )
        args = ProfileSetArgs(display_name=name, avatar_preset_id=preset, avatar=image)

        async def work(c: MemberClient) -> ProfileGetResult:
            return await c.call(cmd.PROFILE_SET, args)

        result: ProfileGetResult = run(member, connection, work)
        emit(as_json, result, lambda: click.echo(profile_text(result)))

    @profile.command("share")
    @click.argument("server_id")
    @click.option("--private", "keep_private", is_flag=True, help="Stop sharing (Keep private).")
    @member_option
    @connection_option
    @json_option
    def share(
        server_id: str, keep_private: bool, member: str | None, connection: Path | None, as_json: bool
    ) -> None:
        """Share your display name and avatar with SERVER (or keep them private)."""
        args = ConsentArgs(server_id=server_id, share_profile=not keep_private)

        async def work(c: MemberClient) -> JoinResult:
            return await c.call(cmd.CONSENT, args)

        result: JoinResult = run(member, connection, work)
        word = "private on" if keep_private else "shared with"
        emit(as_json, result, lambda: click.echo(f"profile {word} {result.server.server_id}"))
