"""The durable list of servers each member joined (registry database, ADR 0001).

Owned by the connector (it writes on join/leave/consent); read by anyone who needs the list at
start. Keyed by ``(member, server_id)`` — a server id is the member's choice (rule D1), and two
backends may reuse ids, so nothing is keyed by server id alone.
"""

from __future__ import annotations

import sqlite3

from services.core.contracts.chat import ServerRecord
from services.core.db import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS joined_servers (
    member TEXT NOT NULL,
    server_id TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (member, server_id)
);
"""


class ServerExists(ValueError):
    pass


class ServerNotJoined(KeyError):
    pass


class ServerStore(SqliteStore):
    SCHEMA = SCHEMA
    MEMBER_TABLES = ("joined_servers",)

    def add(self, member: str, record: ServerRecord) -> None:
        with self._db() as db:
            try:
                db.execute(
                    "INSERT INTO joined_servers (member, server_id, record) VALUES (?, ?, ?)",
                    (member, record.server_id, record.model_dump_json()),
                )
            except sqlite3.IntegrityError as exc:
                raise ServerExists(f"server already added: {record.server_id}") from exc

    def update(self, member: str, record: ServerRecord) -> None:
        with self._db() as db:
            cur = db.execute(
                "UPDATE joined_servers SET record = ? WHERE member = ? AND server_id = ?",
                (record.model_dump_json(), member, record.server_id),
            )
        if cur.rowcount == 0:
            raise ServerNotJoined(record.server_id)

    def get(self, member: str, server_id: str) -> ServerRecord:
        with self._db() as db:
            row = db.execute(
                "SELECT record FROM joined_servers WHERE member = ? AND server_id = ?", (member, server_id)
            ).fetchone()
        if row is None:
            raise ServerNotJoined(server_id)
        return ServerRecord.model_validate_json(row[0])

    def remove(self, member: str, server_id: str) -> None:
        with self._db() as db:
            cur = db.execute(
                "DELETE FROM joined_servers WHERE member = ? AND server_id = ?", (member, server_id)
            )
        if cur.rowcount == 0:
            raise ServerNotJoined(server_id)

    def of_member(self, member: str) -> list[ServerRecord]:
        with self._db() as db:
            rows = db.execute(
                "SELECT record FROM joined_servers WHERE member = ? ORDER BY rowid", (member,)
            ).fetchall()
        return [ServerRecord.model_validate_json(r[0]) for r in rows]

    def everything(self) -> list[tuple[str, ServerRecord]]:
        with self._db() as db:
            rows = db.execute("SELECT member, record FROM joined_servers ORDER BY member, rowid").fetchall()
        return [(m, ServerRecord.model_validate_json(r)) for m, r in rows]
