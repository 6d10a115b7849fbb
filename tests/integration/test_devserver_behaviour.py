"""Devserver behaviour beyond the golden fixtures: bad input never crashes it, realtime queue and
keep-alive rules, state-file persistence, two instances side by side, the admin surface and the
command line.  Real servers only (uvicorn in-process or ``python -m services.devserver``)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from services.core.contracts.wire import Capabilities, ChannelList, MessageList, Profile, ServerDirectory
from services.devserver.config import DevserverConfig
from services.devserver.runner import (
    DevserverHandle,
    bind_free_socket,
    demo_devserver_args,
    start_devserver_process,
    wait_healthy,
)
from tests.conformance.golden import multipart, png
from tests.integration.conftest_devserver import ALICE, BOB, RealtimeClient, aclient, client, serve


@pytest.fixture(scope="module")
def server() -> Iterator[DevserverHandle]:
    with serve(admin=True) as srv:
        yield srv


# ---------------------------------------------------------------------------- bad input


BAD_REQUESTS: list[tuple[str, str, dict[str, str], bytes, int, str]] = [
    (
        "POST",
        "/v1/channels/ch_general/messages",
        {"Content-Type": "application/json"},
        b"",
        400,
        "invalid_payload",
    ),
    ("POST", "/v1/channels/ch_general/messages", {}, b"[1,2]", 400, "invalid_payload"),
    ("POST", "/v1/channels/ch_general/messages", {}, b'{"body": ["x"]}', 400, "invalid_payload"),
    (
        "POST",
        "/v1/channels/ch_general/messages",
        {},
        b'{"body": "x", "reply_to_message_id": 7}',
        400,
        "invalid_payload",
    ),
    ("POST", "/v1/channels/ch_general/messages", {}, b"\xff\xfe{{{", 400, "invalid_payload"),
    ("POST", "/v1/channels/ch_general/messages", {}, b"[" * 100000, 400, "invalid_payload"),
    ("POST", "/v1/channels/ch_general/messages", {}, b'{"body": NaN}', 400, "invalid_payload"),
    ("POST", "/v1/channels/ch_general/messages", {}, b"null", 400, "message_empty"),
    (
        "POST",
        "/v1/channels/ch_general/messages",
        {"Content-Type": "multipart/form-data"},
        b"x",
        400,
        "invalid_payload",
    ),
    (
        "POST",
        "/v1/channels/ch_general/messages",
        {"Content-Type": "multipart/form-data; boundary=b"},
        b"--b\r\nbroken",
        400,
        "invalid_payload",
    ),
    ("POST", "/v1/channels/nope/messages", {}, b'{"body": "x"}', 400, "message_create_failed"),
    ("GET", "/v1/channels/%00weird/messages", {}, b"", 404, "channel_not_found"),
    ("PUT", "/v1/profile/me", {}, b'{"display_name": 5}', 400, "invalid_payload"),
    (
        "PUT",
        "/v1/profile/me",
        {"If-Match": "99999999999999999999999"},
        b'{"display_name":"Al","avatar_mode":"generated"}',
        400,
        "invalid_if_match",
    ),
    ("PUT", "/v1/profile/me", {"If-Match": "0"}, b'{"display_name":"Al"}', 400, "invalid_if_match"),
    (
        "PUT",
        "/v1/profile/me",
        {},
        b'{"display_name":"' + b"x" * 33 + b'","avatar_mode":"generated"}',
        400,
        "display_name_invalid",
    ),
    (
        "POST",
        "/v1/profile/avatar",
        {"Content-Type": "multipart/form-data; boundary=zz"},
        b"garbage",
        413,
        "avatar_too_large",
    ),
    ("GET", "/v1/profile/avatar/" + "a" * 5000, {}, b"", 404, "avatar_asset_not_found"),
    ("DELETE", "/v1/servers/%F0%9F%98%80/membership", {}, b"", 404, "server_not_found"),
    ("GET", "/v1/servers/srv_nope/channels", {}, b"", 404, "server_not_found"),
    ("GET", "/v1/servers/srv_nope/members", {}, b"", 404, "server_not_found"),
    ("GET", "/v1/channels/ch_general/attachments/att_nope", {}, b"", 404, "attachment_not_found"),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "code"), BAD_REQUESTS)
def test_bad_input_gets_the_backend_answer(
    server: DevserverHandle,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
) -> None:
    with client(server) as http:
        response = http.request(method, path, headers={**ALICE, **headers}, content=body)
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
        assert http.get("/healthz").json() == {"status": "ok"}


def test_case_insensitive_keys_and_first_value_only(server: DevserverHandle) -> None:
    with client(server) as http:
        response = http.post(
            "/v1/channels/ch_outage/messages", content=b'{"BODY": " hi "} trailing junk', headers=ALICE
        )
        assert response.status_code == 201
        assert response.json()["message"]["body"] == "hi"
        escaped = http.post("/v1/channels/ch_outage/messages", json={"body": "a<b & c>d"}, headers=ALICE)
        assert b"a\\u003cb \\u0026 c\\u003ed" in escaped.content


def test_limit_parsing_and_huge_body(server: DevserverHandle) -> None:
    with client(server) as http:
        big = "x" * 100_000
        assert (
            http.post("/v1/channels/ch_outage/messages", json={"body": big}, headers=ALICE).status_code == 201
        )
        for raw, expected in (
            ("abc", None),
            ("-3", None),
            ("0", None),
            ("1", 1),
            ("+1", 1),
            ("1000000", None),
        ):
            page = MessageList.model_validate(
                http.get("/v1/channels/ch_outage/messages", params={"limit": raw}).json()
            )
            if expected is not None:
                assert len(page.messages) == expected
            else:
                assert page.messages[-1].body == big


def test_attachment_rules(server: DevserverHandle) -> None:
    with client(server) as http:
        image = png(3, 2)
        body, ctype = multipart(
            [("files", "dir/a b.png", "IMAGE/PNG; x=1", image), ("files", "q.png", "", image)]
        )
        response = http.post(
            "/v1/channels/ch_outage/messages?body=from+query",
            content=body,
            headers={**ALICE, "Content-Type": ctype},
        )
        assert response.status_code == 201, response.text
        message = response.json()["message"]
        assert message["body"] == "from query"
        assert [
            (a["file_name"], a["content_type"], a["width"], a["height"]) for a in message["attachments"]
        ] == [
            ("a b.png", "image/png", 3, 2),
            ("q.png", "image/png", 3, 2),
        ]
        just_under = png() + b"\x00" * (50 * 1024 * 1024 - 1 - len(png()))
        body, ctype = multipart([("files", "big.png", "image/png", just_under)])
        assert (
            http.post(
                "/v1/channels/ch_outage/messages", content=body, headers={"Content-Type": ctype}
            ).status_code
            == 201
        )
        body, ctype = multipart([("files", "x.png", "image/png", png()), ("body", None, None, b"x")])
        voice = http.post("/v1/channels/vc_general/messages", content=body, headers={"Content-Type": ctype})
        assert voice.json()["code"] == "message_create_failed"


async def test_malformed_frames_drop_the_socket(server: DevserverHandle) -> None:
    for bad in ("not json", '{"type": 5}', "[1]", '"x"', "", '{"request_id": {"a": 1}}'):
        rt = await RealtimeClient.open(server)
        await rt.send(bad)
        with pytest.raises(ConnectionClosed) as closed:
            await rt.recv()
        assert closed.value.rcvd is None, bad
    rt = await RealtimeClient.open(server)
    try:
        await rt.send('{"type": "chat.subscribe", "payload": "not an object"}')
        assert (await rt.recv())["payload"]["code"] == "chat_channel_required"
        await rt.send("null")
        assert (await rt.recv())["payload"]["code"] == "chat_unknown_event"
        await rt.send(json.dumps({"type": "chat.typing.update", "payload": {"channel_id": 5}}))
        assert (await rt.recv())["payload"]["code"] == "chat_channel_required"
    finally:
        await rt.close()


async def test_presence_identity_and_close(server: DevserverHandle) -> None:
    a = await RealtimeClient.open(
        server, query="user_uid=uid_q&device_id=dq", headers={"X-OpenChat-User-UID": "uid_h"}
    )
    b = await RealtimeClient.open(server, query="user_uid=uid_q2&device_id=dq2")
    try:
        _, snap = await a.subscribe("room_x")
        me = snap["payload"]["members"][0]
        assert (me["user_uid"], me["device_id"]) == ("uid_h", "dq")
        _, snap_b = await b.subscribe("room_x")
        assert len(snap_b["payload"]["members"]) == 2
        joined = await a.recv_type("chat.presence.joined")
        assert joined["payload"]["member"]["user_uid"] == "uid_q2"
        await b.close()
        left = await a.recv_type("chat.presence.left")
        assert left["payload"]["member"]["client_id"] == joined["payload"]["member"]["client_id"]
    finally:
        await a.close()


async def test_outbound_queue_drops_silently() -> None:
    with serve(admin=True, realtime_queue_size=4) as srv:
        rt = await RealtimeClient.open(srv, headers=ALICE)
        try:
            await rt.subscribe("ch_outage")
            async with aclient(srv) as http:
                # the reader is not reading: a burst of 50 events overflows the 4-slot queue
                burst = await http.post("/_admin/burst", json={"channel_id": "ch_outage", "count": 50})
                assert burst.json()["count"] == 50
                received = []
                while True:
                    try:
                        frame = await rt.recv(timeout=0.5)
                    except TimeoutError:
                        break
                    received.append(frame)
                assert 1 <= len(received) < 50
                pong = await rt.ping()  # the socket is still healthy
                assert pong["type"] == "chat.pong"
        finally:
            await rt.close()


async def test_keepalive_pings_and_idle_drop() -> None:
    with serve(realtime_ping_interval_s=0.2, realtime_idle_timeout_s=0.6) as srv:
        # a client that answers pings stays connected past the idle timeout
        alive = await RealtimeClient.open(srv)
        started = time.monotonic()
        while time.monotonic() - started < 1.2:
            assert (await alive.ping())["type"] == "chat.pong"
            await asyncio.sleep(0.1)
        await alive.close()
        # a raw client that completes the handshake, then never answers: pinged, then dropped
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.cfg.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /v1/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        received = b""
        started = time.monotonic()
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), 5)
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - started
        writer.close()
        frames = received.split(b"\r\n\r\n", 1)[1]
        assert received.startswith(b"HTTP/1.1 101")
        # only ping control frames ("ping" payload, like gorilla), then a TCP drop without a close frame
        assert frames and frames == b"\x89\x04ping" * (len(frames) // 6)
        assert 0.5 <= elapsed < 3


# ---------------------------------------------------------------------------- state, instances


def test_state_file_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    cfg = DevserverConfig(state_file=state)
    with serve(cfg) as srv, client(srv) as http:
        image = png(4, 4)
        body, ctype = multipart([("files", "p.png", "image/png", image), ("body", None, None, b"persist me")])
        posted = http.post(
            "/v1/channels/ch_general/messages", content=body, headers={**ALICE, "Content-Type": ctype}
        )
        message = posted.json()["message"]
        http.put(
            "/v1/profile/me",
            json={"display_name": "Alice P", "avatar_mode": "generated", "avatar_preset_id": "mint"},
            headers=ALICE,
        )
        http.delete("/v1/servers/srv_testlab/membership", headers=ALICE)
    assert state.exists()
    with serve(cfg) as srv, client(srv) as http:
        history = http.get("/v1/channels/ch_general/messages").json()["messages"]
        assert history[-1] == message  # same id, body, time and attachment (URL as stored at creation)
        fetched = http.get(
            f"/v1/channels/ch_general/attachments/{message['attachments'][0]['attachment_id']}"
        )
        assert fetched.content == image
        profile = Profile.model_validate(http.get("/v1/profile/me", headers=ALICE).json())
        assert (profile.display_name, profile.profile_version) == ("Alice P", 2)
        servers = ServerDirectory.model_validate(http.get("/v1/servers", headers=ALICE).json())
        assert [s.server_id for s in servers.servers] == ["srv_harbor"]


def test_two_instances_reuse_channel_ids() -> None:
    with (
        serve(seed="family") as family,
        serve(seed="harbor", name="Harbor Guild") as harbor,
        client(family) as fam,
        client(harbor) as har,
    ):
        assert (
            fam.post(
                "/v1/channels/ch_general/messages", json={"body": "family only"}, headers=ALICE
            ).status_code
            == 201
        )
        fam_caps = Capabilities.model_validate(fam.get("/v1/client/capabilities").json())
        har_caps = Capabilities.model_validate(har.get("/v1/client/capabilities").json())
        assert (fam_caps.server_id, fam_caps.server_name) == ("srv_family", "Family")
        assert har_caps.server_id == "srv_harbor"
        fam_groups = ChannelList.model_validate(fam.get("/v1/servers/srv_family/channels").json())
        assert "ch_general" in [c.id for g in fam_groups.groups for c in g.channels]
        assert any(c.type == "voice" for g in fam_groups.groups for c in g.channels)
        har_bodies = [m["body"] for m in har.get("/v1/channels/ch_general/messages").json()["messages"]]
        assert "family only" not in har_bodies and "Welcome to OpenChat Harbor." in har_bodies
        assert har.get("/v1/servers/srv_family/channels").status_code == 404


def test_seed_overrides() -> None:
    with serve(seed="empty", server_id="srv_x", name="Sandbox Room") as srv, client(srv) as http:
        servers = http.get("/v1/servers").json()["servers"]
        assert [(s["server_id"], s["display_name"], s["icon_text"]) for s in servers] == [
            ("srv_x", "Sandbox Room", "SR")
        ]
        assert http.get("/v1/channels/ch_general/messages").json()["messages"] == []
        assert http.get("/v1/client/capabilities").json()["server_name"] == "Sandbox Room"


# ---------------------------------------------------------------------------- admin


async def test_admin_routes(server: DevserverHandle) -> None:
    async with aclient(server) as http:
        rt = await RealtimeClient.open(server, headers=BOB)
        await rt.subscribe("tl_ch_qa")
        posted = await http.post(
            "/_admin/messages", json={"channel_id": "tl_ch_qa", "user_uid": "uid_ghost", "body": "boo"}
        )
        assert posted.status_code == 201 and posted.json()["message"]["author_uid"] == "uid_ghost"
        assert (await rt.recv_type("chat.message.created"))["payload"]["message"]["body"] == "boo"
        burst = (await http.post("/_admin/burst", json={"channel_id": "tl_ch_qa", "count": 20})).json()
        assert burst["count"] == 20 and burst["elapsed_ms"] >= 0
        state = (await http.get("/_admin/state")).json()
        assert state["realtime_clients"] >= 1 and state["rooms"]["tl_ch_qa"] == 1
        await rt.ping()
        inject = await http.post(
            "/_admin/realtime/inject", json={"kind": "invalid_json", "user_uid": "uid_bob"}
        )
        assert inject.json() == {"sockets": 1}
        raw = await asyncio.wait_for(rt.ws.recv(), 5)
        while isinstance(raw, str) and raw.startswith("{"):
            raw = await asyncio.wait_for(rt.ws.recv(), 5)
        assert raw == "this is not json\n"
        oversized = await http.post(
            "/_admin/realtime/inject", json={"kind": "oversized", "size": 300000, "user_uid": "uid_bob"}
        )
        assert oversized.json() == {"sockets": 1}
        noise = await rt.recv_type("chat.noise")
        assert len(noise["payload"]["pad"]) == 300000
        dropped = (await http.post("/_admin/realtime/drop")).json()
        assert dropped["dropped"] >= 1
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await rt.recv()
        assert closed.value.rcvd is None
        assert (await http.put("/_admin/delay", json={"ms": 300})).json() == {"delay_ms": 300}
        started = time.monotonic()
        assert (await http.get("/healthz")).status_code == 200
        assert time.monotonic() - started >= 0.3
        await http.put("/_admin/delay", json={"ms": 0})
        assert (await http.post("/_admin/reset")).json() == {"reset": True}
        history = (await http.get("/v1/channels/tl_ch_qa/messages")).json()["messages"]
        assert [m["id"] for m in history] == ["msg_tl_11"]


def test_admin_absent_without_flag() -> None:
    with serve() as srv, client(srv) as http:
        assert http.post("/_admin/reset").status_code == 404


# ---------------------------------------------------------------------------- command line


def test_cli_process_env_and_flags(tmp_path: Path) -> None:
    sock = bind_free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {
        "OPENCHAT_ENV": "production",
        "OPENCHAT_PUBLIC_BASE_URL": "https://chat.example.test",
        "OPENCHAT_HTTP_ADDR": f"127.0.0.1:{port}",
    }
    proc = start_devserver_process(
        ["--feature", "read_acks", "--features", "cursors"], env=env, log_path=tmp_path / "dev.log"
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=20, proc=proc)
        caps = httpx.get(f"http://127.0.0.1:{port}/v1/client/capabilities").json()
        assert caps["security"]["https_required"] is True
        assert caps["rtc"]["signaling_url"] == "wss://chat.example.test/v1/rtc/signaling"
        assert caps["features"]["read_acks"] is True and caps["features"]["cursors"] is True
        assert httpx.get(f"http://127.0.0.1:{port}/v1/profile/me").status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a graceful stop


def test_demo_args_and_bad_flags() -> None:
    family, harbor = demo_devserver_args(9101, 9102)
    assert family[family.index("--seed") + 1] == "family" and harbor[harbor.index("--seed") + 1] == "harbor"
    proc = start_devserver_process(["--feature", "nope"])
    assert proc.wait(timeout=20) != 0
    with pytest.raises(ValueError, match="unknown devserver feature"):
        replace(DevserverConfig(), features=frozenset({"nope"}))
