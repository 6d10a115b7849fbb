"""The search indexer in its own process (``STATE_SEARCH_WORKER=true``, the default; ADR 0014).

Indexing costs CPU per message (the FTS5 inserts). In the state service's own process it competes
with the view's materializer for one interpreter; in a child process, at a lower CPU priority
(``STATE_SEARCH_WORKER_NICE``), it runs beside it and yields to it (bench/RESULTS.md).
By default (``STATE_SEARCH_WORKER_FED``) the view's pass sends it its batches over a socket
(``search_feed``: the stored bytes, flagged when the view validated them): one read of the stream;
it reads the stream itself only to catch up.

``IndexWorker`` (in the state service) starts ``python``'s ``spawn`` child running ``main``: its
own bus connection (the service's credentials), Redis (to seed a lost index from the view) and
the index file, which it alone writes. The state service keeps serving ``search`` from the same
file (SQLite WAL: readers never wait for the writer) and reads the worker's progress from it. A
worker that exits is started again with backoff; one whose parent is gone stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
from multiprocessing.process import BaseProcess

import redis.asyncio as aioredis

from services.core.bus import Bus, backoff_delays
from services.core.log import configure_logging
from services.core.paths import HomeLayout
from services.core.service import bus_options
from services.state.search_feed import FeedSender, FeedSource, socket_pair
from services.state.search_index import SearchIndex
from services.state.search_indexer import SearchIndexer
from services.state.settings import StateSettings
from services.state.store import ViewStore

log = logging.getLogger("openchat.state.search")
STOP_TIMEOUT_S = 10.0
PARENT_CHECK_S = 1.0


def main(settings: StateSettings, parent_pid: int, feed: socket.socket | None = None) -> None:
    """The child process. ``feed``: its end of the socket the view's pass sends its batches on."""
    configure_logging(settings.log_level, settings.log_json)
    if settings.state_search_worker_nice:
        with contextlib.suppress(OSError):  # background work: the view's process goes first
            os.nice(settings.state_search_worker_nice)
    if settings.state_search_worker_idle and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):  # only CPU time the view (and everything else) leaves
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(settings, parent_pid, feed))


async def _run(settings: StateSettings, parent_pid: int, feed: socket.socket | None) -> None:
    from services.state.search_files import index_path, open_index, seed_from_view

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bus = await Bus.connect(bus_options(settings, "state"))  # the state service's own NATS user
    redis = (  # with the stack's Redis password (the embedded Redis requires one)
        aioredis.Redis.from_url(settings.redis_url, password=settings.redis_auth())
        if settings.redis_url
        else None
    )
    index = open_index(index_path(settings))
    store = ViewStore(redis, settings.events_stream) if redis is not None else None

    async def seed(ix: SearchIndex) -> int:
        return await seed_from_view(store, ix) if store is not None else 0

    source = FeedSource(feed) if feed is not None else None
    indexer = SearchIndexer(
        bus,
        index,
        settings.events_stream,
        registry_db=HomeLayout(settings.home).registry_db,
        reconcile_s=settings.state_search_reconcile_s,
        seed=seed,
        source=source,
    )
    reader = asyncio.create_task(source.run(indexer.offer_ops), name="state-search-feed") if source else None
    indexer.start()
    log.info("search worker started", extra={"pid": os.getpid()})
    try:
        while not stop.is_set():
            if os.getppid() != parent_pid:
                log.warning("the state service is gone: the search worker stops")
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PARENT_CHECK_S)
            if reader is not None and reader.done():
                log.warning("the search feed ended: the search worker stops")
                break
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        await indexer.stop()
        index.close()
        await bus.close()
        if redis is not None:
            await redis.aclose()


class IndexWorker:
    """Runs ``main`` in a child process and keeps it running until ``stop``."""

    def __init__(self, settings: StateSettings, feed: FeedSender | None = None) -> None:
        self.settings = settings
        self.feed = feed  # the view's pass feeds the worker over a socket (else: its own read)
        self.process: BaseProcess | None = None
        self.starts = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        if self.feed is not None:
            self.feed.start()
        self._task = asyncio.create_task(self._supervise(), name="state-search-worker")

    async def _supervise(self) -> None:
        delays = backoff_delays(0.5, 30.0)
        ctx = multiprocessing.get_context("spawn")
        while not self._stopping:
            ours, theirs = socket_pair() if self.feed is not None else (None, None)
            proc = ctx.Process(
                target=main,
                args=(self.settings, os.getpid(), theirs),
                name="openchat-state-search",
                daemon=True,
            )
            try:
                proc.start()
            finally:
                if theirs is not None:
                    theirs.close()  # the child has its own copy
            self.process = proc
            if self.feed is not None:
                self.feed.attach(ours)
            self.starts += 1
            await asyncio.to_thread(proc.join)
            if self.feed is not None:
                self.feed.attach(None)
            if self._stopping:
                return
            delay = next(delays)
            log.warning(
                "search worker exited, starting it again",
                extra={"exitcode": proc.exitcode, "retry_in_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        self._stopping = True
        proc = self.process
        if proc is not None and proc.is_alive():
            proc.terminate()  # SIGTERM: the worker stops its consumer and closes the file
            await asyncio.to_thread(proc.join, STOP_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 2)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.feed is not None:
            await self.feed.stop()
