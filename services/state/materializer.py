"""The materializer: applies the events stream, in order, to the Redis view.

It reads the stream with an ephemeral pull consumer (no acks, memory storage) that starts right
after the ``seq`` stored in Redis — Redis itself holds the progress, atomically with the data, so
nothing is applied twice or skipped, across restarts of the service or of NATS. Each fetched
batch is reduced (``services.state.domain``) and written in one transaction together with its
last sequence.

The view is rebuilt from the first sequence of the stream, without manual steps, when Redis has
no epoch marker (fresh, restarted empty, FLUSHALL, evicted), when the marker names another
incarnation of the stream, or when the stored sequence is beyond the stream's end. A rebuild also
asks the connectors for fresh hydration (``RehydrateRequest``), because the stream keeps only its
retention window. After the first catch-up, joined servers of the durable ``ServerStore`` that the
view lacks are re-announced as ``server.joined`` events.

Bad events are logged (subject, sequence, reason — never bodies) and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Self

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from services.core.bus import Bus, backoff_delays
from services.core.contracts import events as ev
from services.core.contracts import subjects
from services.core.contracts.chat import REHYDRATE_SUBJECT, RehydrateRequest, ServerJoined
from services.core.servers import ServerStore
from services.state.domain import (
    InvalidEvent,
    Op,
    ParsedEvent,
    Reducer,
    ServerIndex,
    decode_event,
)
from services.state.store import EpochChanged, ViewStore

log = logging.getLogger("openchat.state.materializer")

BATCH = 256
RETRY_INITIAL_S = 0.1
RETRY_MAX_S = 2.0
IDLE_FETCH_S = 0.25
CONSUMER_CHECK_EVERY = 20  # idle fetches between consumer health checks


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it, cancelling again while it runs: on Python 3.11 a cancel
    that lands as ``asyncio.wait_for`` times out (nats-py's ``fetch``) is lost, and a consumer
    loop would then go on fetching forever."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


class Watched:
    """A stream follower whose progress others await (tests, start-up ordering) without polling:
    it sets ``changed`` in its ``__init__`` and calls ``_notify`` after each step."""

    changed: asyncio.Condition

    async def wait_for(self, predicate: Callable[[Self], bool], timeout: float = 20.0) -> None:
        """Wait until ``predicate(self)`` holds."""
        async with asyncio.timeout(timeout):
            async with self.changed:
                await self.changed.wait_for(lambda: predicate(self))

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


class NeedRebuild(Exception):
    pass


class Fed(NamedTuple):
    """One stored event of an applied batch, as the materializer hands it on (``Materializer.taps``):
    its sequence, subject and bytes, and the decoded event when the view uses the kind (and it
    validated). A tuple, made once per event of a tapped kind in the view's pass: cheap."""

    seq: int
    kind: str
    subject: str
    data: bytes
    event: ParsedEvent | None


# a tap: (the view's seq before the batch, the batch's events of the kinds the tap asked for, the
# batch's last seq); called synchronously, in stream order, after the batch is in the view
Tap = Callable[[int, list[Fed], int], None]


def describe(exc: BaseException) -> str:
    """An error for the log: never the input values a validation error would quote."""
    if isinstance(exc, ValidationError):
        return f"ValidationError at {[e['loc'] for e in exc.errors()[:5]]}"
    return repr(exc)[:300]


def _kind_of(subject: str) -> str:
    """The kind of an ingest subject, unchecked (it only picks what taps get; they check it)."""
    parts = subject.split(".", 5)
    return parts[5] if len(parts) == 6 and parts[2] == "ev" else ""


