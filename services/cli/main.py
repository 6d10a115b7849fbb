"""The ``openchat`` command: run the stack, manage members, inspect health.

Every command honours ``OPENCHAT_HOME`` (default: the XDG data dir).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from services.cli.chat import register as register_chat
from services.cli.home import Home
from services.cli.identity import register as register_identity
from services.cli.identity import register_backup as register_identity_backup
from services.cli.notify import register as register_notify
from services.cli.notify import register_settings as register_notify_settings
from services.cli.profile import register as register_profile
from services.cli.search import register as register_search
from services.cli.version import register as register_version
from services.cli.voice import register as register_voice
from services.core.contracts.subjects import SubjectError
from services.core.members import MemberExists, MemberNotFound
from services.core.paths import private_umask


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """OpenChat client stack: an always-on home server for every OpenChat server your family joined."""
    private_umask()  # what any command writes under OPENCHAT_HOME is 0600/0700


@main.command()
def init() -> None:
    """Create OPENCHAT_HOME, its secrets, the NATS accounts file, and the home CA and NATS server
    certificate for the public host name(s) (idempotent; ADR 0010)."""
    home = Home.load()
    home.write_accounts()
    files, issued = home.ensure_tls()
    from cryptography import x509

    from services.core.tls import cert_hosts

    names = sorted(cert_hosts(x509.load_pem_x509_certificate(files.server_cert.read_bytes())))
    click.echo(f"initialised {home.layout.root}")
    click.echo(
        f"NATS TLS: CA {files.ca_cert}; server certificate {'issued' if issued else 'kept'} for {', '.join(names)}"
    )


@main.command()
@click.option("--demo", is_flag=True, help="Also start two demo devservers and a demo member.")
@click.option(
    "--ui", "with_ui", is_flag=True, help="Open the desktop app (with --demo: as the demo member) once up."
)
@click.option(
    "--listen",
    metavar="ADDRESS",
    help="Where NATS listens for desktops: an address of this machine, or 0.0.0.0 for all interfaces "
    "(default: the host of OPENCHAT_PUBLIC_NATS_URL, else 127.0.0.1). Beyond loopback, TLS is required.",
)
@click.option(
    "--nats-cluster",
    "nats_cluster",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="Run this many nats-server nodes forming one cluster (streams and KV replicated on up to 3).",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 4),
    default=1,
    show_default=True,
    help="Run this many replicas of every service (connector sessions spread with leases).",
)
def up(demo: bool, with_ui: bool, listen: str | None, nats_cluster: int, replicas: int) -> None:
    """Start the whole stack in the foreground; Ctrl-C stops everything."""
    import os

    from services.cli.listen import ListenError

    if listen:
        os.environ["OPENCHAT_NATS_LISTEN"] = listen
    from services.cli.supervisor import run_up

    try:
        sys.exit(run_up(demo, with_ui, nats_cluster=nats_cluster, replicas=replicas))
    except ListenError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--member", "-m", help="The member whose connection file of this home to use.")
@click.pass_context
def ui(ctx: click.Context, member: str | None) -> None:
    """Open the desktop app (options: --connection FILE or --member NAME, --scale, --font-size)."""
    import os

    args = list(ctx.args)
    if member is not None:
        if "--connection" in args:
            raise click.UsageError("give --connection FILE or --member NAME, not both")
        path = Home.load().layout.connection_file(member)
        if not path.exists():
            raise click.ClickException(
                f"no connection file for {member} at {path} (openchat member add {member})"
            )
        args = ["--connection", str(path), *args]
    # the desktop app is its own program (``python -m ui``); the CLI imports nothing of it
    os.execv(sys.executable, [sys.executable, "-m", "ui", *args])  # noqa: S606 (the member's own args)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
def status(as_json: bool) -> None:
    """Health of every component; exits non-zero when any is down."""
    from services.cli.status import render_table, stack_status

    rows = asyncio.run(stack_status(Home.load()))
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
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
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def identity_import(root: str, member: str, passphrase_file: Path | None, as_json: bool) -> None:
    """Bring back MEMBER's identity from a backup FILE (``identity export``; through the running
    stack, asks for its passphrase), or set the identity ROOT itself (edits the home directly:
    stop the stack first). Either way the servers see the same uids as before."""
    from services.core.identity import IdentityError, check_root

    if Path(root).is_file():
        from services.cli.identity import import_backup

        import_backup(Path(root), member, None, passphrase_file, as_json)
        return
    if not root.startswith("identity_"):
        raise click.ClickException(f"{root}: no such backup file (nor an identity root)")
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
        import contextlib

        from services.core.servers import ServerNotJoined, ServerStore

        scope = server_id  # a server not joined: the reference projection of that id
        with contextlib.suppress(ServerNotJoined):  # a joined one (local id): its scope (issue #14)
            scope = ServerStore(home.layout.registry_db).get(member, server_id).projection_scope
        click.echo(f"uid on {server_id}: {project_uid(root, scope, mode)}")


register_identity(identity)
register_identity_backup(identity)
register_chat(main)
register_notify(main)
register_notify_settings(main)
register_profile(main)
register_version(main)
register_voice(main)
register_search(main)

if __name__ == "__main__":
    main()
