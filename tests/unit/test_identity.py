"""Identity: the reference client's UID projection (its vectors), roots, encryption at rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.identity import (
    IdentityError,
    IdentityStore,
    check_root,
    device_id,
    directory_server_id,
    hash_uid,
    java_string_hash,
    load_or_create_key,
    new_root,
    project_uid,
)

ROOT = "identity_abc12345"


def test_reference_vectors() -> None:
    assert project_uid(ROOT, "srv_harbor", "global") == "uid_2aab2b72"
    assert project_uid(ROOT, "srv_harbor") == "uid_09de3cdc"
    assert project_uid(ROOT, directory_server_id("https://chat.pennylabs.com")) == "uid_25560615"
    assert project_uid(ROOT, directory_server_id("https://chat.pennylabs.com/")) == "uid_25560615"
    assert hash_uid("a") == "uid_00000061"


def test_hash_is_over_utf16_code_units_and_signed_32_bit() -> None:
    # Java: "😀".hashCode() == 1772897 (two surrogate code units); "polygenelubricants" hashes to MIN_VALUE.
    assert java_string_hash("😀") == 0xD83D * 31 + 0xDE00
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert hash_uid("polygenelubricants") == "uid_80000000"


def test_server_scoped_uids_differ_and_global_ones_match() -> None:
    assert project_uid(ROOT, "srv_a") != project_uid(ROOT, "srv_b")
    assert project_uid(ROOT, "srv_a", "global") == project_uid(ROOT, "srv_b", "global")


def test_roots_and_device_ids() -> None:
    for _ in range(50):
        assert check_root(new_root())
    assert device_id(ROOT) == "desktop_abc12345"
    assert device_id(None) == "desktop_local"
    for bad in ("identity_ABC12345", "identity_abc1234", "root", "identity_abc12345x"):
        with pytest.raises(IdentityError):
            check_root(bad)


def test_roots_are_encrypted_at_rest(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "secret.key"
    db = tmp_path / "data" / "registry.sqlite3"
    db.parent.mkdir()
    store = IdentityStore(db, load_or_create_key(key_file))
    store.put("alice", ROOT)
    assert key_file.stat().st_mode & 0o077 == 0
    assert ROOT.encode() not in db.read_bytes()
    assert store.root("alice") == ROOT
    assert store.uid_mode("alice") == "server_scoped"

    other_key = load_or_create_key(tmp_path / "other.key")
    with pytest.raises(IdentityError, match="cannot be decrypted"):
        IdentityStore(db, other_key).root("alice")
    with pytest.raises(IdentityError, match="no identity"):
        store.root("bob")


def test_key_file_may_hold_a_hex_secret(tmp_path: Path) -> None:
    hex_file = tmp_path / "hex.key"
    hex_file.write_text("a3" * 32 + "\n")  # openssl rand -hex 32
    key = load_or_create_key(hex_file)
    assert key == load_or_create_key(hex_file)
    short = tmp_path / "short.key"
    short.write_text("too-short")
    with pytest.raises(IdentityError, match="at least 32"):
        load_or_create_key(short)


def test_create_if_absent_gives_racing_callers_one_stored_root(tmp_path: Path) -> None:
    """The connector creates a first join's identity off the event loop (issue 16): a racing
    caller (another thread) must get the same root, never overwrite it."""
    from concurrent.futures import ThreadPoolExecutor

    db = tmp_path / "registry.sqlite3"
    store = IdentityStore(db, load_or_create_key(tmp_path / "secret.key"))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: store.create_if_absent("alice"), range(16)))
    assert len({root for root, _, _ in results}) == 1
    assert [created for _, _, created in results].count(True) == 1
    root, mode, _ = results[0]
    assert store.root("alice") == root and mode == "server_scoped"
    store.set_uid_mode("alice", "global")
    assert store.create_if_absent("alice") == (root, "global", False)  # kept as stored
