"""Plain rules of the connector: URLs, trust, disclosure, send checks, throttles, gap-fill split."""

from __future__ import annotations

import base64

import pytest

from services.connector import domain
from services.connector.backend import (
    BackendError,
    Identity,
    _error_from_response,
    normalize_base_url,
    realtime_url,
    rewrite_origin,
)
from services.core.bus import CommandError
from services.core.contracts import wire
from services.core.contracts.bus import utcnow
from services.core.contracts.chat import CapabilitySnapshot, UploadedImage

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
GIF = b"GIF89a" + b"\x00" * 20


def caps(**kw: object) -> CapabilitySnapshot:
    base: dict[str, object] = {"server_name": "x", "fetched_at": utcnow(), "features": {"attachments": True}}
    base.update(kw)
    return CapabilitySnapshot.model_validate(base)


def image(data: bytes, ctype: str, name: str = "") -> UploadedImage:
    return UploadedImage(file_name=name, content_type=ctype, data_b64=base64.b64encode(data).decode())


def test_base_url_keeps_prefix_and_realtime_url_carries_identity() -> None:
    assert normalize_base_url(" https://Chat.Example.org/prefix/ ") == "https://chat.example.org/prefix"
    for bad in ("ftp://x", "not a url", "http://x/?q=1", "http://u:p@x"):
        with pytest.raises(BackendError):
            normalize_base_url(bad)
    url = realtime_url("https://h.example/chat", Identity("uid_1", "desktop_abc"), "srv_a", resume_from="7")
    assert (
        url
        == "wss://h.example/chat/v1/realtime?server_id=srv_a&user_uid=uid_1&device_id=desktop_abc&resume_from=7"
    )
    assert realtime_url("http://127.0.0.1:9", Identity("u", "d"), "s").startswith(
        "ws://127.0.0.1:9/v1/realtime?"
    )


def test_attachment_origin_rewritten_to_base_url() -> None:
    assert (
        rewrite_origin("http://localhost:8080/v1/channels/c/attachments/a?x=1", "https://h.example/chat")
        == "https://h.example/chat/v1/channels/c/attachments/a?x=1"
    )
    assert rewrite_origin("http://evil.example/steal", "https://h.example") == ""


def test_error_mapping_handles_plain_text_and_envelopes() -> None:
    plain = _error_from_response(404, b"404 page not found\n")
    assert (plain.code, plain.retryable, plain.status) == ("not_found", False, 404)
    empty = _error_from_response(405, b"")
    assert empty.code == "method_not_allowed"
    env = _error_from_response(400, b'{"code":"message_empty","message":"m","retryable":false}\n')
    assert (env.code, env.message) == ("message_empty", "m")
    assert _error_from_response(503, b"").retryable


@pytest.mark.parametrize(
    ("url", "https_required", "warning", "mismatch"),
    [
        ("http://localhost:8080", True, None, False),
        ("http://127.0.0.1:8080", False, None, False),
        ("http://192.168.1.5:8080", False, domain.INSECURE_WARNING, False),
        ("http://192.168.1.5:8080", True, domain.HTTPS_REQUIRED_WARNING, True),
        ("https://chat.example", True, None, False),
    ],
)
def test_trust(url: str, https_required: bool, warning: str | None, mismatch: bool) -> None:
    trust = domain.assess_trust(url, https_required, "verified")
    assert trust.https_required_mismatch is mismatch
    assert trust.warnings == ([warning] if warning else [])
    assert domain.UNVERIFIED_WARNING in domain.assess_trust(url, https_required, None).warnings


def test_disclosure_says_uid_and_device_only() -> None:
    d = domain.disclosure("uid_09de3cdc", "desktop_abc12345", "server_scoped", False)
    assert "uid_09de3cdc" in d.summary and "desktop_abc12345" in d.summary and "never your name" in d.summary
    assert "agreed to share" in domain.disclosure("u", "d", "global", True).summary


def test_check_send_size_counts_utf8_bytes_of_the_trimmed_body() -> None:
    limit = caps(max_message_bytes=10)
    assert domain.check_send("  0123456789  ", [], limit)[0] == "0123456789"
    with pytest.raises(CommandError) as err:
        domain.check_send("hello world!", [], limit)
    assert err.value.code == "message_too_large" and not err.value.retryable
    with pytest.raises(CommandError):
        domain.check_send("éééééé", [], limit)  # 6 characters, 12 bytes


