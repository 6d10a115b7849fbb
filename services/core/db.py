"""The registry database (SQLite on the data volume, ADR 0001): one way to open it.

Every store that keeps durable member data (members, identities, joined servers, connector
anchors, profiles) opens short-lived connections with the same settings: autocommit (explicit
transactions where needed), WAL so readers never block the writer, and a busy timeout so two
processes (CLI and services) can share the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import ClassVar

BUSY_TIMEOUT_S = 10.0


@contextmanager
def open_db(path: Path, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` for one short unit of work, closed afterwards.

    ``durable``: fsync on every commit (``synchronous=FULL``), for data that must survive a power
    loss (the member registry); otherwise WAL's default (``NORMAL``)."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        if durable:
            db.execute("PRAGMA synchronous=FULL")
        yield db
    finally:
        db.close()


class SqliteStore:
    """The base of a store kept in one SQLite file: ``SCHEMA`` (``CREATE TABLE IF NOT EXISTS``…)
    is applied when the store is made, and every unit of work opens a short connection with
    ``open_db`` (``DURABLE``: fsync on every commit)."""

    SCHEMA: ClassVar[str] = ""
    DURABLE: ClassVar[bool] = False
    MEMBER_TABLES: ClassVar[tuple[str, ...]] = ()  # this store's tables keyed by a ``member`` column

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(self.SCHEMA)

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return open_db(self.db_path, durable=self.DURABLE)

    def members(self) -> set[str]:
        """Every member this store keeps rows of."""
        with self._db() as db:
            return {
                row[0]
                for table in self.MEMBER_TABLES
                for row in db.execute(f"SELECT DISTINCT member FROM {table}")  # noqa: S608 (a class constant)
            }

    def forget_member(self, member: str) -> int:
        """Delete every row of ``member`` (one transaction); returns how many went."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                n = sum(
                    db.execute(f"DELETE FROM {table} WHERE member = ?", (member,)).rowcount  # noqa: S608
                    for table in self.MEMBER_TABLES
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return n
