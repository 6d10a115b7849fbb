"""Benchmark: the chat loop through a real connector process (issue 4).

Everything is a real process on 127.0.0.1: a private nats-server (JetStream, no auth), devservers
(``python -m services.devserver --seed harbor --admin``) and the connector
(``python -m services.connector``, ``OPENCHAT_HOME`` / ``OPENCHAT_SECRET_KEY_FILE`` in a temp dir).
This process drives joins through the bus (``oc.<member>.cmd.connector.join``, ``confirmed=True``)
and reads the member events the stream republishes (``oc.<member>.evt.<server_id>.<kind>``).
Each figure has a baseline measured in the same run:

1. **Added latency** — messages posted one by one (``POST /_admin/messages`` as another uid, a
   steady ``--lat-interval-ms`` apart): per message, the time a *direct* WebSocket client subscribed
   to the channel sees ``chat.message.created`` vs the time a bus subscriber of the member sees the
   connector's ``message.created``. Both receivers live in this process, on one event loop and one
   clock (``time.perf_counter``); the figure is the per-message difference (p50/p99/max).
2. **Ingest** — an admin burst of ``--burst`` messages on one channel; the rate at which the
   connector puts them on the bus, and the end-to-end time until all of them are there. The public
   backend's 64-frame outbound queue drops frames under backpressure (the devserver reproduces it),
   so most arrive by the connector's gap fill: live vs gap fill is reported from the devserver's
   dropped-frame counter. Baselines: what a direct WebSocket client receives of the same burst, and
   the bus's own ceiling for the same envelopes published from this process (serially awaiting
   each PubAck — as the connector does — and pipelined).
3. **Scale** — a fresh connector; members ``bench0``… each join one of ``--scale-servers``
   devservers, in steps up to ``--sessions`` (member, server) sessions. Per step: connector RSS
   (psutil) and hydrate time per session (join sent → ``server.connection`` *live* on the bus).
   Baselines: the RSS of the idle connector process and the hydrate time of one lone session.

    python -m bench.bench_chat [--quick] [--json]

Every process it starts is stopped at the end, also on errors and Ctrl-C; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psutil
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from websockets.asyncio.client import ClientConnection, connect

from services.core.bus import Bus, CommandError, ConnectOptions, encode
from services.core.contracts import subjects
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import (
    ChatMessage,
    JoinArgs,
    JoinResult,
    MessageCreated,
    message_event_id,
)
from services.core.procs import free_port, nats_server_binary, wait_for_port
from services.devserver.runner import wait_healthy

REPO = Path(__file__).resolve().parents[1]
SERVER_ID = "srv_harbor"  # the harbor seed's server
CHANNEL = "ch_general"
POSTER_UID = "uid_bench_poster"
DIRECT_UID = "uid_bench_direct"
STREAM = "OC_EVENTS"


# -- processes -----------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class Procs:
    """Every process this benchmark started; ``stop_all`` ends them (TERM, then KILL)."""

    tmp: Path
    started: list[Proc] = field(default_factory=list)

    def spawn(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path = REPO
    ) -> Proc:
        log = (self.tmp / f"{name}.log").open("ab")
        try:
            popen = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(cwd),
                start_new_session=True,  # Ctrl-C reaches only us; we stop them in order
            )
        finally:
            log.close()
        proc = Proc(name, popen)
        self.started.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 10.0) -> None:
        if proc.popen.poll() is None:
            proc.popen.terminate()
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.started)):
            with contextlib.suppress(Exception):
                self.stop(proc)


def start_nats(procs: Procs, name: str = "nats") -> str:
    """A nats-server with its own JetStream store: a second server (the other tree of a
    before/after run) must not find the first one's stream, whose message ids would make the
    second tree's gap fill duplicates that are never stored again."""
    port = free_port()
    conf = procs.tmp / f"{name}.conf"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\nmax_payload: 8MB\njetstream {{ store_dir: "{procs.tmp / f"js-{name}"}" }}\n'
    )
    proc = procs.spawn(name, [nats_server_binary(), "-c", str(conf)])
    wait_for_port("127.0.0.1", port, 15, proc.popen)
    return f"nats://127.0.0.1:{port}"


