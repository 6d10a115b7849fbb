# ruff: noqa: F811  (the redis fixture imported from test_state_support is a parameter here)
"""Presence at scale (issue 16, ADR 0022), on real NATS, Redis and devservers.

- Coalesced presence is exact: after bursts of realtime clients subscribing, leaving, coming
  back and unsubscribing, the state service's view and a desktop's ``ViewModel`` fed with the
  member's events both end with exactly the presence the devserver has in every channel, and the
  connector published far fewer events than it received changes.
- Joins of different members run concurrently: a join whose backend does not answer holds up
  neither another member's join nor anything else; the same member's next join waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from services.core.bus import CommandError
from services.core.contracts.chat import JoinArgs, JoinResult, Snapshot, SnapshotArgs
from services.devserver.runner import DevserverHandle, arunning_devserver
from services.state.runtime import StateRuntime
from tests.connector_harness import FAST, Harness, connector_harness
from tests.integration.conftest import until
from tests.integration.test_state_support import cmd, redis, state_settings  # noqa: F401  (fixture)
from ui.state.model import ViewModel

SERVER = "srv_family"
CHANNELS = ("ch_general", "ch_photos", "ch_plans")


class Peer:
    """Another person's client on the devserver's realtime socket (drained in the background)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.reader = asyncio.create_task(self._drain())

    @classmethod
    async def open(cls, srv: DevserverHandle, uid: str) -> Peer:
        headers = {"X-OpenChat-User-UID": uid, "X-OpenChat-Device-ID": f"dev_{uid}"}
        return cls(await connect(srv.ws_url + "/v1/realtime", additional_headers=headers, close_timeout=1))

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in self.ws:
                pass

    async def send(self, kind: str, channel_id: str) -> None:
        frame = {"type": kind, "request_id": f"r_{channel_id}", "payload": {"channel_id": channel_id}}
        await self.ws.send(json.dumps(frame))

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def truth(srv: DevserverHandle) -> tuple[dict[str, set[str]], ClientConnection]:
    """The devserver's presence per channel, as a fresh observer's snapshots tell it (the
    observer is present too, and the connector sees it join like any other client; it stays
    until its socket is closed)."""
    headers = {"X-OpenChat-User-UID": "uid_observer", "X-OpenChat-Device-ID": "dev_observer"}
    out: dict[str, set[str]] = {}
    ws = await connect(srv.ws_url + "/v1/realtime", additional_headers=headers, close_timeout=1)
    for channel_id in CHANNELS:
        frame = {"type": "chat.subscribe", "request_id": "obs", "payload": {"channel_id": channel_id}}
        await ws.send(json.dumps(frame))
        while True:
            doc = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if doc["type"] == "chat.presence.snapshot" and doc["payload"]["channel_id"] == channel_id:
                out[channel_id] = {m["client_id"] for m in doc["payload"]["members"]}
                break
    return out, ws


