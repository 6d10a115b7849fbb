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

Commands not served yet by a service are isolated in one method each (see ``PENDING``).
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
from pydantic import BaseModel, ConfigDict

from services.core.bus import Bus, CommandError
from services.core.connection import classify, describe_connect_error
from services.core.contracts import subjects
from services.core.contracts.bus import Empty
from services.core.contracts.chat import (
    AttachmentRef,
    ChatMessage,
    ConsentArgs,
    DeleteMessageArgs,
    DiscoverArgs,
    DiscoverResult,
    HistoryArgs,
    IdentityCreateArgs,
    IdentityGetArgs,
    IdentityImportArgs,
    IdentityInfo,
    JoinArgs,
    JoinResult,
    LeaveArgs,
    LeaveResult,
    PreviewsArgs,
    PreviewsResult,
    ProbeArgs,
    ProbeResult,
    ProfileGetArgs,
    ProfileGetResult,
    ProfileSetArgs,
    SendArgs,
    SendResult,
    Snapshot,
    SnapshotArgs,
    SyncArgs,
    SyncResult,
    TypingArgs,
    UidModeArgs,
    UidModeName,
    ViewHistoryArgs,
)
from services.core.contracts.notify import (
    FocusArgs,
    MarkReadArgs,
    NotifyPrefs,
    SetMuteArgs,
    UnreadArgs,
    UnreadResult,
)
from services.core.members import ConnectionFile
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

# Commands whose service may not exist yet; each is used by exactly one adapter method.
PENDING = {
    "connector.consent": "profile consent (D18)",
    "notification.unread": "unread counts",
    "notification.mark_read": "mark read",
    "notification.focus": "focus reports (D4)",
    "notification.set_mute": "mute server",
}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class HistoryPage(_Lenient):
    """Either ``ViewHistoryResult`` (state) or ``HistoryResult`` (connector)."""

    messages: list[ChatMessage]
    has_more: bool = False


class _Ack(_Lenient):
    ok: bool = True


# -- operations for the main thread -------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotOp:
    snapshot: Snapshot
    from_cache: bool = False


@dataclass(frozen=True)
class EventOp:
    seq: int
    envelope: dict[str, Any]


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


