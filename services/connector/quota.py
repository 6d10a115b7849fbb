"""Storage quotas of the shared events stream, per member and per (member, server) (ADR 0009).

Every event a backend causes is stored in the one JetStream stream all members share. Its global
limits (``max_bytes``, ``max_age``) evict the *oldest* events of everyone once reached, so one
hostile backend — or one member's very busy server — could push every other member's history out.
The connector is the only producer of backend-driven events, so it accounts for them here:

- a **token bucket of bytes** per (member, server) and one per member: ``burst`` bytes at most
  at once, refilled at ``per_day`` bytes a day. Over any stretch of ``D`` days a server stores at
  most ``burst + per_day * D`` bytes and a member at most as much as its own bucket allows; with the
  stream's ``max_age`` of ``D`` days and ``members * (burst + per_day * D) ≤ max_bytes`` the stream
  never reaches ``max_bytes``, so nothing is ever evicted for lack of room (``check_fit``);
- an event is admitted only when **both** buckets hold its size; a refused message is not lost:
  it is not marked as published, and gap fill publishes it once the buckets refilled
  (``retry_after``). Ephemeral events (typing, presence) over quota are dropped.

Pure domain (no I/O, injectable clock); unit-tested directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

DAY_S = 86400.0


@dataclass(frozen=True)
class QuotaLimits:
    """0 turns a bucket off (no limit)."""

    server_burst_bytes: int = 32 * 1024 * 1024
    server_bytes_per_day: int = 4 * 1024 * 1024
    member_burst_bytes: int = 64 * 1024 * 1024
    member_bytes_per_day: int = 8 * 1024 * 1024

    def member_bound(self, days: float) -> float:
        """The most one member can store within ``days`` (0: unbounded)."""
        if self.member_burst_bytes <= 0:
            return 0.0
        return self.member_burst_bytes + self.member_bytes_per_day * days


@dataclass
class _Bucket:
    capacity: float
    rate_per_s: float
    level: float
    at: float

    def refill(self, now: float) -> None:
        if now > self.at:
            self.level = min(self.capacity, self.level + (now - self.at) * self.rate_per_s)
        self.at = now

    def wait_for(self, size: float) -> float:
        """Seconds until ``size`` fits (inf when it never can)."""
        if size <= self.level:
            return 0.0
        if size > self.capacity or self.rate_per_s <= 0:
            return float("inf")
        return (size - self.level) / self.rate_per_s


@dataclass
class StorageQuota:
    limits: QuotaLimits = field(default_factory=QuotaLimits)
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[tuple[str, ...], _Bucket] = field(default_factory=dict)
    refused_events: int = 0
    refused_bytes: int = 0

    def _bucket(self, key: tuple[str, ...], capacity: int, per_day: int, now: float) -> _Bucket | None:
        if capacity <= 0:
            return None
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(capacity), per_day / DAY_S, float(capacity), now)
        bucket.refill(now)
        return bucket

    def _pair(self, member: str, server_id: str) -> list[_Bucket]:
        now = self.clock()
        lim = self.limits
        buckets = [
            self._bucket(("s", member, server_id), lim.server_burst_bytes, lim.server_bytes_per_day, now),
            self._bucket(("m", member), lim.member_burst_bytes, lim.member_bytes_per_day, now),
        ]
        return [b for b in buckets if b is not None]

    def admit(self, member: str, server_id: str, size: int) -> bool:
        """Take ``size`` bytes from both buckets, or nothing (and return False)."""
        buckets = self._pair(member, server_id)
        if any(b.level < size for b in buckets):
            self.refused_events += 1
            self.refused_bytes += size
            return False
        for bucket in buckets:
            bucket.level -= size
        return True

    def fits(self, size: int) -> bool:
        """Whether an event of ``size`` bytes can ever be admitted (no bucket is smaller)."""
        lim = self.limits
        return all(cap <= 0 or size <= cap for cap in (lim.server_burst_bytes, lim.member_burst_bytes))

    def retry_after(self, member: str, server_id: str, size: int = 1) -> float:
        """Seconds until an event of ``size`` bytes would be admitted (0: now; inf: never)."""
        return max((b.wait_for(size) for b in self._pair(member, server_id)), default=0.0)

    def level(self, member: str, server_id: str) -> tuple[float, float]:
        """Bytes left now in the server's and the member's bucket (inf: no limit)."""
        now = self.clock()
        lim = self.limits
        server = self._bucket(("s", member, server_id), lim.server_burst_bytes, lim.server_bytes_per_day, now)
        mem = self._bucket(("m", member), lim.member_burst_bytes, lim.member_bytes_per_day, now)
        return (
            server.level if server is not None else float("inf"),
            mem.level if mem is not None else float("inf"),
        )

    def recovered(self, member: str, server_id: str, share: float = 0.125) -> bool:
        """Both buckets hold at least ``share`` of their burst again (a refusal episode ends)."""
        server_left, member_left = self.level(member, server_id)
        lim = self.limits
        return server_left >= share * lim.server_burst_bytes and member_left >= share * lim.member_burst_bytes

    def forget(self, member: str, server_id: str | None = None) -> None:
        """Drop a left server's bucket (or every bucket of a member)."""
        for key in list(self._buckets):
            if key[1] == member and (server_id is None or (key[0] == "s" and key[2] == server_id)):
                del self._buckets[key]


def check_fit(limits: QuotaLimits, members: int, stream_max_bytes: int, max_age_days: float) -> str | None:
    """A warning when the members' quotas together could fill the stream (then the stream's
    global limit, not the quotas, decides what is evicted); None when they fit."""
    bound = limits.member_bound(max_age_days)
    if stream_max_bytes <= 0:
        return None
    if bound <= 0:
        return "member storage quotas are off: one member can fill the shared events stream"
    if members * bound > stream_max_bytes:
        return (
            f"{members} members * {bound / 2**20:.0f} MiB per {max_age_days:g} days exceeds the events "
            f"stream's {stream_max_bytes / 2**20:.0f} MiB: raise OPENCHAT_EVENTS_MAX_BYTES or lower the "
            "OPENCHAT_CONNECTOR_QUOTA_MEMBER_* settings"
        )
    return None
