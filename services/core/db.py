"""The registry database (SQLite on the data volume, ADR 0001): one way to open it.

Every store that keeps durable member data (members, identities, joined servers, connector
anchors, profiles) opens short-lived connections with the same settings: autocommit (explicit
transactions where needed), WAL so readers never block the writer, and a busy timeout so two
processes (CLI and services) can share the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
