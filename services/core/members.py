"""The durable member registry (SQLite on the data volume; ADR 0001) and member credentials.

Each member is a NATS nkey user. The registry keeps only the *public* key; the seed goes once
into the member's connection file, which the desktop app and the CLI use to connect.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nkeys
from pydantic import BaseModel, ConfigDict

from services.core.contracts import subjects
from services.core.db import SqliteStore
from services.core.paths import write_atomic

if TYPE_CHECKING:
    from services.core.bus import ConnectOptions

SCHEMA = """
CREATE TABLE IF NOT EXISTS members (
    name TEXT PRIMARY KEY,
    nkey_public TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- members removed: every service forgets their data (at once over the bus, else at its next start)
CREATE TABLE IF NOT EXISTS removed_members (name TEXT PRIMARY KEY, removed_at TEXT NOT NULL);
"""


class MemberExists(ValueError):
    pass


class MemberNotFound(KeyError):
    pass


@dataclass(frozen=True)
class Member:
    name: str
    nkey_public: str
    created_at: str


class ConnectionFile(BaseModel):
    """What a member's desktop app or CLI needs to attach to the stack (JSON, mode 0600)."""

    model_config = ConfigDict(extra="ignore")

    version: int = 1
    member: str
    nats_url: str
    nkey_seed: str
    inbox_prefix: str
    created_at: str
    # The home server's CA (PEM), pinned: with a tls:// nats_url the desktop trusts only this CA
    # (ADR 0010). None: a plain loopback stack.
    ca_pem: str | None = None

    def bus_options(self, name: str, *, url: str | None = None, **extra: Any) -> ConnectOptions:
        """Options of the member's bus connection (``url`` overrides ``nats_url``, e.g. the
        local URL of the stack for the CLI on the home server itself)."""
        from services.core.bus import ConnectOptions

        return ConnectOptions(
            url=url or self.nats_url,
            nkey_seed=self.nkey_seed,
            inbox_prefix=self.inbox_prefix,
            name=name,
            ca_pem=self.ca_pem,
            **extra,
        )

    def write(self, path: Path) -> None:
        write_atomic(path, self.model_dump_json(indent=2) + "\n", 0o600)

    @classmethod
    def read(cls, path: Path) -> ConnectionFile:
        return cls.model_validate_json(path.read_text())


def new_user_nkey() -> tuple[str, str]:
    """A fresh nkey user: ``(seed, public key)``."""
    import secrets

    seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    keypair = nkeys.from_seed(seed)
    return seed.decode(), keypair.public_key.decode()


class MemberRegistry(SqliteStore):
    """Members of this instance. One short transaction per call; safe across processes."""

    SCHEMA = SCHEMA
    DURABLE = True  # the member registry must survive a power loss

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(path)

    def add(self, name: str) -> tuple[Member, str]:
        """Create a member; return it and the nkey seed (shown once, never stored here)."""
        subjects.check_member(name)
        seed, public = new_user_nkey()
        member = Member(name, public, datetime.now(UTC).isoformat(timespec="seconds"))
        with self._db() as db:
            try:
                db.execute(
                    "INSERT INTO members (name, nkey_public, created_at) VALUES (?, ?, ?)",
                    (member.name, member.nkey_public, member.created_at),
                )
            except sqlite3.IntegrityError as exc:
                raise MemberExists(f"member {name!r} already exists") from exc
            db.execute("DELETE FROM removed_members WHERE name = ?", (member.name,))  # a new member
        return member, seed

    def rotate(self, name: str) -> tuple[Member, str]:
        """New credentials for a member; the old ones stop working at the next reload."""
        seed, public = new_user_nkey()
        with self._db() as db:
            cur = db.execute("UPDATE members SET nkey_public = ? WHERE name = ?", (public, name))
            if cur.rowcount == 0:
                raise MemberNotFound(name)
        return self.get(name), seed

    def get(self, name: str) -> Member:
        with self._db() as db:
            row = db.execute(
                "SELECT name, nkey_public, created_at FROM members WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise MemberNotFound(name)
        return Member(*row)

    def all(self) -> list[Member]:
        with self._db() as db:
            rows = db.execute("SELECT name, nkey_public, created_at FROM members ORDER BY name").fetchall()
        return [Member(*row) for row in rows]

    def remove(self, name: str) -> None:
        """Remove the member and remember the removal (``removed``) for the services."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute("DELETE FROM members WHERE name = ?", (name,))
            if cur.rowcount == 0:
                db.execute("ROLLBACK")
                raise MemberNotFound(name)
            db.execute(
                "INSERT INTO removed_members (name, removed_at) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET removed_at = excluded.removed_at",
                (name, datetime.now(UTC).isoformat(timespec="seconds")),
            )
            db.execute("COMMIT")

    def removed(self) -> list[str]:
        """Members removed (and not added again): a starting service forgets what it keeps of them."""
        with self._db() as db:
            return [row[0] for row in db.execute("SELECT name FROM removed_members ORDER BY name")]

    def nats_users(self) -> list[tuple[str, str]]:
        return [(m.name, m.nkey_public) for m in self.all()]
