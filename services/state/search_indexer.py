"""The search indexer: keeps the FTS5 message index (``search_index``) in step with the events stream.

In the state service it is **fed by the view's materializer** (``source``; ADR 0014): after each
batch applied to the view, ``Materializer`` hands that batch's events of the indexed kinds —
already decoded — to ``offer``, and the indexer writes them (batched, on a thread): one read and
one decode of the stream for both. It reads the stream itself only while it is behind the view
(a new or lost index, a batch that does not continue where the index is, a view that stalled,
another stream incarnation), and follows again as soon as the view is not ahead of it.

Its own read is an ephemeral, ordered pull consumer (no acks, memory storage) that starts right
after the sequence stored *in the index file*, in the same transaction as the entries — so
nothing is indexed twice or skipped across restarts, fed or not. The consumer is filtered to the kinds the index uses: ``message.created`` (live, gap fill and
hydration all publish it), ``history.page`` (pages a member fetched on demand, published by the
connector), ``message.deleted`` and ``server.left``. Applying an event again is harmless (an
upsert by (server, channel, message id); deletes of missing entries do nothing), so a replay
from any earlier point converges.

Rebuilt without manual steps: a missing or unreadable file, or one of another segmentation
version, starts empty; an index of another incarnation of the stream (or ahead of it) replays
the stream from its first sequence, keeping its entries. Before a replay of an empty index the
messages the state service still has in Redis (the newest window of every channel) are indexed,
so a rebuild finds them even when the stream no longer holds them (only when the stream does not
start at its first event any more: else the replay alone has everything).

Every ``reconcile_s`` (and after each catch-up) the index is compared with the registry
database: members removed from the instance and servers a member no longer has joined (the
connector's ``ServerStore``) are dropped from the index — ``server.left`` does it at once.

Events that do not validate are logged (subject, sequence, reason — never bodies) and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Protocol, cast

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.core.bus import Bus, backoff_delays
from services.core.contracts import subjects
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import ChatMessage, MessageCreated, MessageDeleted, ServerLeft
from services.core.contracts.search import KIND_HISTORY_PAGE, MAX_PAGE_MESSAGES
from services.core.members import MemberRegistry
from services.core.servers import ServerStore
from services.state.domain import (
    MAX_CHANNEL_ID_CHARS,
    MAX_EVENT_BYTES,
    InvalidEvent,
    check_text_id,
    parse_ingest_subject,
)
from services.state.materializer import Fed, Materializer, Watched, cancel_and_wait
from services.state.search_index import (
    DeleteMessage,
    DropMember,
    DropServer,
    IndexOp,
    PutMessage,
    SearchIndex,
)

log = logging.getLogger("openchat.state.search")

INDEXED_KINDS = ("message.created", "message.deleted", "server.left", KIND_HISTORY_PAGE)
BATCH = 512
IDLE_FETCH_S = 0.25
RETRY_INITIAL_S = 0.1
RETRY_MAX_S = 2.0
CONSUMER_CHECK_EVERY = 20
FOLLOW_CHECK_S = 1.0  # while following: how often the stream's identity and end are checked
FOLLOW_STALL_S = 5.0  # the view fed nothing this long while the stream grew: read it ourselves
# while following, the view's batches (≤ 256 events each) are gathered and written together, up to
# FOLLOW_BATCH_OPS operations or FOLLOW_LINGER_S after the first: each commit flushes a new FTS5
# segment, and merging many small ones costs more than the inserts (commit 15.7 µs/message in
# batches of 64, 3.6 µs in batches of 4,096; bench/RESULTS.md)
FOLLOW_BATCH_OPS = 4096
FOLLOW_LINGER_S = 0.5


def consumer_filters() -> list[str]:
    return [f"{subjects.INGEST_PREFIX}.*.*.{kind}" for kind in INDEXED_KINDS]


# -- lean payload models: only what the index keeps (the full contracts validate the view) ---------
class _Lean(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class LeanMessage(_Lean):
    id: str
    server_id: str
    channel_id: str
    author_uid: str = Field(max_length=256)
    body: str
    created_at: datetime


class LeanCreated(_Lean):
    message: LeanMessage


class LeanPage(_Lean):
    channel_id: str
    messages: list[LeanMessage] = Field(max_length=MAX_PAGE_MESSAGES)


PAYLOADS: dict[str, type[BaseModel]] = {
    "message.created": LeanCreated,
    "message.deleted": MessageDeleted,
    "server.left": ServerLeft,
    KIND_HISTORY_PAGE: LeanPage,
}


@cache
def _envelope(kind: str) -> Any:
    return cast(Any, EventEnvelope)[PAYLOADS[kind]]


def _put(member: str, server_id: str, m: LeanMessage | ChatMessage) -> PutMessage:
    if m.server_id != server_id:
        raise InvalidEvent("message server id disagrees with the subject")
    check_text_id(m.channel_id, "channel id", MAX_CHANNEL_ID_CHARS)
    check_text_id(m.id, "message id")
    return PutMessage(member, server_id, m.channel_id, m.id, m.author_uid, m.created_at, m.body)


def index_ops(subject: str, data: bytes) -> list[IndexOp]:
    """The index operations of one stored event (pure). Raises ``InvalidEvent``."""
    member, server_id, kind = parse_ingest_subject(subject)
    if kind not in PAYLOADS:
        return []
    if len(data) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event of {len(data)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        envelope = _envelope(kind).model_validate_json(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
        raise InvalidEvent(f"invalid {kind} event ({fields})") from None
    if envelope.server_id != server_id or envelope.type != kind:
        raise InvalidEvent("envelope server_id/type disagree with the subject")
    p = envelope.payload
    if isinstance(p, LeanCreated):
        return [_put(member, server_id, p.message)]
    if isinstance(p, LeanPage):
        check_text_id(p.channel_id, "channel id", MAX_CHANNEL_ID_CHARS)
        if any(m.channel_id != p.channel_id for m in p.messages):
            raise InvalidEvent("a history page mixes channels")
        return [_put(member, server_id, m) for m in p.messages]
    if isinstance(p, MessageDeleted):
        check_text_id(p.channel_id, "channel id", MAX_CHANNEL_ID_CHARS)
        check_text_id(p.message_id, "message id")
        return [DeleteMessage(member, server_id, p.channel_id, p.message_id)]
    if isinstance(p, ServerLeft):
        if p.server_id != server_id:
            raise InvalidEvent("left server id disagrees with the subject")
        return [DropServer(member, server_id)]
    return []


def checked_ops(subject: str, data: bytes) -> list[IndexOp]:
    """``index_ops`` of an event the view's pass has validated with the full contracts (sent to the
    worker process flagged so, ``search_feed``): a ``message.created`` only has its fields picked
    out (``json.loads``, no model: ~6 instead of ~14 µs). Anything else, or anything that is not
    what the view's validation guarantees, goes through ``index_ops``. Raises ``InvalidEvent``."""
    parts = subject.split(".")
    if len(parts) != 7 or parts[5:] != ["message", "created"]:
        return index_ops(subject, data)
    try:
        m = json.loads(data.decode())["payload"]["message"]  # str: json skips its encoding sniffing
        channel_id, message_id, author, body = m["channel_id"], m["id"], m["author_uid"], m["body"]
        created = datetime.fromisoformat(m["created_at"])
        ok = (
            m["server_id"] == parts[4]
            and type(channel_id) is str
            and type(message_id) is str
            and type(author) is str
            and type(body) is str
        )
    except (ValueError, TypeError, KeyError, RecursionError):
        ok = False
    if not ok:
        return index_ops(subject, data)
    return [PutMessage(parts[3], parts[4], channel_id, message_id, author, created, body)]


