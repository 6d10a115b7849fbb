"""Unit tests of the devserver's Go-compatibility helpers and wire rules (no server needed)."""

from __future__ import annotations

import pytest

from services.core.contracts.wire import Message, ReadAckUpdatedPayload, RealtimeEnvelope
from services.devserver.gojson import GoDecodeError, decode_first, go_escape, go_string, str_field
from services.devserver.images import decode_dimensions, normalize_content_type, sniff
from services.devserver.realtime import go_rfc3339_nano, parse_envelope
from services.devserver.store import (
    default_display_name,
    default_preset,
    display_name_valid,
    extract_mentions,
    reply_preview,
)
from services.devserver.wire_http import dumps
from tests.conformance.golden import gif, jpeg, png


def test_go_json_decoding_rules() -> None:
    assert decode_first(b'  {"a": 1} trailing') == {"a": 1}
    with pytest.raises(GoDecodeError):
        decode_first(b"   ")
    with pytest.raises(GoDecodeError):
        decode_first(b"NaN")
    obj = decode_first(b'{"body": "x", "BODY": "y"}')
    assert str_field(obj, "body") == "y"  # case-insensitive, last wins
    with pytest.raises(GoDecodeError):
        str_field(decode_first(b'{"body": 1}'), "body")
    assert str_field(decode_first(b'{"body": null}'), "body") == ""
    assert go_string(b"a\xffb\xe2\x82") == "a\ufffdb\ufffd\ufffd"


def test_go_json_encoding_escapes_html_and_trails_newline() -> None:
    assert dumps({"b": "<&>\u2028"}) == b'{"b":"\\u003c\\u0026\\u003e\\u2028"}\n'
    assert go_escape('"\ud800"') == '"\ufffd"'


def test_profile_defaults() -> None:
    assert default_display_name("uid_alice") == "User alice"
    assert default_display_name("uid_prod_bearer") == "User prod_beare"
    assert default_display_name("did:plc:abcdefghijklmnopqrstuvwxyz") == "User did:plc:abcdef"
    assert [default_preset(u) for u in ("uid_alice", "uid_dev_local", "uid_seed_1")] == [
        "ember",
        "violet",
        "horizon",
    ]
    assert display_name_valid("Alice A.") and display_name_valid("Zoë_9-x")
    assert (
        not display_name_valid("A")
        and not display_name_valid("Alice 😀")
        and not display_name_valid("x" * 33)
    )


def test_reply_preview_is_220_runes() -> None:
    assert reply_preview("  a\n\n  b\r\n c ") == "a b c"
    long = "é" * 300
    preview = reply_preview(long)
    assert len(preview) == 220 and preview.endswith("…")


def test_mentions_parsing() -> None:
    mentions = extract_mentions("hi @bob, @HERE! x@y @ @channel")
    assert [(m["type"], m["token"]) for m in mentions] == [
        ("user", "@bob"),
        ("channel", "@here"),
        ("channel", "@channel"),
    ]
    assert mentions[0]["range"] == {"start": 3, "end": 7}


def test_image_sniffing_and_headers() -> None:
    assert sniff(png()) == "image/png" and sniff(jpeg()) == "image/jpeg" and sniff(gif()) == "image/gif"
    assert sniff(b"hello") == "text/plain; charset=utf-8"
    assert normalize_content_type("application/octet-stream", png()) == "image/png"
    assert normalize_content_type("Image/PNG; q=1", b"x") == "image/png"
    assert decode_dimensions(png(7, 3)) == (7, 3)
    assert decode_dimensions(b"\x89PNG\r\n\x1a\nbroken") is None
    assert decode_dimensions(gif(), ("png", "jpeg")) is None


def test_realtime_envelope_parsing() -> None:
    assert parse_envelope(b'{"TYPE": "chat.ping", "Request_ID": "r"}') == ("chat.ping", "r", {})
    assert parse_envelope(b'{"type": 5}') is None
    assert parse_envelope(b"[]") is None
    assert parse_envelope(b"null") == ("", "", {})
    assert parse_envelope(b'{"type": "x", "payload": [1]}') == ("x", "", {})
    ts = go_rfc3339_nano(1_795_652_565_729_157_000)
    assert ts == "2026-11-26T00:22:45.729157Z"
    assert go_rfc3339_nano(1_795_652_565_000_000_000) == "2026-11-26T00:22:45Z"


def test_contract_models_are_tolerant() -> None:
    message = Message.model_validate(
        {
            "id": "m",
            "channel_id": "c",
            "author_uid": "u",
            "body": {"markdown": "**x**"},
            "created_at": "t",
            "permalink": "p",
        }
    )
    assert message.body == "**x**" and message.model_extra == {"permalink": "p"}
    nested = ReadAckUpdatedPayload.model_validate(
        {"read_ack": {"channel_id": "c", "user_uid": "u", "cursor_index": 3}}
    )
    assert nested.cursor_index == 3
    env = RealtimeEnvelope.model_validate({"type": "x", "payload": "bad", "event_id": 7})
    assert env.payload == {} and env.event_id == 7
