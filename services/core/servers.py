"""The durable list of servers each member joined (registry database, ADR 0001).

Owned by the connector (it writes on join/leave/consent); read by anyone who needs the list at
start. Keyed by ``(member, server_id)`` where ``server_id`` is the member's LOCAL id (issue #14,
ADR 0018); two backends may reuse ids, so the backend's own id and URL are kept beside it
(``backend_server_id``, ``base_url``: one row per backend server and member).

Schema version 1 (``PRAGMA user_version``) added those two columns. The migration fills them
from each stored record (backend id = the local id, as every server joined before had them
equal) and rewrites nothing else: existing installations keep their ids and uids unchanged.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
SCHEMA_VERSION = 1


class ServerExists(ValueError):
    pass


class ServerNotJoined(KeyError):
    pass


class ServerStore(SqliteStore):
    SCHEMA = SCHEMA
    MEMBER_TABLES = ("joined_servers",)

    def __init__(self, db_path: Path) -> None:
        super().__init__(db_path)
        self._migrate()

    def _migrate(self) -> None:
        """Bring the table to ``SCHEMA_VERSION`` (one transaction; several services open the
        registry at start, the first one migrates, the others find it done)."""
        with self._db() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("PRAGMA user_version").fetchone()[0] < 1:
                    columns = {row[1] for row in db.execute("PRAGMA table_info(joined_servers)")}
                    for name in ("backend_server_id", "base_url"):
                        if name not in columns:
                            db.execute(f"ALTER TABLE joined_servers ADD COLUMN {name} TEXT")
                    rows = db.execute("SELECT member, server_id, record FROM joined_servers").fetchall()
                    for member, server_id, raw in rows:
                        record = ServerRecord.model_validate_json(raw)
                        db.execute(
                            "UPDATE joined_servers SET backend_server_id = ?, base_url = ?"
                            " WHERE member = ? AND server_id = ?",
                            (record.backend_id, record.base_url, member, server_id),
                        )
                    db.execute(
                        "CREATE UNIQUE INDEX IF NOT EXISTS joined_servers_backend"
                        " ON joined_servers (member, base_url, backend_server_id)"
                    )
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def add(self, member: str, record: ServerRecord) -> None:
        with self._db() as db:
            try:
                db.execute(
                    "INSERT INTO joined_servers (member, server_id, record, backend_server_id, base_url)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (member, record.server_id, record.model_dump_json(), record.backend_id, record.base_url),
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
