"""Common process wiring of a service: settings, logging, health server, bus, Redis, signals.

A service is a ``Service`` with a name and an async ``setup`` that registers its subscriptions
and command handlers, and optionally ``routes``: a function returning a FastAPI ``APIRouter``
that is mounted on the same HTTP server as ``/healthz`` and ``/metrics`` (and so appears in its
``/openapi.json``). ``routes`` is called before the bus and Redis are up: its handlers must look
up what they need lazily (and answer 503 while it is missing). ``run_service`` starts the health server first (so ``/healthz`` reports
what is still missing while dependencies come up), connects the bus and Redis with endless
retries, ensures the events stream, runs ``setup``, serves until SIGTERM/SIGINT, then drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import uvicorn
from fastapi import APIRouter
from prometheus_client import Gauge

from services.core import natsconf
from services.core.bus import Bus, ConnectOptions, backoff_delays
from services.core.contracts import subjects
from services.core.health import HealthState, HttpServer, health_app
from services.core.log import configure_logging
from services.core.paths import private_umask
from services.core.settings import Settings
from services.core.standby import ActiveLease, replica_name, service_leases
from services.core.version import serve_versions

log = logging.getLogger("openchat.service")


@dataclass
class ServiceContext:
    name: str
    settings: Settings
    health: HealthState
    bus: Bus | None = None
    redis: aioredis.Redis | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    extras: dict[str, object] = field(default_factory=dict)  # what setup builds, for teardown


@dataclass
class Service:
    name: str
    needs_redis: bool = False
    setup: Callable[[ServiceContext], Awaitable[None]] | None = None
    routes: Callable[[ServiceContext], APIRouter] | None = None  # extra HTTP routes (see module doc)
    teardown: Callable[[ServiceContext], Awaitable[None]] | None = None  # before the bus drains
    standby: bool = False  # replicas are active/standby behind a lease (``OPENCHAT_STANDBY``)


def bus_options(settings: Settings, name: str) -> ConnectOptions:
    if not settings.nats_url:
        raise SystemExit("OPENCHAT_NATS_URL is not set (openchat up sets it for its children)")
    password = settings.service_password.get_secret_value() if settings.service_password else None
    return ConnectOptions(
        url=settings.nats_url,
        user=(settings.service_user or natsconf.user_of_service(name)) if password else None,
        password=password,
        name=f"openchat-{name}",
        ca_pem=settings.nats_ca_pem(),
        # Replies to the services' own requests come back below this prefix (bus reply rule).
        inbox_prefix=subjects.SERVICE_INBOX_PREFIX,
    )


async def _connect_redis(url: str, password: str | None = None) -> aioredis.Redis:
    delays = backoff_delays()
    while True:
        client = aioredis.Redis.from_url(
            url, decode_responses=False, health_check_interval=10, password=password
        )
        try:
            await client.ping()
            return client
        except Exception as exc:
            await client.aclose()
            delay = next(delays)
            log.warning(
                "redis connect failed, retrying", extra={"error": repr(exc), "retry_in_s": round(delay, 2)}
            )
            await asyncio.sleep(delay)


async def _become_active(ctx: ServiceContext) -> None:
    """Active/standby (``services/core/standby.py``): wait for the service's lease, keep it,
    and stop the service when it is lost."""
    assert ctx.bus is not None
    kv = await service_leases(ctx.bus.js, 6.0, ctx.settings.events_replicas)
    lease = ActiveLease(kv, ctx.name, replica_name(ctx.name, ctx.settings.replica_name))
    ctx.extras["active_lease"] = lease
    ctx.health.role = "standby"
    await lease.acquire()
    ctx.health.role = "active"
    lease.keep(ctx.stopping.set)


async def serve(service: Service, settings: Settings) -> None:
    health = HealthState(service.name)
    ctx = ServiceContext(service.name, settings, health)

    async def bus_ok() -> bool:
        return ctx.bus is not None and ctx.bus.connected

    health.add("bus", bus_ok)
    if service.needs_redis:

        async def redis_ok() -> bool:
            return ctx.redis is not None and bool(await ctx.redis.ping())

        health.add("redis", redis_ok)

    Gauge(
        "openchat_bus_refused_replies",
        "commands refused for a reply subject outside the caller's inbox (ADR 0007)",
        registry=health.registry,
    ).set_function(lambda: ctx.bus.refused_replies if ctx.bus is not None else 0)
    app = health_app(health)
    if service.routes is not None:
        app.include_router(service.routes(ctx))
    server = HttpServer(
        uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            lifespan="off",
        )
    )
    http_task = asyncio.create_task(server.serve(), name="health-http")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ctx.stopping.set)

    async def start() -> None:
        ctx.bus = await Bus.connect(bus_options(settings, service.name))
        await ctx.bus.ensure_events_stream(
            settings.events_stream,
            duplicate_window_s=settings.events_duplicate_window_s,
            max_age_s=settings.events_max_age_days * 86400,
            max_bytes=settings.events_max_bytes,
            replicas=settings.events_replicas,
            max_msgs_per_subject=settings.events_max_msgs_per_subject,
        )
        if service.needs_redis:
            if not settings.redis_url:
                raise SystemExit("OPENCHAT_REDIS_URL is not set")
            ctx.redis = await _connect_redis(settings.redis_url, settings.redis_auth())
        if settings.standby and service.standby:
            await _become_active(ctx)
        if service.setup is not None:
            await service.setup(ctx)
        serve_versions(ctx.bus, service.name)  # ``<service>.version`` and ``stack.version`` (issue 18)
        await ctx.bus.serve_commands()
        log.info("service ready", extra={"service": service.name})

    start_task = asyncio.create_task(start(), name="start")
    stop_task = asyncio.create_task(ctx.stopping.wait(), name="stop")
    done, _ = await asyncio.wait({start_task, stop_task, http_task}, return_when=asyncio.FIRST_COMPLETED)
    failure = start_task.exception() if start_task in done else None
    if failure is not None:
        ctx.stopping.set()
        raise failure
    if http_task in done:
        ctx.stopping.set()
    await ctx.stopping.wait()
    log.info("service stopping", extra={"service": service.name})
    start_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await start_task
    if service.teardown is not None:
        try:
            await asyncio.wait_for(service.teardown(ctx), 10)
        except Exception:
            log.exception("teardown failed", extra={"service": service.name})
    active = ctx.extras.get("active_lease")
    if isinstance(active, ActiveLease):
        await active.release()  # a standby takes over now instead of after the TTL
    if ctx.bus is not None:
        await ctx.bus.close()
    if ctx.redis is not None:
        await ctx.redis.aclose()
    server.should_exit = True
    await http_task


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a service runs on (``OPENCHAT_EVENT_LOOP``): ``uvloop`` when it is installed
    and ``choice`` is ``auto`` or ``uvloop`` (``uvloop`` without it installed is an error), the
    standard library's for ``asyncio`` (None: ``asyncio.Runner``'s default)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("OPENCHAT_EVENT_LOOP=uvloop but uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_service(service: Service) -> None:
    """Entry point of ``python -m services.<name>``."""
    private_umask()  # whatever it writes (databases, media cache) is 0600/0700
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
        runner.run(serve(service, settings))
