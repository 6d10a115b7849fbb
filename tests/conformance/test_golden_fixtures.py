"""Golden-fixture conformance: every file of ``shared/protocol/examples`` replayed against a real
devserver (uvicorn on a free port, httpx for HTTP, ``websockets`` for the realtime socket).

HTTP fixtures run once, in ``SCENARIO`` order (later fixtures refer to ids created by earlier ones:
``msg_b02f1720``, ``att_cc2fa092``, ``asset_9a506f25``, and to profile versions and leaves), against
one development-mode instance; ``error_unauthorized_401.json`` against a production-mode one.  Each
test then checks its recorded exchange: status, content type, CORS headers, content length, the
compact-JSON-plus-newline encoding, keys *and key order*, value types and exact values except for
generated ids (unified one-to-one with the recorded ones), timestamps (format) and the origin of
absolute URLs.  ``realtime_frames.jsonl`` is replayed frame by frame (per-connection event order);
the realtime ``error_ws_chat_*`` fixtures must match the recorded bytes exactly.

RTC fixtures are delegated (``DELEGATED``) to ``test_signaling_fixtures.py`` (the RTC part's own
conformance suite); ``test_every_fixture_is_covered`` proves nothing is left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from services.devserver.config import DevserverConfig
from services.devserver.runner import DevserverHandle, running_devserver
from tests.conformance import golden
from tests.conformance.golden import Matcher, load
from tests.conformance.test_signaling_fixtures import COVERED_FIXTURES as SIGNALING_COVERED

pytestmark = pytest.mark.devserver

# Covered by tests/conformance/test_signaling_fixtures.py (join tickets, signaling frames, SDPs).
DELEGATED: frozenset[str] = frozenset(SIGNALING_COVERED)

SCENARIO: tuple[str, ...] = (
    # discovery and router basics
    "healthz.json",
    "capabilities.json",
    "options_preflight_204.json",
    "router_404_unknown_path.json",
    "router_405_wrong_method.json",
    # Profile B endpoints absent
    "absent_legacy_capabilities_404.json",
    "absent_read_ack_get_404.json",
    "absent_read_ack_put_404.json",
    "absent_mentions_resolve_404.json",
    "absent_message_delete_404.json",
    "absent_category_create_404.json",
    "absent_channel_layout_404.json",
    "absent_server_settings_404.json",
    "absent_ownership_claim_404.json",
    "absent_server_create_405.json",
    "absent_channel_create_405.json",
    # directory and membership
    "servers_no_headers.json",
    "servers_with_identity.json",
    "leave_ok.json",
    "leave_ok_repeat.json",
    "servers_after_leave.json",
    "servers_other_user_unaffected.json",
    "servers_bearer_uid.json",
    "error_server_not_found_404.json",
    # channels, members, history (before any message is created)
    "channels_srv_harbor.json",
    "channels_srv_testlab.json",
    "members_srv_harbor.json",
    "members_srv_testlab.json",
    "messages_ch_general.json",
    "messages_ch_general_limit1.json",
    "messages_cursor_params_ignored.json",
    "messages_empty_text_channel.json",
    "messages_voice_channel_empty.json",
    "error_channel_not_found_404.json",
    # sending
    "message_create_text_201.json",
    "message_create_reply_201.json",
    "message_create_reply_to_seed_201.json",
    "message_create_no_identity_dev_201.json",
    "message_create_attachment_201.json",
    "message_create_attachments_reply_no_body_201.json",
    "message_create_sniffed_type_201.json",
    "message_create_wrong_file_field_201.json",
    "attachment_fetch_200.json",
    "error_attachment_not_found_404.json",
    "error_reply_target_not_found_400.json",
    "error_message_empty_400.json",
    "error_message_empty_400_missing_body.json",
    "error_invalid_payload_400.json",
    "error_invalid_payload_400_non_string_body.json",
    "error_message_create_failed_400.json",
    "error_message_create_failed_400_voice_channel.json",
    "error_attachment_type_unsupported_415.json",
    "error_attachment_invalid_image_400.json",
    "error_attachment_count_exceeded_400.json",
    "error_attachment_too_large_413.json",
    # profiles (uid_alice's versions 1..5 in this order)
    "profile_me.json",
    "profile_me_no_headers_dev.json",
    "profile_me_non_uid_prefix.json",
    "profile_put_ok.json",
    "error_profile_conflict_409.json",
    "profile_put_weak_etag_ok.json",
    "error_invalid_if_match_400.json",
    "error_display_name_invalid_400.json",
    "error_display_name_invalid_400_emoji.json",
    "error_avatar_mode_unsupported_400.json",
    "error_avatar_mode_unsupported_400_bad_preset.json",
    "error_avatar_asset_not_found_400.json",
    "profile_put_unconditional_ok.json",
    "avatar_upload_201.json",
    "profile_put_uploaded_ok.json",
    "avatar_fetch_200.json",
    "error_avatar_asset_not_found_404.json",
    "error_avatar_type_unsupported_415.json",
    "error_avatar_dimensions_exceeded_400.json",
    "error_avatar_too_large_413.json",
    "error_avatar_too_large_413_oversize_file.json",
    "error_invalid_payload_400_avatar_missing_file.json",
    "profiles_batch.json",
    "error_invalid_query_400.json",
    "error_invalid_query_400_too_many.json",
)
PRODUCTION: tuple[str, ...] = ("error_unauthorized_401.json",)
REALTIME_LOGS: tuple[str, ...] = ("realtime_frames.jsonl",)
REALTIME_ERRORS: tuple[str, ...] = (
    "error_ws_chat_not_subscribed.json",
    "error_ws_chat_channel_required.json",
    "error_ws_chat_unknown_event.json",
)
HTTP_FIXTURES = SCENARIO + PRODUCTION

RECV_TIMEOUT = 5.0
CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-headers": "Content-Type, Authorization, If-Match, X-OpenChat-User-UID, X-OpenChat-Device-ID",
    "access-control-allow-methods": "GET, POST, PUT, DELETE, OPTIONS",
}


def test_every_fixture_is_covered() -> None:
    mine = set(HTTP_FIXTURES) | set(REALTIME_LOGS) | set(REALTIME_ERRORS)
    assert not mine & DELEGATED, "a fixture is replayed twice"
    assert mine | DELEGATED == golden.all_fixture_names()
    assert len(SCENARIO) == len(set(SCENARIO))


# ---------------------------------------------------------------------------- request building


def part_payload(fixture: dict[str, Any], part: dict[str, Any]) -> bytes:
    """Bytes for a recorded multipart file part (the fixtures only describe them)."""
    size = int(part["bytes"])
    name = part.get("filename", "")
    declared = part.get("content_type", "")
    body = fixture.get("body") or {}
    code = body.get("code") if isinstance(body, dict) else None
    if code == "attachment_invalid_image":
        return golden.padded(b"\x89PNG\r\n\x1a\n", size)
    if declared == "text/plain":
        return golden.padded(b"hello", size)
    dims = (8, 8)
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(message, dict):
        for att in message.get("attachments", []):
            if att["file_name"] == name:
                dims = (att["width"], att["height"])
    if isinstance(body, dict) and "avatar_asset_id" in body:
        dims = (body["width"], body["height"])
    if code == "avatar_dimensions_exceeded":
        dims = (1025, 1)
    if name.endswith(".gif") or declared == "image/gif":
        data = golden.gif(*dims)
    elif name.endswith(".jpg") or declared == "image/jpeg":
        data = golden.jpeg(*dims)
    else:
        data = golden.png(*dims)
    return golden.padded(data, size) if size > len(data) else data


@dataclass
class Exchange:
    fixture: dict[str, Any]
    response: httpx.Response
    sent_files: dict[str, bytes]


def send(client: httpx.Client, matcher: Matcher, fixture: dict[str, Any]) -> Exchange:
    req = fixture["_request"]
    headers = {
        k: matcher.substitute(v) for k, v in req.get("headers", {}).items() if k.lower() != "content-type"
    }
    content: bytes | None = None
    sent: dict[str, bytes] = {}
    ctype = req.get("headers", {}).get("Content-Type")
    if "json" in req:
        content = json.dumps(json.loads(matcher.substitute(json.dumps(req["json"])))).encode()
        headers["Content-Type"] = ctype or "application/json"
    elif "raw_body" in req:
        content = req["raw_body"].encode()
        headers["Content-Type"] = ctype or "application/json"
    elif "multipart_parts" in req:
        parts: list[tuple[str, str | None, str | None, bytes]] = []
        for part in req["multipart_parts"]:
            if "filename" in part:
                data = part_payload(fixture, part)
                sent[part["filename"]] = data
                parts.append((part["name"], part["filename"], part["content_type"], data))
            else:
                parts.append((part["name"], None, None, matcher.substitute(part["value"]).encode()))
        content, headers["Content-Type"] = golden.multipart(parts)
    response = client.request(
        req["method"], matcher.substitute(req["path"]), headers=headers, content=content
    )
    return Exchange(fixture, response, sent)


# ---------------------------------------------------------------------------- fixtures


@dataclass
class Replay:
    server: DevserverHandle
    matcher: Matcher
    exchanges: dict[str, Exchange]
    started: datetime


@pytest.fixture(scope="module")
def replay() -> Iterator[Replay]:
    with (
        running_devserver(DevserverConfig()) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as client,
    ):
        started = datetime.now(UTC)
        matcher = Matcher(server.base_url)
        exchanges: dict[str, Exchange] = {}
        for name in SCENARIO:
            exchanges[name] = exchange = send(client, matcher, load(name))
            learn_ids(matcher, exchange)
        yield Replay(server, matcher, exchanges, started)


@pytest.fixture(scope="module")
def production_replay() -> Iterator[Replay]:
    with (
        running_devserver(DevserverConfig(production=True)) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        matcher = Matcher(server.base_url)
        exchanges = {name: send(client, matcher, load(name)) for name in PRODUCTION}
        yield Replay(server, matcher, exchanges, datetime.now(UTC))


def learn_ids(matcher: Matcher, exchange: Exchange) -> None:
    """Unify generated ids right away: later requests refer to them (failures are re-checked later)."""
    body = exchange.fixture.get("body")
    if body is None or exchange.response.status_code != exchange.fixture["_status"]:
        return
    with contextlib.suppress(AssertionError, ValueError):
        matcher.match(body, exchange.response.json())


def check_exchange(matcher: Matcher, exchange: Exchange) -> None:
    fixture, response = exchange.fixture, exchange.response
    assert response.status_code == fixture["_status"], response.text
    recorded_headers = fixture["_response_headers"]
    for key, value in CORS.items():
        assert response.headers.get(key) == value, f"CORS header {key}"
    if "content-type" in recorded_headers:
        assert response.headers.get("content-type") == recorded_headers["content-type"]
    else:
        assert "content-type" not in response.headers
    if "cache-control" in recorded_headers:
        assert response.headers.get("cache-control") == recorded_headers["cache-control"]
    if fixture["_status"] == 204:
        assert response.content == b""
        return
    assert int(response.headers["content-length"]) == len(response.content)
    if fixture.get("body") is not None:
        assert response.content == golden.compact(response.json()), "not compact JSON + one newline"
        matcher.match(fixture["body"], response.json())
        if "_raw" in fixture:
            assert response.text == matcher.substitute(fixture["_raw"])
    elif "body_text" in fixture:
        assert response.text == fixture["body_text"]
        assert response.headers["content-length"] == recorded_headers["content-length"]
    else:
        binary = fixture["_body_binary"]
        if binary["bytes"] == 0:
            assert response.content == b""
            assert response.headers["content-length"] == "0"
        else:
            # the recorded image bytes are not in the fixture: the download must be what we uploaded
            uploaded = {hashlib.sha256(data).hexdigest(): data for data in _all_uploads(matcher)}
            assert hashlib.sha256(response.content).hexdigest() in uploaded


_UPLOADS: dict[int, list[bytes]] = {}


def _all_uploads(matcher: Matcher) -> list[bytes]:
    return _UPLOADS.get(id(matcher), [])


@pytest.mark.parametrize("name", SCENARIO)
def test_http_fixture(replay: Replay, name: str) -> None:
    _UPLOADS[id(replay.matcher)] = [d for ex in replay.exchanges.values() for d in ex.sent_files.values()]
    check_exchange(replay.matcher, replay.exchanges[name])


@pytest.mark.parametrize("name", PRODUCTION)
def test_production_fixture(production_replay: Replay, name: str) -> None:
    check_exchange(production_replay.matcher, production_replay.exchanges[name])


def test_seed_message_times_are_relative_to_start(replay: Replay) -> None:
    body = replay.exchanges["messages_ch_general.json"].response.json()
    ages = {}
    for message in body["messages"]:
        created = datetime.strptime(message["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        ages[message["id"]] = (replay.started - created).total_seconds() / 60
    assert 29 <= ages["msg_seed_01"] <= 31
    assert 23 <= ages["msg_seed_02"] <= 25


def test_attachment_fetch_returns_uploaded_bytes(replay: Replay) -> None:
    sent = replay.exchanges["message_create_attachment_201.json"].sent_files["pic.png"]
    fetched = replay.exchanges["attachment_fetch_200.json"].response
    assert fetched.content == sent
    assert fetched.headers["content-type"] == "image/png"
    avatar = replay.exchanges["avatar_upload_201.json"].sent_files["avatar.png"]
    assert replay.exchanges["avatar_fetch_200.json"].response.content == avatar


# ---------------------------------------------------------------------------- realtime


@pytest.fixture(scope="module")
def realtime_server() -> Iterator[DevserverHandle]:
    with running_devserver(DevserverConfig()) as server:
        yield server


async def recv_json(ws: ClientConnection) -> tuple[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
    assert isinstance(raw, str)
    return raw, json.loads(raw)


def normalise_snapshot(frame: dict[str, Any]) -> dict[str, Any]:
    if frame.get("type") == "chat.presence.snapshot":
        payload = dict(frame["payload"])
        payload["members"] = sorted(payload["members"], key=lambda m: (m["user_uid"], m["device_id"]))
        return {**frame, "payload": payload}
    return frame


@pytest.mark.parametrize("name", REALTIME_ERRORS)
async def test_realtime_error_fixture(realtime_server: DevserverHandle, name: str) -> None:
    fixture = load(name)
    async with connect(realtime_server.ws_url + "/v1/realtime") as ws:
        await ws.send(json.dumps(fixture["client_sent"]))
        raw, frame = await recv_json(ws)
    assert raw == fixture["_raw"]
    assert frame == fixture["body"]


async def test_realtime_frames_log(realtime_server: DevserverHandle) -> None:
    """``realtime_frames.jsonl`` step by step; HTTP steps are re-enacted as the log describes."""
    log = golden.frames("realtime_frames.jsonl")
    base = realtime_server.base_url
    matcher = Matcher(base)
    conns: dict[str, ClientConnection] = {}
    last_line = {entry["conn"]: entry["i"] for entry in log}
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for entry in log:
            conn, direction = entry["conn"], entry["dir"]
            if direction == "event" and entry.get("event") == "connected":
                url = entry["url"].replace("ws://127.0.0.1:18080", realtime_server.ws_url)
                conns[conn] = await connect(url, additional_headers=entry["headers"])
            elif direction == "step":
                await _realtime_step(http, matcher, entry["text"])
            elif direction == "c2s":
                await conns[conn].send(entry["raw"])
            elif direction == "s2c":
                raw, frame = await recv_json(conns[conn])
                assert raw.endswith("\n") and raw.count("\n") == 1
                matcher.match(
                    normalise_snapshot(entry["frame"]), normalise_snapshot(frame), f"line {entry['i']}"
                )
            elif direction == "event" and entry.get("event") == "closed":
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(conns[conn].recv(), RECV_TIMEOUT)
                assert closed.value.rcvd is None, "the server must drop the socket without a close frame"
            if last_line[conn] == entry["i"] and conn in conns and conn != "anon":
                await conns[conn].close()
        for ws in conns.values():
            await ws.close()


async def _realtime_step(http: httpx.AsyncClient, matcher: Matcher, text: str) -> None:
    alice = {"X-OpenChat-User-UID": "uid_alice", "X-OpenChat-Device-ID": "dev_alice_laptop"}
    bob = {"X-OpenChat-User-UID": "uid_bob", "X-OpenChat-Device-ID": "dev_bob_phone"}
    if text.startswith("7)"):
        first = await http.post(
            "/v1/channels/ch_general/messages", json={"body": "realtime hello"}, headers=alice
        )
        assert first.status_code == 201
        matcher.learn("msg_0337f023", first.json()["message"]["id"])
        reply = {"body": "reply via http", "reply_to_message_id": first.json()["message"]["id"]}
        second = await http.post("/v1/channels/ch_general/messages", json=reply, headers=bob)
        assert second.status_code == 201
        matcher.learn("msg_69a3d5f2", second.json()["message"]["id"])
    elif text.startswith("8)"):
        response = await http.post(
            "/v1/channels/ch_design/messages", json={"body": "nobody listens"}, headers=alice
        )
        assert response.status_code == 201
    elif text.startswith("10)"):
        update = {"display_name": "Bobby", "avatar_mode": "generated", "avatar_preset_id": "slate"}
        response = await http.put("/v1/profile/me", json=update, headers=bob)
        assert response.status_code == 200
        assert response.json()["profile_version"] == 2
