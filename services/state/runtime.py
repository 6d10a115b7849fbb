"""The state service's runtime: everything it runs, given a connected bus and Redis.

Bus commands (``oc.<member>.cmd.state.<verb>``; the member always comes from the subject):
``snapshot``, ``sync``, ``history``, ``servers``, ``http_token``. Kept apart from the wiring
(``services.state.app``) and the HTTP routes (``services.state.http``, which get the runtime
from a provider), so no module of the service imports one that imports it back.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import httpx
import redis.asyncio as aioredis
from nats.aio.subscription import Subscription

from services.core.bus import Bus, CommandError, newest_that_fit
from services.core.contracts import commands as cmd
from services.core.contracts import subjects
from services.core.contracts.bus import MAX_REPLY_RESULT_BYTES, Empty, utcnow
from services.core.contracts.chat import (
    HttpToken,
    ServerList,
    Snapshot,
    SnapshotArgs,
    SyncArgs,
    SyncResult,
    ViewHistoryArgs,
    ViewHistoryResult,
)
from services.core.contracts.search import SearchArgs, SearchResult
from services.core.members import MemberRegistry
from services.core.paths import HomeLayout
from services.core.rpc import serve, serve_member_removal
from services.state import tokens
from services.state.domain import MAX_CHANNEL_ID_CHARS, InvalidEvent, check_text_id
from services.state.materializer import Materializer
from services.state.media import MediaCache, MediaFetcher
from services.state.media_bus import register_media
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
        self.registry_db = HomeLayout(settings.home).registry_db
        # the message index (ADR 0014): a removed member's entries go at the indexer's next
        # registry check (it is the index's one writer)
        self.search = (
            SearchRuntime(
                bus, self.store, settings, self.stream, worker=search_worker, source=self.materializer
            )
            if settings.state_search_enabled
            else None
        )
        self._removal: Subscription | None = None
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

        async def snapshot(member: str, args: SnapshotArgs) -> Snapshot:
            return await self.snapshot(member, args)

        async def sync(member: str, args: SyncArgs) -> SyncResult:
            return await sync_events(self.bus, self.stream, member, args.since_seq, args.limit)

        async def history(member: str, args: ViewHistoryArgs) -> ViewHistoryResult:
            if await self.store.server(member, args.server_id) is None:
                if await self.store.view_missing():  # Redis restarted empty / FLUSHALL: not gone
                    raise CommandError(
                        "state_rebuilding", "the view is being rebuilt; retry shortly", retryable=True
                    )
                raise CommandError("not_found", "no such server in your view")
            return await self.history(member, args.server_id, args.channel_id, args.limit)

        async def servers(member: str, args: Empty) -> ServerList:
            seq, statuses = await self._consistent(lambda: self.store.statuses(member))
            return ServerList(seq=seq, servers=statuses)

        async def http_token(member: str, args: Empty) -> HttpToken:
            token, expires = tokens.issue(self.secret, member, time.time(), self.settings.state_token_ttl_s)
            return HttpToken(token=token, expires_at=datetime.fromtimestamp(expires, UTC), member=member)

        serve(bus, cmd.SNAPSHOT, snapshot)
        serve(bus, cmd.SYNC, sync)
        serve(bus, cmd.VIEW_HISTORY, history)
        serve(bus, cmd.SERVERS, servers)
        serve(bus, cmd.HTTP_TOKEN, http_token)

        async def search(member: str, args: SearchArgs) -> SearchResult:
            if self.search is None:
                raise CommandError("unsupported", "search is turned off (OPENCHAT_STATE_SEARCH_ENABLED)")
            return await self.search.search(member, args)

        serve(bus, cmd.SEARCH, search)
        register_media(self)  # state.media: bytes over the bus (ADR 0010)

    async def start(self, *, serve_commands: bool = True) -> None:
        self.register_commands()
        if serve_commands:
            await self.bus.serve_commands()
        for member in MemberRegistry(self.registry_db).removed():  # removed while the service was down
            await self.forget_member(member)
        self._removal = await serve_member_removal(self.bus, SERVICE_NAME, self.forget_member)
        self.materializer.start()
        if self.search is not None:
            self.search.start()

    async def stop(self) -> None:
        if self._removal is not None:
            with contextlib.suppress(Exception):
                await self._removal.unsubscribe()
        await self.materializer.stop()
        if self.search is not None:
            await self.search.stop()
        if self._own_client:
            await self.http_client.aclose()

    async def forget_member(self, member: str) -> dict[str, int]:
        """A member was removed (``oc.sys.member.remove.state``): its materialized view and its
        events in the stream go (a rebuild from the stream cannot bring them back)."""
        purged = await self.bus.js.purge_stream(self.stream, subject=f"{subjects.INGEST_PREFIX}.{member}.>")
        async with self.materializer.lock:
            keys = [
                k
                async for k in self.store.redis.scan_iter(
                    match=f"{self.store.prefix}:m:{member}:*", count=1000
                )
            ]
            if keys:
                await self.store.redis.delete(*keys)
        return {"view_keys": len(keys), "stream_purged": int(bool(purged))}

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
        if size > MAX_REPLY_RESULT_BYTES:
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
        keep = newest_that_fit(messages)  # bounded by bytes as well as count (bus contract)
        if keep < len(messages):
            messages, has_more = messages[len(messages) - keep :], True
        return ViewHistoryResult(seq=seq, messages=messages, has_more=has_more)


@dataclass
class RuntimeRef:
    """Lets the HTTP routes (mounted before the bus is up) find the runtime once it exists."""

    runtime: StateRuntime | None = None

    def __call__(self) -> StateRuntime | None:
        return self.runtime
