"""The ``openchat`` command: run the stack, manage members, inspect health.

Every command honours ``OPENCHAT_HOME`` (default: the XDG data dir).
"""

from __future__ import annotations

import asyncio
import json
import sys

import click

from services.cli.chat import register as register_chat
from services.cli.home import Home
from services.cli.identity import register as register_identity
from services.cli.notify import register as register_notify
from services.cli.profile import register as register_profile
from services.cli.search import register as register_search
from services.core.contracts.subjects import SubjectError
from services.core.members import MemberExists, MemberNotFound


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """OpenChat client stack: an always-on home server for every OpenChat server your family joined."""


@main.command()
def init() -> None:
    """Create OPENCHAT_HOME, its secrets and the NATS accounts file (idempotent)."""
    home = Home.load()
    home.write_accounts()
    click.echo(f"initialised {home.layout.root}")


@main.command()
@click.option("--demo", is_flag=True, help="Also start two demo devservers and a demo member.")
@click.option(
    "--ui", "with_ui", is_flag=True, help="Open the desktop app (with --demo: as the demo member) once up."
)
def up(demo: bool, with_ui: bool) -> None:
    """Start the whole stack in the foreground; Ctrl-C stops everything."""
    from services.cli.supervisor import run_up

    sys.exit(run_up(demo, with_ui))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def ui(ctx: click.Context) -> None:
    """Open the desktop app (options: --connection FILE, --scale, --font-size)."""
    from ui.app import main as ui_main

    ui_main(list(ctx.args))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
def status(as_json: bool) -> None:
    """Health of every component; exits non-zero when any is down."""
    from services.cli.status import render_table, stack_status

    rows = asyncio.run(stack_status(Home.load()))
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        click.echo(render_table(rows))
    sys.exit(0 if rows and all(r.healthy for r in rows) else 1)


@main.group()
def member() -> None:
    """Family members: each has its own credentials and sees only its own data."""


@member.command("add")
@click.argument("name")
def member_add(name: str) -> None:
    """Create NAME and write its connection file (printed)."""
    from services.cli.members import add_member

    try:
        add_member(Home.load(), name, out=click.echo)
    except (MemberExists, SubjectError) as exc:
        raise click.ClickException(str(exc)) from exc


@member.command("list")
@click.option("--json", "as_json", is_flag=True)
def member_list(as_json: bool) -> None:
    """List members."""
    home = Home.load()
    members = home.registry.all()
    if as_json:
        click.echo(json.dumps([{"name": m.name, "created_at": m.created_at} for m in members], indent=2))
        return
    for m in members:
        path = home.layout.connection_file(m.name)
        click.echo(
            f"{m.name}\tcreated {m.created_at}\t{path if path.exists() else '(connection file not on this host)'}"
        )


@member.command("remove")
@click.argument("name")
def member_remove(name: str) -> None:
    """Remove NAME; its connections are refused at once."""
    from services.cli.members import remove_member

    try:
        remove_member(Home.load(), name, out=click.echo)
    except MemberNotFound as exc:
        raise click.ClickException(f"no member {name!r}") from exc


@member.command("rotate")
@click.argument("name")
def member_rotate(name: str) -> None:
    """Issue new credentials for NAME (the old connection file stops working)."""
    from services.cli.members import rotate_member

    try:
        rotate_member(Home.load(), name, out=click.echo)
    except MemberNotFound as exc:
        raise click.ClickException(f"no member {name!r}") from exc


@main.group()
def identity() -> None:
    """The member's identity root: servers see only uids projected from it."""


@identity.command("import")
@click.argument("root")
@click.option("--member", "-m", required=True)
def identity_import(root: str, member: str) -> None:
    """Replace MEMBER's identity root with ROOT (appear as the same user as before)."""
    from services.core.identity import IdentityError, check_root

    home = Home.load()
    try:
        home.registry.get(member)
        home.identities.put(member, check_root(root))
    except (IdentityError, MemberNotFound) as exc:
        raise click.ClickException(
            str(exc) if isinstance(exc, IdentityError) else f"no member {member!r}"
        ) from exc
    click.echo(f"identity of {member} imported (restart the connector's sessions: openchat up restarts them)")


@identity.command("show")
@click.option("--member", "-m", required=True)
@click.option("--server", "server_id", help="Show the uid this server sees.")
def identity_show(member: str, server_id: str | None) -> None:
    """The uid a server sees (never prints the root)."""
    from services.core.identity import IdentityError, device_id, project_uid

    home = Home.load()
    try:
        root = home.identities.root(member)
        mode = home.identities.uid_mode(member)
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"uid mode: {mode}")
    click.echo(f"device id: {device_id(root)}")
    if server_id:
        click.echo(f"uid on {server_id}: {project_uid(root, server_id, mode)}")


register_identity(identity)
register_chat(main)
register_notify(main)
register_profile(main)
register_search(main)

if __name__ == "__main__":
    main()
