"""Active/standby replicas of a service behind one lease in NATS KV (issue 16, ADR 0021).

The notification service keeps counts in its process's memory and the media service holds a
member's WebRTC connections: neither can split its work between replicas. With
``OPENCHAT_STANDBY=true`` (``openchat up --replicas N``, the multinode compose file) every
replica connects, then waits for the lease ``<service>`` in ``SERVICE_LEASES_BUCKET`` before
its setup runs: the holder is the active replica (it consumes the stream, serves the commands,
holds every call — media calls are thereby pinned to one replica), the others stand by (healthy,
serving nothing). The holder renews every ``ttl/4``; when a renewal is refused, or not confirmed
for ``ttl * 2/3`` since the last confirmed one was sent, it stops (``on_lost``: the service
drains and exits, the supervisor starts it again as a standby) — before the server's copy of
the lease expires, so two replicas are never active at once. A stopping holder deletes the lease:
a standby takes over on its next try (``poll_s``); a killed one's lease expires after ``ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.core.contracts.bus import utcnow
from services.core.contracts.cluster import SERVICE_LEASES_BUCKET, CallPin

log = logging.getLogger("openchat.standby")


async def service_leases(js: JetStreamContext, ttl_s: float, replicas: int) -> KeyValue:
    try:
        return await js.key_value(SERVICE_LEASES_BUCKET)
    except BucketNotFoundError:
        config = KeyValueConfig(
            bucket=SERVICE_LEASES_BUCKET, history=1, ttl=ttl_s, storage=StorageType.MEMORY, replicas=replicas
        )
        return await js.create_key_value(config)


class ActiveLease:
    def __init__(
        self, kv: KeyValue, key: str, replica: str, *, ttl_s: float = 6.0, poll_s: float = 0.5
    ) -> None:
        self.kv = kv
        self.key = key
        self.replica = replica
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self.revision = 0
        self.sent_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def _value(self) -> bytes:
        return CallPin(replica=self.replica, since=utcnow().isoformat()).model_dump_json().encode()

    async def acquire(self) -> None:
        """Wait until this replica holds the lease."""
        waiting_logged = False
        while True:
            sent = time.monotonic()
            try:
                self.revision = await self.kv.create(self.key, self._value())
                self.sent_at = sent
                log.info("active replica", extra={"service": self.key, "replica": self.replica})
                return
            except KeyWrongLastSequenceError:
                pass
            except Exception as exc:
                if "wrong last sequence" not in str(exc).lower():
                    log.warning("lease attempt failed", extra={"error": repr(exc)[:200]})
            if not waiting_logged:
                log.info("standing by", extra={"service": self.key, "replica": self.replica})
                waiting_logged = True
            await asyncio.sleep(self.poll_s)

    def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew in the background; ``on_lost`` when the lease is lost or not renewed in time."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(min(self.ttl_s / 4, 0.5))
                if time.monotonic() - self.sent_at >= self.ttl_s / 4:
                    sent = time.monotonic()
                    try:
                        self.revision = await self.kv.update(self.key, self._value(), last=self.revision)
                        self.sent_at = sent
                    except KeyWrongLastSequenceError:
                        log.warning("lease taken by another replica; stopping", extra={"service": self.key})
                        on_lost()
                        return
                    except Exception as exc:
                        log.debug("lease renewal failed", extra={"error": repr(exc)[:200]})
                if time.monotonic() - self.sent_at >= self.ttl_s * 2 / 3:
                    log.warning("lease not renewed in time; stopping", extra={"service": self.key})
                    on_lost()
                    return

        self._task = asyncio.create_task(loop(), name=f"lease-{self.key}")

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.revision:
            with contextlib.suppress(Exception):
                await self.kv.delete(self.key, last=self.revision)


def replica_name(service: str, configured: str = "") -> str:
    return (configured or f"{service}-{socket.gethostname()}-{os.getpid()}")[:64]
