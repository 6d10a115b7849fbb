"""Benchmark: events/s through the notification service with 1,000 channels.

A private nats-server (JetStream, temporary store) receives ``server.joined``, one
``channels.updated`` listing ``--channels`` text channels and ``--events`` ``message.created``
events spread over them (1 in 10 mentions the member, 1 in 10 is the member's own). Then, over
the very same stored events:

* **baseline** — a bare durable pull consumer with the service's filters and batch size that
  only decodes each event envelope and acks (the raw bus throughput);
* **service** — a fresh ``NotificationService`` (SQLite registry in a temp dir) consuming from the
  start: counting, mention detection, policy, one SQLite transaction per batch, and publishing
  ``unread.updated`` / ``notification`` events back into the stream.

Prints both rates and the ratio service / baseline, and a JSON line for scripts.

    python -m bench.bench_notification [--events 20000] [--channels 1000] [--nats-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.core.bus import Bus, ConnectOptions, decode
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import (
    ChannelGroupInfo,
    ChannelInfo,
    ChannelsUpdated,
    ChatMessage,
    MessageCreated,
    ServerJoined,
    ServerRecord,
    message_event_id,
)
from services.core.procs import ManagedProcess, free_port, nats_server_binary
from services.notification.service import NotificationService, consumer_filters

MEMBER, SERVER, ME, OTHER = "bench", "srv_bench", "uid_bench0001", "uid_other0002"
STREAM = "OC_EVENTS"


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


def envelope(kind: str, payload: Any, event_id: str, channel_id: str | None = None) -> EventEnvelope[Any]:
    return EventEnvelope[Any](
        event_id=event_id, server_id=SERVER, channel_id=channel_id, type=kind, payload=payload
    )


async def publish_all(bus: Bus, events: int, channels: int) -> int:
    now = datetime.now(UTC)
    record = ServerRecord(
        server_id=SERVER,
        base_url="http://127.0.0.1:1",
        display_name="Bench",
        icon_text="BE",
        user_uid=ME,
        device_id="desktop_bench",
        joined_at=now,
    )
    await bus.publish_event(MEMBER, envelope("server.joined", ServerJoined(server=record), "joined:1"))
    chans = [ChannelInfo(id=f"ch_{i:04d}", name=f"c{i}", type="text", group_id="g") for i in range(channels)]
    groups = [ChannelGroupInfo(id="g", label="Text", kind="text", channels=chans)]
    await bus.publish_event(
        MEMBER, envelope("channels.updated", ChannelsUpdated(groups=groups), "channels:1")
    )
    last = 0
    chunk = 1000
    for start in range(0, events, chunk):
        pubs = []
        for i in range(start, min(events, start + chunk)):
            channel = f"ch_{i % channels:04d}"
            author = ME if i % 10 == 5 else OTHER
            body = f"hello @{ME} number {i}" if i % 10 == 0 else f"message number {i} in {channel}"
            msg = ChatMessage(
                id=f"msg_{i:08d}",
                server_id=SERVER,
                channel_id=channel,
                author_uid=author,
                body=body,
                created_at=now,
            )
            pubs.append(
                bus.publish_event(
                    MEMBER,
                    envelope(
                        "message.created",
                        MessageCreated(message=msg),
                        message_event_id(msg.id, msg.created_at),
                        channel,
                    ),
                )
            )
        acks = await asyncio.gather(*pubs)
        last = max(last, *(a.seq for a in acks))
    return last


async def baseline(bus: Bus, last_seq: int, batch: int) -> tuple[int, float]:
    await bus.js.add_consumer(
        STREAM,
        ConsumerConfig(
            durable_name="bench-baseline",
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.ALL,
            filter_subjects=consumer_filters(),
            max_ack_pending=-1,
        ),
    )
    sub = await bus.js.pull_subscribe_bind(durable="bench-baseline", stream=STREAM)
    n, seen = 0, 0
    t0 = time.perf_counter()
    while seen < last_seq:
        try:
            msgs = await sub.fetch(batch, timeout=1.0)
        except NatsTimeoutError:
            continue
        for m in msgs:
            decode(EventEnvelope[Any], m.data)
            seen = max(seen, m.metadata.sequence.stream)
            n += 1
        await msgs[-1].ack()
    elapsed = time.perf_counter() - t0
    await sub.unsubscribe()
    return n, elapsed


async def through_service(
    bus: Bus, db: Path, last_seq: int, batch: int
) -> tuple[int, float, NotificationService]:
    svc = NotificationService(bus, db, stream=STREAM, batch=batch)
    t0 = time.perf_counter()
    await svc.start()
    await svc.wait_applied(last_seq, timeout=600)
    elapsed = time.perf_counter() - t0
    return svc.events_applied, elapsed, svc


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp_s:
        tmp = Path(tmp_s)
        proc = None if args.nats_url else start_nats(tmp)
        url = args.nats_url or f"nats://127.0.0.1:{proc.port if proc else 0}"
        bus = await Bus.connect(ConnectOptions(url=url, name="bench-notification"), first_attempts=5)
        try:
            for info in await bus.js.streams_info():
                if info.config.name == STREAM:
                    await bus.js.delete_stream(STREAM)
            await bus.ensure_events_stream(STREAM)
            t0 = time.perf_counter()
            last_seq = await publish_all(bus, args.events, args.channels)
            publish_s = time.perf_counter() - t0
            base_n, base_s = await baseline(bus, last_seq, args.batch)
            svc_n, svc_s, svc = await through_service(bus, tmp / "registry.sqlite3", last_seq, args.batch)
            totals = svc.engine.unread(MEMBER, SERVER).servers[0]
            await svc.stop()
        finally:
            await bus.close()
            if proc is not None:
                proc.stop()
    result = {
        "events": args.events,
        "channels": args.channels,
        "batch": args.batch,
        "publish_events_per_s": round((args.events + 2) / publish_s),
        "baseline_events": base_n,
        "baseline_s": round(base_s, 3),
        "baseline_events_per_s": round(base_n / base_s),
        "service_events": svc_n,
        "service_s": round(svc_s, 3),
        "service_events_per_s": round(svc_n / svc_s),
        "ratio_service_to_baseline": round((svc_n / svc_s) / (base_n / base_s), 3),
        "final_unread": totals.unread,
        "final_mentions": totals.mentions,
    }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--channels", type=int, default=1_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--nats-url", default=None, help="Use this NATS (JetStream) instead of a private one.")
    args = p.parse_args()
    r = asyncio.run(main_async(args))
    print(
        f"notification service: {r['service_events_per_s']:,} events/s "
        f"({r['service_events']:,} events over {r['channels']:,} channels in {r['service_s']} s)\n"
        f"baseline (bare pull consumer, same events): {r['baseline_events_per_s']:,} events/s "
        f"({r['baseline_s']} s)\n"
        f"ratio service/baseline: {r['ratio_service_to_baseline']}\n"
        f"(publishing the events: {r['publish_events_per_s']:,} events/s; "
        f"final unread {r['final_unread']:,}, mentions {r['final_mentions']:,})"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
