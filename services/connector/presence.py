"""Presence coalescing of one session (issue 16, ADR 0022): pure, no I/O.

``PresenceCoalescer`` folds a backend's ``chat.presence.snapshot`` / ``joined`` / ``left`` frames
into pending per-channel deltas; the session takes them at most once per window and publishes
them as ``presence.batch`` events (``services.core.contracts.presence``). Per channel it keeps

- ``snapshot``: the channel's whole list when a snapshot arrived in the window (later joins are
  put into it, later lefts removed from it), or ``None``;
- ``changes``: ``client_id`` → (entry, present) — the last change of each client in the window.
  With a snapshot only lefts are kept here (their users' typing is cleared by the desktop, as a
  ``presence.left`` would); a join removes a pending left of the same client.

Applying the taken deltas (``apply_delta``) gives exactly the presence that applying every
original frame in order gives: each client's entry is decided by its last change, and a snapshot
replaces what came before it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from services.core.contracts.chat import PresenceEntry
from services.core.contracts.presence import MAX_BATCH_ENTRIES, PresenceBatch, PresenceDelta

MAX_ID_CHARS = 256  # what the state service accepts in ids (``services.state.domain``)


def usable_id(value: object, *, required: bool = True) -> bool:
    """An id a presence entry may carry: a string, bounded, without control characters (the
    state service refuses a whole event over one bad id, so a bad entry is dropped here)."""
    if type(value) is not str:
        return False
    if not value:
        return not required
    return len(value) <= MAX_ID_CHARS and value.isprintable()


def entry_of(client_id: str, user_uid: str, device_id: str) -> PresenceEntry | None:
    """The entry of a backend's presence member, or ``None`` when an id is unusable."""
    if not (
        usable_id(client_id) and usable_id(user_uid, required=False) and usable_id(device_id, required=False)
    ):
        return None
    return PresenceEntry(client_id=client_id, user_uid=user_uid, device_id=device_id)


@dataclass
class _Pending:
    snapshot: dict[str, PresenceEntry] | None = None
    changes: dict[str, tuple[PresenceEntry, bool]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.snapshot or ()) + len(self.changes)


class PresenceCoalescer:
    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        self._entries = 0  # the sum of the pending sizes, kept as changes arrive (per frame)
        self.frames = 0  # changes folded in since the last ``take`` (logs, benchmarks)

    def __bool__(self) -> bool:
        return bool(self._pending)

    @property
    def entries(self) -> int:
        """Entries the pending deltas hold (what the next batch carries)."""
        return self._entries

    def snapshot(self, channel_id: str, entries: Iterable[PresenceEntry]) -> None:
        pending = self._pending.setdefault(channel_id, _Pending())
        before = pending.size
        pending.snapshot = {e.client_id: e for e in entries}
        pending.changes.clear()  # superseded: the snapshot is the list from here on
        self._entries += pending.size - before
        self.frames += 1

    def joined(self, channel_id: str, entry: PresenceEntry) -> None:
        pending = self._pending.setdefault(channel_id, _Pending())
        before = pending.size
        if pending.snapshot is not None:
            pending.snapshot[entry.client_id] = entry
            pending.changes.pop(entry.client_id, None)
        else:
            pending.changes.pop(entry.client_id, None)  # re-inserted last: arrival order
            pending.changes[entry.client_id] = (entry, True)
        self._entries += pending.size - before
        self.frames += 1

    def left(self, channel_id: str, entry: PresenceEntry) -> None:
        pending = self._pending.setdefault(channel_id, _Pending())
        before = pending.size
        if pending.snapshot is not None:
            pending.snapshot.pop(entry.client_id, None)
        pending.changes.pop(entry.client_id, None)
        pending.changes[entry.client_id] = (entry, False)
        self._entries += pending.size - before
        self.frames += 1

    def has_left(self, channel_id: str, user_uid: str) -> bool:
        """A pending left of ``user_uid`` in the channel (a typing event must not overtake it)."""
        pending = self._pending.get(channel_id)
        if pending is None:
            return False
        return any(not present and e.user_uid == user_uid for e, present in pending.changes.values())

    def take(self, max_entries: int = MAX_BATCH_ENTRIES) -> list[PresenceBatch]:
        """The pending deltas as batches of at most ``max_entries`` entries each (in order); the
        coalescer is empty afterwards."""
        deltas: list[PresenceDelta] = []
        for channel_id, pending in self._pending.items():
            deltas.extend(_split(channel_id, pending, max(1, max_entries)))
        self._pending = {}
        self._entries = 0
        self.frames = 0
        return _pack(deltas, max(1, max_entries))

    def restore(self, batches: Sequence[PresenceBatch]) -> None:
        """Put taken, unpublished batches back *under* what is pending now (they are older)."""
        newer, self._pending = self._pending, {}
        self._entries = 0
        frames = self.frames
        for batch in batches:
            for delta in batch.channels:
                if delta.snapshot is not None:
                    self.snapshot(delta.channel_id, delta.snapshot)
                for entry in delta.joined:
                    self.joined(delta.channel_id, entry)
                for entry in delta.left:
                    self.left(delta.channel_id, entry)
        for channel_id, pending in newer.items():
            if pending.snapshot is not None:
                self.snapshot(channel_id, pending.snapshot.values())
            for entry, present in pending.changes.values():
                (self.joined if present else self.left)(channel_id, entry)
        self.frames = frames


