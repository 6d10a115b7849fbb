"""Link previews end to end (features 5.9, 14.5, D17, P6): a real nats-server, real devservers,
a real HTTP server for the pages (``ThreadingHTTPServer`` on 127.0.0.1, which is why the tests set
``OPENCHAT_PREVIEW_ALLOW_PRIVATE=true``), the real connector and the real state service on Redis.

Where a test asserts that nothing happened, it waits for every preview fetch to settle and then
for a later ``message.created`` (events reach the member in stream order), never for a time."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from services.connector.previews import PreviewFetcher
from services.core.bus import Bus, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.chat import (
    JoinArgs,
    JoinResult,
    PreviewsArgs,
    PreviewsResult,
    Snapshot,
    SnapshotArgs,
    ViewHistoryArgs,
    ViewHistoryResult,
)
from services.core.settings import Settings
from services.devserver.runner import DevserverHandle, arunning_devserver
from services.state.app import StateRuntime
from services.state.settings import StateSettings
from tests.connector_harness import EventLog, Harness, connector_harness

HELLO = """<!doctype html><html><head><title>ignored title</title>
<meta property="og:title" content="Hello">
<meta property="og:site_name" content="Local pages">
<meta property="og:description" content="A page   on the
test server">
<meta property="og:image" content="img/hello.png">
</head><body>hi</body></html>"""


HUGE_BYTES = 40 * 1024 * 1024


@dataclass
class Pages:
    """A real HTTP server serving the test pages; records every request (path, Accept)."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    huge_written: int = -1  # bytes of /huge the client took before it hung up
    huge_done: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _ in self.requests if p == path)

    def respond(self, path: str) -> tuple[int, dict[str, str], bytes]:
        route = path.split("?", 1)[0]
        if route == "/moved":
            return 302, {"Location": "/final/page"}, b""
        if route.startswith("/loop"):
            return 302, {"Location": f"/loop{len(route)}"}, b""
        if route == "/file.bin":
            return 200, {"Content-Type": "application/octet-stream"}, b"\x00" * 1000
        if route == "/final/page":
            return 200, {"Content-Type": "text/html; charset=utf-8"}, HELLO.replace("Hello", "Final").encode()
        if route == "/missing":
            return 404, {"Content-Type": "text/html"}, b"<title>nope</title>"
        title = route.strip("/") or "root"
        body = HELLO.replace("Hello", f"Title of {title}") if route != "/hello" else HELLO
        return 200, {"Content-Type": "text/html; charset=utf-8"}, body.encode()