class Materializer(Watched):
    def __init__(
        self,
        bus: Bus,
        store: ViewStore,
        stream: str,
        window: int,
        clock: Callable[[], datetime],
        registry_db: Path | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.stream = stream
        self.reducer = Reducer(window)
        self.clock = clock
        self.registry_db = registry_db
        self.lock = asyncio.Lock()  # held while a batch is applied or the view is reset
        self.changed = asyncio.Condition()
        self.applied_seq = 0
        self.rebuilds = 0
        self.skipped = 0
        self.caught_up = False
        self._epoch: str | None = None
        self._target = 0  # stream last seq to reach before a rebuild counts as done
        self._indices: dict[tuple[str, str], ServerIndex] = {}
        self._reconciled = False
        self._task: asyncio.Task[None] | None = None
        self._taps: list[tuple[Tap, frozenset[str]]] = []
        self._tap_kinds: frozenset[str] = frozenset()

    def add_tap(self, tap: Tap, kinds: Collection[str]) -> None:
        """Hand the events of ``kinds`` of every applied batch to ``tap`` (the search index reads
        the stream through the view's pass instead of a second consumer; ADR 0014)."""
        self._taps.append((tap, frozenset(kinds)))
        self._tap_kinds = self._tap_kinds | frozenset(kinds)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="state-materializer")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    # -- main loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        delays = backoff_delays(RETRY_INITIAL_S, RETRY_MAX_S)
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except NeedRebuild as exc:
                await self._rebuild(str(exc))
                delays = backoff_delays(RETRY_INITIAL_S, RETRY_MAX_S)
            except Exception as exc:  # redis or nats down, consumer lost: start over from redis' seq
                self._indices.clear()
                delay = next(delays)
                log.warning(
                    "materializer error, retrying",
                    extra={"error": describe(exc), "retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)

    async def _stream_identity(self) -> tuple[str, int, int]:
        info = await self.bus.js.stream_info(self.stream)
        return f"{self.stream}@{info.created or ''}", info.state.first_seq, info.state.last_seq

    async def _run_once(self) -> None:
        identity, first_seq, last_seq = await self._stream_identity()
        marker = await self.store.marker()
        if marker.epoch is None:
            raise NeedRebuild("no view in redis")
        if marker.epoch.split("|", 1)[-1] != identity:
            raise NeedRebuild("the view belongs to another incarnation of the stream")
        if marker.seq > last_seq:
            raise NeedRebuild("the view is ahead of the stream")
        if marker.seq + 1 < first_seq and marker.seq > 0:
            log.warning("events expired before they were applied; asking connectors to hydrate again")
            await self._request_rehydrate("events expired before they were applied")
        self._epoch = marker.epoch
        self.applied_seq = marker.seq
        self._indices.clear()
        self._target = last_seq if marker.rebuilding else 0
        self.caught_up = marker.seq >= last_seq
        if marker.rebuilding and self.caught_up:
            await self.store.apply(marker.epoch, [], marker.seq, expected_seq=marker.seq, caught_up=True)
        await self._notify()
        if self.caught_up:
            await self._after_catch_up()

        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=marker.seq + 1,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,
            mem_storage=True,
            num_replicas=1,
        )
        sub = await self.bus.js.pull_subscribe(subjects.INGEST_WILDCARD, stream=self.stream, config=config)
        idle = 0
        try:
            while True:
                try:
                    msgs = await sub.fetch(BATCH, timeout=IDLE_FETCH_S)
                except TimeoutError:
                    idle += 1
                    await self._idle_checks(sub, idle)
                    continue
                await self._apply_batch(msgs)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if config.name:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.bus.js.delete_consumer(self.stream, config.name), 2)

    async def _idle_checks(self, sub: Any, idle: int) -> None:
        marker = await self.store.marker()
        if marker.epoch != self._epoch:
            raise NeedRebuild("the view in redis was lost")
        if not self.caught_up:
            _, _, last_seq = await self._stream_identity()
            if self.applied_seq >= last_seq:
                await self._set_caught_up()
        if idle % CONSUMER_CHECK_EVERY == 0:
            try:
                await sub.consumer_info()
            except NotFoundError as exc:
                raise RuntimeError("the materializer's consumer is gone") from exc

    async def _set_caught_up(self) -> None:
        if self._epoch is None:
            return
        async with self.lock:
            await self.store.apply(
                self._epoch, [], self.applied_seq, expected_seq=self.applied_seq, caught_up=True
            )
        self.caught_up = True
        await self._notify()
        await self._after_catch_up()

    # -- applying -------------------------------------------------------------------------------
    async def _apply_batch(self, msgs: list[Msg]) -> None:
        assert self._epoch is not None
        now = self.clock()
        ops: list[Op] = []
        last = self.applied_seq
        fed: list[Fed] = []
        kinds = self._tap_kinds
        async with self.lock:
            try:
                for msg in msgs:
                    seq = msg.metadata.sequence.stream
                    if seq <= last:
                        continue  # never apply twice
                    last = seq
                    kind = _kind_of(msg.subject) if kinds else ""
                    event = None
                    try:
                        event = decode_event(msg.subject, msg.data, seq)
                        if event is None:
                            continue
                        key = (event.member, event.server_id)
                        index = self._indices.get(key)
                        if index is None:
                            index = await self.store.load_index(*key)
                        new_ops, index = self.reducer.apply(index, event, now)
                        self._indices[key] = index
                        ops.extend(new_ops)
                    except InvalidEvent as exc:
                        self.skipped += 1
                        log.warning(
                            "skipped invalid event",
                            extra={"subject": msg.subject, "seq": seq, "error": str(exc)[:300]},
                        )
                    finally:
                        if kind in kinds:  # handed on even when invalid: the tap decides for itself
                            fed.append(Fed(seq, kind, msg.subject, msg.data, event))
                if last == self.applied_seq:
                    return
                reached = self._target == 0 or last >= self._target
                await self.store.apply(
                    self._epoch,
                    ops,
                    last,
                    expected_seq=self.applied_seq,
                    caught_up=reached and self._target != 0,
                )
            except EpochChanged:
                self._indices.clear()
                raise NeedRebuild("the view in redis was lost") from None
            except BaseException:
                self._indices.clear()  # the index may be ahead of redis now
                raise
            before, self.applied_seq = self.applied_seq, last
            if self._target and last >= self._target:
                self._target = 0
            for tap, wanted in self._taps:
                try:
                    tap(before, fed if wanted >= kinds else [f for f in fed if f.kind in wanted], last)
                except Exception as exc:  # a tap never stops the view
                    log.warning("a materializer tap failed", extra={"error": describe(exc)})
        if not self.caught_up:
            _, _, last_seq = await self._stream_identity()
            if last >= last_seq:
                self.caught_up = True
                await self._notify()
                await self._after_catch_up()
                return
        await self._notify()

    # -- rebuild and reconciliation -------------------------------------------------------------
    async def _rebuild(self, reason: str) -> None:
        identity, _, last_seq = await self._stream_identity()
        async with self.lock:
            self._indices.clear()
            self._epoch = await self.store.reset(identity)
            self.applied_seq = 0
            self.caught_up = False
            self._reconciled = False
        self.rebuilds += 1
        log.warning(
            "rebuilding the view from the stream", extra={"reason": reason, "stream_last_seq": last_seq}
        )
        await self._request_rehydrate(reason)
        await self._notify()

    async def _request_rehydrate(self, reason: str) -> None:
        try:
            await self.bus.publish(REHYDRATE_SUBJECT, RehydrateRequest(member=None, reason=reason[:200]))
        except Exception as exc:
            log.warning("could not request rehydration", extra={"error": describe(exc)})

    async def _after_catch_up(self) -> None:
        if self._reconciled:
            return
        self._reconciled = True
        db = self.registry_db
        if db is None or not db.exists():
            return
        try:
            rows = await asyncio.to_thread(lambda: ServerStore(db).everything())
        except Exception as exc:
            log.warning("could not read the joined-server store", extra={"error": describe(exc)})
            return
        for member, record in rows:
            if await self.store.server(member, record.server_id) is not None:
                continue
            log.info(
                "re-announcing a joined server missing from the view",
                extra={"member": member, "server_id": record.server_id},
            )
            envelope = ev.SERVER_JOINED.envelope(record.server_id, ServerJoined(server=record))
            try:
                await self.bus.publish_event(member, envelope)
            except Exception as exc:
                log.warning("could not re-announce a joined server", extra={"error": describe(exc)})
