"""Connector sessions spread over replicas with leases in NATS KV (issue 16, ADR 0021): real
NATS, a real devserver, several ``Connector`` replicas sharing one home (one registry), each on
its own bus connection with its own ``SessionLeases`` and command ``Router``.

The process-level acceptance (SIGKILL of a replica under ``openchat up --nats-cluster 3
--replicas 2``) is ``test_cluster_acceptance.py``; here: one holder per session, spread,
rebalance on join and leave, commands forwarded to the holder, hand-over without loss or
duplicates when a holder stops renewing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.connector.app import bus_batch_sink, bus_sink, register
from services.connector.connector import Connector
from services.connector.leases import LeaseTiming, SessionLeases, ensure_buckets, read_leases
from services.connector.routing import Router
from services.core.bus import Bus, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.chat import JoinArgs, JoinResult, SendArgs, SendResult
from services.devserver.runner import DevserverHandle
from tests.connector_harness import FAST, EventLog
from tests.integration.conftest import until

MEMBERS = ("alice", "bob", "carol", "dave", "erin", "frank")
TIMING = LeaseTiming(ttl_s=2.0, tick_s=0.2)
STREAM = "OC_TEST_LEASES"


@dataclass
class Replica:
    name: str
    bus: Bus
    connector: Connector
    leases: SessionLeases
    router: Router

    def held(self) -> set[str]:
        return {f"{m}/{s}" for m, s in self.connector.sessions}


@contextlib.asynccontextmanager
async def replica(nats_url: str, tmp: Path, name: str) -> AsyncIterator[Replica]:
    bus = await Bus.connect(ConnectOptions(url=nats_url, name=name), first_attempts=3)
    connector = Connector(
        bus_sink(bus),
        tmp / "home",
        tmp / "secret.key",
        timing=FAST,
        request_timeout_s=10,
        batch_sink=bus_batch_sink(bus),
    )
    leases_kv, replicas_kv = await ensure_buckets(bus.js, TIMING.ttl_s, 1)
    leases = SessionLeases(
        leases_kv,
        replicas_kv,
        replica=f"{name}-test",
        name=name,
        wanted=connector.wanted_keys,
        start=connector.start_key,
        stop=connector.stop_key,
        after_tick=connector.follow_records,
        timing=TIMING,
    )
    connector.leases = leases
    router = Router(bus, leases, lambda m, s: (m, s) in connector.sessions)
    await register(bus, connector, router)
    await bus.serve_commands()
    await bus.nc.flush()
    await connector.start()
    try:
        yield Replica(name, bus, connector, leases, router)
    finally:
        await connector.close()
        with contextlib.suppress(Exception):
            await bus.close()


async def sockets_by_uid(admin: httpx.AsyncClient) -> dict[str, int]:
    return dict((await admin.get("/_admin/state")).json()["realtime_by_uid"])


async def test_sessions_spread_one_holder_each_rebalance_and_forwarding(
    nats_url: str, tmp_path: Path, family: DevserverHandle
) -> None:
    setup = await Bus.connect(ConnectOptions(url=nats_url, name="setup"), first_attempts=3)
    for info in await setup.js.streams_info():
        if info.config.name is not None:
            await setup.js.delete_stream(info.config.name)
    await setup.ensure_events_stream(STREAM, duplicate_window_s=60)
    member_bus = await Bus.connect(ConnectOptions(url=nats_url, name="members"), first_attempts=3)
    admin = httpx.AsyncClient(base_url=family.base_url, timeout=30)
    logs = {m: EventLog() for m in MEMBERS}
    for member, log in logs.items():
        await log.attach(member_bus, member)
    overlap: list[dict[str, int]] = []  # any moment a uid had two sockets
    watching = True

    async def watch() -> None:
        while watching:
            counts = await sockets_by_uid(admin)
            if any(n > 1 for n in counts.values()):
                overlap.append(counts)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        async with replica(nats_url, tmp_path, "r1") as r1, replica(nats_url, tmp_path, "r2") as r2:
            uids: dict[str, str] = {}
            for member in MEMBERS:
                joined = await member_bus.request(
                    subjects.command(member, "connector", "join"),
                    JoinArgs(url=family.base_url, server_id="srv_family", confirmed=True),
                    JoinResult,
                    20,
                )
                uids[member] = joined.server.user_uid
            everyone = {f"{m}/srv_family" for m in MEMBERS}

            async def settled(*replicas: Replica) -> bool:
                """Every session held once, and the leases say who (no hand-over under way)."""
                held = [r.held() for r in replicas]
                union = set().union(*held)
                if union != everyone or sum(len(h) for h in held) != len(everyone):
                    return False
                leases = await read_leases(replicas[0].leases.kv)
                return {k: set(v) for k, v in leases.items()} == {
                    r.leases.replica: r.held() for r in replicas if r.held()
                }

            await until(lambda: settled(r1, r2), timeout=20)
            assert r1.held() and r2.held(), "both replicas hold sessions"
            leases = await read_leases(r1.leases.kv)
            assert {k: set(v) for k, v in leases.items()} == {
                r1.leases.replica: r1.held(),
                r2.leases.replica: r2.held(),
            }
            for member in MEMBERS:
                log = logs[member]

                def live(_: object, lg: EventLog = log) -> bool:
                    return lg.last_connection("srv_family") == "live"

                await log.wait_for(live)

            async def one_socket_each() -> bool:
                counts = await sockets_by_uid(admin)
                return all(counts.get(uids[m]) == 1 for m in MEMBERS)

            await until(one_socket_each, timeout=20)

            # every member's send works whichever replica the queue group picks: some are forwarded
            for round_ in range(3):
                for member in MEMBERS:
                    await member_bus.request(
                        subjects.command(member, "connector", "send"),
                        SendArgs(server_id="srv_family", channel_id="ch_general", body=f"{member} {round_}"),
                        SendResult,
                        20,
                    )
            assert r1.router.forwarded + r2.router.forwarded > 0
            assert r1.router.served + r2.router.served == r1.router.forwarded + r2.router.forwarded

            # a third replica joins: it takes its share, nobody holds a session twice
            async with replica(nats_url, tmp_path, "r3") as r3:
                await until(lambda: settled(r1, r2, r3), timeout=20)
                await until(lambda: asyncio.sleep(0, bool(r3.held())), timeout=10)
                await until(one_socket_each, timeout=20)
            # it leaves (SIGTERM-like: releases its leases): the others take its sessions at once
            await until(lambda: settled(r1, r2), timeout=10)

            # r2 loses the bus without giving anything back (a partition): its renewals fail,
            # its own clock closes its sessions before the leases expire, then r1 takes them
            moved = r2.held()
            await r2.bus.nc.close()
            burst = await admin.post(
                "/_admin/burst", json={"channel_id": "ch_general", "count": 20, "body_prefix": "handover"}
            )
            posted = burst.json()["last_id"]
            # r2's own clock stops its sessions (ttl * 2/3 without a confirmed renewal)
            renew_stop = asyncio.get_running_loop().time()
            await until(lambda: asyncio.sleep(0, not r2.connector.sessions), timeout=10)
            # ... before anyone holds them elsewhere; then r1 holds everything
            await until(lambda: asyncio.sleep(0, r1.held() == everyone), timeout=15)
            assert asyncio.get_running_loop().time() - renew_stop < 10
            for member in MEMBERS:
                log = logs[member]

                def arrived(_: object, lg: EventLog = log) -> bool:
                    return posted in lg.message_ids("srv_family", "ch_general")

                await log.wait_for(arrived, 20)
                ids = log.message_ids("srv_family", "ch_general")
                assert len(ids) == len(set(ids)), f"{member}: a message was delivered twice"
            assert moved, "r2 held sessions before it froze"
        assert overlap == [], f"a uid had two realtime sockets: {overlap[:3]}"
    finally:
        watching = False
        await watcher
        await admin.aclose()
        await member_bus.close()
        await setup.close()