@pytest.fixture
def pages() -> Iterator[Pages]:
    state = Pages()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.requests.append((self.path.split("?", 1)[0], self.headers.get("Accept", "")))
            if self.path == "/huge":
                self.huge()
                return
            status, headers, body = state.respond(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def huge(self) -> None:
            """40 MB of HTML: the fetcher must stop reading after 512,000 characters."""
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(HUGE_BYTES))
            self.end_headers()
            head = b'<html><head><meta property="og:title" content="Huge">'
            chunk = b"x" * 65536
            written = 0
            try:
                self.wfile.write(head)
                written = len(head)
                while written < HUGE_BYTES:
                    part = chunk[: HUGE_BYTES - written]
                    self.wfile.write(part)
                    written += len(part)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                state.huge_written = written
                state.huge_done.set()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="pages", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def allow_private(monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setenv("OPENCHAT_PREVIEW_ALLOW_PRIVATE", "true")
    return Settings().preview_allow_private


@pytest.fixture
def stream() -> str:
    return f"OC_PV_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def harness(nats_url: str, tmp_path: Path, allow_private: bool, stream: str) -> AsyncIterator[Harness]:
    fetcher = PreviewFetcher(allow_private=allow_private)
    async with connector_harness(nats_url, tmp_path, stream=stream, previews=fetcher) as h:
        yield h


async def admin_post(srv: DevserverHandle, channel_id: str, body: str, uid: str = "uid_lyra") -> str:
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        response = await client.post(
            "/_admin/messages", json={"channel_id": channel_id, "user_uid": uid, "body": body}
        )
        response.raise_for_status()
        return str(response.json()["message"]["id"])


async def join_live(h: Harness, member: str, srv: DevserverHandle, server_id: str) -> EventLog:
    events = await h.events(member)
    await h.call(member, "join", JoinArgs(url=srv.base_url, server_id=server_id, confirmed=True), JoinResult)
    await events.wait_for(lambda ev: events.last_connection(server_id) == "live")
    return events


def previews_of(events: EventLog, message_id: str) -> list[dict[str, Any]]:
    return [e for e in events.of("message.previews") if e["payload"]["message_id"] == message_id]


async def wait_previews(events: EventLog, message_id: str) -> dict[str, Any]:
    return await events.wait_for(lambda ev: next(iter(previews_of(events, message_id)), None))


async def nothing_more(
    h: Harness, srv: DevserverHandle, events: EventLog, server_id: str, channel_id: str
) -> None:
    """Every preview fetch has ended and a later message has reached the member: any
    ``message.previews`` of an earlier message would have arrived before it."""
    await h.connector.previews_settled()
    marker = await admin_post(srv, channel_id, "marker without links")
    await events.wait_for(lambda ev: marker in events.message_ids(server_id, channel_id))


# -- the fetcher on its own ----------------------------------------------------------------------
async def test_fetcher_redirects_types_bounds_dedup_and_ssrf(pages: Pages) -> None:
    fetcher = PreviewFetcher(allow_private=True)
    try:
        card = await fetcher.preview(pages.url("/moved"))
        assert card is not None and card.title == "Final" and card.url == pages.url("/moved")
        assert card.image_url == pages.url("/final/img/hello.png")  # against the final page
        assert card.description == "A page on the test server"
        assert pages.requests[:2] == [("/moved", "text/html"), ("/final/page", "text/html")]
        assert await fetcher.preview(pages.url("/file.bin")) is None  # not HTML
        assert await fetcher.preview(pages.url("/missing")) is None
        assert await fetcher.preview(pages.url("/loop")) is None
        assert sum(1 for p, _ in pages.requests if p.startswith("/loop")) == 6  # 1 + 5 redirects
        # in-flight de-duplication: the same URL at once -> one request; then the cache answers
        first, second = await asyncio.gather(
            fetcher.preview(pages.url("/twice")), fetcher.preview(pages.url("/twice"))
        )
        assert first == second and first is not None and first.title == "Title of twice"
        assert await fetcher.preview(pages.url("/twice")) == first
        assert await fetcher.preview(pages.url("/file.bin")) is None  # a cached failure
        assert pages.count("/twice") == 1 and pages.count("/file.bin") == 1
        huge = await fetcher.preview(pages.url("/huge"))
        assert huge is not None and huge.title == "Huge"
        assert await asyncio.to_thread(pages.huge_done.wait, 10)
        assert pages.huge_written < HUGE_BYTES  # reading stopped early: the rest was never taken
    finally:
        await fetcher.close()
    guarded = PreviewFetcher(allow_private=False)  # the default: the household network is off limits
    try:
        before = len(pages.requests)
        assert await guarded.preview(pages.url("/hello")) is None
        assert await guarded.preview(f"http://localhost:{pages.port}/hello") is None
        assert len(pages.requests) == before  # refused before any request
    finally:
        await guarded.close()


# -- through the connector and the state service -------------------------------------------------
async def test_live_message_gets_previews_and_the_state_view_keeps_them(
    harness: Harness,
    harbor: DevserverHandle,
    pages: Pages,
    nats_url: str,
    redis_url: str,
    stream: str,
    tmp_path: Path,
) -> None:
    events = await join_live(harness, "alice", harbor, "srv_harbor")
    mid = await admin_post(harbor, "ch_general", f"look at {pages.url('/hello')}. nice!")
    created = await events.wait_for(
        lambda ev: next(
            (e for e in events.of("message.created") if e["payload"]["message"]["id"] == mid), None
        )
    )
    assert created["payload"]["message"]["link_previews"] == []  # message.created never waits
    event = await wait_previews(events, mid)
    assert event["event_id"] == f"previews:{mid}"
    assert event["channel_id"] == "ch_general" and event["server_id"] == "srv_harbor"
    assert event["_seq"] > created["_seq"]
    assert event["payload"]["previews"] == [
        {
            "url": pages.url("/hello"),
            "site_name": "Local pages",
            "title": "Hello",
            "description": "A page on the test server",
            "image_url": pages.url("/img/hello.png"),
        }
    ]

    state_bus = await Bus.connect(ConnectOptions(url=nats_url, name="state-previews"), first_attempts=3)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=False)
    settings = StateSettings(home=tmp_path / "state", events_stream=stream, message_window=200)
    rt = StateRuntime(state_bus, redis, settings)
    try:
        await rt.start()
        await rt.materializer.wait_for(lambda m: m.applied_seq >= event["_seq"])
        history = await harness.member_bus.request(
            subjects.command("alice", "state", "history"),
            ViewHistoryArgs(server_id="srv_harbor", channel_id="ch_general"),
            ViewHistoryResult,
        )
        stored = next(m for m in history.messages if m.id == mid)
        assert [p.title for p in stored.link_previews] == ["Hello"]
        assert all(not m.link_previews for m in history.messages if m.id != mid)
        snap = await harness.member_bus.request(
            subjects.command("alice", "state", "snapshot"), SnapshotArgs(server_id="srv_harbor"), Snapshot
        )
        in_snap = next(m for m in snap.servers[0].messages["ch_general"] if m.id == mid)
        assert in_snap.link_previews == stored.link_previews
    finally:
        await rt.stop()
        await redis.aclose()
        await state_bus.close()