def _split(channel_id: str, pending: _Pending, limit: int) -> list[PresenceDelta]:
    """One channel's pending changes as deltas of at most ``limit`` entries (in order: the first
    carries the snapshot, the snapshot's overflow follows as joins — disjoint from the lefts)."""
    snapshot = list(pending.snapshot.values()) if pending.snapshot is not None else None
    joined = [e for e, present in pending.changes.values() if present]
    left = [e for e, present in pending.changes.values() if not present]
    if snapshot is not None and len(snapshot) > limit:
        joined = snapshot[limit:] + joined
        snapshot = snapshot[:limit]
    out: list[PresenceDelta] = []
    first = True
    while first or joined or left:
        room = limit - (len(snapshot) if first and snapshot is not None else 0)
        take_joined, joined = joined[:room], joined[room:]
        room -= len(take_joined)
        take_left, left = left[:room], left[room:]
        out.append(
            PresenceDelta(
                channel_id=channel_id,
                snapshot=snapshot if first else None,
                joined=take_joined,
                left=take_left,
            )
        )
        first = False
    return out


def _pack(deltas: list[PresenceDelta], limit: int) -> list[PresenceBatch]:
    batches: list[PresenceBatch] = []
    current: list[PresenceDelta] = []
    used = 0
    for delta in deltas:
        size = max(1, delta.size)  # an emptied channel (snapshot []) still counts
        if current and (used + size > limit or len(current) >= limit):
            batches.append(PresenceBatch(channels=current))
            current, used = [], 0
        current.append(delta)
        used += size
    if current:
        batches.append(PresenceBatch(channels=current))
    return batches


# -- parsed presence frames, shared by the sessions of a connector (issue 16) --------------------
@dataclass(frozen=True, slots=True)
class Change:
    """A ``chat.presence.joined`` / ``left`` frame; ``entry`` is None when an id is unusable."""

    kind: str
    channel_id: str
    entry: PresenceEntry | None
    event_id: int | str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A ``chat.presence.snapshot`` frame; an entry is None when one of its ids is unusable."""

    channel_id: str
    entries: list[PresenceEntry | None]
    event_id: int | str | None


class PresenceFrames:
    """What a presence frame says, parsed by hand (no wire models) and, for ``joined`` /
    ``left``, once per distinct frame text.

    A backend sends each presence change to every socket in the room, the same text to each
    (encoded once per broadcast), and a connector holding many sessions of one server receives it
    once per session: at 1,000 sessions over three servers every join reaches ~1,300 sessions'
    sockets. The result is a pure function of the text — the same for every session, so nothing
    of one member reaches another — and entries are immutable, so one parse and one entry serve
    them all. Bounded: ``size`` frames (oldest out first), each at most ``max_chars`` (a change
    is ~200 characters; longer ones are parsed and not kept); entries are interned by their ids
    (at most ``8 * size``), so snapshots and changes name the same objects. A snapshot goes to
    one socket: parsed, not kept."""

    def __init__(self, size: int = 512, max_chars: int = 2048) -> None:
        self.size = max(1, size)
        self.max_chars = max_chars
        self._frames: dict[str, Change | None] = {}
        self._entries: dict[tuple[str, str, str], PresenceEntry | None] = {}
        self.hits = 0

    def __len__(self) -> int:
        return len(self._frames)

    def entry(self, client_id: str, user_uid: str, device_id: str) -> PresenceEntry | None:
        """``entry_of``, interned (the same ids give the same, immutable, entry)."""
        key = (client_id, user_uid, device_id)
        entries = self._entries
        if key in entries:
            return entries[key]
        entry = entry_of(client_id, user_uid, device_id)
        if len(client_id) + len(user_uid) + len(device_id) <= self.max_chars:
            if len(entries) >= self.size * 8:
                del entries[next(iter(entries))]
            entries[key] = entry
        return entry

    def parse(self, raw: str) -> Change | Snapshot | None:
        """The presence a frame announces, or ``None`` when it is not a plainly well-formed
        presence frame (the session's general path handles, and logs, it)."""
        frames = self._frames
        if raw in frames:
            self.hits += 1
            return frames[raw]
        found = self._parse(raw)
        if not isinstance(found, Snapshot) and len(raw) <= self.max_chars:
            if len(frames) >= self.size:
                del frames[next(iter(frames))]
            frames[raw] = found
        return found

    def _parse(self, raw: str) -> Change | Snapshot | None:
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        if type(doc) is not dict:
            return None
        kind, payload, event_id = doc.get("type"), doc.get("payload"), doc.get("event_id")
        if type(payload) is not dict or (event_id is not None and type(event_id) not in (int, str)):
            return None
        channel_id = payload.get("channel_id")
        if type(channel_id) is not str:
            return None
        if kind in PRESENCE_CHANGES:
            member = payload.get("member")
            if type(member) is not dict:
                return None
            entry = self._member(member)
            if entry is False:
                return None
            return Change(kind, channel_id, entry, event_id)
        if kind != "chat.presence.snapshot":
            return None
        members = payload.get("members")
        if type(members) is not list:
            return None
        entries: list[PresenceEntry | None] = []
        for member in members:
            if type(member) is not dict:
                return None
            entry = self._member(member)
            if entry is False:
                return None
            entries.append(entry)
        return Snapshot(channel_id, entries, event_id)

    def _member(self, member: dict[str, object]) -> PresenceEntry | Literal[False] | None:
        """The entry of a wire ``PresenceMember``; False when it is not one (a missing or
        non-string id: the wire model refuses it); None when an id is unusable."""
        client_id, user_uid, device_id = (
            member.get("client_id"),
            member.get("user_uid"),
            member.get("device_id"),
        )
        if type(client_id) is not str or type(user_uid) is not str or type(device_id) is not str:
            return False
        return self.entry(client_id, user_uid, device_id)


PRESENCE_CHANGES = frozenset({"chat.presence.joined", "chat.presence.left"})