def test_check_send_images() -> None:
    c = caps(max_upload_bytes=30)
    _, files = domain.check_send("", [image(PNG, "image/png"), image(GIF, "image/gif", "a/b.gif")], c)
    assert [(n, t) for n, _, t in files] == [("image-1.png", "image/png"), ("a_b.gif", "image/gif")]
    for bad, code in [
        (image(PNG, "image/webp"), "image_type_unsupported"),
        (image(GIF, "image/png"), "image_type_unsupported"),
        (image(PNG + b"\x00" * 20, "image/png"), "image_too_large"),
    ]:
        with pytest.raises(CommandError) as err:
            domain.check_send("x", [bad], c)
        assert err.value.code == code
    with pytest.raises(CommandError) as off:
        domain.check_send("x", [image(PNG, "image/png")], caps(features={"attachments": False}))
    assert off.value.code == "attachments_unsupported"
    with pytest.raises(CommandError) as empty:
        domain.check_send(" \n ", [], c)
    assert empty.value.code == "message_empty"


def test_rate_limiter_sliding_minute() -> None:
    now = [0.0]
    limiter = domain.RateLimiter(clock=lambda: now[0])
    key = ("alice", "srv_a")
    assert limiter.check(key, 2) == 0 and limiter.check(key, 2) == 0
    wait = limiter.check(key, 2)
    assert wait == pytest.approx(60.0)
    assert limiter.check(("alice", "srv_b"), 2) == 0  # per server
    assert limiter.check(("bob", "srv_a"), 2) == 0  # per member
    now[0] = 60.5
    assert limiter.check(key, 2) == 0
    err = domain.rate_limited_error(12.3, 2)
    assert err.code == "rate_limited" and err.retryable and "in 13 s" in err.body.message


def test_typing_throttle() -> None:
    now = [0.0]
    t = domain.TypingThrottle(clock=lambda: now[0])
    assert t.should_send("c", True) and not t.should_send("c", True)
    assert t.should_send("d", True)
    now[0] = 2.6
    assert t.should_send("c", True)
    assert t.should_send("c", False) and t.should_send("c", True)


def test_backoff_ladder_with_jitter() -> None:
    b = domain.Backoff(jitter=0.0)
    assert [b.next_delay() for _ in range(7)] == [1, 2, 5, 10, 15, 15, 15]
    b.reset()
    assert b.next_delay() == 1
    j = domain.Backoff(jitter=0.2)
    assert all(0.8 <= j.next_delay() / base <= 1.2 for base in (1, 2, 5, 10, 15))


def msg(mid: str, channel: str = "c") -> wire.Message:
    return wire.Message(
        id=mid, channel_id=channel, author_uid="u", body="", created_at="2026-01-01T00:00:00Z"
    )


def test_known_ids_bounded_and_missing_after() -> None:
    known = domain.KnownIds(per_channel=3)
    for i in "abcd":
        known.add("c", domain.identity_of(msg(i)))
    d = domain.identity_of(msg("d"))
    assert ("c", domain.identity_of(msg("a"))) not in known and ("c", d) in known and known.newest("c") == d
    page = [msg("b"), msg("x"), msg("c"), msg("d"), msg("e"), msg("e"), msg("f", "other"), msg("g")]
    late, fresh, found = domain.missing_after(page, "c", d, known)
    assert found and [m.id for m in late] == ["x"] and [m.id for m in fresh] == ["e", "g"]
    late, fresh, found = domain.missing_after([msg("y"), msg("z")], "c", d, known)
    assert not found and late == [] and [m.id for m in fresh] == ["y", "z"]


def test_a_repeated_id_with_another_creation_time_is_another_message() -> None:
    """Backend ids are 32 bits random (wire spec "Ids"): a busy channel repeats one. The message
    with the repeated id is missing (published), the same message again is not (ADR 0029)."""
    known = domain.KnownIds(per_channel=10)
    first = msg("msg_0badcafe")
    known.add("c", domain.identity_of(first))
    again = msg("msg_0badcafe")  # the same message read again (history page, replay)
    other = wire.Message(
        id="msg_0badcafe", channel_id="c", author_uid="u", body="", created_at="2026-01-01T01:00:00Z"
    )
    late, fresh, found = domain.missing_after(
        [first, msg("m1"), again, other], "c", domain.identity_of(first), known
    )
    assert (
        found
        and late == []
        and [(m.id, m.created_at) for m in fresh]
        == [
            ("m1", "2026-01-01T00:00:00Z"),
            ("msg_0badcafe", "2026-01-01T01:00:00Z"),
        ]
    )
    assert domain.identity_of(first) == domain.identity_of(again) != domain.identity_of(other)


def test_snapshot_features_and_profile_flags() -> None:
    c = wire.Capabilities.model_validate(
        {
            "server_name": "S",
            "server_id": "s",
            "features": {"messaging": True, "cursors": True},
            "read_acks": True,
            "profile": {"enabled": True},
            "limits": {"max_message_bytes": 5},
        }
    )
    snap = domain.snapshot_of(c)
    assert snap.features["cursors"] and snap.features["read_acks"] and snap.profile_enabled
    assert snap.max_message_bytes == 5 and "mentions" not in snap.features
