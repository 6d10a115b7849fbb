"""Member identities: the local root in the reference format, the UID projection of the
reference client (exact, with its reference vectors), device ids, and encrypted storage.

- root: ``identity_`` + 8 characters of ``[a-z0-9]``, each from one random byte mod 36;
- uid: ``uid_`` + hex(abs(h)) padded to 8 digits, ``h`` the Java 32-bit string hash over UTF-16
  code units of ``root`` (global mode) or ``root + ":" + server_id`` (server-scoped, default);
  directory and creation requests use the server id ``directory:<backend URL without a trailing />``;
- device id: ``desktop_`` + the last 8 characters of the root.

Roots are encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256) with a key that lives outside
the data volume (ADR 0004): ``OPENCHAT_SECRET_KEY_FILE``, by default
``$XDG_CONFIG_HOME/openchat/secret.key``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from services.core.db import SqliteStore
from services.core.paths import write_atomic

if TYPE_CHECKING:  # cryptography loads where a key is used (the desktop imports this module at start)
    from cryptography.fernet import Fernet

ROOT_RE = re.compile(r"^identity_[a-z0-9]{8}$")
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
UidMode = Literal["server_scoped", "global"]


class IdentityError(ValueError):
    pass


def new_root() -> str:
    return "identity_" + "".join(ALPHABET[b % 36] for b in secrets.token_bytes(8))


def check_root(root: str) -> str:
    root = root.strip()
    if not ROOT_RE.match(root):
        raise IdentityError("an identity root is 'identity_' followed by 8 characters of a-z and 0-9")
    return root


def java_string_hash(text: str) -> int:
    """``String.hashCode`` of Java/JavaScript: over UTF-16 code units, signed 32-bit."""
    h = 0
    data = text.encode("utf-16-le")
    for i in range(0, len(data), 2):
        unit = data[i] | (data[i + 1] << 8)
        h = (h * 31 + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def hash_uid(text: str) -> str:
    return "uid_" + format(abs(java_string_hash(text)), "x").zfill(8)


def project_uid(root: str, server_id: str, mode: UidMode = "server_scoped") -> str:
    return hash_uid(root if mode == "global" else f"{root}:{server_id}")


def directory_server_id(base_url: str) -> str:
    return "directory:" + base_url.rstrip("/")


def device_id(root: str | None) -> str:
    return f"desktop_{root[-8:]}" if root else "desktop_local"


def default_key_file() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "openchat" / "secret.key"


def load_or_create_key(path: Path) -> bytes:
    """The Fernet key for ``path``; a new one is created (mode 0600) when the file is missing.

    The file holds either a Fernet key or any random secret of at least 32 characters (e.g.
    ``openssl rand -hex 32``), from which the key is derived with SHA-256."""
    from cryptography.fernet import Fernet

    try:
        raw = path.read_bytes().strip()
    except FileNotFoundError:
        key = Fernet.generate_key()
        write_atomic(path, key + b"\n", 0o600)
        return key
    try:
        Fernet(raw)
        return raw
    except ValueError:
        pass
    if len(raw) < 32:
        raise IdentityError(f"{path} must hold a Fernet key or a random secret of at least 32 characters")
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    member TEXT PRIMARY KEY,
    root_encrypted BLOB NOT NULL,
    uid_mode TEXT NOT NULL DEFAULT 'server_scoped',
    created_at TEXT NOT NULL
);
"""


class IdentityStore(SqliteStore):
    """Encrypted identity roots per member, in the registry database."""

    SCHEMA = SCHEMA

    def __init__(self, db_path: Path, key: bytes) -> None:
        from cryptography.fernet import Fernet

        self._fernet: Fernet = Fernet(key)
        super().__init__(db_path)

    def put(self, member: str, root: str, uid_mode: UidMode = "server_scoped") -> None:
        token = self._fernet.encrypt(check_root(root).encode())
        with self._db() as db:
            db.execute(
                "INSERT INTO identities (member, root_encrypted, uid_mode, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(member) DO UPDATE SET root_encrypted = excluded.root_encrypted",
                (member, token, uid_mode, datetime.now(UTC).isoformat(timespec="seconds")),
            )

    def create(self, member: str) -> str:
        root = new_root()
        self.put(member, root)
        return root

    def create_if_absent(self, member: str) -> tuple[str, UidMode, bool]:
        """The member's root and uid mode, creating a random root (``server_scoped``) when there is
        none; ``True`` when this call created it. Two racing callers get the same stored root
        (the second insert does nothing), so it may run off the event loop."""
        token = self._fernet.encrypt(new_root().encode())
        with self._db() as db:
            created = db.execute(
                "INSERT INTO identities (member, root_encrypted, uid_mode, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(member) DO NOTHING",
                (member, token, "server_scoped", datetime.now(UTC).isoformat(timespec="seconds")),
            ).rowcount
            row = db.execute(
                "SELECT root_encrypted, uid_mode FROM identities WHERE member = ?", (member,)
            ).fetchone()
        if row is None:  # deleted between the two statements: nothing to return
            raise IdentityError(f"member {member!r} has no identity")
        return self._decrypt(row[0]), _mode_of(row[1]), created == 1

    def _decrypt(self, token: bytes) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken as exc:
            raise IdentityError(
                "the identity cannot be decrypted with this key (OPENCHAT_SECRET_KEY_FILE)"
            ) from exc

    def root(self, member: str) -> str:
        with self._db() as db:
            row = db.execute("SELECT root_encrypted FROM identities WHERE member = ?", (member,)).fetchone()
        if row is None:
            raise IdentityError(f"member {member!r} has no identity")
        return self._decrypt(row[0])

    def uid_mode(self, member: str) -> UidMode:
        with self._db() as db:
            row = db.execute("SELECT uid_mode FROM identities WHERE member = ?", (member,)).fetchone()
        if row is None:
            raise IdentityError(f"member {member!r} has no identity")
        return _mode_of(row[0])

    def set_uid_mode(self, member: str, mode: UidMode) -> None:
        with self._db() as db:
            db.execute("UPDATE identities SET uid_mode = ? WHERE member = ?", (mode, member))

    def delete(self, member: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM identities WHERE member = ?", (member,))


def _mode_of(stored: object) -> UidMode:
    """The uid mode as stored (anything but ``global`` reads as the default, ``server_scoped``)."""
    return "global" if stored == "global" else "server_scoped"
