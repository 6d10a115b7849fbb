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
from services.core.bus import Bus, CommandError, backoff_delays
from services.core.contracts import commands as cmd
from services.core.contracts import subjects
from services.core.contracts.bus import Empty
from services.core.contracts.chat import (
    ChatMessage,
    DiscoverResult,
    JoinResult,
    LeaveResult,
    ProbeResult,
    SendArgs,
    SendResult,
    Snapshot,
    SyncArgs,
    UploadedImage,
    ViewHistoryResult,
)
from services.core.members import ConnectionFile
from services.core.rpc import StackCommands

R = TypeVar("R", bound=BaseModel)
COMMAND_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0


class StackUnreachable(click.ClickException):
    """The member's stack did not accept a connection within ``CONNECT_TIMEOUT_S``."""


async def connect_member(cf: ConnectionFile, name: str, timeout: float = CONNECT_TIMEOUT_S) -> Bus:
    """The member's bus connection, or ``StackUnreachable`` within ``timeout`` seconds (nats-py
    alone would retry a first connect forever)."""
    from services.core.connection import describe_connect_error

    last: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        last.append(exc)

    opts = cf.bus_options(name, extra={"connect_timeout": 2, "error_cb": on_error})
    try:
        return await asyncio.wait_for(Bus.connect(opts, first_attempts=1), timeout)
    except Exception as exc:
        reason = describe_connect_error(last[-1] if last else exc)
        raise StackUnreachable(
            f"cannot reach the home stack at {cf.nats_url} within {timeout:g} s: {reason}"
        ) from None


TAIL_SYNC_PAGE = 1000
TAIL_BUFFER_MAX = 100_000  # live events held while a resync runs (the resync returns the rest)


def resolve_connection(home: Home, member: str | None, connection: Path | None) -> ConnectionFile:
    """``--connection FILE``, else ``--member``/``OPENCHAT_MEMBER``, else the only member here."""
    if connection is not None:
        return ConnectionFile.read(connection)
    member = member or os.environ.get("OPENCHAT_MEMBER")
    if member is None:
        files = sorted(home.layout.members_dir.glob("*.json"))
        if len(files) != 1:
            raise click.ClickException("say which member with --member NAME (or OPENCHAT_MEMBER)")
        return localize(home, ConnectionFile.read(files[0]))
    path = home.layout.connection_file(subjects.check_member(member))
    if not path.exists():
        raise click.ClickException(
            f"no connection file for {member} at {path} (openchat member add {member})"
        )
    return localize(home, ConnectionFile.read(path))


def localize(home: Home, cf: ConnectionFile) -> ConnectionFile:
    """On the home server itself, dial the stack's local URL, not the public one written for
    desktops (which may not resolve here, or name another interface)."""
    url = home.nats_url()
    if not url:
        return cf
    return cf.model_copy(update={"nats_url": url, "ca_pem": home.local_ca_pem(url) or cf.ca_pem})