def start_devserver(procs: Procs, name: str, tree: Path = REPO) -> str:
    port = free_port()
    argv = [sys.executable, "-m", "services.devserver", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--seed", "harbor", "--admin", "--public-base-url", f"http://127.0.0.1:{port}"]
    proc = procs.spawn(name, argv, cwd=tree)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, 20, proc.popen)
    return url


def start_connector(procs: Procs, name: str, nats_url: str, tree: Path = REPO) -> tuple[Proc, str]:
    """The connector of ``tree`` (this checkout, or another one: the baseline of a comparison)."""
    home = procs.tmp / name
    home.mkdir()
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCHAT_")}
    env |= {
        "OPENCHAT_NATS_URL": nats_url,
        "OPENCHAT_HOME": str(home / "home"),
        "OPENCHAT_SECRET_KEY_FILE": str(home / "secret.key"),  # outside the home, created on start
        "OPENCHAT_HTTP_PORT": str(http_port),
        "OPENCHAT_EVENTS_STREAM": STREAM,
    }
    proc = procs.spawn(name, [sys.executable, "-m", "services.connector"], env, cwd=tree)
    health = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=1.0) as client:
        while True:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.popen.returncode}; see {procs.tmp}/{name}.log")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(health + "/healthz").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not healthy after 30 s")
            time.sleep(0.05)
    return proc, health


def rss_mib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


# -- statistics ----------------------------------------------------------------------------------
def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# -- bus helpers ---------------------------------------------------------------------------------
JOIN_RETRIES = {"count": 0}  # joins answered with a retryable error (a backend too slow) and retried


async def join(bus: Bus, member: str, url: str, timeout: float = 120.0) -> JoinResult:
    """Join through the bus, retrying while the connector's commands are not subscribed yet and
    (counted in ``JOIN_RETRIES``) while the answer is a retryable error, within ``timeout``."""
    started = time.monotonic()
    while True:
        try:
            return await bus.request(
                subjects.command(member, "connector", "join"),
                JoinArgs(url=url, server_id=SERVER_ID, confirmed=True),
                JoinResult,
                timeout=timeout,
            )
        except CommandError as exc:
            elapsed = time.monotonic() - started
            if exc.code == "service_unavailable" and elapsed < 30:
                await asyncio.sleep(0.1)
                continue
            if not exc.retryable or exc.code == "timeout" or elapsed > timeout:
                raise
            JOIN_RETRIES["count"] += 1
            await asyncio.sleep(0.5)


