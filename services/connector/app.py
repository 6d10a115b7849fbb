"""The connector service: the only process that speaks REST/realtime to OpenChat backends.

Wiring only: ``Connector`` (``connector.py``) holds the commands and the session supervisor;
this module binds its methods to the connector's rows of the commands table
(``services.core.contracts.commands``: discover, probe, join, leave, send, typing, delete, history,
members, profiles, consent, profile_get, profile_set, read_ack_get, read_ack_put, identity_get,
identity_create, identity_import, uid_mode, previews), subscribes
``oc.sys.connector.rehydrate``,
publishes events through JetStream (``Bus.publish_event``; gap fill in acked batches with
``Bus.publish_events``; retried briefly; an event too large for the bus is logged and dropped), and starts a session for every joined server at start.

Several replicas (``OPENCHAT_CONNECTOR_LEASES=true``; issue 16, ADR 0021): sessions start and
stop with their leases in NATS KV (``leases.py``), and the commands of a session run at the
replica holding it (``routing.py``); ``/healthz`` shows the replica id and its sessions.

Tunables come from ``OPENCHAT_CONNECTOR_*`` environment variables (``ConnectorSettings``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from nats.aio.msg import Msg
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.connector.connector import Connector
from services.connector.leases import LeaseTiming, SessionLeases, ensure_buckets, new_replica_id
from services.connector.quota import QuotaLimits, StorageQuota, check_fit
from services.connector.routing import Router
from services.connector.session import BatchSink, EventSink, Timing
from services.core.bus import PUBLISH_WINDOW, Bus, CommandError, newest_that_fit
from services.core.contracts import commands as cmd
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import REHYDRATE_SUBJECT, HistoryArgs, HistoryResult, RehydrateRequest
from services.core.contracts.commands import CommandSpec
from services.core.identity import default_key_file
from services.core.rpc import serve, serve_member_removal
from services.core.service import Service, ServiceContext

log = logging.getLogger("openchat.connector.app")
JOIN_CONCURRENCY = 64  # join commands handled at once (each waits for its backend's answers)
A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class ConnectorSettings(BaseSettings):
    """``OPENCHAT_CONNECTOR_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="OPENCHAT_CONNECTOR_", extra="ignore")

    backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 15.0)
    jitter: float = 0.2
    history_window: int = 150
    max_frame_bytes: int = 1024 * 1024
    request_timeout_s: float = 30.0
    reconcile_interval_s: float = 60.0
    reconcile_probe: int = Field(default=5, ge=0, le=1000)  # ADR 0025; 0: always a full page
    reconcile_sessions_per_s: float = Field(default=5.0, ge=0.0)  # 0: the interval never grows
    ws_ping_interval_s: float = 20.0
    # bounds against a hostile or broken backend (ADR 0009; docs/operations.md "Limits")
    max_gap_fetch: int = 5_000
    gap_fill_per_cycle: int = 1_000
    presence_window_s: float = 0.5  # presence changes coalesced per window (ADR 0022); 0: at once
    # the window lengthens past this many batches per second for the whole connector (ADR 0032)
    presence_batches_per_s: float = Field(default=250.0, ge=0.0)  # 0: the window never grows
    quota_server_burst_bytes: int = 32 * 1024 * 1024
    quota_server_bytes_per_day: int = 4 * 1024 * 1024
    quota_member_burst_bytes: int = 64 * 1024 * 1024
    quota_member_bytes_per_day: int = 8 * 1024 * 1024
    # several replicas (issue 16, ADR 0021): sessions follow leases in NATS KV
    leases: bool = False
    lease_ttl_s: float = Field(default=6.0, ge=1.0, le=120.0)
    lease_tick_s: float = Field(default=1.0, gt=0.0, le=30.0)
    replica_name: str = ""  # shown by `openchat status` (the supervisor sets connector-1, ...)

    def quota_limits(self) -> QuotaLimits:
        return QuotaLimits(
            server_burst_bytes=self.quota_server_burst_bytes,
            server_bytes_per_day=self.quota_server_bytes_per_day,
            member_burst_bytes=self.quota_member_burst_bytes,
            member_bytes_per_day=self.quota_member_bytes_per_day,
        )

    def timing(self) -> Timing:
        return Timing(
            backoff_s=self.backoff_s,
            jitter=self.jitter,
            history_window=self.history_window,
            max_frame_bytes=self.max_frame_bytes,
            reconcile_interval_s=self.reconcile_interval_s,
            reconcile_probe=self.reconcile_probe,
            reconcile_sessions_per_s=self.reconcile_sessions_per_s,
            ws_ping_interval_s=self.ws_ping_interval_s,
            max_gap_fetch=self.max_gap_fetch,
            gap_fill_per_cycle=self.gap_fill_per_cycle,
            presence_window_s=self.presence_window_s,
            presence_batches_per_s=self.presence_batches_per_s,
        )


