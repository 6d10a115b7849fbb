"""Media bytes to a desktop: ``state.media`` chunks over NATS (plain and TLS) against the state
service's HTTP route (the path desktops used before issue 11), same file, same run.

Real processes and sockets on 127.0.0.1: two private nats-servers (one plain, one TLS with
handshake first and a CA made by ``services.core.tls``), redis-server, a backend HTTP server
holding the file, the state runtime (``StateRuntime``) on each bus and its HTTP router on uvicorn.
The file is fetched once to warm the state's disk cache; then each path fetches it ``--rounds``
times, the desktop side being ``ui.media.MediaFetcher`` (512 KiB chunks, 4 in flight).

    python -m bench.bench_media --mib 8 --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import uvicorn
from pydantic import BaseModel

from services.core.bus import Bus, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.blobs import MediaChunk
from services.core.contracts.bus import Empty, EventEnvelope
from services.core.contracts.chat import (
    AttachmentRef,
    ChatMessage,
    HttpToken,
    MessageCreated,
    ServerJoined,
    ServerRecord,
)
from services.core.health import HealthState, health_app
from services.core.procs import ManagedProcess, free_port, nats_server_binary, redis_process
from services.core.tls import ensure_certificates, render_nats_tls_block
from services.state.app import RuntimeRef, StateRuntime
from services.state.http import build_router
from services.state.settings import StateSettings
from ui.media import MediaFetcher

MEMBER, SERVER = "bench", "srv_bench"
PNG_HEAD = b"\x89PNG\r\n\x1a\n"


def start_nats(tmp: Path, name: str, tls_block: str | None) -> ManagedProcess:
    port = free_port()
    conf = tmp / f"{name}.conf"
    body = f'listen: "127.0.0.1:{port}"\nmax_payload: 8MB\njetstream {{ store_dir: "{tmp / name}" }}\n'
    conf.write_text(body + (tls_block + "\n" if tls_block else ""))
    proc = ManagedProcess(
        "nats", [nats_server_binary(), "-c", str(conf)], "127.0.0.1", port, None, tmp / f"{name}.log"
    )
    proc.start()
    return proc


def start_backend(blob: bytes) -> tuple[ThreadingHTTPServer, str]:
    class Files(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


async def seed(bus: Bus, rt: StateRuntime, base: str, size: int) -> ChatMessage:
    now = datetime.now(UTC)
    record = ServerRecord(
        server_id=SERVER, base_url=base, display_name="Bench", icon_text="BE",
        user_uid="uid_bench", device_id="dev_bench", joined_at=now,
    )  # fmt: skip
    att = AttachmentRef(
        attachment_id="att1",
        file_name="big.png",
        content_type="image/png",
        bytes=size,
        url=f"{base}/files/big.png",
    )
    msg = ChatMessage(
        id="m1",
        server_id=SERVER,
        channel_id="general",
        author_uid="uid_x",
        body="",
        created_at=now,
        attachments=[att],
    )
    await bus.publish_event(
        MEMBER,
        EventEnvelope[Any](
            event_id="j1", server_id=SERVER, type="server.joined", payload=ServerJoined(server=record)
        ),
    )
    ack = await bus.publish_event(
        MEMBER,
        EventEnvelope[Any](
            event_id="msg:m1", server_id=SERVER, channel_id="general", type="message.created",
            payload=MessageCreated(message=msg),
        ),
    )  # fmt: skip
    await rt.materializer.wait_for(lambda m: m.applied_seq >= ack.seq)
    return msg


def fetcher(bus: Bus) -> MediaFetcher:
    async def call(
        service: str, verb: str, args: BaseModel, result: type[MediaChunk], timeout: float
    ) -> MediaChunk:
        return await bus.request(subjects.command(MEMBER, service, verb), args, result, timeout)

    return MediaFetcher(call)


async def over_bus(
    url: str, ca: str | None, redis_url: str, home: Path, base: str, size: int, rounds: int
) -> float:
    bus = await Bus.connect(ConnectOptions(url=url, name="bench-state", ca_pem=ca), first_attempts=5)
    desk = await Bus.connect(ConnectOptions(url=url, name="bench-desk", ca_pem=ca), first_attempts=5)
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushdb()
    rt = StateRuntime(
        bus, redis, StateSettings(home=home, events_stream="OC_EVENTS", state_media_max_bytes=64 << 20)
    )
    try:
        await bus.ensure_events_stream("OC_EVENTS")
        await rt.start()
        msg = await seed(bus, rt, base, size)
        f = fetcher(desk)
        assert len(await f.attachment(msg, msg.attachments[0])) == size  # warm the disk cache
        t0 = time.perf_counter()
        for _ in range(rounds):
            assert len(await f.attachment(msg, msg.attachments[0])) == size
        return time.perf_counter() - t0
    finally:
        await rt.stop()
        await desk.close()
        await bus.close()
        await redis.aclose()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


async def over_http(url: str, redis_url: str, home: Path, base: str, size: int, rounds: int) -> float:
    bus = await Bus.connect(ConnectOptions(url=url, name="bench-state-http"), first_attempts=5)
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushdb()
    rt = StateRuntime(
        bus, redis, StateSettings(home=home, events_stream="OC_EVENTS", state_media_max_bytes=64 << 20)
    )
    port = free_port()
    app = health_app(HealthState("state"))
    app.include_router(build_router(RuntimeRef(rt)))
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        await bus.ensure_events_stream("OC_EVENTS")
        await rt.start()
        msg = await seed(bus, rt, base, size)
        await asyncio.wait_for(server.ready.wait(), 10)
        token = await bus.request(subjects.command(MEMBER, "state", "http_token"), Empty(), HttpToken)
        path = f"http://127.0.0.1:{port}/media/v1/attachments/{SERVER}/general/{msg.id}/att1"
        headers = {"Authorization": f"Bearer {token.token}"}
        async with httpx.AsyncClient(timeout=30) as client:
            assert len((await client.get(path, headers=headers)).content) == size
            t0 = time.perf_counter()
            for _ in range(rounds):
                assert len((await client.get(path, headers=headers)).content) == size
            return time.perf_counter() - t0
    finally:
        server.should_exit = True
        await task
        await rt.stop()
        await bus.close()
        await redis.aclose()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    size = args.mib * 1024 * 1024
    blob = PNG_HEAD + os.urandom(size - len(PNG_HEAD))
    with tempfile.TemporaryDirectory(prefix="bench-media-") as tmp_s:
        tmp = Path(tmp_s)
        files, _ = ensure_certificates(tmp / "tls", ["localhost"])
        plain = start_nats(tmp, "plain", None)
        tls = start_nats(tmp, "tls", render_nats_tls_block(files))
        rport = free_port()
        redis = redis_process(tmp / "redis", "127.0.0.1", rport, tmp / "redis.log")
        redis.start()
        backend, base = start_backend(blob)
        redis_url = f"redis://127.0.0.1:{rport}/0"
        try:
            http_s = await over_http(
                f"nats://127.0.0.1:{plain.port}", redis_url, tmp / "h1", base, size, args.rounds
            )
            plain_s = await over_bus(
                f"nats://127.0.0.1:{plain.port}", None, redis_url, tmp / "h2", base, size, args.rounds
            )
            tls_s = await over_bus(
                f"tls://localhost:{tls.port}", files.ca_pem(), redis_url, tmp / "h3", base, size, args.rounds
            )
        finally:
            backend.shutdown()
            for proc in (plain, tls, redis):
                proc.stop()
    mb = float(size * int(args.rounds)) / 1e6

    def rate(seconds: float) -> float:
        return round(mb / seconds, 1)

    return {
        "file_mib": args.mib,
        "rounds": args.rounds,
        "http_mb_per_s": rate(http_s),
        "bus_plain_mb_per_s": rate(plain_s),
        "bus_tls_mb_per_s": rate(tls_s),
        "ratio_bus_plain_to_http": round(http_s / plain_s, 3),
        "ratio_bus_tls_to_http": round(http_s / tls_s, 3),
        "ms_per_file_http": round(http_s / args.rounds * 1000, 1),
        "ms_per_file_bus_tls": round(tls_s / args.rounds * 1000, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--mib", type=int, default=8)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    socket.setdefaulttimeout(30)
    r = asyncio.run(main_async(args))
    print(
        f"{r['file_mib']} MiB file x {r['rounds']}: HTTP route {r['http_mb_per_s']} MB/s; "
        f"state.media over NATS {r['bus_plain_mb_per_s']} MB/s (plain), {r['bus_tls_mb_per_s']} MB/s (TLS)\n"
        f"ratio bus/HTTP: plain {r['ratio_bus_plain_to_http']}, TLS {r['ratio_bus_tls_to_http']} "
        f"({r['ms_per_file_http']} ms vs {r['ms_per_file_bus_tls']} ms per file)"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