@dataclass
class LiveWatch:
    """``server.connection`` events of every member: when each member's session went live."""

    live_at: dict[str, float] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    sub: Subscription | None = None

    async def attach(self, bus: Bus) -> None:
        async def on_msg(msg: Msg) -> None:
            now = time.perf_counter()
            if json.loads(msg.data)["payload"]["state"] != "live":
                return
            member = msg.subject.split(".")[1]
            if member in self.live_at:
                return
            self.live_at[member] = now
            fut = self.waiters.pop(member, None)
            if fut is not None and not fut.done():
                fut.set_result(now)

        self.sub = await bus.nc.subscribe(f"oc.*.evt.{SERVER_ID}.server.connection", cb=on_msg)

    async def wait(self, member: str, timeout: float) -> float:
        if member in self.live_at:
            return self.live_at[member]
        fut = self.waiters.setdefault(member, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(fut, timeout)


async def joined_live(
    bus: Bus, watch: LiveWatch, member: str, url: str, timeout: float = 120.0
) -> tuple[float, float]:
    """Join and wait for *live*: (seconds until the join reply, seconds until live)."""
    t0 = time.perf_counter()
    await join(bus, member, url, timeout)
    t_reply = time.perf_counter()
    t_live = await watch.wait(member, timeout)
    return t_reply - t0, t_live - t0


# -- direct WebSocket client (the baseline) ------------------------------------------------------
@dataclass
class DirectClient:
    """A client connected straight to the devserver's realtime socket, subscribed to one channel.
    ``seen[message_id]`` = ``perf_counter`` when its ``chat.message.created`` frame arrived."""

    ws_base: str
    uid: str
    seen: dict[str, float] = field(default_factory=dict)
    bodies: dict[str, str] = field(default_factory=dict)
    ws: ClientConnection | None = None
    task: asyncio.Task[None] | None = None

    async def start(self, channel_id: str) -> None:
        url = f"{self.ws_base}/v1/realtime?user_uid={self.uid}&device_id=dev_bench"
        self.ws = await connect(url, max_queue=None, ping_interval=None, max_size=16 * 2**20)
        subscribed = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._read(self.ws, subscribed))
        await self.ws.send(
            json.dumps({"type": "chat.subscribe", "request_id": "s1", "payload": {"channel_id": channel_id}})
        )
        await asyncio.wait_for(subscribed, 10)

    async def _read(self, ws: ClientConnection, subscribed: asyncio.Future[None]) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                now = time.perf_counter()
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "chat.message.created":
                    message = frame["payload"]["message"]
                    self.seen[message["id"]] = now
                    self.bodies[message["id"]] = message["body"]
                elif kind == "chat.subscribed" and not subscribed.done():
                    subscribed.set_result(None)

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


@dataclass
class BusMessages:
    """``message.created`` of one member as the bus delivers them: id -> ``perf_counter``."""

    seen: dict[str, float] = field(default_factory=dict)
    bodies: dict[str, str] = field(default_factory=dict)
    sub: Subscription | None = None
    on_new: Callable[[], None] | None = None

    async def attach(self, bus: Bus, member: str) -> None:
        async def on_msg(msg: Msg) -> None:
            now = time.perf_counter()
            message = json.loads(msg.data)["payload"]["message"]
            if message["id"] not in self.seen:
                self.seen[message["id"]] = now
                self.bodies[message["id"]] = message["body"]
                if self.on_new is not None:
                    self.on_new()

        self.sub = await bus.nc.subscribe(f"oc.{member}.evt.{SERVER_ID}.message.created", cb=on_msg)


async def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


# -- 1. added latency ----------------------------------------------------------------------------
async def bench_latency(
    bus: Bus, watch: LiveWatch, dev_url: str, count: int, interval_s: float
) -> dict[str, Any]:
    member = "lat"
    await joined_live(bus, watch, member, dev_url)
    on_bus = BusMessages()
    await on_bus.attach(bus, member)
    direct = DirectClient(dev_url.replace("http://", "ws://"), DIRECT_UID)
    await direct.start(CHANNEL)
    await asyncio.sleep(0.5)  # let the hydrate's own events drain
    ids: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=dev_url, timeout=10) as http:
            for i in range(5):  # warm-up, not counted
                await http.post(
                    "/_admin/messages",
                    json={"channel_id": CHANNEL, "user_uid": POSTER_UID, "body": f"warm {i}"},
                )
            await asyncio.sleep(0.2)
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            for i in range(count):
                next_at += interval_s
                response = await http.post(
                    "/_admin/messages",
                    json={"channel_id": CHANNEL, "user_uid": POSTER_UID, "body": f"latency probe {i}"},
                )
                response.raise_for_status()
                ids.append(response.json()["message"]["id"])
                await asyncio.sleep(max(0.0, next_at - loop.time()))
        await wait_until(lambda: all(i in on_bus.seen and i in direct.seen for i in ids), 10)
    finally:
        await direct.close()
        if on_bus.sub is not None:
            await on_bus.sub.unsubscribe()
    both = [i for i in ids if i in on_bus.seen and i in direct.seen]
    added = [on_bus.seen[i] - direct.seen[i] for i in both]
    return {
        "messages": count,
        "interval_ms": ms(interval_s),
        "measured": len(both),
        "missing_on_bus": sum(1 for i in ids if i not in on_bus.seen),
        "missing_direct": sum(1 for i in ids if i not in direct.seen),
        "added_p50_ms": ms(pct(added, 50)),
        "added_p99_ms": ms(pct(added, 99)),
        "added_max_ms": ms(max(added)) if added else None,
        "added_mean_ms": ms(statistics.fmean(added)) if added else None,
    }