def fed_ops(item: Fed) -> list[IndexOp]:
    """The index operations of an event the materializer already decoded (its ``ParsedEvent``:
    checked against the subject, ids and bounds there, so not checked again); history pages,
    which the view does not decode, are decoded here. Raises ``InvalidEvent``."""
    event = item.event
    if event is None:
        return index_ops(item.subject, item.data)
    p = event.payload
    if isinstance(p, MessageCreated):
        m = p.message
        return [
            PutMessage(event.member, event.server_id, m.channel_id, m.id, m.author_uid, m.created_at, m.body)
        ]
    if isinstance(p, MessageDeleted):
        return [DeleteMessage(event.member, event.server_id, p.channel_id, p.message_id)]
    if isinstance(p, ServerLeft):
        return [DropServer(event.member, event.server_id)]
    return index_ops(item.subject, item.data)


class ViewProgress(Protocol):
    """Where the view's pass is, for an indexer fed from another process (``search_feed``)."""

    applied_seq: int


class _Follow(Exception):
    """The consumer has read everything the view has: follow the view's pass from here."""


def registry_drops(
    indexed: dict[str, set[str]],
    members: set[str] | None,
    joined: dict[str, set[str]],
    removed: frozenset[str] | set[str] = frozenset(),
) -> list[IndexOp]:
    """What to drop (pure): members the registry lists as removed, and the servers a registered
    member has not joined (any more). A member the registry does not know at all (``members``
    None, or neither registered nor removed) is kept: the index never guesses."""
    ops: list[IndexOp] = []
    for member, servers in sorted(indexed.items()):
        registered = members is not None and member in members
        if member in removed and not registered:
            ops.append(DropMember(member))
        elif registered:
            ops.extend(DropServer(member, s) for s in sorted(servers - joined.get(member, set())))
    return ops