class StackClient:
    """Typed commands of the member's stack (runs on the bus thread)."""

    def __init__(self, bus: Bus, member: str) -> None:
        self.bus = bus
        self.member = member
        self._media: MediaFetcher | None = None

    async def call(
        self, service: str, verb: str, args: BaseModel, result: type[R], timeout: float = COMMAND_TIMEOUT_S
    ) -> R:
        return await self.bus.request(subjects.command(self.member, service, verb), args, result, timeout)

    # state
    async def snapshot(self, messages_per_channel: int = SNAPSHOT_MESSAGES) -> Snapshot:
        args = SnapshotArgs(messages_per_channel=messages_per_channel)
        return await self.call("state", "snapshot", args, Snapshot)

    async def sync(self, since_seq: int, limit: int = SYNC_PAGE) -> SyncResult:
        return await self.call("state", "sync", SyncArgs(since_seq=since_seq, limit=limit), SyncResult)

    async def window(self, server_id: str, channel_id: str, limit: int = 150) -> HistoryPage:
        args = ViewHistoryArgs(server_id=server_id, channel_id=channel_id, limit=limit)
        return await self.call("state", "history", args, HistoryPage)

    # connector
    async def older(self, server_id: str, channel_id: str, before: str, limit: int = 50) -> HistoryPage:
        args = HistoryArgs(server_id=server_id, channel_id=channel_id, before=before, limit=limit)
        return await self.call("connector", "history", args, HistoryPage, timeout=20)

    async def send(self, args: SendArgs) -> SendResult:
        args = await stage_images(self.call, args)  # large images go ahead in chunks (ADR 0010)
        return await self.call("connector", "send", args, SendResult, timeout=30)

    async def previews(self, enabled: bool | None = None) -> PreviewsResult:
        return await self.call("connector", "previews", PreviewsArgs(enabled=enabled), PreviewsResult)

    async def delete(self, server_id: str, channel_id: str, message_id: str) -> _Ack:
        args = DeleteMessageArgs(server_id=server_id, channel_id=channel_id, message_id=message_id)
        return await self.call("connector", "delete", args, _Ack, timeout=20)

    async def typing(self, server_id: str, channel_id: str, is_typing: bool) -> _Ack:
        args = TypingArgs(server_id=server_id, channel_id=channel_id, is_typing=is_typing)
        return await self.call("connector", "typing", args, _Ack)

    async def discover(self, url: str) -> DiscoverResult:
        return await self.call("connector", "discover", DiscoverArgs(url=url), DiscoverResult, timeout=20)

    async def probe(self, url: str, server_id: str | None) -> ProbeResult:
        return await self.call("connector", "probe", ProbeArgs(url=url, server_id=server_id), ProbeResult, 20)

    async def join(self, url: str, server_id: str) -> JoinResult:
        args = JoinArgs(url=url, server_id=server_id, confirmed=True)
        return await self.call("connector", "join", args, JoinResult, timeout=30)

    async def leave(self, server_id: str) -> LeaveResult:
        return await self.call("connector", "leave", LeaveArgs(server_id=server_id), LeaveResult, timeout=30)

    async def consent(self, server_id: str, share: bool) -> _Ack:
        return await self.call(
            "connector", "consent", ConsentArgs(server_id=server_id, share_profile=share), _Ack
        )

    # the member's identity and profile (kept by the connector)
    async def identity_get(self, reveal: bool = False) -> IdentityInfo:
        return await self.call("connector", "identity_get", IdentityGetArgs(reveal=reveal), IdentityInfo)

    async def identity_create(self) -> IdentityInfo:
        return await self.call("connector", "identity_create", IdentityCreateArgs(), IdentityInfo)

    async def identity_import(self, root: str) -> IdentityInfo:
        args = IdentityImportArgs(root=root)
        return await self.call("connector", "identity_import", args, IdentityInfo, timeout=30)

    async def uid_mode(self, mode: UidModeName) -> IdentityInfo:
        return await self.call("connector", "uid_mode", UidModeArgs(mode=mode), IdentityInfo, timeout=30)

    async def profile_get(self, include_avatar: bool = False) -> ProfileGetResult:
        args = ProfileGetArgs(include_avatar=include_avatar)
        return await self.call("connector", "profile_get", args, ProfileGetResult)

    async def profile_set(self, args: ProfileSetArgs) -> ProfileGetResult:
        return await self.call("connector", "profile_set", args, ProfileGetResult, timeout=20)

    # notification
    async def unread(self) -> UnreadResult:
        return await self.call("notification", "unread", UnreadArgs(), UnreadResult)

    async def mark_read(self, server_id: str, channel_id: str | None) -> UnreadResult:
        args = MarkReadArgs(server_id=server_id, channel_id=channel_id)
        return await self.call("notification", "mark_read", args, UnreadResult)

    async def focus(self, args: FocusArgs) -> UnreadResult:
        return await self.call("notification", "focus", args, UnreadResult)

    async def prefs(self) -> NotifyPrefs:
        return await self.call("notification", "prefs", Empty(), NotifyPrefs)

    async def set_mute(self, server_id: str, muted: bool) -> _Lenient:
        return await self.call(
            "notification", "set_mute", SetMuteArgs(server_id=server_id, muted=muted), _Lenient
        )

    # media bytes over the member's bus connection (state.media, chunked; ADR 0010)
    @property
    def media(self) -> MediaFetcher:
        if self._media is None:
            self._media = MediaFetcher(self.call)
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
        self.ops.put(EventOp(seq, doc))

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
                snap = await self.client.snapshot(per_channel)
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