# -- 2. ingest -----------------------------------------------------------------------------------
async def admin_state(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/_admin/state")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def bench_ingest(
    bus: Bus, watch: LiveWatch, dev_url: str, count: int, timeout_s: float
) -> dict[str, Any]:
    member, prefix = "ing", "ingest"
    await joined_live(bus, watch, member, dev_url)
    on_bus = BusMessages()
    await on_bus.attach(bus, member)
    direct = DirectClient(dev_url.replace("http://", "ws://"), DIRECT_UID)
    await direct.start(CHANNEL)
    await asyncio.sleep(0.5)

    def burst_on_bus() -> int:
        return sum(1 for b in on_bus.bodies.values() if b.startswith(prefix + " "))

    try:
        async with httpx.AsyncClient(base_url=dev_url, timeout=120) as http:
            dropped_before = int((await admin_state(http))["dropped_frames"])
            t0 = time.perf_counter()
            response = await http.post(
                "/_admin/burst",
                json={"channel_id": CHANNEL, "count": count, "user_uid": POSTER_UID, "body_prefix": prefix},
            )
            response.raise_for_status()
            burst = response.json()
            t_burst_reply = time.perf_counter()
            complete = await wait_until(lambda: burst_on_bus() >= count, timeout_s, 0.02)
            t_done = time.perf_counter()
            await asyncio.sleep(0.3)  # let the direct client's last frames arrive
            dropped = int((await admin_state(http))["dropped_frames"]) - dropped_before
    finally:
        await direct.close()
        if on_bus.sub is not None:
            await on_bus.sub.unsubscribe()
    times = sorted(t for i, t in on_bus.seen.items() if on_bus.bodies[i].startswith(prefix + " "))
    direct_times = sorted(t for i, t in direct.seen.items() if direct.bodies[i].startswith(prefix + " "))
    direct_dropped = count - len(direct_times)
    connector_dropped = max(0, dropped - direct_dropped)
    live = count - connector_dropped
    out: dict[str, Any] = {
        "burst": count,
        "complete": complete,
        "on_bus": len(times),
        "devserver_burst_ms": burst["elapsed_ms"],
        "burst_request_s": round(t_burst_reply - t0, 3),
        "connector_live": live,
        "connector_gap_filled": connector_dropped,
        "end_to_end_s": round((times[-1] if times else t_done) - t0, 3),
        "end_to_end_events_per_s": round(len(times) / ((times[-1] - t0) if times else float("inf"))),
        "direct_received": len(direct_times),
        "direct_dropped": direct_dropped,
    }
    if len(times) > live + 1:
        gap = times[live:]
        out["gap_fill_publish_s"] = round(gap[-1] - gap[0], 3)
        out["gap_fill_events_per_s"] = round((len(gap) - 1) / max(gap[-1] - gap[0], 1e-9))
        out["first_gap_filled_after_s"] = round(gap[0] - t0, 3)
    if len(direct_times) > 1:
        span = direct_times[-1] - direct_times[0]
        out["direct_span_s"] = round(span, 4)
        out["direct_events_per_s"] = round((len(direct_times) - 1) / max(span, 1e-9))
        out["direct_last_after_s"] = round(direct_times[-1] - t0, 3)
    return out


