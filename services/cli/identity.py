"""``openchat identity mode``: the member's UID mode, over the bus (features 1.4, 1.5).

A thin bus client of the connector (``oc.<member>.cmd.connector.identity_get`` / ``uid_mode``),
so the running sessions are re-bound at once: every server whose projected uid changes gets its
realtime socket closed and is hydrated again under the new uid. ``identity export`` and
``identity import FILE`` (a passphrase-encrypted backup, ADR 0015) go through the running stack
too; ``identity import ROOT`` and ``identity show`` (``main.py``) work on the home directory.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import click

from services.cli.chat import MemberClient, connection_option, emit, json_option, member_option, run
from services.core.contracts import commands as cmd
from services.core.contracts.chat import IdentityGetArgs, IdentityImportArgs, IdentityInfo, UidModeArgs
from services.core.identity_backup import (
    MAX_FILE_BYTES,
    BackupError,
    check_passphrase,
    decrypt_backup,
    encrypt_backup,
)

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


# -- identity backup (issue 18; ADR 0015) -----------------------------------------------------------
passphrase_file_option = click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the passphrase from the first line of this file (scripts); default: ask.",
)


def read_passphrase(path: Path | None, *, confirm: bool) -> str:
    """From ``--passphrase-file`` (first line) or typed without echo (twice when ``confirm``)."""
    if path is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        passphrase = lines[0] if lines else ""
    else:
        passphrase = getpass.getpass("Backup passphrase: ")
        if confirm and getpass.getpass("Repeat the passphrase: ") != passphrase:
            raise click.ClickException("the passphrases differ")
    try:
        return check_passphrase(passphrase)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc


def import_backup(
    file: Path, member: str | None, connection: Path | None, passphrase_file: Path | None, as_json: bool
) -> None:
    """Decrypt FILE here, then hand the root and uid mode to the running connector, which re-binds
    every joined server (the same path as the desktop's Welcome dialog)."""
    data = file.read_bytes()[: MAX_FILE_BYTES + 1]
    passphrase = read_passphrase(passphrase_file, confirm=False)
    try:
        backup = decrypt_backup(data, passphrase)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc

    async def work(c: MemberClient) -> IdentityInfo:
        await c.call(cmd.IDENTITY_IMPORT, IdentityImportArgs(root=backup.root))
        mode = UidModeArgs.model_validate({"mode": backup.uid_mode})
        return await c.call(cmd.UID_MODE, mode)

    info: IdentityInfo = run(member, connection, work)
    emit(as_json, info, lambda: click.echo(f"identity imported from {file}\n{identity_text(info)}"))


def register_backup(identity: click.Group) -> None:
    @identity.command("export")
    @member_option
    @connection_option
    @click.option(
        "--out",
        "out",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The backup file (default: openchat-identity-MEMBER.json here). Never overwritten.",
    )
    @passphrase_file_option
    def export(
        member: str | None, connection: Path | None, out: Path | None, passphrase_file: Path | None
    ) -> None:
        """Write the identity root, encrypted with a passphrase you type, to a backup file.

        Keep the file and the passphrase apart. `openchat identity import --member M FILE` on
        any stack brings back the same identity: every server sees the same uids again."""

        async def work(c: MemberClient) -> IdentityInfo:
            return await c.call(cmd.IDENTITY_GET, IdentityGetArgs(reveal=True))

        info: IdentityInfo = run(member, connection, work)
        if not info.exists or info.root is None:
            raise click.ClickException("no identity yet: nothing to back up")
        target = out or Path(f"openchat-identity-{member or 'member'}.json")
        if target.exists():
            raise click.ClickException(
                f"{target} exists: choose another --out (a backup is never overwritten)"
            )
        passphrase = read_passphrase(passphrase_file, confirm=True)
        data = encrypt_backup(info.root, info.uid_mode, passphrase)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise click.ClickException(f"cannot write {target}: {exc.strerror}") from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        click.echo(f"identity written to {target} (encrypted with your passphrase; uid mode {info.uid_mode})")
