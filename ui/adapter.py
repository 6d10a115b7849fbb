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

Never the same failing request in a loop: an answer too large for the bus is asked again for a
quarter of the page (a snapshot with fewer messages per channel); a permanent error of ``sync``
falls back to a snapshot; a permanent error of the snapshot leaves the app offline (read-only)
with the reason until the next reconnect. Retryable errors back off up to ``RETRY_MAX_S``.

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

from services.core.bus import Bus, CommandError
from services.core.connection import classify, describe_connect_error
from services.core.contracts import subjects
from services.core.contracts.chat import (
    AttachmentRef,
    ChatMessage,
    HistoryResult,
    SendArgs,
    SendResult,
    Snapshot,
    SyncResult,
    ViewHistoryResult,
)
from services.core.contracts.events import TypedEvent, decode_event
from services.core.members import ConnectionFile
from services.core.rpc import StackCommands
from ui.media import MediaFetcher, stage_images

log = logging.getLogger("openchat.ui.adapter")
R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")

COMMAND_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
SNAPSHOT_MESSAGES = 50
SYNC_PAGE = 1000
RETRY_MAX_S = 30.0  # backoff cap of a retryable catch-up failure
# Answers too large for the bus: ask again for less (never the same request twice).
TOO_LARGE = frozenset({"reply_too_large", "snapshot_too_large"})

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
        self._media: MediaFetcher | None = None

    async def snapshot(
        self, server_id: str | None = None, messages_per_channel: int = SNAPSHOT_MESSAGES
    ) -> Snapshot:
        return await super().snapshot(server_id, messages_per_channel)

    async def sync(self, since_seq: int, limit: int = SYNC_PAGE) -> SyncResult:
        return await super().sync(since_seq, limit)

    async def send(self, args: SendArgs) -> SendResult:
        args = await stage_images(self.request, args)  # large images go ahead in chunks (ADR 0010)
        return await super().send(args)

    async def request(self, service: str, verb: str, args: BaseModel, result: type[R], timeout: float) -> R:
        """One command by its subject parts: the chunked transfers of ``ui.media`` (rows
        ``state.media`` and ``connector.upload`` of the commands table)."""
        return await self.bus.request(subjects.command(self.member, service, verb), args, result, timeout)

    # media bytes over the member's bus connection (state.media, chunked; ADR 0010)
    @property
    def media(self) -> MediaFetcher:
        if self._media is None:
            self._media = MediaFetcher(self.request)
        return self._media

    async def attachment_bytes(self, msg: ChatMessage, att: AttachmentRef) -> bytes:
        return await self.media.attachment(msg, att)

    async def avatar_bytes(self, server_id: str, user_uid: str) -> bytes:
        return await self.media.avatar(server_id, user_uid)

    async def preview_image_bytes(self, msg: ChatMessage, index: int) -> bytes:
        return await self.media.preview_image(msg, index)