Seeder = Callable[[SearchIndex], Awaitable[int]]


class SearchIndexer(Watched):
    def __init__(
        self,
        bus: Bus,
        index: SearchIndex,
        stream: str,
        *,
        registry_db: Path | None = None,
        reconcile_s: float = 30.0,
        seed: Seeder | None = None,
        source: Materializer | ViewProgress | None = None,
    ) -> None:
        self.bus = bus
        self.index = index
        self.stream = stream
        self.registry_db = registry_db
        self.reconcile_s = reconcile_s
        self.seed = seed
        self.changed = asyncio.Condition()
        self.applied_seq = 0
        self.caught_up = False
        self.rebuilds = 0
        self.skipped = 0
        self.indexed = 0
        self._task: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        # fed by the view's pass (``source``): no second read of the stream while following
        self.source = source
        self.following = False
        self.fed_batches = 0
        self.follows = 0  # times it started following (again after a gap)
        self._fed_seq = 0  # every indexed event up to here is in the file or queued
        # batches taken from the view, turned into index operations on the writing thread
        self._queue: list[tuple[list[IndexOp | Fed], int]] = []
        self._queued_ops = 0
        self._queue_since = 0.0
        self._wake = asyncio.Event()
        self._behind = False
        self._stalled = False  # the view stopped: read the stream to its end before following
        self._fed_at = 0.0
        if isinstance(source, Materializer):
            source.add_tap(self.offer, INDEXED_KINDS)  # else the source calls ``offer_ops``

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="state-search-indexer")
        self._reconciler = asyncio.create_task(self._reconcile_loop(), name="state-search-reconcile")

    async def stop(self) -> None:
        for task in (self._task, self._reconciler):
            if task is not None:
                await cancel_and_wait(task)
        self._task = self._reconciler = None

    # -- main loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        delays = backoff_delays(RETRY_INITIAL_S, RETRY_MAX_S)
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # nats down, consumer lost, disk full: start over from the file
                delay = next(delays)
                log.warning(
                    "search indexer error, retrying",
                    extra={"error": repr(exc)[:300], "retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)

    async def _stream_identity(self) -> tuple[str, int, int]:
        info = await self.bus.js.stream_info(self.stream)
        return f"{self.stream}@{info.created or ''}", info.state.first_seq, info.state.last_seq

    async def _run_once(self) -> None:
        identity, first_seq, last_seq = await self._stream_identity()
        stored, seq = await asyncio.to_thread(self.index.progress)
        if stored != identity or seq > last_seq:
            empty = stored is None
            self.rebuilds += 1
            log.warning(
                "rebuilding the search index from the events stream",
                extra={
                    "reason": "no index" if empty else "another stream incarnation",
                    "from_seq": first_seq,
                },
            )
            if empty and self.seed is not None and first_seq > 1:  # the stream lost events: the view has some
                try:
                    seeded = await self.seed(self.index)
                    log.info("search index seeded from the state view", extra={"messages": seeded})
                except Exception as exc:
                    log.warning("could not seed the search index from the view", extra={"error": repr(exc)})
            seq = 0
            await asyncio.to_thread(self.index.set_progress, identity, 0)
        elif seq and seq + 1 < first_seq:
            log.info(
                "events expired before the search index read them", extra={"seq": seq, "first": first_seq}
            )
        self.applied_seq = seq
        self.caught_up = False
        await self._publish_status()
        await self._notify()
        if self.source is not None and self.source.applied_seq <= seq and not self._stalled:
            self._begin_following(seq)  # the view's pass has not passed the file: follow it
        else:
            with contextlib.suppress(_Follow):
                await self._consume(identity, seq)
        if self.following:
            await self._follow(identity)

    async def _consume(self, identity: str, seq: int) -> None:
        """Read the stream with our own consumer from ``seq`` (catch-up, rebuild, or no view to
        follow); raises ``_Follow`` once nothing is left that the view's pass has not fed."""
        name = f"search_{uuid.uuid4().hex[:16]}"
        config = ConsumerConfig(
            name=name,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if seq else DeliverPolicy.ALL,
            opt_start_seq=seq + 1 if seq else None,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,
            mem_storage=True,
            num_replicas=1,
            filter_subjects=consumer_filters(),
        )
        await self.bus.js.add_consumer(self.stream, config)
        try:
            sub = await self.bus.js.pull_subscribe_bind(consumer=name, stream=self.stream)
            idle = 0
            try:
                while True:
                    try:
                        msgs = await sub.fetch(BATCH, timeout=IDLE_FETCH_S)
                    except TimeoutError:
                        idle += 1
                        await self._idle_checks(sub, idle)
                        continue
                    await self._apply_batch(msgs, identity)
                    view = self.source
                    if view is not None and view.applied_seq <= self.applied_seq and not self._stalled:
                        self._begin_following(self.applied_seq)  # the view is not ahead of us
                        raise _Follow
                    if self.source is not None and msgs and msgs[-1].metadata.num_pending == 0:
                        await self._maybe_follow(sub)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bus.js.delete_consumer(self.stream, name), 2)

    async def _maybe_follow(self, sub: Any) -> None:
        """Everything up to the stream's end (as it was a moment ago) is indexed; if the view's
        pass is not beyond that point, its next batches continue exactly here."""
        _, _, last = await self._stream_identity()
        info = await sub.consumer_info()
        if info.num_pending == 0 and self.source is not None and self.source.applied_seq <= last:
            self.applied_seq = max(self.applied_seq, last)  # the events between were not indexed kinds
            self._begin_following(self.applied_seq)
            raise _Follow

    def _begin_following(self, seq: int) -> None:
        """From now on ``offer`` takes the view's batches after ``seq`` (synchronous: no batch of
        the view can slip between the check that led here and this)."""
        self.following, self._behind, self._stalled = True, False, False
        self.follows += 1
        self._fed_seq = seq
        self._fed_at = time.monotonic()
        self._queue, self._queued_ops = [], 0

    async def _follow(self, identity: str) -> None:
        """Index the batches the materializer hands on (``offer``): one read of the stream for
        the view and the index. Leaves (and the run loop reads the stream itself again from the
        file's sequence) on a gap, a stall of the view, or another stream incarnation."""
        log.info("search index follows the view's pass", extra={"seq": self._fed_seq})
        if not self.caught_up:
            await self._set_caught_up()
        checked = time.monotonic()
        try:
            while True:
                if self._queue:
                    linger = self._queue_since + FOLLOW_LINGER_S - time.monotonic()
                    if linger > 0 and self._queued_ops < FOLLOW_BATCH_OPS and not self._behind:
                        self._wake.clear()  # gather more of the view's batches for one commit
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), linger)
                        continue
                    batch, self._queue, self._queued_ops = self._queue, [], 0
                    last = max(batch[-1][1], self.applied_seq)
                    indexed = await asyncio.to_thread(self._write_fed, batch, identity, last)
                    self.applied_seq = last
                    self.indexed += indexed
                    await self._notify()
                    continue
                if self._behind:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), FOLLOW_CHECK_S)
                now = time.monotonic()
                if now - checked >= FOLLOW_CHECK_S and not self._queue:
                    checked = now
                    current, _, last_seq = await self._stream_identity()
                    if current != identity or self.applied_seq > last_seq:
                        return  # another incarnation of the stream: the run loop rebuilds
                    if last_seq > self._fed_seq and now - self._fed_at > FOLLOW_STALL_S:
                        log.info("the view's pass stalled: the search index reads the stream itself")
                        self._stalled = True
                        return
        finally:
            self.following = False
            self._queue, self._queued_ops = [], 0
            await self._notify()

    def _write_fed(self, batch: list[tuple[list[IndexOp | Fed], int]], identity: str, last: int) -> int:
        """On the writing thread: the index operations of the gathered batches (events the view
        decoded are not decoded again), written with the progress in one transaction."""
        ops: list[IndexOp] = []
        for items, _ in batch:
            for item in items:
                if not isinstance(item, Fed):
                    ops.append(item)
                    continue
                try:
                    ops.extend(fed_ops(item))
                except InvalidEvent as exc:
                    self.skipped += 1
                    log.warning(
                        "search index skipped an invalid event",
                        extra={"subject": item.subject, "seq": item.seq, "error": str(exc)[:300]},
                    )
        self.index.apply(ops, identity, last)
        return sum(isinstance(op, PutMessage) for op in ops)

    def offer(self, before: int, items: list[Fed], last: int) -> None:
        """The materializer applied the batch ``(before, last]`` to the view (called in its
        pass, synchronously, in stream order); ``items`` are its events of the indexed kinds.
        New messages are picked out of the view's decoded events (a tuple each, so the decoded
        events are not kept alive until the write); everything else is decoded on the writing
        thread, off the view's event loop."""
        if not self._accepts(before, last):
            return
        queued: list[IndexOp | Fed] = []
        for item in items:
            if item.seq <= self._fed_seq:
                continue
            event = item.event
            payload = event.payload if event is not None else None
            if event is not None and isinstance(payload, MessageCreated):
                m = payload.message  # checked by the view's decode: only picked out here
                queued.append(
                    PutMessage(
                        event.member, event.server_id, m.channel_id, m.id, m.author_uid, m.created_at, m.body
                    )
                )
            else:
                queued.append(item)  # history pages, deletes, invalid events: on the writing thread
        self._queue_batch(queued, last)

    def offer_ops(self, before: int, ops: list[tuple[int, IndexOp]], last: int) -> None:
        """The same, for a batch whose index operations were made by the view's process and sent
        over the feed socket (the worker process, ``search_feed``)."""
        if self._accepts(before, last):
            self._queue_batch([op for seq, op in ops if seq > self._fed_seq], last)

    def _accepts(self, before: int, last: int) -> bool:
        if not self.following or self._behind:
            return False
        if before > self._fed_seq:  # events this index has not seen: read them from the stream
            self._behind = True
            self._wake.set()
            return False
        return last > self._fed_seq  # else a replay of the view (a rebuild): already indexed

    def _queue_batch(self, items: list[IndexOp | Fed], last: int) -> None:
        self._fed_at = time.monotonic()
        if not self._queue:
            self._queue_since = self._fed_at
        self._fed_seq = last
        self.fed_batches += 1
        self._queue.append((items, last))
        self._queued_ops += len(items)
        self._wake.set()

    async def _idle_checks(self, sub: Any, idle: int) -> None:
        if self.source is not None and self.caught_up:
            await self._maybe_follow(sub)
        if self.caught_up and idle % CONSUMER_CHECK_EVERY:
            return
        info = await sub.consumer_info()  # raises when the consumer is gone: start over
        if not self.caught_up and info.num_pending == 0:
            await self._set_caught_up()
        elif self.caught_up:
            await self._publish_status()

    async def _set_caught_up(self) -> None:
        self.caught_up = True
        log.info("search index caught up", extra={"seq": self.applied_seq})
        await self._publish_status()
        await self._notify()
        await self.reconcile()

    async def _publish_status(self) -> None:
        await asyncio.to_thread(
            self.index.set_status, caught_up=int(self.caught_up), skipped=self.skipped, rebuilds=self.rebuilds
        )

    async def _apply_batch(self, msgs: list[Msg], identity: str) -> None:
        ops: list[IndexOp] = []
        last = self.applied_seq
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            if seq <= last:
                continue
            last = seq
            try:
                ops.extend(index_ops(msg.subject, msg.data))
            except InvalidEvent as exc:
                self.skipped += 1
                log.warning(
                    "search index skipped an invalid event",
                    extra={"subject": msg.subject, "seq": seq, "error": str(exc)[:300]},
                )
        if last == self.applied_seq:
            return
        await asyncio.to_thread(self.index.apply, ops, identity, last)
        self.applied_seq = last
        self.indexed += sum(isinstance(op, PutMessage) for op in ops)
        if msgs and not self.caught_up and msgs[-1].metadata.num_pending == 0:
            await self._set_caught_up()
        await self._notify()

    # -- reconciliation with the registry -----------------------------------------------------------
    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_s)
            if self.caught_up:
                try:
                    await self.reconcile()
                except Exception as exc:
                    log.warning("search index reconciliation failed", extra={"error": repr(exc)[:300]})

    async def reconcile(self) -> int:
        """Drop removed members and servers no longer joined; returns how many drops."""
        db = self.registry_db
        if db is None or not db.exists():
            return 0

        def work() -> int:
            indexed = {m: self.index.servers(m) for m in self.index.members()}
            registry = MemberRegistry(db)
            members = {m.name for m in registry.all()}
            joined: dict[str, set[str]] = {}
            for member, record in ServerStore(db).everything():
                joined.setdefault(member, set()).add(record.server_id)
            ops = registry_drops(indexed, members, joined, set(registry.removed()))
            if ops:
                self.index.apply(ops)
            return len(ops)

        drops = await asyncio.to_thread(work)
        if drops:
            log.info("search index dropped what the registry no longer has", extra={"drops": drops})
        return drops
