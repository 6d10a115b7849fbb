"""Which connector replica should hold which session, and when a holder must let go (pure).

- ``owner``: rendezvous (highest random weight) hashing of a session key over the live
  replicas: every replica computes the same answer from the same replica list, and a replica
  joining or leaving moves only the sessions it wins or held (about 1/n of them).
- ``plan``: from the sessions that exist, the ones this replica holds and the live replicas,
  what to acquire and what to release (rebalance).
- ``LeaseClock``: a holder's view of its lease. The lease expires on the server ``ttl_s`` after
  the server stored the last renewal, which is after the renewal was sent, so a holder that
  has not had a renewal confirmed for ``stop_after_s`` (< ``ttl_s``) since it *sent* the last
  confirmed one stops the session: it has stopped before anyone else can acquire the lease.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field


def weight(replica: str, key: str) -> int:
    digest = hashlib.blake2b(f"{replica}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, replicas: Iterable[str]) -> str | None:
    """The replica that should hold ``key`` (None when there is no replica)."""
    best: tuple[int, str] | None = None
    for replica in replicas:
        candidate = (weight(replica, key), replica)
        if best is None or candidate > best:
            best = candidate
    return best[1] if best is not None else None


@dataclass(frozen=True)
class Plan:
    acquire: list[str] = field(default_factory=list)
    release: list[str] = field(default_factory=list)  # held, but another live replica should hold it
    drop: list[str] = field(default_factory=list)  # held, but the session no longer exists


def plan(me: str, wanted: Collection[str], held: Collection[str], replicas: Collection[str]) -> Plan:
    """``wanted``: every session key that exists; ``held``: the keys this replica holds;
    ``replicas``: the live replicas (``me`` is always counted as one)."""
    live = set(replicas) | {me}
    acquire, release, drop = [], [], []
    for key in sorted(wanted):
        target = owner(key, live)
        if key in held:
            if target != me:
                release.append(key)
        elif target == me:
            acquire.append(key)
    drop = sorted(k for k in held if k not in wanted)
    return Plan(acquire=acquire, release=release, drop=drop)


@dataclass
class LeaseClock:
    """One held lease: ``sent_at`` is when the last *confirmed* renewal (or the acquire) was sent."""

    ttl_s: float
    sent_at: float
    revision: int

    @property
    def stop_after_s(self) -> float:
        return self.ttl_s * 2 / 3

    def confirmed(self, sent_at: float, revision: int) -> None:
        self.sent_at, self.revision = sent_at, revision

    def must_stop(self, now: float) -> bool:
        return now - self.sent_at >= self.stop_after_s

    def renew_due(self, now: float, every_s: float) -> bool:
        return now - self.sent_at >= every_s
