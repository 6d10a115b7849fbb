"""The chat commands of ``openchat``: a thin client of the member's stack over the bus.

Like the desktop app, the CLI holds no backend credentials and no protocol logic: it connects
with the member's connection file (member-scoped NATS credentials), sends commands to the
connector and state services, and prints their typed results (``--json`` for scripts).
"""

from __future__ import annotations

import asyncio
import base64
import json
import mimetypes
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from nats.aio.msg import Msg
from pydantic import BaseModel

from services.cli.home import Home
from services.core.bus import Bus, CommandError, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.chat import (
    ChatMessage,
    DiscoverResult,
    JoinResult,
    LeaveResult,
    ProbeResult,
    SendArgs,
    SendResult,
    Snapshot,
    UploadedImage,
    ViewHistoryResult,
)
from services.core.members import ConnectionFile
from services.core.rpc import StackCommands

R = TypeVar("R", bound=BaseModel)
COMMAND_TIMEOUT_S = 30.0


def resolve_connection(home: Home, member: str | None, connection: Path | None) -> ConnectionFile:
    """``--connection FILE``, else ``--member``/``OPENCHAT_MEMBER``, else the only member here."""
    if connection is not None:
        return ConnectionFile.read(connection)
    member = member or os.environ.get("OPENCHAT_MEMBER")
    if member is None:
        files = sorted(home.layout.members_dir.glob("*.json"))
        if len(files) != 1:
            raise click.ClickException("say which member with --member NAME (or OPENCHAT_MEMBER)")
        return ConnectionFile.read(files[0])
    path = home.layout.connection_file(subjects.check_member(member))
    if not path.exists():
        raise click.ClickException(
            f"no connection file for {member} at {path} (openchat member add {member})"
        )
    return ConnectionFile.read(path)


class MemberClient(StackCommands):
    """One member's bus connection: the stack's typed commands (``StackCommands``, one wait of
    ``COMMAND_TIMEOUT_S`` for each) plus what only the CLI needs (counts, tail)."""

    def __init__(self, bus: Bus, member: str) -> None:
        super().__init__(bus, member, timeout_s=COMMAND_TIMEOUT_S)

    @classmethod
    @asynccontextmanager
    async def connect(cls, cf: ConnectionFile) -> AsyncIterator[MemberClient]:
        opts = ConnectOptions(
            url=cf.nats_url, nkey_seed=cf.nkey_seed, inbox_prefix=cf.inbox_prefix, name=f"cli-{cf.member}"
        )
        bus = await Bus.connect(opts, first_attempts=3)
        try:
            yield cls(bus, cf.member)
        finally:
            await bus.close()

    async def snapshot(self, server_id: str | None = None, messages_per_channel: int = 0) -> Snapshot:
        """The view without messages unless asked (the CLI lists servers and channels)."""
        return await super().snapshot(server_id, messages_per_channel)

    async def history(self, server_id: str, channel_id: str, limit: int) -> ViewHistoryResult:
        return await self.window(server_id, channel_id, limit)

    async def counts(self, server_id: str | None = None) -> dict[str, dict[str, Any]] | None:
        """Unread/mention counts per server (with ``channels`` per channel id), from the
        notification service; ``None`` when it does not answer."""
        try:
            result = await self.unread(server_id, timeout=5)
        except CommandError:
            return None
        return {
            s.server_id: {
                "unread": s.unread,
                "mentions": s.mentions,
                "channels": {c.channel_id: {"unread": c.unread, "mentions": c.mentions} for c in s.channels},
            }
            for s in result.servers
        }

    async def tail(self, on_event: Callable[[int, str, dict[str, Any]], None], stop: asyncio.Event) -> None:
        async def cb(msg: Msg) -> None:
            seq = int((msg.headers or {}).get("Nats-Sequence", "0"))
            try:
                doc = json.loads(msg.data)
            except ValueError:
                return
            on_event(seq, msg.subject, doc)

        sub = await self.bus.nc.subscribe(subjects.events_of_member(self.member), cb=cb)
        await self.bus.nc.flush()  # subscribed at the server: nothing after this line is missed
        click.echo(f"tailing the events of {self.member} (Ctrl-C stops)", err=True)
        await stop.wait()
        await sub.unsubscribe()


