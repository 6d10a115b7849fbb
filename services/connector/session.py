"""One supervised session per (member, server): hydrate, realtime, reconnect, gap fill.

A session runs forever until stopped (leave, shutdown). Each connection cycle:

1. load the gap-fill anchors the previous connector process left (``anchors.py``; first cycle
   only), probe the capabilities and fetch the channel tree — both published on every cycle,
   capabilities first (consumers read the features before acting on the channels: read-acks) —
   and the member list (re-published when it changed);
2. open the realtime socket with the identity as headers **and** query parameters (every request
   carries the identity, reads included; every path keeps the backend URL's path prefix:
   docs/product-rules.md D7, D8),
   subscribe every text channel, and start reading frames into a queue at once (a backend drops
   events for a socket whose queue overflows, so the socket is always drained);
3. **gap fill**: per text channel, fetch history until the newest message already published is
   included (``limit`` grows geometrically on Profile A; ``before``/``next_cursor`` pages when the
   server advertises ``cursors``), and publish the missing messages in order — on the first cycle
   without a persisted anchor, the newest ``history_window`` messages; when the anchor is gone
   (deleted), what is not older than its ``created_at``; author profiles are fetched once per
   fill for all its channels (de-duplicated, batches of ≤ 100) when the server has profile sync.
   Every published message moves the channel's anchor
   forward (written to the registry database in batches, ``AnchorStore``);
4. publish ``server.connection`` *live*, then process frames in arrival order, de-duplicating
   messages by id (``KnownIds``) until the socket closes. Besides messages, typing, presence and
   profiles: ``chat.read_ack.updated`` of the member's own uid → ``read_ack.updated``
   (``contracts/notify.py``); ``chat.server.updated`` → the record's display name patched, stored
   and published as ``server.updated``; management events (``chat.channel.created``,
   ``chat.category.*``, ``chat.channel.layout.updated``) → the tree fetched again and published,
   new text channels subscribed and filled. Presence frames are not republished one by one:
   they are folded per channel (``presence.PresenceCoalescer``) and published as one
   ``presence.batch`` per ``presence_window_s`` (ADR 0022; at once past ``MAX_BATCH_ENTRIES``
   pending entries, and before a typing event of a user whose left is pending). Once live,
   the member's own profile is published in the background when the member consented for this
   server (``profile.py``: a server gets the profile only after the member agreed to share it with that
   server, docs/product-rules.md D18; a no-op otherwise); ``profile_updated`` of the member's own uid
   keeps its cached ``GET /v1/profile/me`` current.
   While live, a burst of messages (the backend may have dropped some) triggers a gap fill once
   the socket is quiet, and a timer a periodic reconcile: a 5-message probe page on channels with
   no live message since their last fill, every ``reconcile_interval_s`` or longer with the
   connector's session count, jittered (ADR 0025).

Link previews: each message published for the first time — live, or gap-filled and at most
``PREVIEW_MAX_AGE`` (10 minutes) old, never a whole history — is offered to ``on_new_message``
(``connector.py`` decides and fetches in the background; publishing never waits for it).

Any failure ends the cycle; the session publishes *reconnecting* (after being live) or *offline*
(unreachable; a server the member did not leave is never removed, only marked offline and
retried forever: docs/product-rules.md D2) with ``next_retry_at`` and sleeps on the
reference ladder (1, 2, 5, 10, 15 s, then 15 s, with jitter). Malformed, binary or oversized frames
are logged (size only, never the body) and dropped without ending the cycle. Every event goes
through the ``EventSink`` with the ``event_id`` rules of ``contracts/chat.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from services.connector import domain
from services.connector.anchors import Anchor, AnchorStore
from services.connector.backend import BackendClient, BackendError, Unreachable, realtime_url
from services.connector.history import HistoryPage, reason_of, release_memory
from services.connector.presence import Change, PresenceCoalescer, PresenceFrames, Snapshot
from services.connector.quota import StorageQuota
from services.core.bus import encoded
from services.core.contracts import events as ev
from services.core.contracts import wire
from services.core.contracts.bus import MAX_BUS_PAYLOAD_BYTES, EventEnvelope
from services.core.contracts.chat import (
    CapabilitySnapshot,
    ChannelGroupInfo,
    ChannelsUpdated,
    ChatMessage,
    ConnectionState,
    MembersUpdated,
    MessageCreated,
    MessageDeleted,
    PresenceEntry,
    ProfileSyncState,
    ProfileUpdated,
    ServerRecord,
    ServerUpdated,
    Typing,
    message_identity,
)
from services.core.contracts.notify import ReadAckUpdated
from services.core.contracts.presence import MAX_BATCH_ENTRIES

P = TypeVar("P", bound=BaseModel)
log = logging.getLogger("openchat.connector.session")

EventSink = Callable[[str, EventEnvelope[Any]], Awaitable[None]]
# Publishes a batch of events in order and returns once every one is stored; raises otherwise.
BatchSink = Callable[[str, Sequence[EventEnvelope[Any]]], Awaitable[None]]
MessageEnvelope = EventEnvelope[MessageCreated]  # concrete: no generic lookup per message
_CLOSED = object()
MANAGEMENT_EVENTS = frozenset(
    {
        "chat.channel.created",
        "chat.category.created",
        "chat.category.updated",
        "chat.channel.layout.updated",
    }
)


QUIET_EVENTS = frozenset({"chat.subscribed", "chat.unsubscribed", "chat.pong", "chat.replay.truncated"})


def _printable(text: str, limit: int = 64) -> str:
    """A backend-chosen name safe to log: printable ASCII, at most ``limit`` characters."""
    return "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in text[:limit])


PREVIEW_MAX_AGE = timedelta(minutes=10)  # gap-filled messages older than this get no previews
RECONNECTING_ATTEMPTS = 5  # retries shown as "reconnecting" after a drop (1+2+5+10+15 s)


@dataclass(frozen=True)
class Timing:
    """Tunables of a session (tests shorten them)."""

    backoff_s: tuple[float, ...] = domain.REFERENCE_BACKOFF_S
    jitter: float = 0.2
    history_window: int = 150
    gap_growth: int = 4
    max_gap_fetch: int = 5_000  # messages asked for / held per channel per fill (one page or pages)
    gap_fill_per_cycle: int = 1_000  # messages published per channel per fill; the rest next fill
    gap_resume_s: float = 0.5  # the next fill when a fill stopped at its bound
    max_frame_bytes: int = 1024 * 1024
    ws_max_size: int = 4 * 1024 * 1024  # a bigger frame closes the socket (1009); it is never read
    max_pending_bytes: int = 64 * 1024 * 1024  # realtime frames queued and not yet handled
    ws_ping_interval_s: float | None = 20.0
    ws_ping_timeout_s: float | None = 20.0
    open_timeout_s: float = 10.0
    echo_wait_s: float = 2.0
    known_ids_per_channel: int = 5000
    max_pending_frames: int = 100_000
    reconcile_interval_s: float = 60.0  # 0: only after reconnects and bursts
    # The periodic reconcile (ADR 0025): a channel with no live message since its last fill is
    # checked with a page of ``reconcile_probe`` (the anchor in it: nothing is missing before
    # it); the interval lengthens so that one connector reconciles at most
    # ``reconcile_sessions_per_s`` sessions per second, and each wait is jittered by
    # ±``reconcile_jitter`` (sessions that hydrated together do not reconcile together).
    reconcile_probe: int = 5
    reconcile_sessions_per_s: float = 5.0
    reconcile_jitter: float = 0.5
    burst_threshold: int = 32  # messages within burst_window_s: the backend may have dropped some
    burst_window_s: float = 1.0
    quiet_s: float = 0.2  # a burst is reconciled once the socket is quiet this long
    anchor_flush_s: float = 1.0  # gap-fill anchors are written at most this often (and on close)
    publish_window: int = 1024  # gap fill: messages per acked batch (anchors move after each)
    # presence changes are coalesced into one ``presence.batch`` per window (ADR 0022); 0: at once
    presence_window_s: float = 0.5
    # the window lengthens so that one connector publishes at most this many batches per second
    # (sessions / rate; ADR 0032); 0: never longer than ``presence_window_s``
    presence_batches_per_s: float = 250.0


class CycleEnd(Exception):
    """The realtime socket closed (or must be reopened): start the next connection cycle."""


@dataclass
class Session:
    member: str
    record: ServerRecord
    backend: BackendClient
    sink: EventSink
    timing: Timing = field(default_factory=Timing)
    anchors: AnchorStore | None = None  # durable gap-fill anchors (None: memory only)
    on_record: Callable[[ServerRecord], None] | None = None  # persist a changed record (server renamed)
    batch_sink: BatchSink | None = None  # gap fill publishes through it (None: one by one via ``sink``)
    # Publishes the member's own profile, only to a server the member agreed to share it with
    # (``profile.ProfilePublisher.sync``; docs/product-rules.md D18).
    profile_sync: Callable[[Session], Awaitable[None]] | None = None
    # Called (synchronously; it only schedules work) for each message published for the first
    # time that may get link previews: live ones, and gap-filled ones at most
    # ``PREVIEW_MAX_AGE`` old (never a whole history). ``connector.py`` decides and fetches.
    on_new_message: Callable[[Session, ChatMessage], None] | None = None
    # Storage quotas of the shared stream (``quota.py``, ADR 0009); None: no quota.
    quota: StorageQuota | None = None
    # How many sessions this connector runs (the periodic reconcile's interval grows with it).
    peers: Callable[[], int] | None = None

    conn: ConnectionState = field(default_factory=lambda: ConnectionState(state="connecting"))
    caps: CapabilitySnapshot | None = None
    wire_caps: wire.Capabilities | None = None
    groups: list[ChannelGroupInfo] = field(default_factory=list)
    members: list[dict[str, str]] | None = None
    ws: ClientConnection | None = None

    def __post_init__(self) -> None:
        self.known = domain.KnownIds(self.timing.known_ids_per_channel)
        self.typing = domain.TypingThrottle()
        self.backoff = domain.Backoff(self.timing.backoff_s, self.timing.jitter)
        self.live = asyncio.Event()
        self.hydrated = asyncio.Event()
        self._dropped_at_attempt: int | None = None  # backoff attempt when a live connection dropped
        self._publish_lock = asyncio.Lock()
        self._waiters: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_event_id: str | None = None
        self._profiles_seen: set[str] = set()
        self._burst_started = 0.0
        self._burst_count = 0
        self._burst_pending = False
        self._newest: dict[str, Anchor] = {}  # per channel: newest published message (by created_at)
        self._anchors_loaded = False
        self._text_of: list[ChannelGroupInfo] | None = None  # the tree ``_text`` was computed from
        self._text: list[str] = []
        self._text_set: frozenset[str] = frozenset()
        self.read_acks_unsupported = False  # a read-ack call answered "not on this server"
        self.own_profile: wire.Profile | None = None  # GET /v1/profile/me, kept current by events
        self.profile_unsupported = False  # a profile route answered 404/405/501
        self.profile_state: ProfileSyncState | None = None  # the last publish outcome
        self._profile_task: asyncio.Task[None] | None = None
        self._profile_again = False
        self.cycles = 0
        self._rejects = domain.SeenOnce()  # rejected items and unknown kinds: each logged once
        self._gap_due: float | None = None  # loop time of the next gap fill (a bounded fill resumes)
        self._quota_refused = False  # in a refusal episode: logged once, until the quota recovered
        self._quota_stopped = False  # the last ``publish_messages`` stopped at the quota
        # channels whose live messages wait for gap fill (the quota held one back: order is kept)
        self._held: set[str] = set()
        self.rejected = 0  # items refused (invalid, too large, over quota for good)
        self._pending_bytes = 0
        self._fill_limit: dict[str, int] = {}  # Profile A: page size a bounded fill resumes with
        # channels with a live message since their last fill: the backend may have dropped one
        # before it, so the periodic reconcile reads them with a full page (ADR 0025)
        self._unverified: set[str] = set()
        self.presence = PresenceCoalescer()  # changes not yet published (ADR 0022)
        self._presence_task: asyncio.Task[None] | None = None
        self._presence_lock = asyncio.Lock()  # one flush at a time: batches stored in order

    @property
    def server_id(self) -> str:
        """The member's local id of this server (every key of the stack; issue #14)."""
        return self.record.server_id

    @property
    def wire_id(self) -> str:
        """The backend's own id of this server (paths, realtime query; issue #14)."""
        return self.record.backend_id

    def text_channels(self) -> list[str]:
        """The text channels of the tree, in order (computed once per tree, not per frame)."""
        if self._text_of is not self.groups:
            self._text = domain.text_channels(self.groups)
            self._text_set = frozenset(self._text)
            self._text_of = self.groups
        return self._text

    def is_text_channel(self, channel_id: str) -> bool:
        if self._text_of is not self.groups:
            self.text_channels()
        return channel_id in self._text_set

    @property
    def cursors(self) -> bool:
        return self.wire_caps is not None and self.wire_caps.feature_on("cursors")

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"session-{self.member}-{self.server_id}")

    async def stop(self) -> None:
        self._stopping = True
        profile_task, self._profile_task = self._profile_task, None
        if profile_task is not None:
            await cancel_task(profile_task)
        presence_task, self._presence_task = self._presence_task, None
        if presence_task is not None:
            await cancel_task(presence_task)
        task, self._task = self._task, None
        if task is not None:
            await cancel_task(task)
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
            self.ws = None

    # -- the member's own profile (published only with the member's consent per server) ----------------------
    def request_profile_sync(self) -> None:
        """Publish the member's profile in the background (a no-op without consent); requests
        made while one runs are coalesced into one more run."""
        if self.profile_sync is None or self._stopping:
            return
        self._profile_again = True
        if self._profile_task is None or self._profile_task.done():
            self._profile_task = asyncio.create_task(
                self._profile_loop(), name=f"profile-{self.member}-{self.server_id}"
            )

    async def _profile_loop(self) -> None:
        while self._profile_again and not self._stopping and self.profile_sync is not None:
            self._profile_again = False
            try:
                await self.profile_sync(self)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end anything: logged, retried on the next trigger
                log.exception("profile sync failed", extra=self._log_ctx())

    async def profile_settled(self) -> None:
        """Wait until no profile publish is running or requested (tests, shutdown)."""
        while self._profile_task is not None and not self._profile_task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._profile_task)

    def continue_from(self, previous: Session) -> None:
        """Carry on where ``previous`` (stopped) left off: the same server re-bound to another uid
        (UID mode switch, identity import). The channel history is the same, so what it published
        stays published — the de-duplication ids, the per-channel anchors (gap fill fetches from
        them, nothing is re-published), the authors whose profiles were fetched, the realtime
        resume point. Capabilities, the channel tree and members are fetched and published again
        by the new hydrate. Call before ``start``."""
        self.known = previous.known
        self._newest = dict(previous._newest)
        self._anchors_loaded = previous._anchors_loaded
        self._profiles_seen = set(previous._profiles_seen)
        self._last_event_id = previous._last_event_id

    def note_own_profile(self, profile: wire.Profile) -> None:
        """Keep the cached ``GET /v1/profile/me`` current (never moves back a version)."""
        cached = self.own_profile
        if cached is None or profile.profile_version >= cached.profile_version:
            self.own_profile = profile

    async def load_anchors(self) -> None:
        """Seed de-duplication and gap fill with the anchors the previous process left (once)."""
        if self._anchors_loaded or self.anchors is None:
            return
        loaded = await asyncio.to_thread(self.anchors.load, self.member, self.server_id)
        for channel_id, anchor in loaded.items():
            key = message_identity(anchor.message_id, anchor.created_at)
            if (channel_id, key) not in self.known:
                self.known.add(channel_id, key)
            self._newest.setdefault(channel_id, anchor)
        self._anchors_loaded = True
        if loaded:
            log.info("gap-fill anchors loaded", extra={**self._log_ctx(), "channels": len(loaded)})

    async def _run(self) -> None:
        await self._emit_connection(ConnectionState(state="connecting"))
        while not self._stopping:
            reason = ""
            ended_live = False
            try:
                await self._cycle()
                reason = "realtime connection closed"
            except asyncio.CancelledError:
                raise
            except Unreachable as exc:
                reason = exc.message
            except CycleEnd as exc:
                reason = str(exc) or "realtime connection closed"
            except BackendError as exc:
                reason = exc.message
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ConnectionClosed) as exc:
                reason = f"realtime connection failed: {type(exc).__name__}"
            except Exception as exc:  # a bug must not end the session: log it and retry
                log.exception("session cycle failed", extra=self._log_ctx())
                reason = f"internal error: {type(exc).__name__}"
            finally:
                ended_live = self.live.is_set()
                self.live.clear()
                if self.ws is not None:
                    with contextlib.suppress(Exception):
                        await self.ws.close()
                    self.ws = None
            if self._stopping:
                return
            delay = self.backoff.next_delay()
            if ended_live:
                self._dropped_at_attempt = self.backoff.attempt
            # A dropped live connection is "reconnecting" for its first retries; a server that
            # never came up, or stays down past them, is "offline" — kept and retried, never
            # removed (docs/product-rules.md D2).
            reconnecting = (
                self._dropped_at_attempt is not None
                and self.backoff.attempt - self._dropped_at_attempt < RECONNECTING_ATTEMPTS
            )
            state: Literal["reconnecting", "offline"] = "reconnecting" if reconnecting else "offline"
            log.info(
                "session disconnected",
                extra={**self._log_ctx(), "state": state, "reason": reason, "retry_in_s": round(delay, 2)},
            )
            with contextlib.suppress(Exception):
                await self._emit_connection(
                    ConnectionState(
                        state=state,
                        attempt=self.backoff.attempt,
                        next_retry_at=datetime.now(UTC) + timedelta(seconds=delay),
                        reason=reason[:500],
                    )
                )
            await asyncio.sleep(delay)

    # -- one connection cycle --------------------------------------------------------------------
    async def _cycle(self) -> None:
        self.cycles += 1
        self.own_profile = None  # re-read once per hydrate (the server may have restarted)
        await self.load_anchors()
        # Every hydrate publishes the capabilities, then the channel tree: consumers (notification:
        # read-acks) read the features before they act on the channels.
        await self.refresh_capabilities(publish=True)
        await self.refresh_channels(publish=True)
        await self.refresh_members()
        headers = self.backend.ident.headers()
        resume = self._last_event_id if self.wire_caps and self.wire_caps.feature_on("event_ids") else None
        url = realtime_url(self.backend.base_url, self.backend.ident, self.wire_id, resume)
        self.ws = await connect(
            url,
            additional_headers=headers,
            max_size=self.timing.ws_max_size,
            ping_interval=self.timing.ws_ping_interval_s,
            ping_timeout=self.timing.ws_ping_timeout_s,
            open_timeout=self.timing.open_timeout_s,
            close_timeout=1,
            max_queue=None,
        )
        ws = self.ws
        queue: asyncio.Queue[Any] = asyncio.Queue()
        reader = asyncio.create_task(self._read(ws, queue), name=f"reader-{self.member}-{self.server_id}")
        try:
            for channel_id in self.text_channels():
                await self._send_frame(
                    "chat.subscribe", {"channel_id": channel_id}, request_id=f"sub_{channel_id}"
                )
            await self.gap_fill()
            self.backoff.reset()
            self.live.set()
            self._dropped_at_attempt = None
            self.hydrated.set()
            await self._emit_connection(ConnectionState(state="live"))
            self.request_profile_sync()  # every hydrate (a no-op until the member agreed to share)
            await self._process(queue)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self, ws: ClientConnection, queue: asyncio.Queue[Any]) -> None:
        self._pending_bytes = 0
        try:
            async for raw in ws:
                if (
                    queue.qsize() >= self.timing.max_pending_frames
                    or self._pending_bytes > self.timing.max_pending_bytes
                ):
                    log.warning("realtime backlog overflow; reconnecting", extra=self._log_ctx())
                    break
                self._pending_bytes += len(raw)
                queue.put_nowait(raw)
        except ConnectionClosed as exc:
            sent = exc.sent
            if sent is not None and sent.code == 1009:  # PayloadTooBig: never read into memory
                log.warning(
                    "realtime frame rejected: larger than the limit; reconnecting",
                    extra={**self._log_ctx(), "limit": self.timing.ws_max_size},
                )
            elif sent is not None and sent.code == 1007:  # a text frame that is not UTF-8
                log.warning("realtime frame rejected: invalid UTF-8; reconnecting", extra=self._log_ctx())
        finally:
            queue.put_nowait(_CLOSED)

    async def _process(self, queue: asyncio.Queue[Any]) -> None:
        """Handle frames in order. A backend silently drops events for a socket whose queue
        overflows (public backend: 64 frames), so a burst of messages, and optionally a timer,
        triggers a reconcile (the gap fill) once the socket is quiet."""
        interval = self.timing.reconcile_interval_s
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + self.reconcile_delay() if interval > 0 else None
        while True:
            deadlines = [d for d in (next_reconcile, self._gap_due) if d is not None]
            if self._burst_pending:
                deadlines.append(loop.time() + self.timing.quiet_s)
            timeout = max(0.0, min(deadlines) - loop.time()) if deadlines else None
            try:
                # a waiting frame is taken at once; otherwise wait under a timeout scope
                # (``wait_for`` would cost a task and a timer per frame: issue 16)
                if not queue.empty():
                    raw = queue.get_nowait()
                else:
                    async with asyncio.timeout(timeout):
                        raw = await queue.get()
            except TimeoutError:
                # only the timer: a probe page where nothing can be missing before the anchor
                periodic = not self._burst_pending and self._gap_due is None
                self._burst_pending = False
                self._burst_count = 0
                self._gap_due = None
                await self.gap_fill(periodic=periodic)
                if interval > 0:
                    next_reconcile = loop.time() + self.reconcile_delay()
                continue
            if raw is _CLOSED:
                raise CycleEnd("realtime connection closed")
            if not isinstance(raw, bytes | str):
                continue
            self._pending_bytes -= len(raw)
            await self.handle_frame(raw)

    def reconcile_delay(self) -> float:
        """Seconds to the next periodic reconcile: ``reconcile_interval_s``, longer when this
        connector runs more sessions than it reconciles at ``reconcile_sessions_per_s`` in that
        time, jittered by ±``reconcile_jitter`` (ADR 0025)."""
        interval = self.timing.reconcile_interval_s
        rate = self.timing.reconcile_sessions_per_s
        if self.peers is not None and rate > 0:
            interval = max(interval, self.peers() / rate)
        jitter = min(max(self.timing.reconcile_jitter, 0.0), 0.9)
        return interval * random.uniform(1.0 - jitter, 1.0 + jitter)

    def _probe_page(self, channel_id: str) -> int | None:
        """The periodic reconcile's first page for ``channel_id``: small when no live message
        arrived since its last fill (the newest page then holds the anchor unless messages were
        missed after it, and the fill grows the page until it does); None (a full page) when one
        did, when nothing was published yet, or while a bounded or quota-held fill goes on."""
        probe = self.timing.reconcile_probe
        if (
            probe <= 0
            or channel_id in self._unverified
            or channel_id in self._held
            or channel_id in self._fill_limit
            or self.known.newest(channel_id) is None
        ):
            return None
        return probe

    def _note_live_message(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._burst_started > self.timing.burst_window_s:
            self._burst_started, self._burst_count = now, 0
        self._burst_count += 1
        if self._burst_count >= self.timing.burst_threshold:
            self._burst_pending = True

    # -- hydrate pieces --------------------------------------------------------------------------
    async def refresh_capabilities(self, *, publish: bool = False) -> CapabilitySnapshot:
        """Probe the capabilities; publish them when the version changed (always with ``publish``)."""
        caps, _ = await self.backend.capabilities()
        snap = domain.snapshot_of(caps)
        changed = self.caps is None or domain.version_key(self.caps) != domain.version_key(snap)
        self.wire_caps, self.caps = caps, snap
        if changed:
            self.read_acks_unsupported = False  # another build: probe optional endpoints again
            self.profile_unsupported = False
        if changed or publish:
            await self.publish(ev.CAPABILITIES, snap)
        return snap

    async def refresh_channels(self, *, publish: bool = False) -> None:
        """Fetch the channel tree; publish it when it changed (always with ``publish``). While the
        socket is up (a management event), new text channels are subscribed and filled at once."""
        groups = domain.groups_of(await self.backend.channels(self.wire_id))
        if groups != self.groups or publish or not self.hydrated.is_set():
            before = set(self.text_channels())
            self.groups = groups
            await self.publish(ev.CHANNELS_UPDATED, ChannelsUpdated(groups=groups))
            if self.ws is not None and self.live.is_set():
                added = [c for c in self.text_channels() if c not in before]
                for channel_id in added:
                    await self._send_frame(
                        "chat.subscribe", {"channel_id": channel_id}, request_id=f"sub_{channel_id}"
                    )
                for channel_id in added:  # what was posted before the subscription took effect
                    await self._fill_channel(channel_id)

    async def refresh_members(self) -> None:
        try:
            listing = await self.backend.members(self.wire_id)
        except Unreachable:
            raise
        except BackendError as exc:
            log.info("member list unavailable", extra={**self._log_ctx(), "code": exc.code})
            return
        members = [{"id": m.id, "name": m.name, "status": m.status} for m in listing.members]
        if members != self.members:
            self.members = members
            await self.publish(ev.MEMBERS_UPDATED, MembersUpdated(members=members))

    async def gap_fill(self, *, periodic: bool = False) -> int:
        """Fetch and publish what was missed on every text channel; return how many were published.
        Bounded: at most ``gap_fill_per_cycle`` messages per channel (the next fill, soon after
        while live, goes on from there); a channel whose history cannot be read is skipped until
        the next fill (logged), the others are filled. ``periodic``: the timer's reconcile, which
        starts with a probe page where it can (``_probe_page``, ADR 0025)."""
        total = 0
        large = self.backend.large_answers
        authors: list[str] = []  # of every channel's published messages: one profile batch
        try:
            for channel_id in list(self.text_channels()):
                unverified = channel_id in self._unverified
                try:
                    probe = self._probe_page(channel_id) if periodic else None
                    total += await self._fill_channel(channel_id, probe, authors)
                except Unreachable:
                    raise
                except BackendError as exc:
                    if unverified:
                        self._unverified.add(channel_id)  # still read with a full page next time
                    log.warning(
                        "gap fill of a channel skipped",
                        extra={**self._log_ctx(), "channel_id": channel_id, "code": exc.code},
                    )
            if authors:
                await self._fetch_profiles(authors)
        finally:
            if self.backend.large_answers != large:
                release_memory()  # the answers' items are gone: give their pages back
        return total

    def _gap_later(self, delay_s: float) -> None:
        """Fill again in ``delay_s`` (while live; a new cycle fills anyway)."""
        due = asyncio.get_running_loop().time() + max(0.0, delay_s)
        self._gap_due = due if self._gap_due is None else min(self._gap_due, due)

    def _log_rejections(self, channel_id: str, page: HistoryPage) -> None:
        for item in page.rejected:
            key = ("h", channel_id, item.id_digest or f"#{item.index}", item.reason)
            if self._rejects.first(key):
                self.rejected += 1
                log.warning(
                    "history item rejected",
                    extra={
                        **self._log_ctx(),
                        "channel_id": channel_id,
                        "message_id": item.message_id,
                        "reason": item.reason,
                    },
                )

    async def _fill_channel(
        self, channel_id: str, probe: int | None = None, authors: list[str] | None = None
    ) -> int:
        """``probe``: the first page's size (then the history window), see ``_probe_page``.
        ``authors``: the published messages' authors are added to it (the caller fetches their
        profiles once for all its channels); None: fetched here."""
        self._unverified.discard(channel_id)  # this fill covers every live message so far
        anchor = self.known.newest(channel_id)
        newest = self._newest.get(channel_id)
        since = newest.created_at if newest is not None else None

        def passed(messages: list[wire.Message]) -> bool:
            """The page reaches back before the anchor's time: the anchor is gone (deleted)."""
            return since is not None and bool(messages) and domain.parse_time(messages[0].created_at) < since

        window = self.timing.history_window
        page: list[wire.Message] = []
        if anchor is None:
            first = await self.backend.messages(channel_id, window)
            self._log_rejections(channel_id, first)
            page = first.messages
        elif self.cursors:
            before: str | None = None
            size = probe or window
            while True:
                listing = await self.backend.messages(channel_id, size, before)
                size = window
                self._log_rejections(channel_id, listing)
                page = listing.messages + page
                if any(domain.identity_of(m) == anchor for m in listing.messages) or not listing.next_cursor:
                    break
                if passed(listing.messages):
                    break
                if len(page) >= self.timing.max_gap_fetch or listing.next_cursor == before:
                    break
                before = listing.next_cursor
        else:
            limit = probe or max(window, self._fill_limit.get(channel_id, window))
            while True:
                listing = await self.backend.messages(channel_id, limit)
                self._log_rejections(channel_id, listing)
                page = listing.messages
                if (
                    any(domain.identity_of(m) == anchor for m in page)
                    or listing.total < limit  # what the server sent, rejected items included
                    or limit >= self.timing.max_gap_fetch
                    or passed(page)
                ):
                    break
                limit = min(max(limit * self.timing.gap_growth, window), self.timing.max_gap_fetch)
        late, fresh, found = domain.missing_after(page, channel_id, anchor, self.known)
        if anchor is not None and not found and not passed(page) and len(page) >= self.timing.max_gap_fetch:
            log.warning(
                "gap larger than one fill can fetch; older missed messages are not fetched",
                extra={
                    **self._log_ctx(),
                    "channel_id": channel_id,
                    "max_gap_fetch": self.timing.max_gap_fetch,
                },
            )
        if anchor is not None and not found and since is not None:
            # the anchor is no longer in the channel (deleted): publish only what is not older
            fresh = [m for m in fresh if domain.parse_time(m.created_at) >= since]
        if late:
            log.warning(
                "backend dropped realtime events; publishing them late",
                extra={**self._log_ctx(), "channel_id": channel_id, "count": len(late)},
            )
        items = [*late, *fresh]
        budget = max(1, self.timing.gap_fill_per_cycle)
        if len(items) > budget and anchor is not None and not self.cursors:
            self._fill_limit[channel_id] = limit  # the resumed fill starts at this page size
        else:
            self._fill_limit.pop(channel_id, None)
        if len(items) > budget:
            log.info(
                "gap fill bounded; the rest follows in the next fill",
                extra={**self._log_ctx(), "channel_id": channel_id, "missing": len(items), "now": budget},
            )
            items = items[:budget]
            self._gap_later(self.timing.gap_resume_s)
        self._quota_stopped = False
        published = await self._publish_page(items)
        if channel_id in self._held and not self._quota_stopped:
            if items:
                self._gap_later(self.timing.gap_resume_s)  # until a fill finds nothing missing
            else:
                self._held.discard(channel_id)  # caught up: live messages are published again
        if published and self.caps is not None and self.caps.profile_enabled:
            if authors is not None:
                authors.extend(m.author_uid for m in items)
            else:
                await self._fetch_profiles([m.author_uid for m in items])
        return published

    async def _publish_page(self, page: Sequence[wire.Message]) -> int:
        """Publish gap-filled messages in order, one acked window at a time (``publish_window``):
        ``known`` and the anchors move only after a window's events are all stored; a failure
        ends the cycle, and the next gap fill re-publishes from the anchor (JetStream
        de-duplicates by ``Nats-Msg-Id``). A message the contracts refuse is rejected on its own
        (logged once with the reason, never the body); the storage quota stops the page, the
        rest follows once it refilled."""
        window = max(1, self.timing.publish_window)
        base_url = self.backend.base_url
        published = 0
        for start in range(0, len(page), window):
            chunk: list[ChatMessage] = []
            for m in page[start : start + window]:
                try:
                    chunk.append(domain.message_of(m, self.server_id, base_url))
                except (ValidationError, ValueError) as exc:
                    reason = reason_of(exc) if isinstance(exc, ValidationError) else "invalid value"
                    self._reject(m.channel_id, m.id, reason)
                    # processed: not fetched and refused again
                    self.known.add(m.channel_id, domain.identity_of(m))
            self._quota_stopped = False
            published += await self.publish_messages(chunk)
            if self._quota_stopped:
                break
        return published

    def _reject(self, channel_id: str, message_id: str, reason: str) -> None:
        if self._rejects.first(("m", channel_id, message_id, reason)):
            self.rejected += 1
            log.warning(
                "message rejected",
                extra={
                    **self._log_ctx(),
                    "channel_id": channel_id[:128],
                    "message_id": message_id[:128],
                    "reason": reason,
                },
            )

    async def _fetch_profiles(self, uids: Sequence[str]) -> None:
        wanted = [u for u in dict.fromkeys(uids) if u and u not in self._profiles_seen]
        for chunk in domain.chunks(wanted, 100):
            try:
                batch = await self.backend.profiles(chunk)
            except BackendError as exc:
                log.info("profiles unavailable", extra={**self._log_ctx(), "code": exc.code})
                return
            for profile in batch.profiles:
                self._profiles_seen.add(profile.user_uid)
                await self.emit_profile(domain.profile_of(profile, self.backend.base_url))

    # -- frames ----------------------------------------------------------------------------------
    async def handle_frame(self, raw: str | bytes) -> None:
        fast = type(raw) is str and _PRESENCE_HINT in raw and len(raw) <= self.timing.max_frame_bytes
        if fast and await self._presence_fast(cast(str, raw)):
            return
        if isinstance(raw, bytes):
            log.warning("dropped binary realtime frame", extra={**self._log_ctx(), "size": len(raw)})
            return
        if len(raw) > self.timing.max_frame_bytes:
            log.warning("dropped oversized realtime frame", extra={**self._log_ctx(), "size": len(raw)})
            return
        try:
            env = wire.RealtimeEnvelope.model_validate_json(raw)
        except (ValidationError, ValueError):
            log.warning("dropped malformed realtime frame", extra={**self._log_ctx(), "size": len(raw)})
            return
        try:
            await self._dispatch(env)
        except (ValidationError, ValueError) as exc:
            errors = exc.error_count() if isinstance(exc, ValidationError) else 1
            log.warning(
                "dropped invalid realtime payload",
                extra={
                    **self._log_ctx(),
                    "type": _printable(env.type),
                    "errors": errors,
                    "reason": reason_of(exc) if isinstance(exc, ValidationError) else "invalid value",
                },
            )
        if env.event_id is not None:
            self._last_event_id = str(env.event_id)

    async def _dispatch(self, env: wire.RealtimeEnvelope) -> None:
        kind, payload = env.type, env.payload
        if kind == "chat.message.created":
            msg = wire.MessageCreatedPayload.model_validate(payload).message
            if not self.is_text_channel(msg.channel_id):
                return  # not one of this server's channels (a shared hub): never bleed
            if msg.channel_id in self._held:
                # the quota held an earlier one back: the fills publish this channel, in order
                self._gap_later(self.timing.gap_resume_s)
                return
            self._note_live_message()
            self._unverified.add(msg.channel_id)
            chat = domain.message_of(msg, self.server_id, self.backend.base_url)
            if await self.publish_message(chat):
                self._new_message(chat)
            if self.caps is not None and self.caps.profile_enabled:
                await self._fetch_profiles([msg.author_uid])
        elif kind == "chat.message.deleted":
            deleted = wire.MessageDeletedPayload.model_validate(payload)
            if self.is_text_channel(deleted.channel_id):
                await self.publish(
                    ev.MESSAGE_DELETED,
                    MessageDeleted(channel_id=deleted.channel_id, message_id=deleted.message_id),
                )
        elif kind == "chat.typing.updated":
            typing = wire.TypingUpdatedPayload.model_validate(payload)
            if self.is_text_channel(typing.channel_id):
                if self.presence.has_left(typing.channel_id, typing.member.user_uid):
                    await self.flush_presence()  # a desktop clears typing on a left: keep the order
                expires = datetime.now(UTC) + timedelta(seconds=domain.TYPING_EXPIRY_S)
                await self.publish(
                    ev.TYPING,
                    Typing(
                        channel_id=typing.channel_id,
                        user_uid=typing.member.user_uid,
                        device_id=typing.member.device_id,
                        is_typing=typing.is_typing,
                        expires_at=expires if typing.is_typing else None,
                    ),
                )
        elif kind == "chat.presence.snapshot":
            snap = wire.PresenceSnapshotPayload.model_validate(payload)
            if self.is_text_channel(snap.channel_id):
                entries = [self._presence_entry(m.client_id, m.user_uid, m.device_id) for m in snap.members]
                self.presence.snapshot(snap.channel_id, [e for e in entries if e is not None])
                await self._presence_changed()
        elif kind in ("chat.presence.joined", "chat.presence.left"):
            change = wire.PresenceChangePayload.model_validate(payload)
            m = change.member
            await self._presence_change(kind, change.channel_id, m.client_id, m.user_uid, m.device_id)
        elif kind == "profile_updated":
            profile = wire.ProfileUpdatedPayload.model_validate(payload)
            if profile.user_uid == self.record.user_uid:
                self.note_own_profile(wire.Profile.model_validate(profile.model_dump()))
            await self.emit_profile(domain.profile_of(profile, self.backend.base_url))
        elif kind == "chat.read_ack.updated":
            ack = wire.ReadAckUpdatedPayload.model_validate(payload)
            if self.is_text_channel(ack.channel_id) and ack.user_uid == self.record.user_uid:
                update = ReadAckUpdated(
                    channel_id=ack.channel_id,
                    user_uid=ack.user_uid,
                    last_read_message_id=ack.last_read_message_id,
                    cursor_index=ack.cursor_index,
                    acked_at=ack.acked_at,
                )
                await self.publish(ev.READ_ACK_UPDATED, update)
        elif kind == "chat.server.updated":
            await self.apply_server_update(wire.ServerUpdatedEvent.model_validate(payload))
        elif kind in MANAGEMENT_EVENTS:
            await self.refresh_channels()
        elif kind == "chat.error":
            err = wire.ChatErrorPayload.model_validate(payload)
            log.info("realtime error", extra={**self._log_ctx(), "code": _printable(err.code)})
        elif kind not in QUIET_EVENTS and self._rejects.first(("k", kind[:256])):
            # an event kind this client does not know (logged once per kind per session)
            log.info(
                "ignored unknown realtime event kind",
                extra={**self._log_ctx(), "type": _printable(kind), "type_length": len(kind)},
            )
        # chat.subscribed, chat.pong, chat.replay.truncated (gap fill covers it): nothing to publish.

    async def apply_server_update(self, event: wire.ServerUpdatedEvent) -> None:
        """``chat.server.updated``: patch the record's display name, persist it, publish it."""
        if event.server_id != self.wire_id or not event.display_name:
            return
        name = event.display_name.strip()[:200]
        if not name or name == self.record.display_name:
            return
        record = self.record.model_copy(update={"display_name": name})
        if self.on_record is not None:
            self.on_record(record)
        self.record = record
        await self.publish(ev.SERVER_UPDATED, ServerUpdated(server=record))

    # -- presence (ADR 0022) ---------------------------------------------------------------------
    async def _presence_fast(self, raw: str) -> bool:
        """A ``chat.presence.joined`` / ``left`` / ``snapshot`` frame, handled without the wire
        models: on a busy server most frames are these (each subscribe anywhere reaches every
        socket in the room), so their cost bounds how many sessions a connector hydrates. Checked
        by hand to the same rules; a change frame is parsed once for every session that receives
        it (``PRESENCE_FRAMES``). ``False``: not such a frame, or not plainly well-formed — the
        general path handles (and logs) it."""
        found = PRESENCE_FRAMES.parse(raw)
        if found is None:
            return False
        if self.is_text_channel(found.channel_id):
            if type(found) is Change:
                entry = found.entry
                if entry is None:
                    self._unusable_presence_id()
                else:
                    if found.kind == "chat.presence.joined":
                        self.presence.joined(found.channel_id, entry)
                    else:
                        self.presence.left(found.channel_id, entry)
                    await self._presence_changed()
            elif type(found) is Snapshot:
                entries = found.entries
                if None in entries:
                    self._unusable_presence_id()
                    entries = [e for e in entries if e is not None]
                self.presence.snapshot(found.channel_id, cast(list[PresenceEntry], entries))
                await self._presence_changed()
        if found.event_id is not None:
            self._last_event_id = str(found.event_id)
        return True

    def _unusable_presence_id(self) -> None:
        if self._rejects.first(("p", "unusable presence id")):
            self.rejected += 1
            log.warning("presence entry dropped: an unusable id", extra=self._log_ctx())

    def _presence_entry(self, client_id: str, user_uid: str, device_id: str) -> PresenceEntry | None:
        entry = PRESENCE_FRAMES.entry(client_id, user_uid, device_id)
        if entry is None:
            self._unusable_presence_id()
        return entry

    async def _presence_change(
        self, kind: str, channel_id: str, client_id: str, user_uid: str, device_id: str
    ) -> None:
        if not self.is_text_channel(channel_id):
            return
        entry = self._presence_entry(client_id, user_uid, device_id)
        if entry is None:
            return
        if kind == "chat.presence.joined":
            self.presence.joined(channel_id, entry)
        else:
            self.presence.left(channel_id, entry)
        await self._presence_changed()

    async def _presence_changed(self) -> None:
        """A presence frame was folded in: publish within the window. What is held stays bounded:
        past ``MAX_BATCH_ENTRIES`` pending entries it is published at once, here (a failing bus
        then ends the cycle, as a failing publish of any frame does)."""
        if self.timing.presence_window_s <= 0 or self.presence.entries >= MAX_BATCH_ENTRIES:
            await self.flush_presence()
            return
        if self._presence_task is None or self._presence_task.done():
            self._presence_task = asyncio.create_task(
                self._presence_later(), name=f"presence-{self.member}-{self.server_id}"
            )

    def presence_window(self) -> float:
        """Seconds between two presence publishes of this session: ``presence_window_s``, longer
        when this connector runs more sessions than it publishes batches for at
        ``presence_batches_per_s`` (every session of a busy room has changes in every window)."""
        window = self.timing.presence_window_s
        rate = self.timing.presence_batches_per_s
        if self.peers is not None and rate > 0:
            window = max(window, self.peers() / rate)
        return window

    async def _presence_later(self) -> None:
        while self.presence and not self._stopping:
            await asyncio.sleep(self.presence_window())
            try:
                await self.flush_presence()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # kept pending: retried after the next window
                log.warning(
                    "presence publish failed; retrying",
                    extra={**self._log_ctx(), "error": type(exc).__name__},
                )

    async def flush_presence(self) -> int:
        """Publish the pending presence changes now as ``presence.batch`` events (in order, one
        flush at a time); what could not be published is kept, under newer changes. Returns
        how many events were published."""
        async with self._presence_lock:
            batches = self.presence.take()
            for done, batch in enumerate(batches):
                try:
                    await self.publish(ev.PRESENCE_BATCH, batch)
                except BaseException:
                    self.presence.restore(batches[done:])
                    raise
            return len(batches)

    # -- publishing ------------------------------------------------------------------------------
    async def publish(self, spec: ev.EventSpec[P], payload: P) -> None:
        """Publish one event of this server: kind, event id and channel by the events table;
        stored only when admitted (``_admit``: encodable, within the bus limit and the quota)."""
        envelope = spec.envelope(self.server_id, payload)
        if self._admit(envelope) == "ok":
            await self.sink(self.member, envelope)

    def _admit(
        self, envelope: EventEnvelope[Any], *, charge: bool = True
    ) -> Literal["ok", "reject", "later"]:
        """May this event be stored? ``reject``: never (it cannot be encoded, does not fit on the
        bus or can never fit the quota; logged once with the reason); ``later``: the storage
        quota is spent for now (logged once per episode; a gap fill is scheduled for when it has
        refilled). ``server.connection`` is never held back by the quota, nor (``charge=False``)
        the re-publish of a message already stored (a rehydrate: bounded by the history window,
        de-duplicated by the stream)."""
        try:
            size = len(encoded(envelope))  # remembered: the sink's encode does not repeat it
        except (PydanticSerializationError, ValueError):
            self._refuse(envelope, "not encodable (invalid text)")
            return "reject"
        if size > MAX_BUS_PAYLOAD_BYTES:
            self._refuse(envelope, f"{size} bytes exceed the bus limit of {MAX_BUS_PAYLOAD_BYTES}")
            return "reject"
        quota = self.quota
        if quota is None or not charge or envelope.type == "server.connection":
            return "ok"
        if quota.admit(self.member, self.server_id, size):
            if self._quota_refused and quota.recovered(self.member, self.server_id):
                self._quota_refused = False  # the episode is over: a new refusal is logged again
            return "ok"
        if not quota.fits(size):
            self._refuse(envelope, f"{size} bytes exceed the storage quota's burst")
            return "reject"
        wait = quota.retry_after(self.member, self.server_id, size)
        if not self._quota_refused:
            server_left, member_left = quota.level(self.member, self.server_id)
            log.warning(
                "storage quota reached; events held back until it refills",
                extra={
                    **self._log_ctx(),
                    "type": envelope.type,
                    "retry_in_s": round(wait, 1),
                    "server_bytes_left": int(min(server_left, 2**62)),
                    "member_bytes_left": int(min(member_left, 2**62)),
                },
            )
        self._quota_refused = True
        self._quota_stopped = True
        if self.live.is_set() and wait != float("inf"):
            self._gap_later(wait)
        return "later"

    def _refuse(self, envelope: EventEnvelope[Any], reason: str) -> None:
        if self._rejects.first(("e", envelope.type, envelope.event_id, reason)):
            self.rejected += 1
            log.warning(
                "event rejected",
                extra={
                    **self._log_ctx(),
                    "type": envelope.type,
                    "channel_id": (envelope.channel_id or "")[:128],
                    "event_id": envelope.event_id[:128],
                    "reason": reason,
                },
            )

    def _message_envelope(self, msg: ChatMessage) -> EventEnvelope[MessageCreated]:
        payload = MessageCreated(message=msg)
        return MessageEnvelope(
            event_id=ev.MESSAGE_CREATED.event_id(payload),
            server_id=self.server_id,
            channel_id=msg.channel_id,
            type=ev.MESSAGE_CREATED.kind,
            payload=payload,
        )

    async def emit_profile(self, profile: Any) -> None:
        await self.publish(ev.PROFILE_UPDATED, ProfileUpdated(profile=profile))

    async def _emit_connection(self, state: ConnectionState) -> None:
        self.conn = state
        await self.publish(ev.SERVER_CONNECTION, state)

    async def publish_message(self, msg: ChatMessage, *, again: bool = False) -> bool:
        """Publish ``message.created`` once per message (id and creation time: ids repeat,
        ``message_identity``; ``again``: re-publish a known one)."""
        key = message_identity(msg.id, msg.created_at)
        async with self._publish_lock:
            known = (msg.channel_id, key) in self.known
            if known and not again:
                return False
            envelope = self._message_envelope(msg)
            verdict = self._admit(envelope, charge=not known)
            if verdict != "ok":
                if verdict == "reject":
                    self.known.add(msg.channel_id, key)  # processed: never retried
                else:  # "later": gap fill publishes it, and what follows it, in order
                    self._held.add(msg.channel_id)
                return False
            await self.sink(self.member, envelope)
            if not known:
                self.known.add(msg.channel_id, key)
                self._note_newest(msg)
        waiter = self._waiters.pop(msg.id, None)
        if waiter is not None:
            waiter.set()
        return True

    async def publish_messages(self, msgs: Sequence[ChatMessage]) -> int:
        """Publish ``message.created`` for the messages not yet published, in order, as one batch;
        return how many. ``known`` and the anchors move only once the whole batch is stored."""
        async with self._publish_lock:
            fresh: list[ChatMessage] = []
            keys: dict[int, str] = {}  # id(msg) -> its identity (ids repeat: ``message_identity``)
            batch: set[tuple[str, str]] = set()
            for msg in msgs:
                ident = message_identity(msg.id, msg.created_at)
                key = (msg.channel_id, ident)
                if key not in self.known and key not in batch:
                    batch.add(key)
                    keys[id(msg)] = ident
                    fresh.append(msg)
            if not fresh:
                return 0
            admitted: list[ChatMessage] = []
            envelopes: list[EventEnvelope[Any]] = []
            for msg in fresh:
                envelope = self._message_envelope(msg)
                verdict = self._admit(envelope)
                if verdict == "later":
                    self._held.add(msg.channel_id)
                    break  # the storage quota: the rest (in order) once it refilled
                if verdict == "reject":
                    self.known.add(msg.channel_id, keys[id(msg)])
                    continue
                admitted.append(msg)
                envelopes.append(envelope)
            fresh = admitted
            if not fresh:
                return 0
            if self.batch_sink is not None:
                await self.batch_sink(self.member, envelopes)
            else:
                for envelope in envelopes:
                    await self.sink(self.member, envelope)
            moved: set[str] = set()
            for msg in fresh:
                self.known.add(msg.channel_id, keys[id(msg)])
                if self._note_newest(msg, persist=False):
                    moved.add(msg.channel_id)
            if self.anchors is not None:
                for channel_id in moved:
                    self.anchors.note(self.member, self.server_id, channel_id, self._newest[channel_id])
        if self._waiters:
            for msg in fresh:
                waiter = self._waiters.pop(msg.id, None)
                if waiter is not None:
                    waiter.set()
        if self.on_new_message is not None:
            oldest = datetime.now(UTC) - PREVIEW_MAX_AGE
            for msg in fresh:
                if msg.created_at >= oldest:
                    self._new_message(msg)
        return len(fresh)

    def _new_message(self, msg: ChatMessage) -> None:
        if self.on_new_message is None or self._stopping:
            return
        try:
            self.on_new_message(self, msg)
        except Exception:  # a bug in previews must never hold up messages
            log.exception("new-message hook failed", extra=self._log_ctx())

    def _note_newest(self, msg: ChatMessage, *, persist: bool = True) -> bool:
        """Move the channel's anchor forward (never back: late messages are older)."""
        current = self._newest.get(msg.channel_id)
        if current is not None and msg.created_at < current.created_at:
            return False
        anchor = Anchor(msg.id, msg.created_at)
        self._newest[msg.channel_id] = anchor
        if persist and self.anchors is not None:
            self.anchors.note(self.member, self.server_id, msg.channel_id, anchor)
        return True

    async def ensure_published(self, msg: ChatMessage) -> None:
        """After a send: let the realtime echo publish it in order; publish it here otherwise."""
        if (msg.channel_id, message_identity(msg.id, msg.created_at)) in self.known:
            return
        if self.live.is_set() and self.timing.echo_wait_s > 0:
            waiter = self._waiters.setdefault(msg.id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), self.timing.echo_wait_s)
            self._waiters.pop(msg.id, None)
        if await self.publish_message(msg):
            self._new_message(msg)

    async def send_typing(self, channel_id: str, is_typing: bool) -> bool:
        if not self.typing.should_send(channel_id, is_typing):
            return False
        await self._send_frame(
            "chat.typing.update",
            {"channel_id": channel_id, "is_typing": is_typing},
            request_id=f"typing_{uuid.uuid4().hex[:12]}",
        )
        return True

    async def _send_frame(self, kind: str, payload: dict[str, Any], request_id: str) -> None:
        ws = self.ws
        if ws is None:
            raise BackendError(
                "not_connected", "the realtime connection is down; retry shortly", retryable=True
            )
        await ws.send(json.dumps({"type": kind, "request_id": request_id, "payload": payload}))

    async def republish(self) -> None:
        """Re-publish this session's view (capabilities, channels, connection, message windows)."""
        if self.caps is not None:
            await self.publish(ev.CAPABILITIES, self.caps)
        if self.groups:
            await self.publish(ev.CHANNELS_UPDATED, ChannelsUpdated(groups=self.groups))
        if self.members is not None:
            await self.publish(ev.MEMBERS_UPDATED, MembersUpdated(members=self.members))
        await self.publish(ev.SERVER_CONNECTION, self.conn)
        if not self.live.is_set():
            return
        for channel_id in list(self.text_channels()):
            listing = await self.backend.messages(channel_id, self.timing.history_window)
            for msg in listing.messages:
                if msg.channel_id == channel_id:
                    await self.publish_message(
                        domain.message_of(msg, self.server_id, self.backend.base_url), again=True
                    )

    def _log_ctx(self) -> dict[str, str]:
        return {"member": self.member, "server_id": self.server_id}


_PRESENCE_HINT = "chat.presence."
# presence frames parsed once per distinct text, for every session of the process (issue 16)
PRESENCE_FRAMES = PresenceFrames()


async def cancel_task(task: asyncio.Task[Any], every_s: float = 0.5) -> None:
    """Cancel ``task`` and wait until it ended. The cancellation is repeated while it runs on:
    Python 3.11's ``asyncio.wait_for`` (nats-py requests use it) drops a cancellation that
    arrives together with the awaited result, and the session would then wait for its next
    realtime frame forever."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every_s)
    if not task.cancelled():
        task.exception()  # retrieved: never "exception was never retrieved"


@functools.cache
def envelope_class(payload: type[BaseModel]) -> type[EventEnvelope[Any]]:
    """``EventEnvelope[payload]``, looked up once per payload type (not per event)."""
    return cast("type[EventEnvelope[Any]]", cast(Any, EventEnvelope)[payload])