def bus_sink(bus: Bus, attempts: int = 3) -> EventSink:
    async def sink(member: str, envelope: EventEnvelope[Any]) -> None:
        for attempt in range(1, attempts + 1):
            try:
                await bus.publish_event(member, envelope)
                return
            except CommandError as exc:  # the event does not fit on the bus: nothing can fix it
                log.warning(
                    "event dropped",
                    extra={
                        "member": member,
                        "type": envelope.type,
                        "event_id": envelope.event_id,
                        "code": exc.code,
                    },
                )
                return
            except Exception:
                if attempt == attempts:
                    raise
                await asyncio.sleep(0.2 * attempt)

    return sink


def bus_batch_sink(bus: Bus, attempts: int = 3, window: int = PUBLISH_WINDOW) -> BatchSink:
    """Gap fill's sink: ``Bus.publish_events`` (pipelined, every event acked), the whole batch
    retried briefly (a re-published event is de-duplicated by ``Nats-Msg-Id``). A batch holding
    an event too large for the bus goes through ``bus_sink`` one by one, which drops that one."""
    single = bus_sink(bus, attempts)

    async def sink(member: str, envelopes: Sequence[EventEnvelope[Any]]) -> None:
        for attempt in range(1, attempts + 1):
            try:
                await bus.publish_events(member, envelopes, window=window)
                return
            except CommandError:  # nothing was published: find and drop the oversized event
                for envelope in envelopes:
                    await single(member, envelope)
                return
            except Exception:
                if attempt == attempts:
                    raise
                await asyncio.sleep(0.2 * attempt)

    return sink


def _bounded_history(
    fn: Callable[[str, HistoryArgs], Awaitable[HistoryResult]],
) -> Callable[[str, HistoryArgs], Awaitable[HistoryResult]]:
    """A history page is bounded by bytes as well as count (bus contract): keep the newest that
    fit, oldest first, and say ``has_more`` so the caller pages on from the oldest kept."""

    async def history(member: str, args: HistoryArgs) -> HistoryResult:
        result = await fn(member, args)
        keep = newest_that_fit(result.messages)
        if keep == len(result.messages):
            return result
        return HistoryResult(messages=result.messages[len(result.messages) - keep :], has_more=True)

    return history


