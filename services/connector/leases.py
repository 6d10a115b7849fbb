"""Connector sessions spread over replicas, one holder per session, with leases in NATS KV
(issue 16, ADR 0021). The adapter around ``placement`` (pure).

Every replica:

- registers itself in ``REPLICAS_BUCKET`` (refreshed each tick; the bucket's TTL removes a
  killed replica), and reads the live replicas from it;
- each tick (``tick_s``) plans from the sessions that exist (``Host.wanted``: the joined-server
  records of the shared registry), the leases it holds and the live replicas (rendezvous
  hashing): it *releases* a session another live replica should hold (stops it, flushes its
  anchors, deletes the lease with a compare-and-set), *drops* a session that no longer exists,
  and *acquires* a session it should hold with ``create`` (succeeds only when no lease exists:
  the previous holder released it, or its lease expired after ``ttl_s``) and starts it;
- renews its leases every ``renew_s`` with ``update(last=revision)``. A lease whose update is
  refused (another holder) is stopped at once; a lease whose renewal is not confirmed for
  ``ttl_s * 2/3`` since the last confirmed one was *sent* is stopped too — the server's copy
  lives ``ttl_s`` after it stored that renewal, so the session is closed before any other
  replica can acquire it (``placement.LeaseClock``).

A killed replica's sessions move when its leases expire: within ``ttl_s`` + one tick. A
stopping replica (SIGTERM) stops its sessions and deletes its leases and its registration, so
the others take its sessions over on their next tick. The new holder gap-fills from the
anchors in the registry database; what the old one published after its last anchor write is
published again and dropped by JetStream's ``Nats-Msg-Id`` de-duplication (the events stream's
duplicate window, 10 minutes, is far longer than a hand-over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from services.connector import placement
from services.core.contracts.bus import utcnow
from services.core.contracts.cluster import (
    LEASES_BUCKET,
    REPLICAS_BUCKET,
    ReplicaInfo,
    SessionLease,
    check_replica_id,
    parse_lease_key,
)

log = logging.getLogger("openchat.connector.leases")


@dataclass(frozen=True)
class LeaseTiming:
    ttl_s: float = 6.0
    tick_s: float = 1.0

    @property
    def renew_s(self) -> float:
        return self.ttl_s / 4


def new_replica_id(name: str = "") -> str:
    base = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in (name or socket.gethostname()))[:40]
    return check_replica_id(f"{base or 'connector'}-{uuid.uuid4().hex[:8]}")


async def ensure_buckets(js: JetStreamContext, ttl_s: float, replicas: int) -> tuple[KeyValue, KeyValue]:
    """The leases and replicas buckets (memory storage: a lease is worth nothing after a full
    restart of the cluster), ``replicas`` copies on a cluster."""
    out: list[KeyValue] = []
    for bucket in (LEASES_BUCKET, REPLICAS_BUCKET):
        try:
            out.append(await js.key_value(bucket))
        except BucketNotFoundError:
            config = KeyValueConfig(
                bucket=bucket, history=1, ttl=ttl_s, storage=StorageType.MEMORY, replicas=replicas
            )
            out.append(await js.create_key_value(config))
    return out[0], out[1]


class SessionLeases:
    def __init__(
        self,
        leases: KeyValue,
        replicas: KeyValue,
        *,
        replica: str,
        name: str,
        wanted: Callable[[], set[str]],
        start: Callable[[str], Awaitable[bool]],
        stop: Callable[[str], Awaitable[None]],
        after_tick: Callable[[], Awaitable[None]] | None = None,
        timing: LeaseTiming | None = None,
    ) -> None:
        self.after_tick = after_tick
        self.kv = leases
        self.replicas_kv = replicas
        self.replica = check_replica_id(replica)
        self.name = name
        self.wanted = wanted
        self._start = start
        self._stop = stop
        self.timing = timing or LeaseTiming()
        self.held: dict[str, placement.LeaseClock] = {}
        self.live: set[str] = {self.replica}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = utcnow().isoformat()
        self.lost = 0  # leases lost (refused renewal or renewal not confirmed in time)
        self.acquired = 0

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._plan_loop(), name="lease-plan"),
            asyncio.create_task(self._renew_loop(), name="lease-renew"),
        ]

    def kick(self) -> None:
        """Plan now (a join, a member removal)."""
        self._wake.set()

    async def close(self) -> None:
        """Stop every held session, then delete its lease and this replica's registration (the
        others take over on their next tick instead of waiting for the TTL)."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._lock:
            await _bounded(self._let_go(key, "replica stopping") for key in list(self.held))
        with contextlib.suppress(Exception):
            await self.replicas_kv.delete(self.replica)

    # -- queries ----------------------------------------------------------------------------------
    async def holder(self, member_key: str) -> str | None:
        try:
            entry = await self.kv.get(member_key)
        except (KeyNotFoundError, NoKeysError):
            return None
        if entry.value is None:
            return None
        try:
            return SessionLease.model_validate_json(entry.value).replica
        except ValueError:
            return None

    # -- loops ------------------------------------------------------------------------------------
    async def _plan_loop(self) -> None:
        while not self._closing:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus is down, a KV call timed out: try again next tick
                log.warning("lease tick failed", extra={"error": repr(exc)[:200]})
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.timing.tick_s)

    async def _renew_loop(self) -> None:
        while not self._closing:
            try:
                await self.renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease renewal round failed", extra={"error": repr(exc)[:200]})
            await asyncio.sleep(min(self.timing.renew_s, 0.5))

    async def register(self) -> None:
        info = ReplicaInfo(
            replica=self.replica,
            name=self.name,
            host=socket.gethostname()[:255],
            pid=os.getpid(),
            started_at=self.started_at,
            sessions=len(self.held),
        )
        await self.replicas_kv.put(self.replica, info.model_dump_json().encode())

    async def live_replicas(self) -> set[str]:
        try:
            keys = await self.replicas_kv.keys()
        except NoKeysError:
            keys = []
        return {k for k in keys if k} | {self.replica}

    async def tick(self) -> placement.Plan:
        await self.register()
        self.live = await self.live_replicas()
        wanted = self.wanted()
        todo = placement.plan(self.replica, wanted, set(self.held), self.live)
        # in parallel (a replica taking over a killed one's sessions creates them all at once),
        # under the lock: a renewal round never sees a half-released lease
        gone = [*((k, "session gone") for k in todo.drop), *((k, "rebalanced") for k in todo.release)]
        if gone:
            async with self._lock:
                await _bounded(self._let_go(k, why) for k, why in gone if k in self.held)
        if todo.acquire and not self._closing:
            async with self._lock:
                await _bounded(self._acquire(k) for k in todo.acquire if k not in self.held)
        if self.after_tick is not None:
            await self.after_tick()
        return todo

    async def renew(self) -> None:
        """Renew the leases that are due; stop the sessions whose lease is lost or not renewed
        in time (before the server's copy can expire)."""
        async with self._lock:
            now = time.monotonic()
            due = [k for k, c in self.held.items() if c.renew_due(now, self.timing.renew_s)]
            value = self._value()

            async def one(key: str) -> None:
                clock = self.held.get(key)
                if clock is None:
                    return
                sent = time.monotonic()
                try:
                    revision = await self.kv.update(key, value, last=clock.revision)
                except KeyWrongLastSequenceError:
                    self.lost += 1
                    await self._let_go(key, "lease taken", delete=False)
                    return
                except Exception as exc:  # timeout, disconnected: the clock decides below
                    log.debug("lease renewal failed", extra={"key": key, "error": repr(exc)[:120]})
                    return
                clock.confirmed(sent, revision)

            await asyncio.gather(*(one(k) for k in due))
            now = time.monotonic()
            for key, clock in list(self.held.items()):
                if clock.must_stop(now):
                    self.lost += 1
                    await self._let_go(key, "lease not renewed in time", delete=False)

    # -- one lease --------------------------------------------------------------------------------
    def _value(self) -> bytes:
        return SessionLease(replica=self.replica, acquired_at=utcnow().isoformat()).model_dump_json().encode()

    async def _acquire(self, key: str) -> None:
        if parse_lease_key(key) is None:
            return
        sent = time.monotonic()
        try:
            revision = await self.kv.create(key, self._value())
        except KeyWrongLastSequenceError:
            return  # held elsewhere (its holder releases it, or it expires)
        except Exception as exc:
            if "wrong last sequence" in str(exc).lower():
                return
            raise
        self.held[key] = placement.LeaseClock(self.timing.ttl_s, sent, revision)
        self.acquired += 1
        try:
            started = await self._start(key)
        except Exception:
            log.exception("session start failed", extra={"key": key})
            started = False
        if not started:  # the record went away meanwhile: give the lease back
            await self._let_go(key, "no session to start")
            return
        log.info("lease acquired", extra={"key": key, "replica": self.replica})

    async def _let_go(self, key: str, why: str, *, delete: bool = True) -> None:
        """Stop the session first, then (``delete``) give the lease back."""
        clock = self.held.pop(key, None)
        try:
            await self._stop(key)
        except Exception:
            log.exception("session stop failed", extra={"key": key})
        if delete and clock is not None:
            with contextlib.suppress(Exception):
                await self.kv.delete(key, last=clock.revision)
        log.info("lease released", extra={"key": key, "replica": self.replica, "why": why})


