"""HTTP bearer tokens and the media disk cache of the state service (no servers needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.state import tokens
from services.state.media import Media, MediaCache, safe_content_type, same_origin

SECRET = b"k" * 32


def test_token_round_trip_and_refusals() -> None:
    token, expires = tokens.issue(SECRET, "alice", now=1000.0, ttl_s=60)
    assert expires == 1060
    assert tokens.verify(SECRET, token, now=1059.0) == "alice"
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(SECRET, token, now=1060.0)  # expired
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(b"x" * 32, token, now=1000.0)  # another key
    version, member, exp, sig = token.split(".")
    forged = ".".join([version, "bob", exp, sig])  # renamed member, same signature
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(SECRET, forged, now=1000.0)
    longer = ".".join([version, member, str(int(exp) + 3600), sig])  # extended expiry
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(SECRET, longer, now=1000.0)
    for junk in ("", "v1.alice", "v2.alice.2000.abc", "v1.ALICE.2000.abc", "v1.alice.soon.abc", "x" * 300):
        with pytest.raises(tokens.InvalidToken):
            tokens.verify(SECRET, junk, now=1000.0)


def test_media_cache_is_lru_bounded(tmp_path: Path) -> None:
    cache = MediaCache(tmp_path / "media", max_bytes=3000)
    keys = [cache.key("alice", "srv_a", f"http://h/{i}") for i in range(4)]
    assert len(set(keys)) == 4
    assert cache.key("bob", "srv_a", "http://h/0") != keys[0]  # scoped per member
    for i, key in enumerate(keys[:3]):
        cache.put(key, Media(bytes([i]) * 1000, "image/png"))
        os.utime(cache.root / f"{key}.bin", (1000 + i, 1000 + i))
    assert cache.get(keys[0]) is not None  # a hit makes keys[0] the most recent
    cache.put(keys[3], Media(b"z" * 1000, "image/png"))
    assert cache.total_bytes() <= 3000
    assert cache.get(keys[1]) is None  # least recently used went first
    hit = cache.get(keys[0])
    assert hit is not None and hit.data == b"\x00" * 1000 and hit.content_type == "image/png"
    cache.put(cache.key("alice", "srv_a", "big"), Media(b"b" * 5000, "image/png"))  # never fits
    assert cache.get(cache.key("alice", "srv_a", "big")) is None


def test_origin_and_content_type_rules() -> None:
    assert same_origin("http://127.0.0.1:8080/files/a.png", "http://127.0.0.1:8080/prefix")
    assert not same_origin("http://127.0.0.1:8081/files/a.png", "http://127.0.0.1:8080")
    assert not same_origin("https://127.0.0.1:8080/a", "http://127.0.0.1:8080")
    assert not same_origin("file:///etc/passwd", "http://127.0.0.1:8080")
    assert not same_origin("http://evil.example/a", "http://127.0.0.1:8080")
    assert safe_content_type("image/png; charset=binary") == "image/png"
    assert safe_content_type("text/html") == "application/octet-stream"
    assert safe_content_type("image/svg+xml") == "application/octet-stream"
