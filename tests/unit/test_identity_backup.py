"""The identity backup file (ADR 0015): round trip, wrong passphrase, tampering, hostile files."""

from __future__ import annotations

import json

import pytest

from services.core.identity_backup import (
    MAX_FILE_BYTES,
    SCRYPT_N,
    BackupError,
    decrypt_backup,
    encrypt_backup,
)

ROOT = "identity_ab12cd34"
PASS = "correct horse battery"
FAST_N = 2**12  # tests only: the default cost is SCRYPT_N


def test_round_trip_keeps_root_and_uid_mode_and_hides_both() -> None:
    data = encrypt_backup(ROOT, "global", PASS, n=FAST_N)
    assert ROOT.encode() not in data and b"global" not in data and PASS.encode() not in data
    doc = json.loads(data)
    assert (doc["format"], doc["version"], doc["cipher"], doc["kdf"]["name"]) == (
        "openchat-identity-backup",
        1,
        "AES-256-GCM",
        "scrypt",
    )
    back = decrypt_backup(data, PASS)
    assert (back.root, back.uid_mode) == (ROOT, "global")


def test_default_cost_is_the_documented_one() -> None:
    data = encrypt_backup(ROOT, "server_scoped", PASS)
    assert json.loads(data)["kdf"]["n"] == SCRYPT_N == 2**17
    assert decrypt_backup(data, PASS).uid_mode == "server_scoped"


def test_two_exports_differ_salt_and_nonce_are_fresh() -> None:
    a, b = (json.loads(encrypt_backup(ROOT, "global", PASS, n=FAST_N)) for _ in range(2))
    assert a["kdf"]["salt"] != b["kdf"]["salt"] and a["nonce"] != b["nonce"]


def test_wrong_passphrase_is_refused_without_echoing_anything() -> None:
    data = encrypt_backup(ROOT, "global", PASS, n=FAST_N)
    with pytest.raises(BackupError) as err:
        decrypt_backup(data, "wrong passphrase")
    assert "wrong passphrase" in str(err.value) and ROOT not in str(err.value)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(created_at="2000-01-01T00:00:00+00:00"),  # header is authenticated
        lambda d: d["kdf"].update(n=FAST_N * 2),
        lambda d: d.update(ciphertext=d["ciphertext"][:-4] + "AAA="),
    ],
)
def test_a_changed_file_fails_like_a_wrong_passphrase(change: object) -> None:
    doc = json.loads(encrypt_backup(ROOT, "global", PASS, n=FAST_N))
    change(doc)  # type: ignore[operator]
    with pytest.raises(BackupError, match="wrong passphrase, or the backup was changed"):
        decrypt_backup(json.dumps(doc).encode(), PASS)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"x" * (MAX_FILE_BYTES + 1), "larger than"),
        (b"not json", "not JSON"),
        (b'{"format": "something else"}', "not an identity backup"),
        (b'{"format": "openchat-identity-backup", "version": 9, "cipher": "AES-256-GCM"}', "unsupported"),
    ],
)
def test_not_a_backup(data: bytes, message: str) -> None:
    with pytest.raises(BackupError, match=message):
        decrypt_backup(data, PASS)


def test_a_hostile_scrypt_cost_is_refused_before_deriving() -> None:
    doc = json.loads(encrypt_backup(ROOT, "global", PASS, n=FAST_N))
    doc["kdf"]["n"] = 2**30  # would need ~1 TiB
    with pytest.raises(BackupError, match="out of bounds"):
        decrypt_backup(json.dumps(doc).encode(), PASS)


def test_short_passphrase_and_bad_root_are_refused() -> None:
    with pytest.raises(BackupError, match="8 to"):
        encrypt_backup(ROOT, "global", "short", n=FAST_N)
    with pytest.raises(ValueError):
        encrypt_backup("not-a-root", "global", PASS, n=FAST_N)