async def _bounded(jobs: Iterable[Awaitable[None]], limit: int = 64) -> None:
    """Run ``jobs`` concurrently, at most ``limit`` at a time."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Awaitable[None]) -> None:
        async with gate:
            await job

    await asyncio.gather(*(one(job) for job in jobs))


async def read_leases(kv: KeyValue) -> dict[str, list[str]]:
    """Every lease: replica → sorted ``member/server`` (``openchat status``)."""
    try:
        keys = await kv.keys()
    except NoKeysError:
        return {}
    out: dict[str, list[str]] = {}
    for key in keys:
        parsed = parse_lease_key(key)
        if parsed is None:
            continue
        try:
            entry = await kv.get(key)
        except (KeyNotFoundError, NoKeysError):
            continue
        if entry.value is None:
            continue
        try:
            holder = SessionLease.model_validate_json(entry.value).replica
        except ValueError:
            continue
        out.setdefault(holder, []).append(f"{parsed[0]}/{parsed[1]}")
    return {replica: sorted(sessions) for replica, sessions in out.items()}


async def read_replicas(kv: KeyValue) -> list[ReplicaInfo]:
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    out: list[ReplicaInfo] = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except (KeyNotFoundError, NoKeysError):
            continue
        if entry.value is None:
            continue
        with contextlib.suppress(ValueError):
            out.append(ReplicaInfo.model_validate_json(entry.value))
    return sorted(out, key=lambda r: (r.name, r.replica))
