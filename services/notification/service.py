"""The notification service's adapters: JetStream consumer, bus commands, read-ack calls.

* Events are read from the events stream with a **durable pull consumer** (``notification``,
  ack-all, filtered to the kinds that matter), so counts include everything that arrived while
  no UI — or not even this service — was running. Each fetched batch is applied to the domain
  ``Engine``, written to SQLite together with its last stream sequence in one transaction, then
  acknowledged; redelivered events at or below the stored sequence are skipped (exactly-once
  effect across crashes).
* After each batch or command the resulting ``Effects`` are carried out: ``unread.updated``
  (absolute counts with revisions, coalesced per server and batch), ``notification`` and
  ``notify.prefs`` events through ``Bus.publish_event``; read-ack GET/PUT requests to the
  connector (coalesced per channel, in a background worker, failures ignored — wire §0.2 rule 3).
* Commands ``oc.*.cmd.notification.<verb>`` (contracts/notify.py) are served in the queue group
  ``notification``. Member-wide settings (status, DND, quiet hours, "Hide Muted Channels") are
  published as ``notify.member`` on the reserved server id ``_member``.
* A timer ends timed mutes when the earliest is due (re-checked at least every 30 s, and after
  every ``set_mute``), including mutes that ended while the service was down, and publishes the
  server's ``notify.prefs``.

One instance consumes the stream at a time (the durable consumer is shared, the counts are in
this process's memory): scale-out would shard members over instances, not share them.

Logs carry ids and counts only, never message bodies or notification texts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ValidationError

from services.core.bus import Bus, CommandError, decode
from services.core.contracts import commands as cmd
from services.core.contracts import events as ev
from services.core.contracts import subjects
from services.core.contracts.bus import Empty, EventEnvelope
from services.core.contracts.chat import (
    CapabilitySnapshot,
    ChannelsUpdated,
    MessageCreated,
    MessageDeleted,
    ProfileUpdated,
    ServerJoined,
    ServerLeft,
    ServerRecord,
)
from services.core.contracts.notify import (
    MEMBER_SCOPE,
    FocusArgs,
    MarkReadArgs,
    NotifyPrefs,
    QuietHours,
    ReadAckGetArgs,
    ReadAckPutArgs,
    ReadAckResult,
    ReadAckUpdated,
    SetDndArgs,
    SetHideMutedArgs,
    SetLevelArgs,
    SetMuteArgs,
    SetQuietHoursArgs,
    SetStatusArgs,
    UnreadArgs,
    UnreadResult,
)
from services.core.members import MemberRegistry
from services.core.rpc import serve_member_removal, serve_now
from services.core.servers import ServerNotJoined, ServerStore
from services.notification.domain import Effects, Engine, utcnow
from services.notification.store import NotifyStore

log = logging.getLogger("openchat.notification")

A = TypeVar("A", bound=BaseModel)

CONSUMED: tuple[ev.EventSpec[Any], ...] = (
    ev.MESSAGE_CREATED,
    ev.MESSAGE_DELETED,
    ev.CHANNELS_UPDATED,
    ev.CAPABILITIES,
    ev.SERVER_JOINED,
    ev.SERVER_LEFT,
    ev.PROFILE_UPDATED,
    ev.READ_ACK_UPDATED,
)
CONSUMED_KINDS = tuple(spec.kind for spec in CONSUMED)
_CONSUMED_SPECS = {spec.kind: spec for spec in CONSUMED}
DEFAULT_CONSUMER = "notification"
READ_ACK_TIMEOUT_S = 10.0
MUTE_CHECK_MAX_S = 30.0  # the expiry timer re-reads the earliest mute end at least this often


def consumer_filters() -> list[str]:
    return [f"{subjects.INGEST_PREFIX}.*.*.{kind}" for kind in CONSUMED_KINDS]


class NotificationService:
    """Counts, cursors and policy for every member, fed by the events stream."""

    def __init__(
        self,
        bus: Bus,
        db_path: Path,
        *,
        stream: str = "OC_EVENTS",
        consumer: str = DEFAULT_CONSUMER,
        clock: Callable[[], datetime] = utcnow,
        batch: int = 500,
        read_acks: bool = True,
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.consumer = consumer
        self.batch = batch
        self.read_acks_enabled = read_acks
        self.db_path = db_path
        self.servers = ServerStore(db_path)
        self.store = NotifyStore(db_path)
        self.engine = Engine(clock=clock, server_loader=self._load_server)
        self.applied_seq = 0
        self.events_applied = 0
        self._progress = asyncio.Condition()
        self._subs: list[Subscription] = []
        self._pull: Any = None
        self._loop_task: asyncio.Task[None] | None = None
        self._ack_task: asyncio.Task[None] | None = None
        self._pending_puts: dict[tuple[str, str, str], str] = {}
        self._pending_gets: set[tuple[str, str, str]] = set()
        self._ack_wakeup = asyncio.Event()
        self._mute_task: asyncio.Task[None] | None = None
        self._mute_wakeup = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        removed = set(MemberRegistry(self.db_path).removed())
        for member in removed:  # removed while the service was down
            self.store.forget_member(member)
        self.store.load(self.engine)
        self.applied_seq = self.store.last_seq(self.consumer)
        for member, record in self._joined_servers():
            if member not in removed:
                self.engine.on_server_joined(member, record)  # every joined server has counts (zero)
        self.store.flush(self.engine)
        await self._serve_commands()
        self._subs.append(await serve_member_removal(self.bus, "notification", self.forget_member))
        self._pull = await self._bind_consumer()
        self._loop_task = asyncio.create_task(self._consume(), name="notification-consume")
        self._ack_task = asyncio.create_task(self._read_ack_worker(), name="notification-read-acks")
        self._mute_task = asyncio.create_task(self._mute_expiry(), name="notification-mute-expiry")
        log.info("notification service started", extra={"applied_seq": self.applied_seq})

    @property
    def consuming(self) -> bool:
        """The stream consumer runs (for ``/healthz``)."""
        return self._loop_task is not None and not self._loop_task.done()

    async def stop(self) -> None:
        for task in (self._loop_task, self._ack_task, self._mute_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        if self._pull is not None:
            with contextlib.suppress(Exception):
                await self._pull.unsubscribe()
        self.store.flush(self.engine)
        self.store.close()
        log.info("notification service stopped", extra={"applied_seq": self.applied_seq})

    async def wait_applied(self, seq: int, timeout: float = 10.0) -> None:
        """Wait until every stream event up to ``seq`` has been applied (tests, benchmarks)."""
        async with self._progress:
            await asyncio.wait_for(self._progress.wait_for(lambda: self.applied_seq >= seq), timeout)

    def _load_server(self, member: str, server_id: str) -> ServerRecord | None:
        try:
            return self.servers.get(member, server_id)
        except ServerNotJoined:
            return None

    def _joined_servers(self) -> list[tuple[str, ServerRecord]]:
        try:
            return self.servers.everything()
        except Exception:
            log.exception("cannot read the joined servers")
            return []

    # -- consumer ----------------------------------------------------------------------------
    async def _bind_consumer(self) -> Any:
        js = self.bus.js
        try:
            await js.consumer_info(self.stream, self.consumer)
        except NotFoundError:
            start = self.applied_seq + 1 if self.applied_seq else None
            await js.add_consumer(
                self.stream,
                ConsumerConfig(
                    durable_name=self.consumer,
                    description="notification service: unread, mentions, notifications",
                    ack_policy=AckPolicy.ALL,
                    ack_wait=60,
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start else DeliverPolicy.ALL,
                    opt_start_seq=start,
                    filter_subjects=consumer_filters(),
                    max_ack_pending=-1,
                ),
            )
        return await js.pull_subscribe_bind(durable=self.consumer, stream=self.stream)

    async def _consume(self) -> None:
        while True:
            try:
                msgs: list[Msg] = await self._pull.fetch(self.batch, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event fetch failed", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)
                continue
            if msgs:
                await self._apply_batch(msgs)

    async def _apply_batch(self, msgs: list[Msg]) -> None:
        fx = Effects()
        last = self.applied_seq
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            if seq <= self.applied_seq:
                continue  # applied before a crash: already in the database
            try:
                fx.merge(self.apply_event(msg.subject, msg.data))
            except Exception:
                log.exception("event not applied", extra={"subject": msg.subject, "seq": seq})
            last = max(last, seq)
            self.events_applied += 1
        self.store.flush(self.engine, self.consumer, last)
        with contextlib.suppress(Exception):
            await msgs[-1].ack()  # ack-all: the whole batch
        async with self._progress:
            self.applied_seq = last
            self._progress.notify_all()
        await self._carry_out(fx)

    def apply_event(self, subject: str, data: bytes) -> Effects:
        """Apply one stored event (``oc.sys.ev.<member>.<server_id>.<kind>``) to the engine."""
        parts = subject.split(".")
        if len(parts) < 6:
            return Effects()
        member, server_id, kind = parts[3], parts[4], ".".join(parts[5:])
        spec = _CONSUMED_SPECS.get(kind)
        if spec is None:
            return Effects()
        e = self.engine
        try:
            p = decode(spec.envelope_model, data).payload  # the events table's model of the kind
            if isinstance(p, MessageCreated):
                if p.message.server_id != server_id:
                    return Effects()
                return e.on_message(member, p.message)
            if isinstance(p, MessageDeleted):
                return e.on_message_deleted(member, server_id, p.channel_id, p.message_id)
            if isinstance(p, ChannelsUpdated):
                return e.on_channels(member, server_id, p.groups)
            if isinstance(p, CapabilitySnapshot):
                return e.on_capabilities(member, server_id, p)
            if isinstance(p, ServerJoined):
                if p.server.server_id != server_id:
                    return Effects()
                return e.on_server_joined(member, p.server)
            if isinstance(p, ServerLeft):
                return e.on_server_left(member, p.server_id)
            if isinstance(p, ProfileUpdated):
                self._refresh_consent(member, server_id)
                return e.on_profile(member, server_id, p.profile)
            if isinstance(p, ReadAckUpdated):
                return e.on_read_ack(member, server_id, p)
        except ValidationError as exc:  # locations and messages only: inputs may hold message text
            where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
            log.warning("invalid event dropped", extra={"subject": subject, "error": where})
        except ValueError:
            log.warning("invalid event dropped", extra={"subject": subject})
        return Effects()

    async def forget_member(self, member: str) -> dict[str, int]:
        """A member was removed (``oc.sys.member.remove.notification``): counts, cursors,
        preferences and focus reports go."""
        self.engine.forget_member(member)
        for key in [k for k in self._pending_puts if k[0] == member]:
            del self._pending_puts[key]
        self._pending_gets = {k for k in self._pending_gets if k[0] != member}
        rows = self.store.forget_member(member)
        log.info("member forgotten", extra={"member": member, "rows": rows})
        return {"notification_rows": rows}

    def _refresh_consent(self, member: str, server_id: str) -> None:
        record = self._load_server(member, server_id)
        sv = self.engine.member(member).servers.get(server_id)
        if record is not None and sv is not None and sv.profile_consent != record.profile_consent:
            sv.profile_consent = record.profile_consent
            self.engine.dirty_servers.add((member, server_id))

    # -- effects -----------------------------------------------------------------------------
    async def _carry_out(self, fx: Effects) -> None:
        publishes: list[Awaitable[Any]] = []
        for (member, server_id), channels in fx.changed.items():
            update = self.engine.unread_updated(member, server_id, channels)
            if update is not None:
                publishes.append(self._publish(member, ev.UNREAD_UPDATED.envelope(server_id, update)))
        for member, note in fx.notifications:
            publishes.append(self._publish(member, ev.NOTIFICATION.envelope(note.server_id, note)))
        for member, server_id in fx.prefs_changed:
            sv = self.engine.member(member).servers.get(server_id)
            if sv is not None:
                publishes.append(self._publish(member, ev.NOTIFY_PREFS.envelope(server_id, sv.prefs())))
        for member in fx.member_prefs_changed:
            publishes.append(
                self._publish(
                    member, ev.NOTIFY_MEMBER.envelope(MEMBER_SCOPE, self.engine.member(member).prefs.public())
                )
            )
        if publishes:
            await asyncio.gather(*publishes)
        if self.read_acks_enabled and (fx.ack_puts or fx.ack_gets):
            for member, server_id, channel_id, message_id in fx.ack_puts:
                self._pending_puts[(member, server_id, channel_id)] = message_id
            self._pending_gets.update(fx.ack_gets)
            self._ack_wakeup.set()

    async def _publish(self, member: str, envelope: EventEnvelope[Any]) -> None:
        server_id, kind = envelope.server_id, envelope.type
        try:
            await self.bus.publish_event(member, envelope)
        except Exception as exc:
            log.warning(
                "event publish failed",
                extra={"member": member, "server_id": server_id, "kind": kind, "error": repr(exc)},
            )

    async def _read_ack_worker(self) -> None:
        """PUT/GET read-acks through the connector, one channel at a time, newest PUT wins."""
        while True:
            await self._ack_wakeup.wait()
            self._ack_wakeup.clear()
            while self._pending_puts or self._pending_gets:
                if self._pending_puts:
                    key = next(iter(self._pending_puts))
                    message_id = self._pending_puts.pop(key)
                    member, server_id, channel_id = key
                    args: BaseModel = ReadAckPutArgs(
                        server_id=server_id, channel_id=channel_id, last_read_message_id=message_id
                    )
                    verb = "read_ack_put"
                else:
                    member, server_id, channel_id = self._pending_gets.pop()
                    args = ReadAckGetArgs(server_id=server_id, channel_id=channel_id)
                    verb = "read_ack_get"
                try:
                    result = await self.bus.request(
                        subjects.command(member, "connector", verb),
                        args,
                        ReadAckResult,
                        timeout=READ_ACK_TIMEOUT_S,
                    )
                except CommandError as exc:
                    log.debug(
                        "read-ack call failed (ignored)",
                        extra={"member": member, "server_id": server_id, "verb": verb, "code": exc.code},
                    )
                    continue
                except Exception as exc:
                    log.debug("read-ack call failed (ignored)", extra={"error": repr(exc)})
                    continue
                fx = self.engine.on_read_ack_result(member, result)
                self.store.flush(self.engine)
                await self._carry_out(fx)

    async def _mute_expiry(self) -> None:
        """End timed mutes when they are due (also those that ended while the service was down)."""
        while True:
            due = self.engine.next_mute_expiry()
            now = self.engine.clock()
            wait = MUTE_CHECK_MAX_S if due is None else (due - now).total_seconds()
            if wait > 0:
                self._mute_wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._mute_wakeup.wait(), min(wait, MUTE_CHECK_MAX_S))
                continue
            try:
                fx = self.engine.expire_mutes()
                if fx:
                    log.info("timed mutes ended", extra={"servers": len(fx.prefs_changed)})
                    self.store.flush(self.engine)
                    await self._carry_out(fx)
                else:
                    await asyncio.sleep(0.05)  # clock skew against ``due``: do not spin
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. the database is busy: try again, never stop ending mutes
                log.exception("ending timed mutes failed")
                await asyncio.sleep(1.0)

    # -- commands ----------------------------------------------------------------------------
    async def _serve_commands(self) -> None:
        bus = self.bus
        self._subs += [
            await serve_now(bus, cmd.UNREAD, self.cmd_unread),
            await serve_now(bus, cmd.MARK_READ, self.cmd_mark_read),
            await serve_now(bus, cmd.FOCUS, self.cmd_focus),
            await serve_now(bus, cmd.PREFS, self.cmd_prefs),
            await serve_now(bus, cmd.SET_MUTE, self.cmd_set_mute),
            await serve_now(bus, cmd.SET_LEVEL, self.cmd_set_level),
            await serve_now(bus, cmd.SET_DND, self.cmd_set_dnd),
            await serve_now(bus, cmd.SET_QUIET_HOURS, self.cmd_set_quiet_hours),
            await serve_now(bus, cmd.SET_STATUS, self.cmd_set_status),
            await serve_now(bus, cmd.SET_HIDE_MUTED, self.cmd_set_hide_muted),
        ]

    async def _after_command(self, fx: Effects) -> None:
        self.store.flush(self.engine)
        await self._carry_out(fx)

    def _require_server(self, member: str, server_id: str) -> None:
        if server_id not in self.engine.member(member).servers:
            raise CommandError("server_not_joined", f"not joined: {server_id}")

    async def cmd_unread(self, member: str, args: UnreadArgs) -> UnreadResult:
        if args.server_id is not None:
            self._require_server(member, args.server_id)
        return self.engine.unread(member, args.server_id)

    async def cmd_mark_read(self, member: str, args: MarkReadArgs) -> UnreadResult:
        self._require_server(member, args.server_id)
        await self._after_command(
            self.engine.mark_read(member, args.server_id, args.channel_id, args.message_id)
        )
        return self.engine.unread(member, args.server_id)

    async def cmd_focus(self, member: str, args: FocusArgs) -> UnreadResult:
        await self._after_command(self.engine.focus(member, args))
        if args.server_id and args.server_id in self.engine.member(member).servers:
            return self.engine.unread(member, args.server_id)
        return UnreadResult(servers=[])

    async def cmd_prefs(self, member: str, args: Empty) -> NotifyPrefs:
        return self.engine.prefs(member)

    async def cmd_set_mute(self, member: str, args: SetMuteArgs) -> NotifyPrefs:
        self._require_server(member, args.server_id)
        duration = timedelta(seconds=args.duration_s) if args.duration_s is not None else None
        fx = self.engine.set_mute(member, args.server_id, args.channel_id, args.muted, duration)
        await self._after_command(fx)
        self._mute_wakeup.set()  # the earliest expiry may have changed
        return self.engine.prefs(member)

    async def cmd_set_level(self, member: str, args: SetLevelArgs) -> NotifyPrefs:
        self._require_server(member, args.server_id)
        if args.channel_id is None and args.level is None:
            raise CommandError("invalid_level", "a server needs a level: all, mentions or nothing")
        await self._after_command(self.engine.set_level(member, args.server_id, args.channel_id, args.level))
        return self.engine.prefs(member)

    async def cmd_set_dnd(self, member: str, args: SetDndArgs) -> NotifyPrefs:
        await self._after_command(self.engine.set_dnd(member, args.dnd))
        return self.engine.prefs(member)

    async def cmd_set_status(self, member: str, args: SetStatusArgs) -> NotifyPrefs:
        await self._after_command(self.engine.set_status(member, args.status))
        return self.engine.prefs(member)

    async def cmd_set_hide_muted(self, member: str, args: SetHideMutedArgs) -> NotifyPrefs:
        await self._after_command(self.engine.set_hide_muted(member, args.hide))
        return self.engine.prefs(member)

    async def cmd_set_quiet_hours(self, member: str, args: SetQuietHoursArgs) -> NotifyPrefs:
        quiet = QuietHours(enabled=args.enabled, start=args.start, end=args.end)
        await self._after_command(self.engine.set_quiet_hours(member, quiet, args.timezone))
        return self.engine.prefs(member)
