"""The state service: materializes each member's view in Redis and answers snapshot/sync.

Wiring only; the pieces are:

- ``services.state.domain``: the pure view reducer (events → ops on a member's view);
- ``services.state.store``: the Redis layout, atomic application of ops, consistent reads;
- ``services.state.materializer``: the ordered stream consumer, rebuild on Redis loss;
- ``services.state.sync``: ``sync`` from the stream on the member's behalf;
- ``services.state.runtime``: the runtime (commands, queries) given a bus and Redis;
- ``services.state.http`` + ``media`` + ``tokens``: the HTTP API (media bytes, read-only state),
  built from a runtime provider.

Bus commands (``oc.<member>.cmd.state.<verb>``; the member always comes from the subject):
``snapshot``, ``sync``, ``history``, ``servers``, ``http_token`` (contracts in
``services.core.contracts.chat``), ``media`` (chunked bytes, ``services.core.contracts.blobs``)
and ``search`` (``services.core.contracts.search``; the index is ``services.state.search``).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from prometheus_client import Gauge

from services.core.service import Service, ServiceContext
from services.state.http import build_router
from services.state.runtime import SERVICE_NAME, RuntimeRef, StateRuntime
from services.state.search import SearchRuntime
from services.state.settings import StateSettings


def search_gauge(search: SearchRuntime, key: str) -> Callable[[], float]:
    """A gauge's value from the indexer's status (read from the index file under the worker)."""

    def value() -> float:
        return float(search.status().get(key, 0))

    return value


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

__all__ = ["SERVICE", "SERVICE_NAME", "RuntimeRef", "StateRuntime", "build_service"]
