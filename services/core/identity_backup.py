"""The identity backup file: a member's identity root, encrypted with a passphrase (ADR 0015).

``openchat identity export`` writes it and ``openchat identity import`` reads it back (the
desktop's Settings → My Account will use the same functions). Pure code, no I/O but the clock:

* KDF: scrypt (``cryptography``), N = 2**17, r = 8, p = 1, a random 16-byte salt, 32-byte key;
* AEAD: AES-256-GCM with a random 12-byte nonce; the header (everything but the ciphertext, as
  canonical JSON) is the associated data, so a changed parameter fails like a wrong passphrase;
* plaintext: ``{"root": "identity_…", "uid_mode": "server_scoped"|"global"}`` — the uid mode
  travels with the root, because the uids a server sees depend on both.

The file is small JSON (``format``, ``version``, ``kdf``, ``cipher``, ``nonce``, ``ciphertext``,
``created_at``); reading bounds its size and the scrypt cost, so a hostile file cannot make the
stack allocate gigabytes. Nothing here logs, and error messages never carry the root or the
passphrase.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.core.identity import IdentityError, UidMode, check_root

FORMAT = "openchat-identity-backup"
VERSION = 1
CIPHER = "AES-256-GCM"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
MAX_SCRYPT_N = 2**20  # ~1 GiB of memory with r = 8: the most a file may ask for
MAX_FILE_BYTES = 16 * 1024
MIN_PASSPHRASE = 8
MAX_PASSPHRASE = 1024


class BackupError(ValueError):
    """The file is not a backup, is damaged, or the passphrase is wrong (message is safe to show)."""


@dataclass(frozen=True)
class Backup:
    root: str
    uid_mode: UidMode


def check_passphrase(passphrase: str) -> str:
    if not MIN_PASSPHRASE <= len(passphrase) <= MAX_PASSPHRASE:
        raise BackupError(f"a passphrase has {MIN_PASSPHRASE} to {MAX_PASSPHRASE} characters")
    return passphrase


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) > 4096:
        raise BackupError(f"damaged backup: {what}")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise BackupError(f"damaged backup: {what}") from exc


# cryptography loads with the first key derived, not with this module (the desktop imports it at start to
# check a passphrase's length)
def _key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def encrypt_backup(
    root: str,
    uid_mode: UidMode,
    passphrase: str,
    *,
    n: int = SCRYPT_N,
    now: datetime | None = None,
) -> bytes:
    """The backup file's bytes (JSON, newline-terminated)."""
    root = check_root(root)
    check_passphrase(passphrase)
    salt, nonce = os.urandom(16), os.urandom(12)
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "kdf": {"name": "scrypt", "n": n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)},
        "cipher": CIPHER,
        "nonce": _b64(nonce),
        "created_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
    }
    plaintext = json.dumps({"root": root, "uid_mode": uid_mode}).encode()
    key = _key(passphrase, salt, n, SCRYPT_R, SCRYPT_P)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    ciphertext = AESGCM(key).encrypt(nonce, plaintext, _aad(header))
    return (json.dumps({**header, "ciphertext": _b64(ciphertext)}, indent=2) + "\n").encode()


def decrypt_backup(data: bytes, passphrase: str) -> Backup:
    """The root and uid mode of a backup file; ``BackupError`` for anything else."""
    if len(data) > MAX_FILE_BYTES:
        raise BackupError(f"not an identity backup (larger than {MAX_FILE_BYTES} bytes)")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError("not an identity backup (not JSON)") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError("not an identity backup")
    if doc.get("version") != VERSION or doc.get("cipher") != CIPHER:
        raise BackupError(f"unsupported backup version {doc.get('version')!r} (this stack reads {VERSION})")
    kdf = doc.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise BackupError("damaged backup: kdf")
    n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
    if not (
        isinstance(n, int)
        and isinstance(r, int)
        and isinstance(p, int)
        and 2 <= n <= MAX_SCRYPT_N
        and n & (n - 1) == 0
        and 1 <= r <= 16
        and 1 <= p <= 4
    ):
        raise BackupError("damaged backup: scrypt parameters out of bounds")
    salt = _unb64(kdf.get("salt"), "salt")
    nonce = _unb64(doc.get("nonce"), "nonce")
    ciphertext = _unb64(doc.get("ciphertext"), "ciphertext")
    if len(nonce) != 12 or len(salt) < 16:
        raise BackupError("damaged backup: nonce or salt")
    header = {k: v for k, v in doc.items() if k != "ciphertext"}
    key = _key(passphrase, salt, n, r, p)
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, _aad(header))
    except InvalidTag as exc:
        raise BackupError("wrong passphrase, or the backup was changed") from exc
    try:
        inner = json.loads(plaintext)
        root = check_root(str(inner["root"]))
        mode = inner.get("uid_mode", "server_scoped")
    except (ValueError, KeyError, TypeError, IdentityError) as exc:
        raise BackupError("damaged backup: contents") from exc
    if mode not in ("server_scoped", "global"):
        raise BackupError("damaged backup: uid mode")
    return Backup(root=root, uid_mode="global" if mode == "global" else "server_scoped")