# -- click plumbing ------------------------------------------------------------------------------
member_option = click.option("--member", "-m", help="The member (default: OPENCHAT_MEMBER, or the only one).")
connection_option = click.option(
    "--connection", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A connection file."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def run(member: str | None, connection: Path | None, work: Callable[[MemberClient], Any]) -> Any:
    cf = resolve_connection(Home.load(), member, connection)

    async def main() -> Any:
        async with MemberClient.connect(cf) as client:
            return await work(client)

    try:
        return asyncio.run(main())
    except CommandError as exc:
        hint = " (temporary: try again)" if exc.retryable else ""
        raise click.ClickException(f"{exc.code}: {exc.body.message}{hint}") from exc


def emit(as_json: bool, model: BaseModel | list[Any], human: Callable[[], None]) -> None:
    if as_json:
        if isinstance(model, BaseModel):
            click.echo(model.model_dump_json(indent=2))
        else:
            click.echo(json.dumps(model, indent=2, default=str))
    else:
        human()


def format_message(m: ChatMessage) -> str:
    when = m.created_at.strftime("%Y-%m-%d %H:%M")
    reply = f" ↪ {m.reply_to.message_id}" if m.reply_to else ""
    files = f" [{len(m.attachments)} image(s)]" if m.attachments else ""
    return f"{when}  {m.author_uid}{reply}: {m.body}{files}  ({m.id})"


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("url")
    @member_option
    @connection_option
    @json_option
    def discover(url: str, member: str | None, connection: Path | None, as_json: bool) -> None:
        """List the servers a backend's directory offers."""
        result: DiscoverResult = run(member, connection, lambda c: c.discover(url))

        def human() -> None:
            click.echo(f"{result.url} (directory uid {result.directory_uid})")
            for s in result.servers:
                click.echo(f"  {s.server_id:<20} {s.icon_text:<3} {s.display_name}  [{s.trust_state}]")

        emit(as_json, result, human)

    @main.command()
    @click.argument("url")
    @click.option("--server", "server_id", help="The directory entry you intend to join.")
    @member_option
    @connection_option
    @json_option
    def probe(
        url: str, server_id: str | None, member: str | None, connection: Path | None, as_json: bool
    ) -> None:
        """Capabilities, trust assessment and what the server would learn about you."""
        result: ProbeResult = run(member, connection, lambda c: c.probe(url, server_id))
        emit(as_json, result, lambda: click.echo(_probe_text(result)))

    @main.command()
    @click.argument("url")
    @click.option("--server", "server_id", required=True, help="The directory entry to join (its server id).")
    @click.option("--yes", is_flag=True, help="Confirm without asking.")
    @member_option
    @connection_option
    @json_option
    def join(
        url: str, server_id: str, yes: bool, member: str | None, connection: Path | None, as_json: bool
    ) -> None:
        """Join SERVER on the backend at URL, after showing trust and disclosure."""

        async def work(c: MemberClient) -> JoinResult:
            # One bus connection: probe, show trust and disclosure, ask, then join.
            probe_result = await c.probe(url, server_id)
            if not as_json:
                click.echo(_probe_text(probe_result))
            if not yes and not await asyncio.to_thread(click.confirm, f"Join {server_id}?", default=False):
                raise click.ClickException("not joined")
            return await c.join(url, server_id)

        result: JoinResult = run(member, connection, work)
        emit(
            as_json,
            result,
            lambda: click.echo(f"joined {result.server.server_id} as {result.server.user_uid}"),
        )

    @main.command()
    @click.argument("server_id")
    @click.option("--yes", is_flag=True, help="Confirm without asking.")
    @member_option
    @connection_option
    @json_option
    def leave(server_id: str, yes: bool, member: str | None, connection: Path | None, as_json: bool) -> None:
        """Leave SERVER: its channels, messages and state are cleared for you only."""
        if not yes and not click.confirm(
            f"Leave {server_id}? Its channels and messages are cleared here.", default=False
        ):
            raise click.ClickException("not left")
        result: LeaveResult = run(member, connection, lambda c: c.leave(server_id))
        emit(
            as_json,
            result,
            lambda: click.echo(f"left {server_id}" + (f" ({result.detail})" if result.detail else "")),
        )

    @main.command()
    @member_option
    @connection_option
    @json_option
    def servers(member: str | None, connection: Path | None, as_json: bool) -> None:
        """Joined servers with their connection state."""

        async def work(c: MemberClient) -> tuple[Snapshot, dict[str, dict[str, Any]] | None]:
            return await c.snapshot(), await c.counts()

        snap, counts = run(member, connection, work)
        rows = [
            {
                "server_id": v.server.server_id,
                "name": v.server.display_name,
                "url": v.server.base_url,
                "uid": v.server.user_uid,
                "connection": v.connection.state,
                "reason": v.connection.reason,
                "next_retry_at": v.connection.next_retry_at.isoformat()
                if v.connection.next_retry_at
                else None,
                # Counts from the notification service (None when it does not answer).
                "unread": counts.get(v.server.server_id, {}).get("unread", 0) if counts is not None else None,
                "mentions": counts.get(v.server.server_id, {}).get("mentions", 0)
                if counts is not None
                else None,
            }
            for v in snap.servers
        ]

        def human() -> None:
            for r in rows:
                extra = f" — {r['reason']}" if r["reason"] else ""
                badge = f"  unread {r['unread']} @{r['mentions']}" if r["unread"] is not None else ""
                click.echo(
                    f"{r['server_id']:<20} {r['connection']:<12} {r['name']}  {r['url']}  {r['uid']}{badge}{extra}"
                )

        emit(as_json, rows, human)

    @main.command()
    @click.argument("server_id")
    @member_option
    @connection_option
    @json_option
    def channels(server_id: str, member: str | None, connection: Path | None, as_json: bool) -> None:
        """The channel tree of SERVER."""

        async def work(c: MemberClient) -> tuple[Snapshot, dict[str, dict[str, Any]] | None]:
            return await c.snapshot(server_id), await c.counts(server_id)

        snap, counts = run(member, connection, work)
        views = [v for v in snap.servers if v.server.server_id == server_id]
        if not views:
            raise click.ClickException(f"not joined: {server_id}")
        groups = views[0].groups
        per_channel: dict[str, Any] = (counts or {}).get(server_id, {}).get("channels", {})
        data = [g.model_dump(mode="json") for g in groups]
        for group in data:
            for ch in group["channels"]:
                found = per_channel.get(ch["id"], {})
                ch["unread"] = found.get("unread", 0) if counts is not None else None
                ch["mentions"] = found.get("mentions", 0) if counts is not None else None

        def human() -> None:
            for g in groups:
                click.echo(f"{g.label}")
                for ch in g.channels:
                    mark = "#" if ch.type == "text" else "🔊"
                    found = per_channel.get(ch.id, {})
                    badge = f"  {found['unread']} unread" if found.get("unread") else ""
                    badge += f" @{found['mentions']}" if found.get("mentions") else ""
                    click.echo(f"  {mark} {ch.name:<24} {ch.id}{badge}")

        emit(as_json, data, human)

    @main.command()
    @click.argument("server_id")
    @click.argument("channel_id")
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
    @member_option
    @connection_option
    @json_option
    def history(
        server_id: str,
        channel_id: str,
        limit: int,
        member: str | None,
        connection: Path | None,
        as_json: bool,
    ) -> None:
        """The newest messages of a channel, oldest first."""
        result: ViewHistoryResult = run(member, connection, lambda c: c.history(server_id, channel_id, limit))

        def human() -> None:
            for m in result.messages:
                click.echo(format_message(m))

        emit(as_json, result, human)

    @main.command()
    @click.argument("server_id")
    @click.argument("channel_id")
    @click.argument("text", default="")
    @click.option("--reply-to", help="Message id to reply to.")
    @click.option(
        "--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
    )
    @member_option
    @connection_option
    @json_option
    def send(
        server_id: str,
        channel_id: str,
        text: str,
        reply_to: str | None,
        images: tuple[Path, ...],
        member: str | None,
        connection: Path | None,
        as_json: bool,
    ) -> None:
        """Send TEXT (and up to 4 images) to a channel."""
        if len(images) > 4:
            raise click.ClickException("Up to 4 images per message.")
        uploads = [
            UploadedImage(
                file_name=p.name,
                content_type=mimetypes.guess_type(p.name)[0] or "application/octet-stream",
                data_b64=base64.b64encode(p.read_bytes()).decode(),
            )
            for p in images
        ]
        args = SendArgs(
            server_id=server_id, channel_id=channel_id, body=text, reply_to=reply_to, images=uploads
        )
        result: SendResult = run(member, connection, lambda c: c.send(args))
        emit(as_json, result, lambda: click.echo(f"sent {result.message.id}"))

    @main.command()
    @member_option
    @connection_option
    @json_option
    def tail(member: str | None, connection: Path | None, as_json: bool) -> None:
        """Every event of the member as it happens (Ctrl-C stops)."""

        def show(seq: int, subject: str, doc: dict[str, Any]) -> None:
            if as_json:
                click.echo(
                    json.dumps({"seq": seq, "subject": subject, "event": doc}, ensure_ascii=False), nl=True
                )
            else:
                payload = json.dumps(doc.get("payload", {}), ensure_ascii=False)[:200]
                click.echo(f"#{seq} {doc.get('server_id')} {doc.get('type')} {payload}")

        async def work(client: MemberClient) -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            import signal

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await client.tail(show, stop)

        run(member, connection, work)


def _probe_text(p: ProbeResult) -> str:
    caps = p.capabilities
    lines = [
        f"{caps.server_name} at {p.url} (capabilities: {p.capabilities_path})",
        f"  build {caps.build_version or 'unknown'} · {caps.build_commit[:12] or 'unknown'}",
        f"  trust: {'verified' if p.trust.verified else 'unverified'}, {'secure' if p.trust.transport_secure else 'NOT secure'} transport",
    ]
    lines += [f"  warning: {w}" for w in p.trust.warnings]
    lines.append(f"  disclosure: {p.disclosure.summary}")
    return "\n".join(lines)
