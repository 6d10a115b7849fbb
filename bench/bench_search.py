"""Benchmark: message search (issue 17) — query latency, index size, and the ingest cost of indexing.

Two parts, one run:

1. **Index and queries.** ``--messages`` synthetic messages (default 100,000; the issue's figure
   is ``--messages 1000000``) of one member over 3 servers x 20 channels are written to a fresh
   index file exactly as the indexer writes them (``SearchIndex.apply`` in batches of 512): words
   drawn from a 5,000-word Zipf-like vocabulary, 5 to 25 words each, 1 in 20 in Japanese or Korean.
   Then ``--queries`` queries of each kind (common word, rare word, two words, phrase, prefix,
   Japanese, Korean, from:, in:server/, a date range) run as the ``search`` command runs them
   (parse, FTS5 query for 50 hits newest first, snippets): p50/p99 per kind and overall, and
   the file size per message.
2. **Ingest cost.** A private nats-server and redis-server; ``--ingest`` ``message.created`` events
   are stored once, then consumed by the state service (``StateRuntime``) from the start: search
   off (the materializer alone), ``fed`` (the indexer in the service's process, fed by the view's
   pass: ``STATE_SEARCH_WORKER=false``), ``piped`` (the indexer in its niced worker process, fed by
   the view's pass over a socket: the default) and, with ``--modes``, ``worker`` (the worker reading the stream with its own
   consumer), alternating ``--rounds`` times
   (Redis flushed and the index file deleted between runs). Prints the median time until the view
   has applied everything, until the index has too, and CPU seconds (state process + worker),
   each as a ratio to search off.

3. With ``--tokenizers N``: the FTS5 tokenizer comparison of ADR 0014 on N messages.

    python -m bench.bench_search [--messages 100000] [--queries 30] [--ingest 20000] [--rounds 3]
                                 [--tokenizers 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from services.core.bus import Bus, ConnectOptions
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import (
    ChatMessage,
    MessageCreated,
    ServerJoined,
    ServerRecord,
    message_event_id,
)
from services.core.procs import ManagedProcess, free_port, nats_server_binary, redis_process
from services.core.search_query import parse_query, snippet
from services.state.app import StateRuntime
from services.state.search_index import Filters, PutMessage, SearchIndex, SearchTimeout
from services.state.settings import StateSettings

MEMBER = "bench"
SERVERS = ("srv_a", "srv_b", "srv_c")
CHANNELS = tuple(f"ch_{i:02d}" for i in range(20))
AUTHORS = tuple(f"uid_{i:04d}" for i in range(200))
T0 = datetime(2025, 1, 1, tzinfo=UTC)
STREAM = "OC_EVENTS"
SYLLABLES = ("ka", "to", "ri", "ne", "su", "mo", "la", "vi", "po", "de", "an", "el", "or", "um", "ix")
JAPANESE = ("私は東京都に住んでいます", "明日は京都で会議があります", "新しい機能を試してみました")
KOREAN = ("저는 한국어를 공부합니다", "내일 서울에서 회의가 있습니다", "새로운 기능을 사용해 봤어요")


def vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def make_bodies(rng: random.Random, words: list[str], n: int) -> list[str]:
    cum: list[float] = []
    total = 0.0
    for rank in range(len(words)):  # Zipf-like
        total += 1.0 / (rank + 1)
        cum.append(total)
    out = []
    for i in range(n):
        if i % 20 == 7:
            out.append(rng.choice(JAPANESE if i % 40 == 7 else KOREAN) + f" {i}")
            continue
        out.append(" ".join(rng.choices(words, cum_weights=cum, k=rng.randint(5, 25))))
    return out


# -- part 1: the index and its queries -------------------------------------------------------------
def build_index(path: Path, n: int, rng: random.Random, words: list[str]) -> tuple[SearchIndex, float]:
    index = SearchIndex(path)
    elapsed = 0.0  # only the index writes are timed, not making up the messages
    chunk = 50_000
    for start in range(0, n, chunk):
        bodies = make_bodies(rng, words, min(chunk, n - start))
        ops = [
            PutMessage(
                MEMBER,
                SERVERS[(start + i) % len(SERVERS)],
                CHANNELS[(start + i) // 3 % len(CHANNELS)],
                f"msg_{start + i:09d}",
                AUTHORS[(start + i) % len(AUTHORS)],
                T0 + timedelta(seconds=(start + i) * 2),
                body,
            )
            for i, body in enumerate(bodies)
        ]
        t0 = time.perf_counter()
        for b in range(0, len(ops), 512):
            index.apply(ops[b : b + 512], "bench", start + b)
        elapsed += time.perf_counter() - t0
    index._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return index, elapsed


def query_kinds(rng: random.Random, words: list[str], n: int) -> dict[str, list[tuple[str, Filters]]]:
    common, rare = words[:20], words[2000:]
    end = T0 + timedelta(seconds=n * 2)
    out: dict[str, list[tuple[str, Filters]]] = {}

    def many(make: Any, count: int) -> list[tuple[str, Filters]]:
        return [make() for _ in range(count)]

    out["common word"] = many(lambda: (rng.choice(common), Filters()), 30)
    out["rare word"] = many(lambda: (rng.choice(rare), Filters()), 30)
    out["two words"] = many(lambda: (f"{rng.choice(words[:300])} {rng.choice(words[:300])}", Filters()), 30)
    out["phrase"] = many(lambda: (f'"{rng.choice(words[:100])} {rng.choice(words[:100])}"', Filters()), 30)
    out["prefix*"] = many(lambda: (rng.choice(words[:500])[:3] + "*", Filters()), 30)
    out["japanese"] = many(lambda: (rng.choice(["東京", "京都", "会議", "機能"]), Filters()), 30)
    out["korean"] = many(lambda: (rng.choice(["한국어", "서울", "회의", "기능"]), Filters()), 30)
    out["word from:"] = many(lambda: (f"{rng.choice(words[:300])} from:{rng.choice(AUTHORS)}", Filters()), 30)
    out["word in:server/"] = many(
        lambda: (f"{rng.choice(words[:300])} in:{rng.choice(SERVERS)}/", Filters()), 30
    )
    out["word + date range"] = many(
        lambda: (
            rng.choice(words[:300]),
            Filters(after=end - timedelta(days=rng.randint(2, 20)), before=end - timedelta(days=1)),
        ),
        30,
    )
    return out


def run_queries(
    index: SearchIndex, kinds: dict[str, list[tuple[str, Filters]]], rounds: int
) -> dict[str, Any]:
    per_kind: dict[str, dict[str, float]] = {}
    everything: list[float] = []
    for kind, queries in kinds.items():
        times = []
        hits = timeouts = 0
        for text, filters in queries[: max(1, rounds)]:
            t0 = time.perf_counter()
            query = parse_query(text)
            try:
                rows, _ = index.search(MEMBER, query, filters, 50)
            except SearchTimeout:
                timeouts += 1
                rows = []
            for row in rows:
                snippet(row.body, query.terms)
            times.append((time.perf_counter() - t0) * 1000)
            hits += len(rows)
        times.sort()
        everything += times
        per_kind[kind] = {
            "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
            "mean_hits": round(hits / len(times), 1),
            "timeouts": timeouts,
        }
    everything.sort()
    return {
        "kinds": per_kind,
        "p50_ms": round(statistics.median(everything), 2),
        "p99_ms": round(everything[min(len(everything) - 1, int(len(everything) * 0.99))], 2),
        "queries": len(everything),
    }


# -- tokenizer choice (ADR 0014) ---------------------------------------------------------------------
TOKENIZER_QUERIES = ("東京", "東京都", "会議", "한국어", "서울", "회의")


def compare_tokenizers(n: int, rng: random.Random, words: list[str], tmp: Path) -> dict[str, Any]:
    """The same ``n`` messages in three contentless FTS5 tables: unicode61 on the raw text,
    unicode61 on the bigram-segmented text (what the index does), and the trigram tokenizer on
    the raw text. File size, build time, and hits of 2- and 3-character CJK/Hangul words (the
    true count is a substring count over the raw bodies)."""
    import sqlite3

    from services.core.search_query import segment, to_fts5

    bodies = make_bodies(rng, words, n)
    truth = {q: sum(q in b for b in bodies) for q in TOKENIZER_QUERIES}

    def raw(text: str) -> str:
        return text

    def quoted(q: str) -> str:
        return f'"{q}"'

    def segmented_query(q: str) -> str:
        return to_fts5(parse_query(q).terms)

    variants: dict[str, tuple[str, Callable[[str], str], Callable[[str], str]]] = {
        "unicode61 (raw text)": ("unicode61 remove_diacritics 2", raw, quoted),
        "unicode61 + bigrams (chosen)": ("unicode61 remove_diacritics 2", segment, segmented_query),
        "trigram (raw text)": ("trigram", raw, quoted),
    }
    out: dict[str, Any] = {"messages": n, "true_hits": truth}
    for name, (tokenizer, prepare, expr) in variants.items():
        path = tmp / f"tok-{len(out)}.sqlite3"
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            f"CREATE VIRTUAL TABLE f USING fts5(body, content='', columnsize=0, tokenize='{tokenizer}')"
        )
        t0 = time.perf_counter()
        for start in range(0, n, 512):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO f(rowid, body) VALUES (?, ?)",
                ((start + i + 1, prepare(b)) for i, b in enumerate(bodies[start : start + 512])),
            )
            db.execute("COMMIT")
        build = time.perf_counter() - t0
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        hits = {
            q: db.execute("SELECT count(*) FROM f WHERE body MATCH ?", (expr(q),)).fetchone()[0]
            for q in TOKENIZER_QUERIES
        }
        db.close()
        out[name] = {
            "bytes_per_message": round(path.stat().st_size / n, 1),
            "build_us_per_message": round(build / n * 1e6, 1),
            "hits": hits,
        }
    return out


# -- part 2: ingest with and without indexing ------------------------------------------------------
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


async def publish_events(bus: Bus, n: int, rng: random.Random, words: list[str]) -> int:
    record = ServerRecord(
        server_id="srv_a",
        base_url="http://127.0.0.1:1",
        display_name="A",
        icon_text="A",
        user_uid="uid_me",
        device_id="dev",
        joined_at=T0,
    )
    joined = EventEnvelope[ServerJoined](
        event_id="joined:1", server_id="srv_a", type="server.joined", payload=ServerJoined(server=record)
    )
    await bus.publish_event(MEMBER, joined)
    bodies = make_bodies(rng, words, n)
    last = 0
    for start in range(0, n, 2000):
        envs = []
        for i in range(start, min(n, start + 2000)):
            msg = ChatMessage(
                id=f"msg_{i:09d}",
                server_id="srv_a",
                channel_id=CHANNELS[i % len(CHANNELS)],
                author_uid=AUTHORS[i % len(AUTHORS)],
                body=bodies[i],
                created_at=T0 + timedelta(seconds=i),
            )
            envs.append(
                EventEnvelope[MessageCreated](
                    event_id=message_event_id(msg.id, msg.created_at),
                    server_id="srv_a",
                    channel_id=msg.channel_id,
                    type="message.created",
                    payload=MessageCreated(message=msg),
                )
            )
        acks = await bus.publish_events(MEMBER, envs)
        last = acks[-1].seq
    return last


# off: the view alone; fed: the index in the state process, fed by the view's pass;
# piped: the index in its child process (niced), fed by the view's pass over a socket (the default);
# idle: the same with the child on Linux's SCHED_IDLE (only CPU time nothing else wants);
# worker: the index in its child process, reading the stream with its own consumer
ALL_MODES = ("off", "fed", "piped", "idle", "worker")
MODES = ALL_MODES[:4]


async def ingest_once(
    bus: Bus, redis: aioredis.Redis, home: Path, nats_url: str, redis_url: str, last_seq: int, mode: str
) -> tuple[float, float, float]:
    """(seconds until the view has applied everything, until the index has too, CPU of the state
    process and, in ``worker`` mode, of its search worker)."""
    import psutil

    await redis.flushall()
    for f in (home / "data" / "search").glob("*"):
        f.unlink()
    settings = StateSettings(
        home=home,
        events_stream=STREAM,
        message_window=500,
        nats_url=nats_url,
        redis_url=redis_url,
        state_search_enabled=mode != "off",
        state_search_worker_fed=mode in ("piped", "idle"),
        state_search_worker_idle=mode == "idle",
    )
    rt = StateRuntime(bus, redis, settings, search_worker=mode in ("worker", "piped", "idle"))
    me = psutil.Process()
    child_cpu0 = 0.0
    if mode in ("piped", "idle") and rt.search is not None and rt.search.worker is not None:
        # the worker process is started once with the service, not per message: its start-up
        # (spawn, imports, opening the file) is left out — it is up and following the (not yet
        # started) view's pass before the clock starts; its CPU so far is subtracted
        rt.search.start()
        deadline = time.monotonic() + 120
        while (await asyncio.to_thread(rt.search.status)).get("caught_up", 0) != 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the search worker did not come up")
            await asyncio.sleep(0.05)
        proc = rt.search.worker.process
        if proc is not None and proc.pid is not None:
            t = psutil.Process(proc.pid).cpu_times()
            child_cpu0 = t.user + t.system
    cpu0, t0 = me.cpu_times(), time.perf_counter()
    rt.materializer.start()  # no commands: only the consumers are measured
    if rt.search is not None and mode not in ("piped", "idle"):
        rt.search.start()
    await rt.materializer.wait_for(lambda m: m.applied_seq >= last_seq, timeout=1800)
    view_s = time.perf_counter() - t0
    child_cpu = 0.0
    if rt.search is not None:
        while (await asyncio.to_thread(rt.search.status)).get("seq", 0) < last_seq:
            worker = rt.search.worker
            if worker is not None and worker.process is not None and worker.process.pid is not None:
                with contextlib.suppress(psutil.Error):
                    t = psutil.Process(worker.process.pid).cpu_times()
                    child_cpu = t.user + t.system
            await asyncio.sleep(0.05)
    all_s = time.perf_counter() - t0
    worker = rt.search.worker if rt.search is not None else None
    if worker is not None and worker.process is not None and worker.process.pid is not None:
        with contextlib.suppress(psutil.Error):  # the worker is still running: its CPU so far
            t = psutil.Process(worker.process.pid).cpu_times()
            child_cpu = t.user + t.system
    cpu1 = me.cpu_times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system) + max(0.0, child_cpu - child_cpu0)
    await rt.stop()
    return view_s, all_s, cpu


async def ingest_part(
    n: int, rounds: int, rng: random.Random, words: list[str], tmp: Path, modes: tuple[str, ...] = MODES
) -> dict[str, Any]:
    nats = start_nats(tmp)
    redis_port = free_port()
    redis_proc = redis_process(tmp / "redis", "127.0.0.1", redis_port)
    redis_proc.start()
    nats_url, redis_url = f"nats://127.0.0.1:{nats.port}", f"redis://127.0.0.1:{redis_port}/0"
    bus = await Bus.connect(ConnectOptions(url=nats_url, name="bench-search"), first_attempts=5)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await bus.ensure_events_stream(STREAM)
        t0 = time.perf_counter()
        last_seq = await publish_events(bus, n, rng, words)
        publish_s = time.perf_counter() - t0
        runs: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
        load_before = os.getloadavg()
        for _ in range(rounds):
            for mode in modes:
                runs[mode].append(
                    await ingest_once(bus, redis, tmp / "home", nats_url, redis_url, last_seq, mode)
                )
    finally:
        await redis.aclose()
        await bus.close()
        redis_proc.stop()
        nats.stop()

    def med(mode: str, i: int) -> float:
        return statistics.median(r[i] for r in runs[mode])

    off_s, off_cpu = med("off", 0), med("off", 2)
    out: dict[str, Any] = {
        "events": n,
        "rounds": rounds,
        "publish_s": round(publish_s, 2),
        "off_s": round(off_s, 2),
        "off_events_per_s": round(n / off_s),
        "cpu_off_s": round(off_cpu, 2),
        "runs": {m: [[round(x, 2) for x in r] for r in runs[m]] for m in modes},
        "load": [round(x, 2) for x in (*load_before, *os.getloadavg())],
    }
    for mode in modes[1:]:
        out[mode] = {
            "view_s": round(med(mode, 0), 2),
            "index_s": round(med(mode, 1), 2),
            "view_ratio": round(med(mode, 0) / off_s, 3),
            "index_ratio": round(med(mode, 1) / off_s, 3),
            "cpu_s": round(med(mode, 2), 2),
            "cpu_ratio": round(med(mode, 2) / off_cpu, 3),
        }
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(17)
    words = vocabulary(rng)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp_s:
        tmp = Path(tmp_s)
        if args.messages:
            path = tmp / "index" / "index.sqlite3"
            if args.keep is not None and args.keep.exists():
                index, build_s = SearchIndex(args.keep), float("nan")  # reuse a built index
                rng.random()
            else:
                index, build_s = build_index(args.keep or path, args.messages, rng, words)
            size = index.size_bytes()
            queries = run_queries(index, query_kinds(rng, words, args.messages), args.queries)
            index.close()
            result["index"] = {
                "messages": args.messages,
                "build_s": round(build_s, 1),
                "build_messages_per_s": round(args.messages / build_s) if build_s == build_s else None,
                "file_bytes": size,
                "bytes_per_message": round(size / args.messages, 1),
                **queries,
            }
        if args.tokenizers:
            result["tokenizers"] = compare_tokenizers(args.tokenizers, rng, words, tmp)
        if args.ingest:
            modes = ("off", *(m for m in args.modes.split(",") if m in ALL_MODES[1:]))
            result["ingest"] = await ingest_part(args.ingest, args.rounds, rng, words, tmp, modes)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000, help="messages in the index (0: skip)")
    parser.add_argument("--queries", type=int, default=30, help="queries of each kind")
    parser.add_argument(
        "--ingest", type=int, default=20_000, help="events for the ingest comparison (0: skip)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating off/on ingest runs")
    parser.add_argument(
        "--modes", default="fed,piped,idle", help="indexing modes against off: fed, piped, idle, worker"
    )
    parser.add_argument("--keep", type=Path, help="index file to keep (and reuse when it exists)")
    parser.add_argument(
        "--tokenizers",
        type=int,
        default=0,
        help="also compare FTS5 tokenizers on this many messages (ADR 0014)",
    )
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    if "index" in result:
        ix = result["index"]
        print(
            f"index: {ix['messages']:,} messages in {ix['build_s']} s ({ix['build_messages_per_s']:,}/s), "
            f"{ix['file_bytes'] / 1e6:.1f} MB = {ix['bytes_per_message']} bytes/message"
        )
        print(f"queries ({ix['queries']}): p50 {ix['p50_ms']} ms, p99 {ix['p99_ms']} ms")
        for kind, figures in ix["kinds"].items():
            print(
                f"  {kind:<20} p50 {figures['p50_ms']:>8} ms  p99 {figures['p99_ms']:>8} ms  "
                f"hits {figures['mean_hits']}  timeouts {figures['timeouts']}"
            )
    if "tokenizers" in result:
        tok = result["tokenizers"]
        print(f"tokenizers on {tok['messages']:,} messages; true hits {tok['true_hits']}")
        for name, figures in tok.items():
            if isinstance(figures, dict) and "hits" in figures:
                print(
                    f"  {name:<30} {figures['bytes_per_message']:>7} bytes/msg "
                    f"{figures['build_us_per_message']:>7} us/msg  hits {figures['hits']}"
                )
    if "ingest" in result:
        ing = result["ingest"]
        print(
            f"ingest of {ing['events']:,} message.created, medians of {ing['rounds']} alternating runs; "
            f"search off: view applied in {ing['off_s']} s ({ing['off_events_per_s']:,}/s), CPU {ing['cpu_off_s']} s"
        )
        print(f"  load average before (1/5/15 min) and after: {ing['load']}")
        for mode in [m for m in ALL_MODES[1:] if m in ing]:
            f = ing[mode]
            print(
                f"  search on ({mode}): view applied in {f['view_s']} s = x{f['view_ratio']}, "
                f"index caught up in {f['index_s']} s = x{f['index_ratio']}, CPU {f['cpu_s']} s = x{f['cpu_ratio']}"
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