class StackAdapter:
    """Owns the bus thread. ``ops`` is drained by the render loop."""

    def __init__(self, cf: ConnectionFile, *, last_seq: int = 0) -> None:
        self.cf = cf
        self.ops: queue.Queue[Op] = queue.Queue()
        self.last_seq = last_seq
        self.loop = asyncio.new_event_loop()
        self.client: StackClient | None = None
        self.online = False
        self._thread = threading.Thread(target=self._thread_main, name="openchat-bus", daemon=True)
        self._stop = asyncio.Event()
        self._buffer: list[tuple[int, dict[str, Any]]] | None = []
        self._catching_up = False
        self._ready = threading.Event()
        self._closed = asyncio.Event()
        self._last_error: BaseException | None = None
        self.retry_s = 1.0
        self.sync_page = SYNC_PAGE

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
        while not self._stop.is_set():
            try:
                bus = await self._connect()
            except Exception as exc:
                # The banner says why (unreachable, certificate mismatch, credentials revoked).
                self._set_online(False, describe_connect_error(self._last_error or exc))
                log.info("stack connect failed", extra={"error": type(self._last_error or exc).__name__})
                await self._sleep(self.retry_s)
                continue
            self._last_error = None
            self.client = StackClient(bus, self.cf.member)
            await bus.nc.subscribe(subjects.events_of_member(self.cf.member), cb=self._on_event)
            await self._catch_up()
            # Until asked to stop, or until nats-py gives the connection up for good (the
            # server closed it: e.g. the credentials were revoked); then connect afresh.
            stop = asyncio.ensure_future(self._stop.wait())
            closed = asyncio.ensure_future(self._closed.wait())
            await asyncio.wait({stop, closed}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            closed.cancel()
            self.online = False
            if self._stop.is_set():
                try:
                    await asyncio.wait_for(bus.nc.close(), 3)
                except Exception as exc:
                    log.info("bus close failed", extra={"error": type(exc).__name__})
                return
            self.client = None
            self._buffer = self._buffer if self._buffer is not None else []
            self._set_online(False, describe_connect_error(bus.nc.last_error or self._last_error))
            await self._sleep(self.retry_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _connect(self) -> Bus:
        self._closed = asyncio.Event()
        self._last_error = None

        async def disconnected() -> None:
            self._buffer = self._buffer if self._buffer is not None else []
            self._set_online(False, "connection to the home stack lost")

        async def reconnected() -> None:
            asyncio.get_running_loop().create_task(self._catch_up())

        async def error(exc: Exception) -> None:
            self._last_error = exc
            log.info("bus error", extra={"error": type(exc).__name__})
            if not self.online and classify(exc) in ("certificate", "revoked"):
                self._set_online(False, describe_connect_error(exc))

        async def closed() -> None:
            self._closed.set()

        opts = self.cf.bus_options(
            f"ui-{self.cf.member}",
            reconnect_wait_s=1.0,
            extra={
                "disconnected_cb": disconnected,
                "reconnected_cb": reconnected,
                "error_cb": error,
                "closed_cb": closed,
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
            delay = self.retry_s
            while not self._stop.is_set():
                try:
                    await self._fill()
                    break
                except CommandError as exc:
                    self._set_online(False, _detail(exc))
                    if not exc.retryable:
                        # Permanent: the same request would fail the same way. Stay offline
                        # (read-only view) and try again only after the next reconnect.
                        log.warning("catch-up refused", extra={"code": exc.code})
                        return
                    await self._sleep(delay)
                    delay = min(RETRY_MAX_S, delay * 2)
                except Exception as exc:
                    log.warning("catch-up failed", extra={"error": type(exc).__name__})
                    self._set_online(False, "the home stack failed to answer")
                    await self._sleep(delay)
                    delay = min(RETRY_MAX_S, delay * 2)
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
        page = self.sync_page
        while True:
            try:
                res = await self.client.sync(since, page)
            except CommandError as exc:
                if exc.code in TOO_LARGE and page > 1:
                    page = max(1, page // 4)  # a smaller page: progress, not the same request
                    continue
                if exc.retryable:
                    raise
                log.warning("sync refused, taking a snapshot", extra={"code": exc.code})
                await self._take_snapshot()  # the snapshot holds what sync could not give
                return
            if res.truncated:
                await self._take_snapshot()
                return
            for ev in res.events:
                try:
                    doc = json.loads(ev.data)
                except ValueError:
                    continue
                self._deliver(ev.seq, doc)
            if res.last_seq <= since and not res.complete:
                # No progress (a service that answers an empty incomplete page): never loop.
                log.warning("sync made no progress, taking a snapshot", extra={"since": since})
                await self._take_snapshot()
                return
            since = max(since, res.last_seq)
            if res.oversized:  # events too large for any reply: their effect is in a snapshot
                await self._take_snapshot()
                return
            if res.complete:
                return

    async def _take_snapshot(self) -> None:
        assert self.client is not None
        per_channel = SNAPSHOT_MESSAGES
        while True:
            try:
                snap = await self.client.snapshot(messages_per_channel=per_channel)
                break
            except CommandError as exc:
                if exc.code not in TOO_LARGE or per_channel == 0:
                    raise
                per_channel = per_channel // 5  # 50, 10, 2, 0: the view fetches windows later
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