def fake_messages(count: int, tag: str) -> Iterator[EventEnvelope[MessageCreated]]:
    now = datetime.now(UTC)
    for i in range(count):
        msg = ChatMessage(
            id=f"msg_{tag}_{i:08d}",
            server_id=SERVER_ID,
            channel_id=CHANNEL,
            author_uid=POSTER_UID,
            body=f"ingest {i + 1}",
            created_at=now,
        )
        yield EventEnvelope[MessageCreated](
            event_id=message_event_id(msg.id, msg.created_at),
            server_id=SERVER_ID,
            channel_id=CHANNEL,
            type="message.created",
            payload=MessageCreated(message=msg),
        )


async def bench_bus_ceiling(bus: Bus, count: int) -> dict[str, Any]:
    """The bus's own rate for the same kind of envelopes from one Python process."""
    serial = list(fake_messages(count, "serial"))
    t0 = time.perf_counter()
    for env in serial:
        await bus.publish_event("busbase", env)
    serial_s = time.perf_counter() - t0
    piped = list(fake_messages(count, "piped"))
    t0 = time.perf_counter()
    for start in range(0, count, 500):
        await asyncio.gather(*(bus.publish_event("busbase", env) for env in piped[start : start + 500]))
    piped_s = time.perf_counter() - t0
    # no PubAck per event: core publishes on the ingest subject (the stream still stores and
    # de-duplicates them), one flush at the end; encoding included
    core = list(fake_messages(count, "core"))
    t0 = time.perf_counter()
    for env in core:
        msg_id = f"busbase/{env.server_id}/{env.type}/{env.event_id}"
        await bus.nc.publish(
            subjects.ingest("busbase", env.server_id, env.type), encode(env), headers={"Nats-Msg-Id": msg_id}
        )
    await bus.nc.flush(30)
    core_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for env in core:
        encode(env)
    encode_s = time.perf_counter() - t0
    return {
        "events": count,
        "serial_awaited_events_per_s": round(count / serial_s),
        "pipelined_500_events_per_s": round(count / piped_s),
        "core_publish_no_ack_events_per_s": round(count / core_s),
        "encode_only_events_per_s": round(count / encode_s),
    }


# -- 3. scale ------------------------------------------------------------------------------------
async def dropped_frames(dev_urls: Sequence[str]) -> int:
    """Frames the devservers dropped for full socket queues (their 64-frame backpressure)."""
    total = 0
    async with httpx.AsyncClient(timeout=30) as http:
        for url in dev_urls:
            total += int((await http.get(url + "/_admin/state")).json()["dropped_frames"])
    return total


async def http_requests(dev_urls: Sequence[str]) -> dict[str, int] | None:
    """HTTP requests the devservers answered, per route (None: a devserver without the counter,
    e.g. an older tree's)."""
    total: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        for url in dev_urls:
            counts = (await http.get(url + "/_admin/state")).json().get("http_requests")
            if counts is None:
                return None
            for route, count in counts.items():
                total[route] = total.get(route, 0) + int(count)
    return total