async def register(bus: Bus, connector: Connector, router: Router | None = None) -> None:
    """Bind the commands and the rehydrate subscription (``serve_commands`` subscribes them).
    ``router``: several replicas — the commands of a session run at its holder (``routing.py``)."""

    def at_session(spec: CommandSpec[A, R], handler: Callable[[str, A], Awaitable[R]]) -> None:
        serve(bus, spec, router.route(spec, handler) if router is not None else handler)

    serve(bus, cmd.DISCOVER, connector.discover)
    serve(bus, cmd.PROBE, connector.probe)
    # joins of different members run at once (a lock per member orders one member's, issue 16)
    serve(bus, cmd.JOIN, connector.join, concurrency=JOIN_CONCURRENCY)
    at_session(cmd.LEAVE, connector.leave)
    at_session(cmd.SEND, connector.send)
    serve(bus, cmd.UPLOAD, connector.upload)
    at_session(cmd.TYPING, connector.typing)
    at_session(cmd.DELETE, connector.delete)
    at_session(cmd.HISTORY, _bounded_history(connector.history))
    at_session(cmd.MEMBERS, connector.members)
    at_session(cmd.PROFILES, connector.profiles)
    at_session(cmd.CONSENT, connector.consent)
    serve(bus, cmd.PROFILE_GET, connector.profile_get)
    serve(bus, cmd.PROFILE_SET, connector.profile_set)
    at_session(cmd.READ_ACK_GET, connector.read_ack_get)
    at_session(cmd.READ_ACK_PUT, connector.read_ack_put)
    serve(bus, cmd.IDENTITY_GET, connector.identity_get)
    serve(bus, cmd.IDENTITY_CREATE, connector.identity_create)
    serve(bus, cmd.IDENTITY_IMPORT, connector.identity_import)
    serve(bus, cmd.UID_MODE, connector.uid_mode)
    serve(bus, cmd.PREVIEWS, connector.previews_switch)

    await serve_member_removal(bus, "connector", connector.forget_member)

    async def on_rehydrate(request: RehydrateRequest, msg: Msg) -> None:
        asyncio.create_task(connector.rehydrate(request), name="rehydrate")  # noqa: RUF006

    await bus.subscribe(REHYDRATE_SUBJECT, RehydrateRequest, on_rehydrate)
    if router is not None:
        await router.subscribe()


def build(ctx: ServiceContext, settings: ConnectorSettings | None = None) -> Connector:
    assert ctx.bus is not None
    cfg = settings or ConnectorSettings()
    key_file = ctx.settings.secret_key_file or default_key_file()
    return Connector(
        bus_sink(ctx.bus),
        ctx.settings.home,
        key_file,
        timing=cfg.timing(),
        request_timeout_s=cfg.request_timeout_s,
        batch_sink=bus_batch_sink(ctx.bus),
        preview_allow_private=ctx.settings.preview_allow_private,
        quota=StorageQuota(cfg.quota_limits()),
    )


async def attach_leases(ctx: ServiceContext, connector: Connector, cfg: ConnectorSettings) -> Router:
    """Several replicas: sessions follow their leases, session commands run at the holder."""
    assert ctx.bus is not None
    timing = LeaseTiming(ttl_s=cfg.lease_ttl_s, tick_s=cfg.lease_tick_s)
    leases_kv, replicas_kv = await ensure_buckets(ctx.bus.js, timing.ttl_s, ctx.settings.events_replicas)
    name = cfg.replica_name or ctx.settings.replica_name or "connector"
    replica = new_replica_id(name)

    # `openchat status` shows each replica's sessions (from /healthz, as of the request)
    ctx.health.info["replica"] = replica
    ctx.health.info["sessions"] = lambda: sorted(f"{m}/{s}" for m, s in connector.sessions)

    connector.leases = SessionLeases(
        leases_kv,
        replicas_kv,
        replica=replica,
        name=name,
        wanted=connector.wanted_keys,
        start=connector.start_key,
        stop=connector.stop_key,
        after_tick=connector.follow_records,
        timing=timing,
    )
    return Router(ctx.bus, connector.leases, lambda m, s: (m, s) in connector.sessions)


async def setup(ctx: ServiceContext) -> None:
    assert ctx.bus is not None
    cfg = ConnectorSettings()
    connector = build(ctx, cfg)
    router = await attach_leases(ctx, connector, cfg) if cfg.leases else None
    await register(ctx.bus, connector, router)
    await connector.start()
    if connector.quota is not None:
        members = len({member for member, _ in connector.servers.everything()})
        warning = check_fit(
            connector.quota.limits,
            max(1, members),
            ctx.settings.events_max_bytes,
            ctx.settings.events_max_age_days,
        )
        if warning is not None:
            log.warning("storage quotas do not fit the events stream", extra={"detail": warning})
    ctx.extras["connector"] = connector


async def teardown(ctx: ServiceContext) -> None:
    """Stop every session (closing sockets, publishing nothing more) before the bus drains."""
    connector = ctx.extras.get("connector")
    if isinstance(connector, Connector):
        await connector.close()


SERVICE = Service(name="connector", setup=setup, teardown=teardown)

__all__ = ["SERVICE", "ConnectorSettings", "build", "bus_batch_sink", "bus_sink", "register"]
