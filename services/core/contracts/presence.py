"""Coalesced presence (issue 16, ADR 0022): ``presence.batch``.

A backend sends ``chat.presence.joined`` / ``left`` to every socket in a room when another one
subscribes or goes away, so presence traffic grows with the square of the sessions per server.
The connector does not republish each change: it folds the changes of one (member, server) into a
``PresenceBatch`` and publishes it at most once per window (``Timing.presence_window_s``).

A ``PresenceDelta`` is applied to one channel's presence list (keyed by ``client_id``) in this
order: ``snapshot`` (when set) replaces the list, then every ``joined`` entry is put, then every
``left`` entry is removed. ``joined`` and ``left`` never name the same ``client_id`` (the last
change of a client in the window wins), so applying a delta gives exactly the list that applying
the original changes one by one gives. A desktop additionally clears the typing indicator of a
``left`` entry's ``user_uid`` and of users absent from a ``snapshot`` (features 6.4), as it does
for ``presence.left`` and ``presence.snapshot``.

The deltas of one batch name each channel at most once, except when a large delta was split to
bound the event (``MAX_BATCH_ENTRIES``): its pieces follow each other in order, only the first
carries the ``snapshot``. The older kinds (``presence.snapshot``, ``presence.joined``,
``presence.left``) stay in the events table: a stored stream keeps them and consumers still apply
them.
"""

from __future__ import annotations

from pydantic import Field

from services.core.contracts.bus import Contract
from services.core.contracts.chat import ChannelId, PresenceEntry

MAX_BATCH_ENTRIES = 1_000  # entries (snapshot + joined + left) per event: < 1 MiB at the id bounds


class PresenceDelta(Contract):
    channel_id: ChannelId
    snapshot: list[PresenceEntry] | None = None  # replaces the channel's list first
    joined: list[PresenceEntry] = Field(default_factory=list)
    left: list[PresenceEntry] = Field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.snapshot or ()) + len(self.joined) + len(self.left)


class PresenceBatch(Contract):
    """The presence changes of one (member, server) over one window, per channel."""

    channels: list[PresenceDelta] = Field(max_length=MAX_BATCH_ENTRIES)


def apply_delta(current: dict[str, PresenceEntry] | None, delta: PresenceDelta) -> dict[str, PresenceEntry]:
    """One channel's presence (``client_id`` → entry) after ``delta`` (a new dict)."""
    out = {e.client_id: e for e in delta.snapshot} if delta.snapshot is not None else dict(current or {})
    for entry in delta.joined:
        out[entry.client_id] = entry
    for entry in delta.left:
        out.pop(entry.client_id, None)
    return out