async def bench_scale(
    bus: Bus,
    connector: Proc,
    dev_urls: Sequence[str],
    steps: Sequence[int],
    concurrency: int,
    join_timeout_s: float = 120.0,
) -> dict[str, Any]:
    watch = LiveWatch()
    await watch.attach(bus)
    events = {"total": 0, "presence": 0}

    async def on_event(msg: Msg) -> None:
        events["total"] += 1
        if ".presence." in msg.subject:
            events["presence"] += 1

    counter = await bus.nc.subscribe("oc.*.evt.>", cb=on_event)
    await asyncio.sleep(1.0)
    idle_rss = rss_mib(connector.pid)
    rows: list[dict[str, Any]] = []
    joined = 0
    sem = asyncio.Semaphore(concurrency)

    async def one(index: int) -> tuple[float, float]:
        async with sem:
            url = dev_urls[index % len(dev_urls)]
            return await joined_live(bus, watch, f"bench{index}", url, join_timeout_s)

    for target in steps:
        before = dict(events)
        retries = JOIN_RETRIES["count"]
        requests0 = await http_requests(dev_urls)
        cpu0 = psutil.Process(connector.pid).cpu_times()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(joined, target)))
        wall = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # settle: hydrate events published, sockets idle
        hydrate = [r[1] for r in results]
        reply = [r[0] for r in results]
        cpu1 = psutil.Process(connector.pid).cpu_times()
        requests1 = await http_requests(dev_urls)
        per_route: dict[str, float] = {}
        if requests0 is not None and requests1 is not None:
            fresh = max(1, target - joined)
            for route, count in requests1.items():
                if count - requests0.get(route, 0):
                    per_route[route] = round((count - requests0.get(route, 0)) / fresh, 2)
        rows.append(
            {
                "sessions": target,
                "new_sessions": target - joined,
                "rss_mib": round(rss_mib(connector.pid), 1),
                "step_wall_s": round(wall, 3),
                "hydrate_p50_ms": ms(pct(hydrate, 50)),
                "hydrate_p99_ms": ms(pct(hydrate, 99)),
                "hydrate_max_ms": ms(max(hydrate)),
                "join_reply_p50_ms": ms(pct(reply, 50)),
                "join_reply_p99_ms": ms(pct(reply, 99)),
                "connector_cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 2),
                "devserver_dropped_frames": await dropped_frames(dev_urls),
                "join_retries": JOIN_RETRIES["count"] - retries,
                "sessions_per_s": round((target - joined) / wall, 1),
                "bus_events": events["total"] - before["total"],
                "presence_events": events["presence"] - before["presence"],
                # HTTP requests the backends answered during the step, per new session (the
                # joins, the hydrates and whatever else ran meanwhile: reconciles), per route
                "http_requests_per_session": round(sum(per_route.values()), 2) if per_route else None,
                "http_requests_per_route": per_route,
            }
        )
        joined = target
    await counter.unsubscribe()
    cpu = psutil.Process(connector.pid).cpu_times()
    return {
        "idle_rss_mib": round(idle_rss, 1),
        "single_hydrate_ms": rows[0]["hydrate_p50_ms"] if rows and rows[0]["new_sessions"] == 1 else None,
        "steps": rows,
        "connector_cpu_s": round(cpu.user + cpu.system, 2),
        "devservers": len(dev_urls),
        "join_concurrency": concurrency,
    }


# -- main ----------------------------------------------------------------------------------------
@dataclass
class Plan:
    lat_messages: int
    lat_interval_s: float
    burst: int
    ingest_timeout_s: float
    steps: list[int]
    scale_servers: int
    concurrency: int
    join_timeout_s: float = 120.0
    baseline_tree: str | None = None  # another checkout: its connector is measured first


def plan_of(args: argparse.Namespace) -> Plan:
    baseline = str(Path(args.baseline_tree).resolve()) if args.baseline_tree else None
    if args.quick:
        return Plan(50, 0.02, 2000, 20, [1, 50], 1, 8, args.join_timeout, baseline)
    steps = [s for s in (1, 100, 1000) if s <= args.sessions] or [args.sessions]
    if steps[-1] != args.sessions:
        steps.append(args.sessions)
    return Plan(
        args.lat_messages,
        args.lat_interval_ms / 1000,
        args.burst,
        args.ingest_timeout,
        steps,
        args.scale_servers,
        args.concurrency,
        args.join_timeout,
        baseline,
    )


