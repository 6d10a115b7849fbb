"""Benchmark: a desktop catching up after being away (issue 10, defect 2).

A private nats-server (JetStream, 8 MB ``max_payload`` as ``openchat up`` configures it), a
private redis-server, the real state service (``StateRuntime``) and the desktop app's bus adapter
(``ui.adapter.StackAdapter``, no display). The desktop attaches (snapshot), goes away, ``--messages``
messages of ``--body-bytes`` each are stored for the member, and the desktop comes back from its
cached sequence. Measured: time from the adapter's start to "online with every event delivered",
the number of ``state.sync`` pages and the size of each reply. Baseline in the same run: the same
number of 100-byte messages.

Before issue 10 the 6 KB case never finished: ``state.sync`` filled a reply up to 8 MB, the
adapter refused anything over 4 MiB and asked for the same page forever.

    python -m bench.bench_catchup [--messages 1000] [--body-bytes 6144]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from nats.aio.msg import Msg

from services.core.bus import Bus, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import ChatMessage, MessageCreated, ServerJoined, ServerRecord
from services.core.members import ConnectionFile, new_user_nkey
from services.core.procs import ManagedProcess, free_port, nats_server_binary, redis_process
from services.state.app import StateRuntime
from services.state.settings import StateSettings
from ui.adapter import EventOp, StackAdapter

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def start_nats(tmp: Path) -> ManagedProcess:
    port = free_port()
    conf = tmp / "nats.conf"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\nmax_payload: 8MB\njetstream {{ store_dir: "{tmp / "js"}" }}\n'
    )
    proc = ManagedProcess(
        "nats", [nats_server_binary(), "-c", str(conf)], "127.0.0.1", port, None, tmp / "nats.log"
    )
    proc.start()
    return proc


def envelope(member: str, kind: str, payload: Any, event_id: str) -> EventEnvelope[Any]:
    return EventEnvelope[Any](
        event_id=event_id, server_id="srv_bench", channel_id=None, type=kind, payload=payload, ts=T0
    )


async def one_case(
    bus: Bus, rt: StateRuntime, url: str, count: int, body_bytes: int, timeout: float
) -> dict[str, Any]:
    member = f"b{uuid.uuid4().hex[:8]}"
    seed, _ = new_user_nkey()
    cf = ConnectionFile(
        member=member, nats_url=url, nkey_seed=seed,
        inbox_prefix=subjects.inbox_prefix(member), created_at="2026-01-01",
    )  # fmt: skip
    record = ServerRecord(
        server_id="srv_bench", base_url="http://127.0.0.1:9", display_name="Bench", icon_text="B",
        user_uid="uid_bench", device_id="dev_1", joined_at=T0,
    )  # fmt: skip
    joined = await bus.publish_event(
        member, envelope(member, "server.joined", ServerJoined(server=record), "j")
    )
    await rt.materializer.wait_for(lambda m: m.applied_seq >= joined.seq)
    first = StackAdapter(cf)
    first.start()
    while not first.online:  # noqa: ASYNC110 - the adapter's thread queue has no awaitable
        await asyncio.sleep(0.02)
    away_at = first.last_seq
    first.stop()

    events = []
    for n in range(count):
        m = ChatMessage(
            id=f"m{n:06d}", server_id="srv_bench", channel_id="general", author_uid="uid_other",
            body=("y" * body_bytes), created_at=T0,
        )  # fmt: skip
        events.append(envelope(member, "message.created", MessageCreated(message=m), f"msg:{m.id}"))
    acks = await bus.publish_events(member, events)
    last = acks[-1].seq
    await rt.materializer.wait_for(lambda m: m.applied_seq >= last)

    sizes: list[int] = []

    async def watch_reply(msg: Msg) -> None:
        if b'"events"' in msg.data[:64]:
            sizes.append(len(msg.data))

    spy = await bus.nc.subscribe(f"{subjects.inbox_prefix(member)}.>", cb=watch_reply)
    await bus.nc.flush()
    back = StackAdapter(cf, last_seq=away_at)
    started = time.perf_counter()
    back.start()
    delivered = 0
    deadline = started + timeout
    while not (back.online and delivered >= count):
        for op in back.drain():
            delivered += isinstance(op, EventOp)
        if time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    online = back.online
    back.stop()
    await spy.unsubscribe()
    return {
        "messages": count,
        "body_bytes": body_bytes,
        "delivered": delivered,
        "online": online,
        "seconds": round(elapsed, 3),
        "sync_pages": len(sizes),
        "reply_kib": [s // 1024 for s in sizes],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-catchup-") as tmp_name:
        tmp = Path(tmp_name)
        nats = start_nats(tmp)
        redis = redis_process(tmp / "redis", "127.0.0.1", free_port())
        redis.start()
        url = f"nats://127.0.0.1:{nats.port}"
        bus = await Bus.connect(ConnectOptions(url=url, name="bench-catchup"), first_attempts=5)
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{redis.port}/0")
        try:
            await bus.ensure_events_stream("OC_EVENTS", duplicate_window_s=60)
            rt = StateRuntime(bus, client, StateSettings(home=tmp / "home", message_window=500))
            await rt.start()
            try:
                baseline = await one_case(bus, rt, url, args.messages, 100, args.timeout)
                large = await one_case(bus, rt, url, args.messages, args.body_bytes, args.timeout)
            finally:
                await rt.stop()
        finally:
            await bus.close()
            await client.aclose()
            redis.stop()
            nats.stop()
    ratio = large["seconds"] / baseline["seconds"] if baseline["seconds"] else float("nan")
    return {"baseline": baseline, "large": large, "ratio_large_over_baseline": round(ratio, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--body-bytes", type=int, default=6 * 1024)
    p.add_argument("--timeout", type=float, default=120.0, help="give up a catch-up after this many s")
    args = p.parse_args()
    r = asyncio.run(main_async(args))
    for name in ("baseline", "large"):
        c = r[name]
        print(
            f"{name:<8} {c['messages']} x {c['body_bytes']} B: {c['delivered']} delivered, "
            f"online={c['online']}, {c['seconds']} s, {c['sync_pages']} sync page(s) of {c['reply_kib']} KiB"
        )
    print(f"ratio large / baseline: {r['ratio_large_over_baseline']}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
