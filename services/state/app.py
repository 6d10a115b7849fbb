"""The state service: materializes each member's view in Redis and answers snapshot/sync.

Wiring only; the pieces are:

- ``services.state.domain``: the pure view reducer (events → ops on a member's view);
- ``services.state.store``: the Redis layout, atomic application of ops, consistent reads;
- ``services.state.materializer``: the ordered stream consumer, rebuild on Redis loss;
- ``services.state.sync``: ``sync`` from the stream on the member's behalf;
- ``services.state.http`` + ``media`` + ``tokens``: the HTTP API (media bytes, read-only state).

Bus commands (``oc.<member>.cmd.state.<verb>``; the member always comes from the subject):
``snapshot``, ``sync``, ``history``, ``servers``, ``http_token`` (contracts in
``services.core.contracts.chat``) and ``search`` (``services.core.contracts.search``; the index is
``services.state.search``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import httpx
import redis.asyncio as aioredis
from fastapi import APIRouter
from prometheus_client import Gauge
from pydantic import BaseModel

from services.core.bus import Bus, CommandError
from services.core.contracts.bus import Empty, utcnow
from services.core.contracts.chat import (
    HttpToken,
    ServerList,
    Snapshot,
    SnapshotArgs,
    SyncArgs,
    ViewHistoryArgs,
    ViewHistoryResult,
)
from services.core.contracts.search import SearchArgs
from services.core.paths import HomeLayout
from services.core.service import Service, ServiceContext
from services.state import tokens
from services.state.domain import MAX_CHANNEL_ID_CHARS, InvalidEvent, check_text_id
from services.state.http import build_router
from services.state.materializer import Materializer
from services.state.media import MediaCache, MediaFetcher
from services.state.search import SearchRuntime
from services.state.settings import StateSettings
from services.state.store import ViewBusy, ViewStore
from services.state.sync import sync_events

SERVICE_NAME = "state"
T = TypeVar("T")


class StateRuntime:
    """Everything the state service runs, given a connected bus and Redis."""

    def __init__(
        self,
        bus: Bus,
        redis: aioredis.Redis,
        settings: StateSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        http_client: httpx.AsyncClient | None = None,
        search_worker: bool = False,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.clock = clock
        self.stream = settings.events_stream
        self.store = ViewStore(redis, self.stream)
        self.materializer = Materializer(
            bus,
            self.store,
            self.stream,
            settings.message_window,
            clock,
            registry_db=HomeLayout(settings.home).registry_db,
        )
        self.search = (
            SearchRuntime(bus, self.store, settings, self.stream, worker=search_worker)
            if settings.state_search_enabled
            else None
        )
        configured = settings.state_http_secret
        self.secret = configured.get_secret_value().encode() if configured else secrets.token_bytes(32)
        self._own_client = http_client is None
        self.http_client = http_client or httpx.AsyncClient()
        self.media = MediaFetcher(
            MediaCache(settings.home / "cache" / "media", settings.state_media_cache_bytes),
            self.http_client,
            settings.state_media_max_bytes,
            settings.state_media_timeout_s,
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def register_commands(self) -> None:
        bus = self.bus

        @bus.command(SERVICE_NAME, "snapshot", SnapshotArgs)
        async def snapshot(member: str, args: SnapshotArgs) -> BaseModel:
            return await self.snapshot(member, args)

        @bus.command(SERVICE_NAME, "sync", SyncArgs)
        async def sync(member: str, args: SyncArgs) -> BaseModel:
            return await sync_events(self.bus, self.stream, member, args.since_seq, args.limit)

        @bus.command(SERVICE_NAME, "history", ViewHistoryArgs)
        async def history(member: str, args: ViewHistoryArgs) -> BaseModel:
            if await self.store.server(member, args.server_id) is None:
                raise CommandError("not_found", "no such server in your view")
            return await self.history(member, args.server_id, args.channel_id, args.limit)

        @bus.command(SERVICE_NAME, "servers", Empty)
        async def servers(member: str, args: Empty) -> BaseModel:
            seq, statuses = await self._consistent(lambda: self.store.statuses(member))
            return ServerList(seq=seq, servers=statuses)

        @bus.command(SERVICE_NAME, "search", SearchArgs)
        async def search(member: str, args: SearchArgs) -> BaseModel:
            if self.search is None:
                raise CommandError("unsupported", "search is turned off (OPENCHAT_STATE_SEARCH_ENABLED)")
            return await self.search.search(member, args)

        @bus.command(SERVICE_NAME, "http_token", Empty)
        async def http_token(member: str, args: Empty) -> BaseModel:
            token, expires = tokens.issue(self.secret, member, time.time(), self.settings.state_token_ttl_s)
            return HttpToken(token=token, expires_at=datetime.fromtimestamp(expires, UTC), member=member)

    async def start(self, *, serve_commands: bool = True) -> None:
        self.register_commands()
        if serve_commands:
            await self.bus.serve_commands()
        self.materializer.start()
        if self.search is not None:
            self.search.start()

    async def stop(self) -> None:
        await self.materializer.stop()
        if self.search is not None:
            await self.search.stop()
        if self._own_client:
            await self.http_client.aclose()

    # -- queries --------------------------------------------------------------------------------
    async def _consistent(self, read: Callable[[], Awaitable[T]]) -> tuple[int, T]:
        """``read`` at one applied sequence (the local materializer waits meanwhile)."""
        try:
            async with self.materializer.lock:
                return await self.store.read_consistent(read)
        except ViewBusy as exc:
            raise CommandError("state_rebuilding", f"{exc}; retry shortly", retryable=True) from None

    async def snapshot(self, member: str, args: SnapshotArgs) -> Snapshot:
        now = self.clock()

        async def read() -> Snapshot:
            records = await self.store.servers(member)
            if args.server_id is not None:
                if args.server_id not in records:
                    raise CommandError("not_found", "no such server in your view")
                records = {args.server_id: records[args.server_id]}
            views = [
                await self.store.server_view(member, r, args.messages_per_channel, now)
                for r in records.values()
            ]
            return Snapshot(seq=0, servers=views)

        seq, snap = await self._consistent(read)
        result = snap.model_copy(update={"seq": seq})
        size = len(result.model_dump_json())
        if size > int(self.bus.nc.max_payload) - 4096:
            raise CommandError(
                "snapshot_too_large",
                f"the snapshot is {size} bytes; ask per server_id or for fewer messages_per_channel",
            )
        return result

    async def history(self, member: str, server_id: str, channel_id: str, limit: int) -> ViewHistoryResult:
        try:
            check_text_id(channel_id, "channel id", MAX_CHANNEL_ID_CHARS)
        except InvalidEvent as exc:
            raise CommandError("invalid_payload", str(exc)) from None
        seq, (messages, has_more) = await self._consistent(
            lambda: self.store.window(member, server_id, channel_id, limit)
        )
        return ViewHistoryResult(seq=seq, messages=messages, has_more=has_more)


def search_gauge(search: SearchRuntime, key: str) -> Callable[[], float]:
    """A gauge's value from the indexer's status (read from the index file under the worker)."""

    def value() -> float:
        return float(search.status().get(key, 0))

    return value


@dataclass
class RuntimeRef:
    """Lets the HTTP routes (mounted before the bus is up) find the runtime once it exists."""

    runtime: StateRuntime | None = None


def build_service() -> Service:
    ref = RuntimeRef()

    async def setup(ctx: ServiceContext) -> None:
        assert ctx.bus is not None and ctx.redis is not None
        settings = StateSettings(**ctx.settings.model_dump())
        runtime = StateRuntime(ctx.bus, ctx.redis, settings, search_worker=settings.state_search_worker)
        await runtime.start(serve_commands=False)  # the service runner serves them after setup
        ref.runtime = runtime
        m = runtime.materializer
        for name, doc, value in (
            ("openchat_state_applied_seq", "stream sequence the view reflects", lambda: m.applied_seq),
            ("openchat_state_caught_up", "1 when the view has reached the stream's end", lambda: m.caught_up),
            ("openchat_state_events_skipped", "invalid events skipped since start", lambda: m.skipped),
            ("openchat_state_rebuilds", "view rebuilds since start", lambda: m.rebuilds),
        ):
            Gauge(name, doc, registry=ctx.health.registry).set_function(value)
        search = runtime.search
        if search is not None:
            for key, name, doc in (
                ("seq", "openchat_state_search_indexed_seq", "stream sequence the search index reflects"),
                (
                    "caught_up",
                    "openchat_state_search_caught_up",
                    "1 when the search index has read every event",
                ),
                ("skipped", "openchat_state_search_skipped", "invalid events the search index skipped"),
                ("rebuilds", "openchat_state_search_rebuilds", "search index rebuilds (this start)"),
            ):
                Gauge(name, doc, registry=ctx.health.registry).set_function(search_gauge(search, key))

    async def teardown(ctx: ServiceContext) -> None:
        """Stop the materializer (and its stream subscription) before the bus drains."""
        if ref.runtime is not None:
            await ref.runtime.stop()

    def routes(ctx: ServiceContext) -> APIRouter:
        return build_router(ref)

    return Service(name=SERVICE_NAME, needs_redis=True, setup=setup, routes=routes, teardown=teardown)


SERVICE = build_service()
