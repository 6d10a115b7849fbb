"""Connector sessions under failure: socket drops, backend restarts, bad frames, offline servers,
and gap fill on both history profiles. Real devservers (in-process and subprocesses), real NATS."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.core.bus import CommandError
from services.core.contracts.chat import JoinArgs, JoinResult, ProbeArgs, ProbeResult
from services.core.identity import device_id, project_uid
from services.core.procs import free_port
from services.devserver.runner import arunning_devserver, start_devserver_process, wait_healthy
from tests.connector_harness import EventLog, Harness


class ProcServer:
    """A devserver subprocess that can be stopped and started again on the same port/state file."""

    def __init__(self, tmp: Path, *extra: str, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = ["--host", host, "--port", str(self.port), "--public-base-url", self.base_url, *extra]
        self.log = tmp / f"devserver-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.proc = start_devserver_process(self.args, log_path=self.log)
        await asyncio.to_thread(wait_healthy, self.base_url, 20.0, self.proc)

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 15)
            self.proc = None

    async def admin(self, path: str, doc: dict[str, object], method: str = "POST") -> dict[str, object]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
            response = await client.request(method, path, json=doc)
            response.raise_for_status()
            result: dict[str, object] = response.json()
            return result


@pytest.fixture
def proc_servers() -> Iterator[list[ProcServer]]:
    servers: list[ProcServer] = []
    yield servers
    for server in servers:
        if server.proc is not None:
            server.proc.kill()
            server.proc.wait(10)


async def history_ids(base_url: str, channel_id: str) -> list[str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.get(f"/v1/channels/{channel_id}/messages", params={"limit": 100000})
        return [m["id"] for m in response.json()["messages"]]


def lives(events: EventLog, server_id: str) -> int:
    return sum(1 for e in events.of("server.connection", server_id) if e["payload"]["state"] == "live")


async def test_drop_and_restart_during_1000_messages_exactly_once_in_order(
    harness: Harness, tmp_path: Path, proc_servers: list[ProcServer]
) -> None:
    srv = ProcServer(tmp_path, "--seed", "family", "--admin", "--state-file", str(tmp_path / "state.json"))
    proc_servers.append(srv)
    await srv.start()
    events = await harness.events("alice")
    await harness.call(
        "alice", "join", JoinArgs(url=srv.base_url, server_id="srv_family", confirmed=True), JoinResult
    )
    await events.wait_for(lambda ev: lives(events, "srv_family") == 1)

    await srv.admin("/_admin/burst", {"channel_id": "ch_general", "count": 300, "body_prefix": "a"})
    await srv.admin("/_admin/burst", {"channel_id": "ch_plans", "count": 100, "body_prefix": "b"})
    await srv.admin("/_admin/realtime/drop", {})
    await srv.admin("/_admin/burst", {"channel_id": "ch_general", "count": 200, "body_prefix": "c"})
    await srv.stop()
    await events.wait_for(lambda ev: events.last_connection("srv_family") in ("reconnecting", "offline"))
    await srv.start()  # same port, same state file
    await srv.admin("/_admin/burst", {"channel_id": "ch_general", "count": 300, "body_prefix": "d"})
    await srv.admin("/_admin/burst", {"channel_id": "ch_plans", "count": 100, "body_prefix": "e"})

    expected = {ch: await history_ids(srv.base_url, ch) for ch in ("ch_general", "ch_plans", "ch_photos")}
    assert len(expected["ch_general"]) == 2 + 800 and len(expected["ch_plans"]) == 1 + 200

    def complete(ev: list[dict[str, object]]) -> bool:
        # the gap fill publishes the missed messages before "live": wait for both
        return lives(events, "srv_family") >= 2 and all(
            len(events.message_ids("srv_family", c)) >= len(ids) for c, ids in expected.items()
        )

    await events.wait_for(complete, timeout=30)
    # let any straggler (a duplicate would come now) arrive: a ping round trip through the bus
    await harness.member_bus.nc.flush()
    for channel_id, ids in expected.items():
        assert events.message_ids("srv_family", channel_id) == ids, channel_id
    seqs = [e["_seq"] for e in events.events]
    assert seqs == sorted(seqs)
    assert lives(events, "srv_family") >= 2
    reconnecting = [
        e for e in events.of("server.connection", "srv_family") if e["payload"]["state"] != "live"
    ]
    assert all(e["payload"]["next_retry_at"] for e in reconnecting[1:])


async def test_malformed_frames_are_dropped_and_the_session_lives_on(harness: Harness) -> None:
    async with arunning_devserver(seed="family", admin=True) as srv:
        events = await harness.events("bob")
        await harness.call(
            "bob", "join", JoinArgs(url=srv.base_url, server_id="srv_family", confirmed=True), JoinResult
        )
        await events.wait_for(lambda ev: lives(events, "srv_family") == 1)
        async with httpx.AsyncClient(base_url=srv.base_url) as client:
            for kind in ("invalid_json", "binary", "oversized"):
                r = await client.post("/_admin/realtime/inject", json={"kind": kind})
                assert r.json()["sockets"] == 1
            r = await client.post(
                "/_admin/messages", json={"channel_id": "ch_general", "user_uid": "uid_x", "body": "after"}
            )
            mid = r.json()["message"]["id"]
            await events.wait_for(lambda ev: mid in events.message_ids("srv_family", "ch_general"))
            assert lives(events, "srv_family") == 1  # same socket: no reconnect was needed
            # a frame that breaks the WebSocket framing kills the socket: the session reconnects
            await client.post("/_admin/realtime/inject", json={"kind": "garbage"})
            await events.wait_for(lambda ev: lives(events, "srv_family") == 2)
            r = await client.post(
                "/_admin/messages", json={"channel_id": "ch_general", "user_uid": "uid_x", "body": "again"}
            )
            mid2 = r.json()["message"]["id"]
            await events.wait_for(lambda ev: mid2 in events.message_ids("srv_family", "ch_general"))


async def test_offline_server_is_kept_retried_and_comes_back(
    harness: Harness, tmp_path: Path, proc_servers: list[ProcServer]
) -> None:
    srv = ProcServer(tmp_path, "--seed", "harbor")
    proc_servers.append(srv)
    await srv.start()
    events = await harness.events("carol")
    await harness.call(
        "carol", "join", JoinArgs(url=srv.base_url, server_id="srv_harbor", confirmed=True), JoinResult
    )
    await events.wait_for(lambda ev: lives(events, "srv_harbor") == 1)
    await srv.stop()
    offline = await events.wait_for(
        lambda ev: (
            [e for e in events.of("server.connection", "srv_harbor") if e["payload"]["state"] == "offline"][
                -3:
            ]
            if len(
                [
                    e
                    for e in events.of("server.connection", "srv_harbor")
                    if e["payload"]["state"] == "offline"
                ]
            )
            >= 3
            else None
        )
    )
    attempts = [e["payload"]["attempt"] for e in offline]
    assert attempts == sorted(attempts) and all(
        e["payload"]["next_retry_at"] and e["payload"]["reason"] for e in offline
    )
    assert [r.server_id for r in harness.connector.servers.of_member("carol")] == ["srv_harbor"]  # D2: kept
    await srv.start()
    await events.wait_for(lambda ev: lives(events, "srv_harbor") == 2, timeout=15)


@pytest.mark.parametrize("profile", ["A", "B"])
async def test_gap_fill_profile_a_grows_limit_profile_b_uses_cursors(harness: Harness, profile: str) -> None:
    features = frozenset({"cursors"}) if profile == "B" else frozenset()
    async with arunning_devserver(seed="family", admin=True, features=features) as srv:
        events = await harness.events("dave")
        await harness.call(
            "dave", "join", JoinArgs(url=srv.base_url, server_id="srv_family", confirmed=True), JoinResult
        )
        await events.wait_for(lambda ev: lives(events, "srv_family") == 1)
        harness.requests.requests.clear()
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as client:
            # hold the session's reconnect back while 500 messages are posted
            await client.put("/_admin/delay", json={"ms": 400})
            await client.post("/_admin/realtime/drop")
            await client.post("/_admin/burst", json={"channel_id": "ch_general", "count": 500})
            await client.put("/_admin/delay", json={"ms": 0})
        expected = await history_ids(srv.base_url, "ch_general")
        await events.wait_for(
            lambda ev: len(events.message_ids("srv_family", "ch_general")) >= len(expected), timeout=20
        )
        await harness.member_bus.nc.flush()
        assert events.message_ids("srv_family", "ch_general") == expected
        fills = [
            r.url.params
            for r in harness.requests.requests
            if r.url.path == "/v1/channels/ch_general/messages"
        ]
        if profile == "A":
            assert [p["limit"] for p in fills[:3]] == ["150", "600"] + (["2400"] if len(fills) > 2 else [])
            assert all("before" not in p for p in fills)
        else:
            assert fills[0].get("before") is None and all(p["limit"] == "150" for p in fills)
            assert len(fills) >= 4 and all(p.get("before") for p in fills[1:4])


async def test_probe_trust_and_disclosure(
    harness: Harness, tmp_path: Path, proc_servers: list[ProcServer]
) -> None:
    srv = ProcServer(tmp_path, "--seed", "public", "--env", "production", host="0.0.0.0")
    proc_servers.append(srv)
    await srv.start()
    local = await harness.call(
        "erin", "probe", ProbeArgs(url=f"http://localhost:{srv.port}", server_id="srv_testlab"), ProbeResult
    )
    assert local.trust.local_host and not local.trust.https_required_mismatch and local.trust.verified
    assert local.trust.warnings == []
    assert local.capabilities.https_required and local.capabilities_path == "/v1/client/capabilities"
    root = harness.connector.identities.root("erin")
    assert local.disclosure.user_uid == project_uid(root, "srv_testlab")  # D1: the picked id
    assert local.disclosure.device_id == device_id(root) and not local.disclosure.profile_shared
    assert local.disclosure.user_uid in local.disclosure.summary

    remote = await harness.call("erin", "probe", ProbeArgs(url=f"http://127.0.0.2:{srv.port}"), ProbeResult)
    assert not remote.trust.local_host and not remote.trust.transport_secure
    assert remote.trust.https_required_mismatch and not remote.trust.verified  # a manual probe is unverified
    assert remote.trust.warnings[0] == "Server requires HTTPS. Update the backend URL to an HTTPS endpoint."
    assert remote.disclosure.user_uid == project_uid(root, "srv_harbor")  # the capabilities' id


async def test_path_prefix_is_kept(harness: Harness) -> None:
    """D8: a backend mounted under a prefix is reached with the prefix on every path (a prefix the
    devserver does not serve gives 404s: the connector must not strip it to make things work)."""
    async with arunning_devserver(seed="family") as srv:
        with pytest.raises(CommandError) as failed:
            await harness.call("frank", "probe", ProbeArgs(url=srv.base_url + "/chat/"), ProbeResult)
        assert failed.value.code == "not_found"
        assert {r.url.path for r in harness.requests.requests} == {
            "/chat/v1/client/capabilities",
            "/chat/client/capabilities",
        }