async def test_the_same_url_in_two_messages_is_fetched_once(
    harness: Harness, harbor: DevserverHandle, pages: Pages
) -> None:
    events = await join_live(harness, "alice", harbor, "srv_harbor")
    url = pages.url("/shared")
    first, second = await asyncio.gather(
        admin_post(harbor, "ch_general", f"one {url}"), admin_post(harbor, "ch_general", f"two <{url}>")
    )
    a, b = await wait_previews(events, first), await wait_previews(events, second)
    assert a["payload"]["previews"] == b["payload"]["previews"]
    third = await admin_post(harbor, "ch_general", f"[again]({url}) and {url}")
    c = await wait_previews(events, third)
    assert [p["title"] for p in c["payload"]["previews"]] == ["Title of shared"]
    assert pages.count("/shared") == 1


async def test_a_non_html_url_gets_no_preview(
    harness: Harness, harbor: DevserverHandle, pages: Pages
) -> None:
    events = await join_live(harness, "alice", harbor, "srv_harbor")
    binary = await admin_post(harbor, "ch_general", f"download {pages.url('/file.bin')}")
    mixed = await admin_post(harbor, "ch_general", f"{pages.url('/file.bin')} and {pages.url('/mixed')}")
    event = await wait_previews(events, mixed)
    assert [p["title"] for p in event["payload"]["previews"]] == ["Title of mixed"]
    await nothing_more(harness, harbor, events, "srv_harbor", "ch_general")
    assert previews_of(events, binary) == []
    assert pages.count("/file.bin") == 1  # fetched once, refused, the failure cached


async def test_an_unverified_server_gets_no_fetch(harness: Harness, pages: Pages) -> None:
    async with arunning_devserver(seed="harbor", admin=True, features=frozenset({"server_creation"})) as srv:
        async with httpx.AsyncClient(base_url=srv.base_url) as client:
            made = await client.post(
                "/v1/servers", json={"display_name": "Fresh", "description": "", "banner_preset": "ocean"}
            )
            made.raise_for_status()
            server_id = str(made.json()["server"]["server_id"])
            assert made.json()["server"]["trust_state"] == "unverified"
            tree = (await client.get(f"/v1/servers/{server_id}/channels")).json()
        channel_id = next(c["id"] for g in tree["groups"] for c in g["channels"] if c["type"] == "text")
        events = await join_live(harness, "alice", srv, server_id)
        record = harness.connector.sessions[("alice", server_id)].record
        assert record.trust_state == "unverified"
        mid = await admin_post(srv, channel_id, f"look {pages.url('/unverified')}")
        await events.wait_for(lambda ev: mid in events.message_ids(server_id, channel_id))
        await nothing_more(harness, srv, events, server_id, channel_id)
        assert previews_of(events, mid) == [] and events.of("message.previews") == []
        assert pages.count("/unverified") == 0


async def test_the_member_switch_turns_previews_off_and_on(
    harness: Harness, harbor: DevserverHandle, pages: Pages
) -> None:
    assert (await harness.call("alice", "previews", PreviewsArgs(), PreviewsResult)).enabled is True
    off = await harness.call("alice", "previews", PreviewsArgs(enabled=False), PreviewsResult)
    assert off.enabled is False
    assert (await harness.call("alice", "previews", PreviewsArgs(), PreviewsResult)).enabled is False
    assert (await harness.call("bob", "previews", PreviewsArgs(), PreviewsResult)).enabled is True
    events = await join_live(harness, "alice", harbor, "srv_harbor")
    mid = await admin_post(harbor, "ch_general", f"look {pages.url('/off')}")
    await events.wait_for(lambda ev: mid in events.message_ids("srv_harbor", "ch_general"))
    await nothing_more(harness, harbor, events, "srv_harbor", "ch_general")
    assert events.of("message.previews") == [] and pages.count("/off") == 0
    on = await harness.call("alice", "previews", PreviewsArgs(enabled=True), PreviewsResult)
    assert on.enabled is True
    again = await admin_post(harbor, "ch_general", f"look {pages.url('/on')}")
    event = await wait_previews(events, again)
    assert [p["title"] for p in event["payload"]["previews"]] == ["Title of on"]


async def test_gap_filled_recent_messages_get_previews(
    harness: Harness, harbor: DevserverHandle, pages: Pages
) -> None:
    """Posted before the member joined: published by the hydrate's gap fill (at most 10 minutes
    old, so it gets its cards; the seed history holds no links)."""
    mid = await admin_post(harbor, "ch_general", f"earlier {pages.url('/earlier')}")
    events = await join_live(harness, "alice", harbor, "srv_harbor")
    assert mid in events.message_ids("srv_harbor", "ch_general")
    event = await wait_previews(events, mid)
    assert [p["title"] for p in event["payload"]["previews"]] == ["Title of earlier"]