class MemberClient(StackCommands):
    """One member's bus connection: the stack's typed commands (``StackCommands``, one wait of
    ``COMMAND_TIMEOUT_S`` for each) plus what only the CLI needs (counts, tail)."""

    def __init__(self, bus: Bus, member: str) -> None:
        super().__init__(bus, member, timeout_s=COMMAND_TIMEOUT_S)

    @classmethod
    @asynccontextmanager
    async def connect(cls, cf: ConnectionFile) -> AsyncIterator[MemberClient]:
        bus = await connect_member(cf, f"cli-{cf.member}")
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

    async def tail(
        self,
        on_event: Callable[[int, str, dict[str, Any]], None],
        stop: asyncio.Event,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        """Every event of the member, each once and in stream order, until ``stop`` is set.

        Live events come from the member's ``evt`` subjects. What is published while the
        connection is down is not redelivered by core NATS, so after every reconnect the tail
        buffers live events, reads the gap from the stream with ``state.sync`` (from the last
        sequence it printed, or from the view's sequence when it started if it printed nothing
        yet) and then prints the buffered events that are still newer. A retryable failure of
        the resync is retried with backoff; a permanent one is reported once, never looped."""
        say = notice or (lambda text: click.echo(text, err=True))
        tailer = _Tailer(self, on_event, say)
        sub = await self.bus.nc.subscribe(subjects.events_of_member(self.member), cb=tailer.on_msg)
        await self.bus.nc.flush()  # subscribed at the server: nothing after this line is missed
        self.bus.add_reconnect_hooks(tailer.disconnected, tailer.resync)
        say(f"tailing the events of {self.member} (Ctrl-C stops)")
        try:  # where to resync from after a reconnect, should nothing be printed before it
            start = await self.call(cmd.SERVERS, Empty(), timeout=10)
            tailer.start_at(start.seq)
        except CommandError as exc:  # no state service: live only until a resync can start
            say(f"no start position from the state service ({exc.code}); tailing live events")
            tailer.start_at(None)
        await stop.wait()
        tailer.stopped = True
        await sub.unsubscribe()


class _Tailer:
    """The ordering state of ``MemberClient.tail``: last printed sequence, buffer during a resync."""

    def __init__(
        self,
        client: MemberClient,
        on_event: Callable[[int, str, dict[str, Any]], None],
        say: Callable[[str], None],
    ) -> None:
        self.client = client
        self.on_event = on_event
        self.say = say
        self.last = 0  # the newest stream sequence printed
        self.buffer: list[tuple[int, str, dict[str, Any]]] | None = []  # None: printing live
        self.stopped = False
        self.origin: int | None = None  # the view's sequence when the tail started
        self._resyncing = False
        self._again = False

    def start_at(self, seq: int | None) -> None:
        """Where a resync starts if nothing was printed before the first reconnect. Not a filter
        of live events: one the view already holds may still be on its way to this connection."""
        self.origin = seq
        self._flush()

    async def on_msg(self, msg: Msg) -> None:
        try:
            seq = int((msg.headers or {}).get("Nats-Sequence", "0"))
            doc = json.loads(msg.data)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        if self.buffer is not None:
            if len(self.buffer) < TAIL_BUFFER_MAX:
                self.buffer.append((seq, msg.subject, doc))
            return
        self._print(seq, msg.subject, doc)

    def _print(self, seq: int, subject: str, doc: dict[str, Any]) -> None:
        if seq <= self.last:
            return  # already printed (a live event that the resync also returned)
        self.last = seq
        self.on_event(seq, subject, doc)

    def _flush(self) -> None:
        pending = sorted(self.buffer or [], key=lambda t: t[0])
        self.buffer = None
        for seq, subject, doc in pending:
            self._print(seq, subject, doc)

    def disconnected(self) -> None:
        """Buffer from now on: live events of the new connection wait for the gap to be read."""
        if self.buffer is None:
            self.buffer = []
        if self._resyncing:  # dropped again during a resync: that resync reads the new gap too
            self._again = True

    async def resync(self) -> None:
        """After a reconnect: read the gap from the stream, then go live again."""
        if self._resyncing:  # a reconnect during a resync: run it once more afterwards
            self._again = True
            return
        self._resyncing = True
        if self.buffer is None:
            self.buffer = []
        try:
            while True:
                self._again = False
                await self._fill_gap()
                if not self._again:
                    break
        finally:
            self._resyncing = False
            self._flush()

    async def _fill_gap(self) -> None:
        since = self.last or self.origin
        if since is None:
            self.say("nothing printed yet and no start position: events while disconnected are not shown")
            return
        delays = backoff_delays(0.25, 5.0)
        while not self.stopped:
            try:
                while True:
                    res = await self.client.call(cmd.SYNC, SyncArgs(since_seq=since, limit=TAIL_SYNC_PAGE))
                    if res.truncated:
                        self.say(f"events after #{since} are no longer all kept; some were missed")
                        return
                    for ev in res.events:
                        try:
                            doc = json.loads(ev.data)
                        except ValueError:
                            continue
                        self._print(ev.seq, ev.subject, doc)
                    if res.oversized:
                        self.say(f"{len(res.oversized)} event(s) too large to show: {res.oversized[:5]}")
                    if res.last_seq <= since and not res.complete:
                        self.say(f"the state service made no progress after #{since}")
                        return
                    since = max(since, res.last_seq)
                    if res.complete:
                        return
            except CommandError as exc:
                if not exc.retryable:
                    self.say(f"cannot resync after the reconnect: {exc.code}: {exc.body.message}")
                    return
                await asyncio.sleep(next(delays))  # state not back yet: retry with backoff


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
    @click.option(
        "--server",
        "server_id",
        help="The directory entry to join (its server id); default: the id the capabilities give.",
    )
    @click.option(
        "--as",
        "local_id",
        metavar="LOCAL_ID",
        help="Your local id for it (default: the server's id when free, else one derived from the host).",
    )
    @click.option("--yes", is_flag=True, help="Confirm without asking.")
    @member_option
    @connection_option
    @json_option
    def join(
        url: str,
        server_id: str | None,
        local_id: str | None,
        yes: bool,
        member: str | None,
        connection: Path | None,
        as_json: bool,
    ) -> None:
        """Join SERVER on the backend at URL, after showing trust and disclosure."""

        async def work(c: MemberClient) -> JoinResult:
            # One bus connection: probe, show trust and disclosure, ask, then join.
            probe_result = await c.probe(url, server_id)
            backend_id = probe_result.backend_server_id or server_id
            if not backend_id:
                raise click.ClickException("the backend names no server id; pass --server")
            local = local_id or probe_result.local_id or backend_id
            if not as_json:
                click.echo(_probe_text(probe_result))
            if not yes and not await asyncio.to_thread(
                click.confirm, f"Join {backend_id} as {local}?", default=False
            ):
                raise click.ClickException("not joined")
            return await c.join(url, backend_id, local_id)

        result: JoinResult = run(member, connection, work)

        def human() -> None:
            s = result.server
            click.echo(f"joined {s.server_id} ({s.backend_id} at {s.base_url}) as {s.user_uid}")

        emit(as_json, result, human)

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
                # issue #14: the local id (what every command takes), the backend's own id and URL
                "local_id": v.server.server_id,
                "backend_id": v.server.backend_id,
                "backend_url": v.server.base_url,
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
                backend = "" if r["backend_id"] == r["local_id"] else f" (backend id {r['backend_id']})"
                click.echo(
                    f"{r['server_id']:<20} {r['connection']:<12} {r['name']}  {r['url']}{backend}  {r['uid']}{badge}{extra}"
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
    if p.backend_server_id:
        local = f" (local id here: {p.local_id})" if p.local_id and p.local_id != p.backend_server_id else ""
        lines.append(f"  server id: {p.backend_server_id}{local}")
    lines += [f"  warning: {w}" for w in p.trust.warnings]
    lines.append(f"  disclosure: {p.disclosure.summary}")
    return "\n".join(lines)