async def phase(name: str, coro: Awaitable[dict[str, Any]], limit_s: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    print(f"[bench_chat] {name} …", file=sys.stderr, flush=True)
    result = await asyncio.wait_for(coro, limit_s)
    print(f"[bench_chat] {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return result


async def run(plan: Plan, procs: Procs, only: set[str]) -> dict[str, Any]:
    nats_url = start_nats(procs)
    bus = await Bus.connect(ConnectOptions(url=nats_url, name="bench-chat"), first_attempts=5)
    result: dict[str, Any] = {"plan": plan.__dict__, "cpus": os.cpu_count()}
    try:
        if only & {"latency", "ingest"}:
            lat_dev = start_devserver(procs, "dev-lat") if "latency" in only else ""
            ing_dev = start_devserver(procs, "dev-ing") if "ingest" in only else ""
            connector, _ = start_connector(procs, "connector-a", nats_url)
            result["connector_a_pid"] = connector.pid
            watch = LiveWatch()
            await watch.attach(bus)
            if "latency" in only:
                limit = 60 + plan.lat_messages * plan.lat_interval_s * 3
                result["latency"] = await phase(
                    "latency",
                    bench_latency(bus, watch, lat_dev, plan.lat_messages, plan.lat_interval_s),
                    limit,
                )
            if "ingest" in only:
                result["ingest"] = await phase(
                    "ingest",
                    bench_ingest(bus, watch, ing_dev, plan.burst, plan.ingest_timeout_s),
                    plan.ingest_timeout_s + 60,
                )
                result["bus_ceiling"] = await phase("bus ceiling", bench_bus_ceiling(bus, plan.burst), 120)
            procs.stop(connector)
        if "scale" in only:
            trees = [("scale", REPO)]
            if plan.baseline_tree:  # before/after in one run: the baseline first, on its own NATS
                trees.insert(0, ("scale_baseline", Path(plan.baseline_tree)))
            for key, tree in trees:
                result[key] = await scale_of(procs, plan, tree, key)
    finally:
        await bus.close()
    return result


async def scale_of(procs: Procs, plan: Plan, tree: Path, key: str) -> dict[str, Any]:
    """The scale steps against the connector (and devservers) of ``tree``, on a fresh
    nats-server; every process of it is stopped afterwards."""
    nats_url = start_nats(procs, f"nats-{key}")
    bus = await Bus.connect(ConnectOptions(url=nats_url, name=f"bench-{key}"), first_attempts=5)
    started = len(procs.started)
    try:
        devs = [start_devserver(procs, f"dev-{key}{i}", tree) for i in range(plan.scale_servers)]
        connector, _ = start_connector(procs, f"connector-{key}", nats_url, tree)
        out = await phase(
            f"{key} ({tree})",
            bench_scale(bus, connector, devs, plan.steps, plan.concurrency, plan.join_timeout_s),
            120 + plan.steps[-1] * 3.0,
        )
        out["tree"] = str(tree)
        return out
    finally:
        await bus.close()
        for proc in reversed(procs.started[started:]):
            procs.stop(proc)


def report(r: dict[str, Any]) -> str:
    lines = [f"machine: {r['cpus']} CPUs"]
    if "latency" in r:
        lat = r["latency"]
        lines.append(
            f"added latency (bus subscriber minus direct WebSocket client), {lat['measured']} messages "
            f"{lat['interval_ms']:g} ms apart: p50 {lat['added_p50_ms']} ms, p99 {lat['added_p99_ms']} ms, "
            f"max {lat['added_max_ms']} ms  (targets: p50 ≤ 1 ms, p99 ≤ 5 ms; "
            f"missing on bus {lat['missing_on_bus']}, direct {lat['missing_direct']})"
        )
    if "ingest" in r:
        ing = r["ingest"]
        lines.append(
            f"ingest: burst of {ing['burst']:,} (devserver {ing['devserver_burst_ms']} ms): all on the bus "
            f"{ing['complete']} after {ing['end_to_end_s']} s end-to-end = "
            f"{ing['end_to_end_events_per_s']:,} events/s; live {ing['connector_live']:,}, "
            f"gap fill {ing['connector_gap_filled']:,}"
            + (
                f" (gap fill published at {ing['gap_fill_events_per_s']:,} events/s over "
                f"{ing['gap_fill_publish_s']} s, first after {ing['first_gap_filled_after_s']} s)"
                if "gap_fill_events_per_s" in ing
                else ""
            )
            + "  (target ≥ 20,000 events/s)"
        )
        lines.append(
            f"  baseline direct WebSocket client: received {ing['direct_received']:,} of {ing['burst']:,} "
            f"(dropped {ing['direct_dropped']:,} by the backend's 64-frame queue)"
            + (
                f", {ing['direct_events_per_s']:,} frames/s while receiving"
                if "direct_events_per_s" in ing
                else ""
            )
        )
    if "bus_ceiling" in r:
        bc = r["bus_ceiling"]
        lines.append(
            f"  baseline bus ceiling from one Python process ({bc['events']:,} envelopes): serially awaited "
            f"{bc['serial_awaited_events_per_s']:,} events/s, pipelined 500 {bc['pipelined_500_events_per_s']:,} events/s, "
            f"core publish without PubAck {bc['core_publish_no_ack_events_per_s']:,} events/s "
            f"(model_dump_json alone {bc['encode_only_events_per_s']:,}/s)"
        )
    for key in ("scale_baseline", "scale"):
        if key not in r:
            continue
        sc = r[key]
        label = "BASELINE " if key == "scale_baseline" else ""
        lines.append(
            f"{label}scale ({sc.get('tree', '')}; {sc['devservers']} devservers, joins "
            f"{sc['join_concurrency']} in flight): idle connector RSS {sc['idle_rss_mib']} MiB; "
            f"one hydrate {sc['single_hydrate_ms']} ms"
        )
        for row in sc["steps"]:
            lines.append(
                f"  {row['sessions']:>5,} sessions: RSS {row['rss_mib']} MiB; hydrate (join → live) "
                f"p50 {row['hydrate_p50_ms']} ms, p99 {row['hydrate_p99_ms']} ms, max {row['hydrate_max_ms']} ms; "
                f"join reply p50 {row['join_reply_p50_ms']} ms, p99 {row.get('join_reply_p99_ms')} ms; "
                f"{row['new_sessions']:,} new in {row['step_wall_s']} s ({row['sessions_per_s']}/s); "
                f"{row['bus_events']:,} events on the bus, {row['presence_events']:,} of them presence; "
                f"connector CPU {row.get('connector_cpu_s')} s; devservers dropped "
                f"{row.get('devserver_dropped_frames')} frames; joins retried {row.get('join_retries')}"
            )
            if row.get("http_requests_per_session") is not None:
                routes = ", ".join(f"{k} {v:g}" for k, v in row["http_requests_per_route"].items())
                lines.append(
                    f"         HTTP requests per new session {row['http_requests_per_session']:g}: {routes}"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (< 60 s): small counts")
    p.add_argument("--lat-messages", type=int, default=200)
    p.add_argument("--lat-interval-ms", type=float, default=20.0)
    p.add_argument("--burst", type=int, default=20_000)
    p.add_argument("--ingest-timeout", type=float, default=120.0)
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--scale-servers", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=16, help="joins in flight during the scale steps")
    p.add_argument("--join-timeout", type=float, default=120.0, help="scale: wait for one join / live (s)")
    p.add_argument(
        "--baseline-tree",
        help="scale: another checkout (e.g. `git archive <base> | tar -x -C DIR`) whose connector is "
        "measured first, on its own nats-server and devservers: before/after in one run",
    )
    p.add_argument("--only", default="latency,ingest,scale", help="comma-separated subset of the phases")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir (process logs)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    args = p.parse_args(argv)
    plan = plan_of(args)
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    procs = Procs(tmp)
    try:
        result = asyncio.run(run(plan, procs, only))
    except KeyboardInterrupt:
        print("[bench_chat] interrupted; stopping processes", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep_logs:
            print(f"[bench_chat] logs in {tmp}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    print(report(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
