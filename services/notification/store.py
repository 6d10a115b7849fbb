"""Durable state of the notification service: tables in the registry database (ADR 0001).

Why SQLite and not Redis: read cursors and notification preferences are data that must survive
a restart (architecture.md, "Data ownership": they live in the small durable store, with its
documented backup), while Redis is a rebuildable cache. Counts are stored beside the cursors so
that a restart neither loses nor recounts anything, and the last applied stream sequence is
written **in the same transaction** as the state it produced: the service skips any redelivered
event at or below it, so a crash between commit and JetStream ack never counts a message twice.

One transaction per consumed batch (and per command) keeps the write rate low; ``synchronous=
FULL`` makes each commit durable. Tables (all keyed by member, then server, then channel — rule D3):

* ``notify_members(member, prefs)`` — DND, quiet hours, time zone;
* ``notify_servers(member, server_id, data)`` — uid, consent, features, mute/level, names;
* ``notify_channels(member, server_id, channel_id, data)`` — counts, unread message ids, cursor,
  channel mute/level, revision;
* ``notify_progress(consumer, last_seq)`` — the last stream sequence applied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.notification.domain import ChannelState, Engine, MemberPrefs, ServerState

SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_members (
    member TEXT PRIMARY KEY,
    prefs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notify_servers (
    member TEXT NOT NULL,
    server_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (member, server_id)
);
CREATE TABLE IF NOT EXISTS notify_channels (
    member TEXT NOT NULL,
    server_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (member, server_id, channel_id)
);
CREATE TABLE IF NOT EXISTS notify_progress (
    consumer TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
"""


class NotifyStore:
    """Load the whole engine at start; write what changed, atomically, after each batch."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(db_path, timeout=10, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def forget_member(self, member: str) -> int:
        """Every row of ``member`` (a removed member); returns how many went."""
        with self._tx() as db:
            return sum(
                db.execute(f"DELETE FROM {table} WHERE member = ?", (member,)).rowcount  # noqa: S608
                for table in ("notify_members", "notify_servers", "notify_channels")
            )

    def last_seq(self, consumer: str) -> int:
        row = self._conn.execute(
            "SELECT last_seq FROM notify_progress WHERE consumer = ?", (consumer,)
        ).fetchone()
        return int(row[0]) if row else 0

    def load(self, engine: Engine) -> None:
        for member, prefs in self._conn.execute("SELECT member, prefs FROM notify_members"):
            engine.member(member).prefs = MemberPrefs.model_validate_json(prefs)
        for member, _server_id, data in self._conn.execute(
            "SELECT member, server_id, data FROM notify_servers"
        ):
            sv = ServerState.model_validate_json(data)
            engine.member(member).servers[sv.server_id] = sv
        for member, server_id, _channel_id, data in self._conn.execute(
            "SELECT member, server_id, channel_id, data FROM notify_channels"
        ):
            sv_ = engine.member(member).servers.get(server_id)
            if sv_ is not None:
                ch = ChannelState.model_validate_json(data)
                sv_.channels[ch.channel_id] = ch

    def flush(self, engine: Engine, consumer: str | None = None, last_seq: int | None = None) -> int:
        """Write every dirty row (and the stream position) in one transaction; return rows written."""
        if not (
            engine.dirty_members
            or engine.dirty_servers
            or engine.dirty_channels
            or engine.deleted_servers
            or last_seq is not None
        ):
            return 0
        rows = 0
        with self._tx() as db:
            for member, server_id in engine.deleted_servers:
                db.execute(
                    "DELETE FROM notify_servers WHERE member = ? AND server_id = ?", (member, server_id)
                )
                db.execute(
                    "DELETE FROM notify_channels WHERE member = ? AND server_id = ?", (member, server_id)
                )
                rows += 1
            for member in engine.dirty_members:
                prefs = engine.member(member).prefs.model_dump_json()
                db.execute(
                    "INSERT INTO notify_members (member, prefs) VALUES (?, ?) "
                    "ON CONFLICT (member) DO UPDATE SET prefs = excluded.prefs",
                    (member, prefs),
                )
                rows += 1
            for member, server_id in engine.dirty_servers:
                sv = engine.member(member).servers.get(server_id)
                if sv is None:
                    continue
                data = sv.model_dump_json(exclude={"channels"})
                db.execute(
                    "INSERT INTO notify_servers (member, server_id, data) VALUES (?, ?, ?) "
                    "ON CONFLICT (member, server_id) DO UPDATE SET data = excluded.data",
                    (member, server_id, data),
                )
                rows += 1
            channel_rows = []
            for member, server_id, channel_id in engine.dirty_channels:
                sv = engine.member(member).servers.get(server_id)
                ch = sv.channels.get(channel_id) if sv else None
                if ch is not None:
                    channel_rows.append((member, server_id, channel_id, ch.model_dump_json()))
            db.executemany(
                "INSERT INTO notify_channels (member, server_id, channel_id, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (member, server_id, channel_id) DO UPDATE SET data = excluded.data",
                channel_rows,
            )
            rows += len(channel_rows)
            if consumer is not None and last_seq is not None:
                db.execute(
                    "INSERT INTO notify_progress (consumer, last_seq) VALUES (?, ?) "
                    "ON CONFLICT (consumer) DO UPDATE SET last_seq = excluded.last_seq",
                    (consumer, last_seq),
                )
        engine.dirty_members.clear()
        engine.dirty_servers.clear()
        engine.dirty_channels.clear()
        engine.deleted_servers.clear()
        return rows
