"""The state service's HTTP API: bearer tokens per member, media bytes from a real backend, OpenAPI.

The "backend" is a tiny Starlette app on uvicorn (a real socket) serving a PNG; the state app is
mounted exactly as ``services.core.service`` mounts it (health app + ``Service.routes``).
"""

# ruff: noqa: F811  (pytest fixtures imported from test_state_support are parameters here)

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.core.bus import Bus, CommandError
from services.core.contracts.bus import Empty
from services.core.contracts.chat import AttachmentRef, HttpToken, ProfileUpdated, ServerList, UserProfile
from services.core.health import HealthState, health_app
from services.core.procs import free_port
from services.devserver.runner import wait_healthy
from services.state import tokens
from services.state.app import RuntimeRef, StateRuntime
from services.state.http import build_router
from tests.integration.test_state_support import (  # noqa: F401  (fixtures)
    applied,
    bus,
    clock,
    cmd,
    emit,
    join,
    make_state,
    message,
    post,
    redis,
    stream,
)

MakeState = Callable[..., Awaitable[StateRuntime]]
ROOT = str(Path(__file__).resolve().parents[2])


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (3, 2), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


@dataclass
class Backend:
    base_url: str
    hits: list[tuple[str, str]] = field(default_factory=list)  # (path, X-OpenChat-User-UID)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    image = png()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    handle = Backend(f"http://127.0.0.1:{sock.getsockname()[1]}")

    async def files(request: Request) -> Response:
        handle.hits.append((request.url.path, request.headers.get("x-openchat-user-uid", "")))
        name = request.path_params["name"]
        if name == "cat.png":
            return Response(image, media_type="image/png")
        if name == "page.html":
            return Response(b"<script>alert(1)</script>", media_type="text/html")
        if name == "huge.png":
            return Response(b"\0" * 300_000, media_type="image/png")
        return Response(b"", status_code=404)

    app = Starlette(routes=[Route("/files/{name}", files)])
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await asyncio.wait_for(server.ready.wait(), 10)
    yield handle
    server.should_exit = True
    await task
    sock.close()


@pytest.fixture
async def state_http(
    make_state: MakeState, backend: Backend, bus: Bus
) -> AsyncIterator[tuple[StateRuntime, httpx.AsyncClient]]:
    rt = await make_state(state_media_max_bytes=100_000)
    ref = RuntimeRef(rt)
    app = health_app(HealthState("state"))
    app.include_router(build_router(ref))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://state") as client:
        yield rt, client


def attachment(name: str, base: str, size: int = 100) -> AttachmentRef:
    return AttachmentRef(
        attachment_id=f"att-{name}",
        file_name=name,
        content_type="image/png",
        bytes=size,
        url=f"{base}/files/{name}",
    )


async def token(bus: Bus, member: str) -> dict[str, str]:
    result = await bus.request(cmd(member, "http_token"), Empty(), HttpToken)
    assert result.member == member
    return {"Authorization": f"Bearer {result.token}"}


