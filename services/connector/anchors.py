"""Gap-fill anchors that survive a connector restart (registry database, table owned by the connector).

Per ``(member, server_id, channel_id)``: the newest message the connector has published (id and
``created_at``). A session loads its anchors when it starts, so the first hydrate after a restart
fetches history until the anchor is included and publishes exactly what came after it — every
message posted while the whole stack was down, once, in order — instead of a fresh window.

Writes are cheap: ``note`` only records the anchor in memory (called for every published message);
``flush`` writes the pending anchors in one transaction, from a background task every
``interval_s`` while anything is pending, and on ``close``. An anchor is noted only after its
event was published, so a crash between two flushes can only leave an *older* anchor: the next
start re-publishes a few messages (same ``event_id``, so JetStream de-duplicates them within its
window), it never skips one.

Nothing here logs message bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from services.core.db import SqliteStore

log = logging.getLogger("openchat.connector.anchors")

SCHEMA = """
CREATE TABLE IF NOT EXISTS connector_anchors (
    member TEXT NOT NULL,
    server_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (member, server_id, channel_id)
);
"""

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Anchor:
    message_id: str
    created_at: datetime


class AnchorStore(SqliteStore):
    """Durable anchors with a debounced writer. One per connector process."""

    SCHEMA = SCHEMA
    MEMBER_TABLES = ("connector_anchors",)

    def __init__(self, db_path: Path, *, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._pending: dict[Key, Anchor] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self.flushes = 0
        self.flushed = asyncio.Event()  # set after each write (tests await it)
        super().__init__(db_path)

    # -- reads -----------------------------------------------------------------------------------
    def load(self, member: str, server_id: str) -> dict[str, Anchor]:
        """The anchors of one session (pending ones win over the stored ones)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT channel_id, message_id, created_at FROM connector_anchors"
                " WHERE member = ? AND server_id = ?",
                (member, server_id),
            ).fetchall()
        out = {ch: Anchor(mid, datetime.fromisoformat(ts)) for ch, mid, ts in rows}
        for (m, s, ch), anchor in self._pending.items():
            if (m, s) == (member, server_id):
                out[ch] = anchor
        return out

    # -- writes ----------------------------------------------------------------------------------
    def note(self, member: str, server_id: str, channel_id: str, anchor: Anchor) -> None:
        """Record a published message as the channel's anchor (in memory; written by ``flush``)."""
        self._pending[(member, server_id, channel_id)] = anchor
        if self._task is not None and not self._wakeup.is_set():
            self._wakeup.set()

    def forget_member(self, member: str) -> int:
        """Every anchor of ``member``: the pending ones and the written ones."""
        for key in [k for k in self._pending if k[0] == member]:
            del self._pending[key]
        return super().forget_member(member)

    def forget(self, member: str, server_id: str) -> None:
        """Drop a session's anchors (the member left the server)."""
        for key in [k for k in self._pending if k[:2] == (member, server_id)]:
            del self._pending[key]
        with self._db() as db:
            db.execute(
                "DELETE FROM connector_anchors WHERE member = ? AND server_id = ?", (member, server_id)
            )

    async def flush(self) -> int:
        """Write every pending anchor in one transaction; return how many were written."""
        async with self._write_lock:
            batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                await asyncio.to_thread(self._write, batch)
            except BaseException:
                for key, anchor in batch.items():  # keep them for the next attempt
                    self._pending.setdefault(key, anchor)
                raise
            self.flushes += 1
            self.flushed.set()
            return len(batch)

    def _write(self, batch: dict[Key, Anchor]) -> None:
        rows = [(m, s, ch, a.message_id, a.created_at.isoformat()) for (m, s, ch), a in batch.items()]
        with self._db() as db:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO connector_anchors (member, server_id, channel_id, message_id, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (member, server_id, channel_id)"
                " DO UPDATE SET message_id = excluded.message_id, created_at = excluded.created_at",
                rows,
            )
            db.execute("COMMIT")

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="connector-anchors")
            if self._pending:
                self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(self.interval_s)  # debounce: one write per interval at most
            self._wakeup.clear()
            try:
                await self.flush()
            except Exception as exc:
                log.warning("anchor write failed; retrying", extra={"error": type(exc).__name__})
                self._wakeup.set()

    async def close(self) -> None:
        """Stop the writer and write what is pending."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
