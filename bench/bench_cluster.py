"""Benchmark: connector replicas with session leases (issue 16, ADR 0021).

Real processes on 127.0.0.1: a private nats-server (JetStream, no auth), two devservers (harbor
seed, ``--admin``) and connector replicas (``python -m services.connector`` with
``OPENCHAT_CONNECTOR_LEASES=true``) sharing one ``OPENCHAT_HOME`` (one registry). Members
``bench0``… each join one devserver (alternating) through the bus. Figures, each with a baseline
from the same run:

1. **Sessions per replica, RSS per session** — after ``--sessions`` sessions are live on two
   replicas: each replica's share (from its ``/healthz``) and its RSS; RSS per session is
   (RSS minus RSS of the same replica idle, before any join) / sessions held.
2. **Failover** — SIGKILL the replica holding more sessions: time until the survivor holds all of
   them (``/healthz``) and until every moved session published *live* again. Baseline: the lease
   TTL (the wait is the TTL plus one tick plus a hydrate). Then a graceful hand-over (SIGTERM of
   a replica: it gives its leases back) for comparison.
3. **Ingest, 1 vs 2 replicas** — an admin burst of ``--burst`` messages on each devserver (every
   member of it receives each): events/s until all ``message.created`` reached the bus, with all
   sessions on one replica, then spread over two.

    python -m bench.bench_cluster [--sessions 100] [--burst 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from nats.aio.msg import Msg

from bench.bench_chat import (
    STREAM,
    LiveWatch,
    Proc,
    Procs,
    join,
    rss_mib,
    start_devserver,
    start_nats,
)
from services.core.bus import Bus, ConnectOptions
from services.core.procs import free_port

TTL_S = 6.0


def start_replica(procs: Procs, name: str, nats_url: str, home: Path) -> tuple[Proc, str]:
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCHAT_")}
    env |= {
        "OPENCHAT_NATS_URL": nats_url,
        "OPENCHAT_HOME": str(home / "home"),
        "OPENCHAT_SECRET_KEY_FILE": str(home / "secret.key"),
        "OPENCHAT_HTTP_PORT": str(http_port),
        "OPENCHAT_EVENTS_STREAM": STREAM,
        "OPENCHAT_CONNECTOR_LEASES": "true",
        "OPENCHAT_CONNECTOR_REPLICA_NAME": name,
        "OPENCHAT_CONNECTOR_LEASE_TTL_S": str(TTL_S),
        "OPENCHAT_LOG_LEVEL": "WARNING",
    }
    proc = procs.spawn(name, [sys.executable, "-m", "services.connector"], env)
    return proc, f"http://127.0.0.1:{http_port}"


async def sessions_of(client: httpx.AsyncClient, health: str) -> list[str] | None:
    try:
        doc = (await client.get(f"{health}/healthz", timeout=2.0)).json()
    except (httpx.HTTPError, ValueError):
        return None
    sessions = doc.get("sessions")
    return [str(s) for s in sessions] if isinstance(sessions, list) else None


async def until(pred: Any, timeout: float, every: float = 0.05) -> float:
    """Seconds until the async predicate held."""
    t0 = time.perf_counter()
    while not await pred():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"not within {timeout} s")
        await asyncio.sleep(every)
    return time.perf_counter() - t0


async def run(sessions: int, burst: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    procs = Procs(tmp)
    home = tmp / "shared"
    home.mkdir()
    result: dict[str, Any] = {"sessions": sessions, "burst": burst, "lease_ttl_s": TTL_S}
    try:
        nats_url = start_nats(procs)
        devs = [start_devserver(procs, f"dev{i}") for i in range(2)]
        bus = await Bus.connect(ConnectOptions(url=nats_url, name="bench-cluster"), first_attempts=5)
        await bus.ensure_events_stream(STREAM, duplicate_window_s=600)
        watch = LiveWatch()
        await watch.attach(bus)
        http = httpx.AsyncClient()
        a, a_health = start_replica(procs, "connector-1", nats_url, home)
        b, b_health = start_replica(procs, "connector-2", nats_url, home)
        replicas = {"connector-1": (a, a_health), "connector-2": (b, b_health)}

        async def healthy(h: str) -> bool:
            return await sessions_of(http, h) is not None

        for _, h in replicas.values():
            await until(lambda h=h: healthy(h), 60)
        idle = {n: rss_mib(p.pid) for n, (p, _) in replicas.items()}

        members = [f"bench{i}" for i in range(sessions)]
        sem = asyncio.Semaphore(16)

        async def one(i: int, member: str) -> None:
            async with sem:
                await join(bus, member, devs[i % 2])
                await watch.wait(member, 180)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, m) for i, m in enumerate(members)))
        result["all_live_s"] = round(time.perf_counter() - t0, 2)

        async def held(h: str) -> list[str]:
            return await sessions_of(http, h) or []

        async def spread_done() -> bool:
            counts = [len(await held(h)) for _, h in replicas.values()]
            return sum(counts) == sessions

        await until(spread_done, 60)
        await asyncio.sleep(2)  # RSS after the hydrate settled
        shares = {n: len(await held(h)) for n, (_, h) in replicas.items()}
        rss = {n: rss_mib(p.pid) for n, (p, _) in replicas.items()}
        result["per_replica"] = {
            n: {
                "sessions": shares[n],
                "rss_idle_mib": round(idle[n], 1),
                "rss_mib": round(rss[n], 1),
                "rss_per_session_kib": round((rss[n] - idle[n]) * 1024 / shares[n], 1) if shares[n] else None,
            }
            for n in replicas
        }

        # -- ingest with 2 replicas
        async def ingest(label: str) -> None:
            seen = 0
            done = asyncio.Event()
            want = sessions * burst

            async def on_msg(msg: Msg) -> None:
                nonlocal seen
                if json.loads(msg.data)["payload"]["message"]["body"].startswith(f"ingest-{label}"):
                    seen += 1
                    if seen >= want:
                        done.set()

            sub = await bus.nc.subscribe("oc.*.evt.*.message.created", cb=on_msg)
            await bus.nc.flush()
            t = time.perf_counter()
            for d in devs:
                r = await http.post(
                    f"{d}/_admin/burst",
                    json={"channel_id": "ch_general", "count": burst, "body_prefix": f"ingest-{label}"},
                    timeout=60,
                )
                r.raise_for_status()
            try:
                await asyncio.wait_for(done.wait(), 300)
            finally:
                await sub.unsubscribe()
            took = time.perf_counter() - t
            result[f"ingest_{label}"] = {
                "events": want,
                "seconds": round(took, 2),
                "events_per_s": round(want / took),
            }

        await ingest("two")

        # -- failover: SIGKILL the replica holding more
        victim = max(replicas, key=lambda n: shares[n])
        survivor = next(n for n in replicas if n != victim)
        moved = set(await held(replicas[victim][1]))
        for m in moved:
            watch.live_at.pop(m.split("/")[0], None)
        t_kill = time.perf_counter()
        os.kill(replicas[victim][0].pid, signal.SIGKILL)
        surv_health = replicas[survivor][1]

        async def all_on_survivor() -> bool:
            return len(await held(surv_health)) == sessions

        held_s = await until(all_on_survivor, 120)
        await asyncio.gather(*(watch.wait(m.split("/")[0], 120) for m in moved))
        live_s = max(watch.live_at[m.split("/")[0]] for m in moved) - t_kill
        result["failover_kill"] = {
            "moved_sessions": len(moved),
            "held_by_survivor_s": round(held_s, 2),
            "all_live_again_s": round(live_s, 2),
        }
        procs.started.remove(replicas[victim][0])

        # -- ingest with 1 replica (everything on the survivor)
        await ingest("one")

        # -- graceful hand-over: a new replica joins, takes its share, then SIGTERM of the survivor
        _c, c_health = start_replica(procs, "connector-3", nats_url, home)
        await until(lambda: healthy(c_health), 60)

        async def rebalanced() -> bool:
            return (
                len(await held(c_health)) > 0
                and len(await held(c_health)) + len(await held(surv_health)) == sessions
            )

        rebalance_s = await until(rebalanced, 60)
        await asyncio.sleep(2)
        moved = set(await held(surv_health))
        for m in moved:
            watch.live_at.pop(m.split("/")[0], None)
        t_term = time.perf_counter()
        os.kill(replicas[survivor][0].pid, signal.SIGTERM)

        async def all_on_c() -> bool:
            return len(await held(c_health)) == sessions

        term_s = await until(all_on_c, 120)
        await asyncio.gather(*(watch.wait(m.split("/")[0], 120) for m in moved))
        live_s = max(watch.live_at[m.split("/")[0]] for m in moved) - t_term
        result["rebalance_on_join_s"] = round(rebalance_s, 2)
        result["failover_sigterm"] = {
            "moved_sessions": len(moved),
            "held_by_other_s": round(term_s, 2),
            "all_live_again_s": round(live_s, 2),
        }
        await http.aclose()
        await bus.close()
        return result
    finally:
        procs.stop_all()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--burst", type=int, default=50)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    result = asyncio.run(run(args.sessions, args.burst))
    result["started"] = started
    result["load_average"] = os.getloadavg()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"bench_cluster {started} (load average {os.getloadavg()[0]:.2f})")
    print(f"{result['sessions']} sessions live on 2 replicas in {result['all_live_s']} s")
    for name, r in result["per_replica"].items():
        print(
            f"  {name}: {r['sessions']} sessions, RSS {r['rss_idle_mib']} MiB idle -> {r['rss_mib']} MiB "
            f"({r['rss_per_session_kib']} KiB per session)"
        )
    fk = result["failover_kill"]
    print(
        f"failover after SIGKILL (lease TTL {TTL_S:g} s): {fk['moved_sessions']} sessions held by the survivor "
        f"after {fk['held_by_survivor_s']} s, all live again after {fk['all_live_again_s']} s"
    )
    fs = result["failover_sigterm"]
    print(
        f"hand-over after SIGTERM: {fs['moved_sessions']} sessions held by the other after {fs['held_by_other_s']} s, "
        f"all live again after {fs['all_live_again_s']} s; rebalance on join {result['rebalance_on_join_s']} s"
    )
    one, two = result["ingest_one"], result["ingest_two"]
    print(
        f"ingest {one['events']} events: 1 replica {one['events_per_s']}/s ({one['seconds']} s), "
        f"2 replicas {two['events_per_s']}/s ({two['seconds']} s), ratio {two['events_per_s'] / one['events_per_s']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
