"""Benchmark: the connector against a broken and a hostile backend (issue 10, defect 5 + fault suite).

Real processes on 127.0.0.1: a private nats-server (JetStream, no auth), the connector
(``python -m services.connector``) and, per scenario:

1. **drops** — the devserver (reference backend, ``--state-file``) while ``--messages`` stream in
   bursts of 50 over two channels, with ``--drops`` realtime socket drops and ``--restarts``
   backend restarts spread over the stream. Printed: lost / duplicated / out of order (against
   the backend's own history), connector crashes, connector RSS before and after.
2. **hostile** — the deliberately hostile peer of ``testkit/hostile.py``. Baseline in the same
   run: an *honest* gap fill of ``--honest`` messages (the backend respects ``limit``). Then the
   hostile run: ``--history`` messages returned for every history request whatever the limit,
   mixed with invalid items, and ``--frame-rounds`` rounds of hostile realtime frames (malformed,
   100k-deep, unknown and 200 KB kinds, wrong types, too-long ids; one 20 MiB frame and one
   invalid-UTF-8 frame per run). Printed: connector RSS (baseline, peak sampled every 50 ms,
   after 5 s), events stored for the hostile server against its quota, rejections logged,
   crashes.

    python -m bench.bench_hostile [--quick] [--json]

Every process it starts is stopped at the end; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.core.procs import ManagedProcess, free_port, nats_server_binary
from testkit.connector_proc import ConnectorProc, DevserverProc, stream_report
from testkit.eventlog import EventLog
from testkit.hostile import HostileBackend, message_doc, running_hostile, wait_sockets

MiB = 1024 * 1024


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


def lives(events: EventLog, server_id: str) -> int:
    return sum(1 for e in events.of("server.connection", server_id) if e["payload"]["state"] == "live")


class RssSampler:
    def __init__(self, proc: ConnectorProc) -> None:
        self.proc = proc
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, self.proc.rss())
            await asyncio.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self.peak = self.proc.rss()
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def scenario_drops(
    nats_url: str, tmp: Path, messages: int, drops: int, restarts: int
) -> dict[str, Any]:
    connector = ConnectorProc(nats_url, tmp, "OC_BENCH_DROPS")
    srv = DevserverProc(tmp, "--seed", "family", "--admin", "--state-file", str(tmp / "state.json"))
    await srv.start()
    await connector.drop_streams()
    await connector.start()
    try:
        assert connector.bus is not None
        events = EventLog()
        await events.attach(connector.bus, "alice")
        await connector.bus.nc.flush()
        await connector.join("alice", srv.base_url, "srv_family")
        await events.wait_for(lambda ev: lives(events, "srv_family") == 1, timeout=60)
        rss_before = connector.rss()
        started = time.perf_counter()
        bursts = messages // 50
        drop_at = {round((i + 1) * bursts / (drops + 1)) for i in range(drops)}
        restart_at = {round((i + 1) * bursts / (restarts + 1)) for i in range(restarts)}
        channels = ("ch_general", "ch_plans")
        for index in range(1, bursts + 1):
            await srv.admin(
                "/_admin/burst", {"channel_id": channels[index % 2], "count": 50, "body_prefix": f"b{index}"}
            )
            if index in drop_at:
                await srv.admin("/_admin/realtime/drop", {})
            if index in restart_at:
                await srv.restart()
        expected = {c: await srv.history_ids(c) for c in channels}

        def complete(ev: list[dict[str, object]]) -> bool:
            return all(set(ids) <= set(events.message_ids("srv_family", c)) for c, ids in expected.items())

        timed_out = False
        try:
            await events.wait_for(complete, timeout=300)
        except TimeoutError:
            timed_out = True
        marker = await srv.admin(
            "/_admin/messages", {"channel_id": "ch_general", "user_uid": "uid_m", "body": "end"}
        )
        mid = marker["message"]["id"]
        with contextlib.suppress(TimeoutError):
            await events.wait_for(
                lambda ev: mid in events.message_ids("srv_family", "ch_general"), timeout=60
            )
        expected["ch_general"].append(mid)
        elapsed = time.perf_counter() - started
        reports = [stream_report(ids, events.message_ids("srv_family", c)) for c, ids in expected.items()]
        return {
            "messages": sum(len(v) for v in expected.values()),
            "drops": len(drop_at),
            "restarts": srv.restarts,
            "lost": sum(r["lost"] for r in reports),
            "duplicated": sum(r["duplicated"] for r in reports),
            "out_of_order": sum(r["out_of_order"] for r in reports),
            "timed_out": timed_out,
            "crashes": int(not connector.alive) + connector.log_count("session cycle failed"),
            "reconnects": lives(events, "srv_family") - 1,
            "elapsed_s": round(elapsed, 1),
            "rss_before_mb": round(rss_before / MiB, 1),
            "rss_after_mb": round(connector.rss() / MiB, 1),
        }
    finally:
        await connector.close()
        srv.kill()


HOSTILE_FRAMES: list[str] = [
    "{not json",
    '{"type":"chat.message.created","payload":' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"type":"chat.weird.thing","payload":{}}',
    json.dumps({"type": "k" * 200_000, "payload": {}}),
    json.dumps(
        {"type": "chat.message.created", "payload": {"message": {**message_doc("ch_h", 7, "x"), "id": 5}}}
    ),
    json.dumps(
        {
            "type": "chat.message.created",
            "payload": {"message": message_doc("ch_h", 8, "x") | {"id": "y" * 300}},
        }
    ),
]


def add_hostile_items(evil: HostileBackend, every: int, total: int) -> None:
    """``total`` valid messages with an invalid item after every ``every``."""
    for start in range(0, total, every):
        evil.add("ch_h", min(every, total - start), body="b" * 120)
        n = evil.next_n()
        evil.add_raw("ch_h", json.dumps(message_doc("ch_h", n, "x") | {"author_uid": 5}).encode())
        evil.add_raw("ch_h", json.dumps(message_doc("ch_h", n, "x") | {"id": "z" * 300 + str(n)}).encode())


async def gap_after_drop(evil: HostileBackend, events: EventLog, lives_before: int) -> None:
    await evil.drop_sockets()
    await events.wait_for(lambda ev: lives(events, "srv_evil") == lives_before + 1, timeout=300)
    await wait_sockets(evil)


async def scenario_hostile(
    nats_url: str, tmp: Path, honest: int, history: int, rounds: int, repeat: int
) -> dict[str, Any]:
    # 60 s per request: parsing a 100k-item answer takes ~2 s on a quiet machine, more under load
    connector = ConnectorProc(nats_url, tmp, "OC_BENCH_HOSTILE", OPENCHAT_CONNECTOR_REQUEST_TIMEOUT_S="60")
    await connector.drop_streams()
    await connector.start()
    try:
        assert connector.bus is not None
        async with running_hostile() as evil:
            events = EventLog()
            await events.attach(connector.bus, "alice")
            await connector.bus.nc.flush()
            evil.add("ch_h", 10)
            await connector.join("alice", evil.base_url, "srv_evil")
            await events.wait_for(lambda ev: lives(events, "srv_evil") == 1, timeout=60)
            await wait_sockets(evil)
            idle = connector.rss()

            # baseline: an honest gap fill of ``honest`` messages
            evil.add("ch_h", honest, body="b" * 120)
            target = set(evil.ids["ch_h"])
            with RssSampler(connector) as honest_rss:
                t0 = time.perf_counter()
                await gap_after_drop(evil, events, 1)
                await events.wait_for(
                    lambda ev: target <= set(events.message_ids("srv_evil", "ch_h")), timeout=300
                )
                honest_s = time.perf_counter() - t0
            honest_after = connector.rss()

            # hostile: every history answer holds everything, invalid items mixed in
            evil.ignore_limit = True
            add_hostile_items(evil, 1000, history)
            with RssSampler(connector) as hostile_rss:
                t0 = time.perf_counter()
                await gap_after_drop(evil, events, 2)
                frames_sent = 0
                for _ in range(rounds):
                    for frame in HOSTILE_FRAMES:
                        frames_sent += await evil.push(frame)
                frames_sent += await evil.push(b"x" * (20 * MiB))
                await events.wait_for(lambda ev: lives(events, "srv_evil") == 4, timeout=300)
                await wait_sockets(evil)
                frames_sent += await evil.push(b'{"type":"x","payload":{"a":"\xff"}}', text=True)
                await events.wait_for(lambda ev: lives(events, "srv_evil") == 5, timeout=300)
                await wait_sockets(evil)
                # the bounded fills go on (1,000 per fill) until the Profile A window is done or the
                # quota stops them: wait until nothing more arrives for 5 s
                last, quiet_since = -1, time.perf_counter()
                while time.perf_counter() - quiet_since < 5.0:
                    now_count = len(events.message_ids("srv_evil", "ch_h"))
                    if now_count != last:
                        last, quiet_since = now_count, time.perf_counter()
                    await asyncio.sleep(0.25)
                hostile_s = time.perf_counter() - t0 - 5.0
            await asyncio.sleep(5.0)  # settle: what stays is what the process keeps
            after = connector.rss()
            # the same hostile answers again (every reconnect re-reads 100k items per request):
            # a leak grows per round, a high-water mark does not
            rounds_after: list[float] = []
            lives_now = lives(events, "srv_evil")
            for index in range(repeat):
                await gap_after_drop(evil, events, lives_now)
                lives_now += 1
                for frame in HOSTILE_FRAMES:
                    await evil.push(frame)
                marker = f"chat.marker{index}"  # handled after everything before it
                await evil.push(json.dumps({"type": marker, "payload": {}}))
                await connector.wait_log("ignored unknown realtime event kind", timeout=300, type=marker)
                await asyncio.sleep(3.0)
                rounds_after.append(round(connector.rss() / MiB, 1))
            ids = events.message_ids("srv_evil", "ch_h")
            stored_bytes = sum(
                len(json.dumps({k: v for k, v in e.items() if k != "_seq"}, separators=(",", ":")))
                for e in events.of("message.created", "srv_evil")
            )
            logs = connector.logs()

            def count(msg: str) -> int:
                return sum(1 for d in logs if d.get("msg") == msg)

            return {
                "honest_messages": honest,
                "honest_fill_s": round(honest_s, 2),
                "hostile_history_items": len(evil.items["ch_h"]),
                "hostile_s": round(hostile_s, 1),
                "history_requests": evil.history_requests,
                "stored_messages": len(ids),
                "duplicated": len(ids) - len(set(ids)),
                "stored_mb": round(stored_bytes / MiB, 2),
                "hostile_frames_delivered": frames_sent,
                "rejections_logged": count("history item rejected")
                + count("dropped invalid realtime payload")
                + count("dropped malformed realtime frame")
                + count("ignored unknown realtime event kind")
                + count("realtime frame rejected: larger than the limit; reconnecting")
                + count("realtime frame rejected: invalid UTF-8; reconnecting"),
                "quota_episodes": count("storage quota reached; events held back until it refills"),
                "crashes": int(not connector.alive) + count("session cycle failed"),
                "rss_idle_mb": round(idle / MiB, 1),
                "rss_honest_peak_mb": round(honest_rss.peak / MiB, 1),
                "rss_honest_after_mb": round(honest_after / MiB, 1),
                "rss_hostile_peak_mb": round(hostile_rss.peak / MiB, 1),
                "rss_after_5s_mb": round(after / MiB, 1),
                "rss_after_each_repeat_mb": rounds_after,
            }
    finally:
        await connector.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp_name:
        tmp = Path(tmp_name)
        nats = start_nats(tmp)
        try:
            url = f"nats://127.0.0.1:{nats.port}"
            (tmp / "d").mkdir()
            (tmp / "h").mkdir()
            result: dict[str, Any] = {}
            if args.only in (None, "drops"):
                result["drops"] = await scenario_drops(
                    url, tmp / "d", args.messages, args.drops, args.restarts
                )
            if args.only in (None, "hostile"):
                result["hostile"] = await scenario_hostile(
                    url, tmp / "h", args.honest, args.history, args.frame_rounds, args.repeat
                )
            return result
        finally:
            nats.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2,000 messages, 10 drops, 3 restarts; 20k history")
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--drops", type=int, default=30)
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--honest", type=int, default=5_000)
    p.add_argument("--history", type=int, default=100_000)
    p.add_argument("--frame-rounds", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3, help="hostile rounds after the first (RSS per round)")
    p.add_argument("--only", choices=("drops", "hostile"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.drops, args.restarts = 2_000, 10, 3
        args.history, args.frame_rounds, args.honest = 20_000, 5, 2_000
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for scenario, figures in result.items():
            print(f"[{scenario}]")
            for key, value in figures.items():
                print(f"  {key:24} {value}")
    drops, hostile = result.get("drops"), result.get("hostile")
    ok = drops is None or all(drops[k] == 0 for k in ("lost", "duplicated", "out_of_order", "crashes"))
    ok = ok and (hostile is None or (hostile["crashes"] == 0 and hostile["duplicated"] == 0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
