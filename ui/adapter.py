"""The adapter between the desktop app and the member's stack.

The bus (nats-py through ``services.core.bus.Bus``) runs on its own asyncio thread. The main
thread never awaits anything: it calls ``submit`` (fire a command, get the result later) and
drains ``ops`` once per frame. Every result, event and status change arrives as an ``Op`` on that
queue, in order.

Consistency (architecture: snapshot + events + sync): the adapter subscribes to the member's
events first and buffers them, takes ``state.snapshot`` (sequence N), delivers it, then delivers
the buffered events with ``Nats-Sequence`` > N. After a disconnect it buffers again, asks
``state.sync(since_seq=last)`` (paging until complete; a ``truncated`` answer means a fresh
snapshot), delivers those, then the buffered live events still newer. Every event reaches the
view exactly once and in stream order; the view model also ignores anything not newer.

Commands are the rows of the commands table (``services.core.contracts.commands``), called through
the one typed client (``services.core.rpc.StackCommands``) that the CLI uses too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from nats.aio.msg import Msg
from pydantic import BaseModel

from services.core.bus import Bus, CommandError, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.chat import (
    AttachmentRef,
    ChatMessage,
    HistoryResult,
    HttpToken,
    Snapshot,
    SyncResult,
    ViewHistoryResult,
)
from services.core.contracts.events import TypedEvent, decode_event
from services.core.members import ConnectionFile
from services.core.rpc import StackCommands

log = logging.getLogger("openchat.ui.adapter")
R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")

COMMAND_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
SNAPSHOT_MESSAGES = 50
SYNC_PAGE = 1000

HistoryPage = ViewHistoryResult | HistoryResult  # a channel window (state) or an older page (connector)


# -- operations for the main thread -------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotOp:
    snapshot: Snapshot
    from_cache: bool = False


@dataclass(frozen=True)
class EventOp:
    """One event, decoded on the bus thread against the events table (the main thread gets
    models, never dicts)."""

    event: TypedEvent

    @property
    def seq(self) -> int:
        return self.event.seq


@dataclass(frozen=True)
class StackOp:
    online: bool
    detail: str = ""


@dataclass(frozen=True)
class ResultOp:
    callback: Callable[[Any, BaseException | None], None]
    value: Any
    error: BaseException | None


Op = SnapshotOp | EventOp | StackOp | ResultOp


class StackClient(StackCommands):
    """The member's typed commands (``services.core.rpc.StackCommands``, the commands table) plus
    what only the desktop needs: media bytes over the state service's HTTP API (runs on the bus
    thread)."""

    def __init__(self, bus: Bus, member: str) -> None:
        super().__init__(bus, member)
        self._token: HttpToken | None = None

    async def snapshot(
        self, server_id: str | None = None, messages_per_channel: int = SNAPSHOT_MESSAGES
    ) -> Snapshot:
        return await super().snapshot(server_id, messages_per_channel)

    async def sync(self, since_seq: int, limit: int = SYNC_PAGE) -> SyncResult:
        return await super().sync(since_seq, limit)

    # media bytes over the state HTTP API
    async def attachment_bytes(self, base_url: str, msg: ChatMessage, att: AttachmentRef) -> bytes:
        path = f"/media/v1/attachments/{msg.server_id}/{msg.channel_id}/{msg.id}/{att.attachment_id}"
        return await self._http_get(base_url, path)

    async def avatar_bytes(self, base_url: str, server_id: str, user_uid: str) -> bytes:
        return await self._http_get(base_url, f"/media/v1/avatars/{server_id}/{user_uid}")

    async def _http_get(self, base_url: str, path: str) -> bytes:
        if self._token is None:
            self._token = await self.http_token()
        import httpx  # only once images or avatars are shown (~4 MB resident)

        async with httpx.AsyncClient(timeout=15) as client:
            resp = await client.get(
                base_url.rstrip("/") + path, headers={"Authorization": f"Bearer {self._token.token}"}
            )
            if resp.status_code == 401:
                self._token = await self.http_token()
                resp = await client.get(
                    base_url.rstrip("/") + path, headers={"Authorization": f"Bearer {self._token.token}"}
                )
            resp.raise_for_status()
            return resp.content


class StackAdapter:
    """Owns the bus thread. ``ops`` is drained by the render loop."""

    def __init__(self, cf: ConnectionFile, *, last_seq: int = 0, state_http_url: str | None = None) -> None:
        self.cf = cf
        self.ops: queue.Queue[Op] = queue.Queue()
        self.last_seq = last_seq
        self.state_http_url = state_http_url
        self.loop = asyncio.new_event_loop()
        self.client: StackClient | None = None
        self.online = False
        self._thread = threading.Thread(target=self._thread_main, name="openchat-bus", daemon=True)
        self._stop = asyncio.Event()
        self._buffer: list[tuple[int, dict[str, Any]]] | None = []
        self._catching_up = False
        self._ready = threading.Event()
        self.retry_s = 1.0

    # -- main-thread API ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def submit(
        self,
        work: Callable[[StackClient], Awaitable[T]],
        callback: Callable[[Any, BaseException | None], None] | None = None,
    ) -> Future[T] | None:
        """Run ``work(client)`` on the bus thread; ``callback(value, error)`` runs on the main
        thread (through ``ops``). Without a connection the callback gets a ``CommandError``."""
        client = self.client
        if client is None or not self.online:
            if callback is not None:
                err = CommandError("stack_unreachable", "The home stack is unreachable.", retryable=True)
                self.ops.put(ResultOp(callback, None, err))
            return None

        async def run() -> T:
            return await work(client)

        fut = asyncio.run_coroutine_threadsafe(run(), self.loop)
        if callback is not None:
            cb = callback

            def done(f: Future[T]) -> None:
                try:
                    self.ops.put(ResultOp(cb, f.result(), None))
                except BaseException as exc:
                    self.ops.put(ResultOp(cb, None, exc))

            fut.add_done_callback(done)
        return fut

    def drain(self, max_ops: int = 2000) -> list[Op]:
        out: list[Op] = []
        while len(out) < max_ops:
            try:
                out.append(self.ops.get_nowait())
            except queue.Empty:
                break
        return out

    # -- bus thread -------------------------------------------------------------------------------
    def _thread_main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._run())
        finally:
            self.loop.close()

    def _set_online(self, online: bool, detail: str = "") -> None:
        if online != self.online or not online:
            self.online = online
            self.ops.put(StackOp(online, detail))

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        bus: Bus | None = None
        while not self._stop.is_set():
            try:
                bus = await self._connect()
            except Exception as exc:
                self._set_online(False, "cannot reach the home stack")
                log.info("stack connect failed", extra={"error": type(exc).__name__})
                await self._sleep(self.retry_s)
                continue
            break
        if bus is None:
            return
        self.client = StackClient(bus, self.cf.member)
        await bus.nc.subscribe(subjects.events_of_member(self.cf.member), cb=self._on_event)
        await self._catch_up()
        await self._stop.wait()
        self.online = False
        try:
            await asyncio.wait_for(bus.nc.close(), 3)
        except Exception as exc:
            log.info("bus close failed", extra={"error": type(exc).__name__})

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _connect(self) -> Bus:
        async def disconnected() -> None:
            self._buffer = self._buffer if self._buffer is not None else []
            self._set_online(False, "connection to the home stack lost")

        async def reconnected() -> None:
            asyncio.get_running_loop().create_task(self._catch_up())

        async def error(exc: Exception) -> None:
            log.info("bus error", extra={"error": type(exc).__name__})

        opts = ConnectOptions(
            url=self.cf.nats_url,
            nkey_seed=self.cf.nkey_seed,
            inbox_prefix=self.cf.inbox_prefix,
            name=f"ui-{self.cf.member}",
            reconnect_wait_s=1.0,
            extra={
                "disconnected_cb": disconnected,
                "reconnected_cb": reconnected,
                "error_cb": error,
                "connect_timeout": 2,
            },
        )
        # nats-py may keep retrying an initial connect on its own: bound it, report, retry.
        return await asyncio.wait_for(Bus.connect(opts, first_attempts=1), CONNECT_TIMEOUT_S)

    async def _on_event(self, msg: Msg) -> None:
        try:
            seq = int((msg.headers or {}).get("Nats-Sequence", "0"))
            doc = json.loads(msg.data)
        except ValueError:
            return
        if not isinstance(doc, dict) or seq <= 0:
            return
        if self._buffer is not None:
            self._buffer.append((seq, doc))
            return
        self._deliver(seq, doc)

    def _deliver(self, seq: int, doc: dict[str, Any]) -> None:
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        # decoded here, off the render thread; an invalid payload arrives with payload None
        # (counted as seen, skipped), as the view model always did with it
        self.ops.put(EventOp(decode_event(seq, doc, strict=False)))

    async def _catch_up(self) -> None:
        """Snapshot (first time) or sync (after that), then the buffered live events."""
        if self._catching_up:
            return
        self._catching_up = True
        if self._buffer is None:
            self._buffer = []
        try:
            while not self._stop.is_set():
                try:
                    await self._fill()
                    break
                except CommandError as exc:
                    self._set_online(False, _detail(exc))
                    await self._sleep(self.retry_s)
                except Exception as exc:
                    log.warning("catch-up failed", extra={"error": type(exc).__name__})
                    self._set_online(False, "the home stack failed to answer")
                    await self._sleep(self.retry_s)
            pending = sorted(self._buffer or [], key=lambda t: t[0])
            self._buffer = None
            for seq, doc in pending:
                self._deliver(seq, doc)
            if not self._stop.is_set():
                self._set_online(True)
        finally:
            self._catching_up = False

    async def _fill(self) -> None:
        assert self.client is not None
        if self.last_seq <= 0:
            await self._take_snapshot()
            return
        since = self.last_seq
        while True:
            res = await self.client.sync(since)
            if res.truncated:
                await self._take_snapshot()
                return
            for ev in res.events:
                try:
                    doc = json.loads(ev.data)
                except ValueError:
                    continue
                self._deliver(ev.seq, doc)
            since = max(since, res.last_seq)
            if res.complete:
                return

    async def _take_snapshot(self) -> None:
        assert self.client is not None
        snap = await self.client.snapshot()
        self.last_seq = snap.seq
        self.ops.put(SnapshotOp(snap))


def _detail(exc: CommandError) -> str:
    if exc.code == "service_unavailable":
        return "the state service is not answering"
    if exc.code == "timeout":
        return "the home stack is not answering"
    return exc.body.message[:200]


def error_text(exc: BaseException) -> str:
    """A short user-facing text for a failed command (never a body or a secret)."""
    if isinstance(exc, CommandError):
        if exc.code == "service_unavailable":
            return f"Not available yet: {exc.body.message}"
        return exc.body.message
    return "The home stack failed to answer."