async def test_coalesced_presence_ends_exact_in_the_view_and_on_the_desktop(
    nats_url: str, redis: aioredis.Redis, tmp_path: Path
) -> None:
    stream = "OC_PRES_TEST"
    timing = replace(FAST, presence_window_s=1.0)
    observer: ClientConnection | None = None
    # A socket's outbound queue is large here: the backend's 64-frame queue drops frames of a
    # burst (the public backend does; the connector cannot see presence it never got). The test
    # checks that nothing the connector receives is lost, so it asserts no frame was dropped.
    async with (
        arunning_devserver(seed="family", admin=True, realtime_queue_size=10_000) as family,
        connector_harness(nats_url, tmp_path, timing=timing, stream=stream) as h,
    ):
        state = StateRuntime(h.bus, redis, state_settings(tmp_path, stream))
        await state.start()
        try:
            events = await h.events("alice")
            await h.call(
                "alice", "join", JoinArgs(url=family.base_url, server_id=SERVER, confirmed=True), JoinResult
            )
            await events.wait_for(lambda ev: events.last_connection(SERVER) == "live")

            # bursts: 30 people subscribe to every channel, 12 close their socket, 6 of them come
            # back (a new client id), 6 unsubscribe one channel, 6 unsubscribe and subscribe again
            peers = [await Peer.open(family, f"uid_p{n}") for n in range(30)]
            for peer in peers:
                for channel_id in CHANNELS:
                    await peer.send("chat.subscribe", channel_id)
            for peer in peers[:12]:
                await peer.close()
            for n in range(6):
                back = await Peer.open(family, f"uid_p{n}")
                peers.append(back)
                for channel_id in CHANNELS:
                    await back.send("chat.subscribe", channel_id)
            for peer in peers[12:18]:
                await peer.send("chat.unsubscribe", "ch_photos")
            for peer in peers[18:24]:
                await peer.send("chat.unsubscribe", "ch_plans")
                await peer.send("chat.subscribe", "ch_plans")
            # changes the connector's socket receives: 30*3 joins + 12*3 lefts + 6*3 joins +
            # 6 lefts + 6 lefts and 6 joins
            changes = 90 + 36 + 18 + 6 + 12

            want, observer = await truth(family)
            assert len(want["ch_general"]) == 30 - 12 + 6 + 1 + 1  # + the member's own, the observer's

            # the desktop: a ViewModel fed with every event the member receives, in order
            def desktop() -> dict[str, set[str]]:
                model = ViewModel()
                for seq, doc in enumerate(list(events.events), start=1):
                    model.apply_event(seq, {k: v for k, v in doc.items() if k != "_seq"})
                sm = model.servers.get(SERVER)
                return {ch: set(sm.presence.get(ch, {})) for ch in CHANNELS} if sm else {}

            async def view() -> dict[str, set[str]]:
                snap = await h.member_bus.request(
                    cmd("alice", "snapshot"), SnapshotArgs(server_id=SERVER), Snapshot
                )
                if not snap.servers:
                    return {}
                presence = snap.servers[0].presence
                return {ch: {e.client_id for e in presence.get(ch, [])} for ch in CHANNELS}

            async def desktop_matches() -> bool:
                return desktop() == want

            async def view_matches() -> bool:
                return await view() == want

            try:
                await until(desktop_matches, timeout=30)
            except TimeoutError:
                raise AssertionError(f"desktop {desktop()} != devserver {want}") from None
            try:
                await until(view_matches, timeout=30)
            except TimeoutError:
                raise AssertionError(f"state view {await view()} != devserver {want}") from None

            async with httpx.AsyncClient(base_url=family.base_url) as admin:
                assert (await admin.get("/_admin/state")).json()["dropped_frames"] == 0

            # coalesced: one event per window, not one per change, and no old kinds
            batches = events.of("presence.batch", SERVER)
            assert not [e for e in events.events if e["type"] in ("presence.joined", "presence.left")]
            assert 0 < len(batches) * 5 <= changes, len(batches)
            for peer in peers[12:]:
                await peer.close()
        finally:
            await state.stop()
            if observer is not None:
                await observer.close()


async def test_a_join_stuck_on_its_backend_blocks_no_other_members_join(
    harness: Harness, family: DevserverHandle
) -> None:
    async with arunning_devserver(seed="harbor", admin=True) as slow:
        async with httpx.AsyncClient(base_url=slow.base_url) as admin:
            # every answer of this backend takes longer than the connector waits (10 s here)
            (await admin.put("/_admin/delay", json={"ms": 30_000})).raise_for_status()

        def join(member: str, srv: DevserverHandle, server_id: str) -> asyncio.Task[JoinResult]:
            args = JoinArgs(url=srv.base_url, server_id=server_id, confirmed=True)
            return asyncio.create_task(harness.call(member, "join", args, JoinResult, timeout=60))

        stuck = join("alice", slow, "srv_harbor")
        # alice's join is inside the connector, waiting for the slow backend's directory
        port = f":{slow.cfg.port}"

        async def asked() -> bool:
            return any(port in str(r.url) for r in harness.requests.requests)

        await until(asked, timeout=20)
        alice_next = join("alice", family, SERVER)  # the same member: waits for her first join
        bob = await join("bob", family, SERVER)  # another member: not held up
        assert bob.server.server_id == SERVER
        carol = await join("carol", family, SERVER)
        assert carol.server.server_id == SERVER
        assert not stuck.done() and not alice_next.done()

        try:
            await stuck
            raise AssertionError("the join of an unanswering backend succeeded")
        except CommandError as exc:
            assert exc.retryable
        done = await alice_next  # her lock was released: her next join ran
        assert done.server.server_id == SERVER
        assert harness.connector._member_locks.locked("alice") is False
        assert len(harness.connector._member_locks) == 0