async def test_media_and_state_api_per_member(
    bus: Bus, backend: Backend, state_http: tuple[StateRuntime, httpx.AsyncClient], tmp_path: Path
) -> None:
    rt, client = state_http
    base = backend.base_url
    await join(bus, "alice", "srv_a", base_url=base, uid="uid_alice")
    await join(bus, "bob", "srv_b", base_url=base, uid="uid_bob")
    await join(bus, "bob", "srv_a", base_url=base, uid="uid_bob2")  # same server id, bob's own view
    files = [attachment(n, base) for n in ("cat.png", "page.html", "huge.png", "gone.png")]
    await post(bus, "alice", message("m1", attachments=files))
    await post(bus, "alice", message("m-evil", attachments=[attachment("x.png", "http://127.0.0.1:1")]))
    ack = await emit(
        bus,
        "alice",
        "srv_a",
        "profile.updated",
        ProfileUpdated(
            profile=UserProfile(user_uid="uid_carol", display_name="C", avatar_url=f"{base}/files/cat.png")
        ),
    )
    await applied(rt, ack.seq)
    url = "/media/v1/attachments/srv_a/general/m1/att-cat.png"

    # no token, a forged one, an expired one: 401
    assert (await client.get(url)).status_code == 401
    assert (await client.get("/api/v1/servers")).status_code == 401
    alice = await token(bus, "alice")
    forged = alice["Authorization"].replace("alice", "bob")
    assert (await client.get(url, headers={"Authorization": forged})).status_code == 401
    old, _ = tokens.issue(rt.secret, "alice", time.time() - 3600, 60)
    assert (await client.get(url, headers={"Authorization": f"Bearer {old}"})).status_code == 401
    other_key, _ = tokens.issue(b"y" * 32, "alice", time.time(), 60)
    assert (await client.get(url, headers={"Authorization": f"Bearer {other_key}"})).status_code == 401

    # alice gets her attachment, fetched once with her identity headers, then from the cache
    first = await client.get(url, headers=alice)
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/png" and first.content == png()
    assert first.headers["x-content-type-options"] == "nosniff"
    again = await client.get(url, headers=alice)
    assert again.content == png()
    assert backend.hits == [("/files/cat.png", "uid_alice")]
    assert list((tmp_path / "home" / "cache" / "media").glob("*.bin"))

    # bob: not in his view (other server, and his own srv_a has no such message) -> 404
    bob = await token(bus, "bob")
    assert (await client.get(url, headers=bob)).status_code == 404
    assert (
        await client.get("/media/v1/attachments/srv_b/general/m1/att-cat.png", headers=bob)
    ).status_code == 404
    assert (await client.get("/api/v1/servers/srv_a/channels/general/messages", headers=bob)).json()[
        "messages"
    ] == []
    assert len(backend.hits) == 1

    # unsafe content is served as opaque bytes; oversized, missing, off-origin are refused
    html = await client.get("/media/v1/attachments/srv_a/general/m1/att-page.html", headers=alice)
    assert html.status_code == 200 and html.headers["content-type"] == "application/octet-stream"
    assert html.headers["content-disposition"] == "attachment"
    assert (
        await client.get("/media/v1/attachments/srv_a/general/m1/att-huge.png", headers=alice)
    ).status_code == 502
    assert (
        await client.get("/media/v1/attachments/srv_a/general/m1/att-gone.png", headers=alice)
    ).status_code == 502
    assert (
        await client.get("/media/v1/attachments/srv_a/general/m1/att-nope", headers=alice)
    ).status_code == 404
    off = await client.get("/media/v1/attachments/srv_a/general/m-evil/att-x.png", headers=alice)
    assert off.status_code == 404

    # avatars of profiles in the view
    avatar = await client.get("/media/v1/avatars/srv_a/uid_carol", headers=alice)
    assert avatar.status_code == 200 and avatar.content == png()
    assert (await client.get("/media/v1/avatars/srv_a/uid_carol", headers=bob)).status_code == 404

    # the read-only state API
    servers = (await client.get("/api/v1/servers", headers=alice)).json()
    assert [s["server"]["server_id"] for s in servers["servers"]] == ["srv_a"]
    assert servers["seq"] == ack.seq
    msgs = (await client.get("/api/v1/servers/srv_a/channels/general/messages?limit=1", headers=alice)).json()
    # Same created_at: ordered by arrival, so the newest is the one posted last.
    assert [m["id"] for m in msgs["messages"]] == ["m-evil"]
    assert msgs["has_more"] is True
    assert (await client.get("/api/v1/servers/srv_b/channels", headers=alice)).status_code == 404
    assert (await client.get("/api/v1/servers/srv_a/channels", headers=alice)).json() == []


async def test_openapi_documents_the_state_api(state_http: tuple[StateRuntime, httpx.AsyncClient]) -> None:
    _, client = state_http
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/api/v1/servers",
        "/api/v1/servers/{server_id}/channels",
        "/api/v1/servers/{server_id}/channels/{channel_id}/messages",
        "/media/v1/attachments/{server_id}/{channel_id}/{message_id}/{attachment_id}",
        "/media/v1/avatars/{server_id}/{user_uid}",
        "/healthz",
    ):
        assert path in paths, path
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert "ServerList" in schema["components"]["schemas"]


async def test_the_service_process_serves_bus_and_http(
    bus: Bus, stream: str, redis_url: str, tmp_path: Path
) -> None:
    """``python -m services.state`` wired as the supervisor runs it: commands, HTTP routes, SIGTERM."""
    port = free_port()
    env = {
        **os.environ,
        "OPENCHAT_NATS_URL": bus.nc.connected_url.geturl() if bus.nc.connected_url else "",
        "OPENCHAT_REDIS_URL": redis_url,
        "OPENCHAT_HOME": str(tmp_path / "home"),
        "OPENCHAT_EVENTS_STREAM": stream,
        "OPENCHAT_EVENTS_DUPLICATE_WINDOW_S": "60",
        "OPENCHAT_HTTP_PORT": str(port),
    }
    for var in ("OPENCHAT_SERVICE_PASSWORD", "OPENCHAT_STATE_HTTP_SECRET"):
        env.pop(var, None)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.state", env=env, cwd=ROOT)
    try:
        await asyncio.to_thread(wait_healthy, f"http://127.0.0.1:{port}", 20.0, None)
        ack = await join(bus, "alice", "srv_a")
        result = None
        for _ in range(100):  # the service is healthy; its materializer may still be catching up
            try:
                servers = await bus.request(cmd("alice", "servers"), Empty(), ServerList)
            except CommandError as exc:  # e.g. state_rebuilding right after start: retryable
                assert exc.retryable, exc
                await asyncio.sleep(0.05)
                continue
            if servers.seq >= ack.seq:
                result = servers
                break
            await asyncio.sleep(0.05)
        assert result is not None and [s.server.server_id for s in result.servers] == ["srv_a"]
        headers = await token(bus, "alice")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/api/v1/servers")).status_code == 401
            listed = (await client.get("/api/v1/servers", headers=headers)).json()
            assert [s["server"]["server_id"] for s in listed["servers"]] == ["srv_a"]
            assert "/api/v1/servers" in (await client.get("/openapi.json")).json()["paths"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
