"""The bus client: typed NATS publish / request / subscribe over contract models.

- ``connect`` retries forever with capped exponential backoff and jitter (the first connect
  too), and nats-py reconnects forever after that;
- ``publish`` / ``request`` / ``subscribe`` take and return pydantic contract models; a payload
  that fails validation is logged (subject and error, never the body) and dropped;
- ``command`` registers a handler for ``oc.*.cmd.<service>.<verb>`` in a queue group: the member
  comes from the subject, arguments are validated, and any exception becomes an error reply
  ``{code, message, retryable}``; a command whose reply subject is not below the caller's own
  inbox (or the services') is refused unrun and logged (ADR 0007), and a reply that would not fit
  ``MAX_BUS_PAYLOAD_BYTES`` becomes the permanent error ``reply_too_large``;
- ``ensure_events_stream`` sets up the JetStream stream of events with a duplicate window keyed
  on ``Nats-Msg-Id`` and republishing of each *stored* event to the member's subject;
  ``publish_event`` ingests one event, ``publish_events`` many, pipelined in acked windows;
- ``close`` drains subscriptions and pending publishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    PubAck,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.api import Header as JsHeader
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError
from pydantic import BaseModel, ValidationError

from services.core.contracts import subjects
from services.core.contracts.bus import (
    MAX_BUS_PAYLOAD_BYTES,
    MAX_REPLY_RESULT_BYTES,
    CommandEnvelope,
    ErrorBody,
    EventEnvelope,
    ReplyEnvelope,
)

log = logging.getLogger("openchat.bus")

M = TypeVar("M", bound=BaseModel)
A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)

BACKOFF_INITIAL_S = 0.25
BACKOFF_MAX_S = 5.0
PUBLISH_WINDOW = 256  # events in flight in ``publish_events``


def backoff_delays(initial: float = BACKOFF_INITIAL_S, cap: float = BACKOFF_MAX_S) -> Any:
    """Endless capped exponential backoff with full jitter in [d/2, d]."""
    delay = initial
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(cap, delay * 2)


class CommandError(Exception):
    """Raised by a command handler (or by ``request``) with the error the member sees."""

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.body = ErrorBody(code=code, message=message, retryable=retryable)

    @property
    def code(self) -> str:
        return self.body.code

    @property
    def retryable(self) -> bool:
        return self.body.retryable


_last_encoded: tuple[BaseModel | None, bytes] = (None, b"")


def encoded(model: BaseModel) -> bytes:
    """``model`` as JSON bytes, remembered for the next ``encode`` of the very same (immutable)
    object: a publisher that measures an event before publishing it serializes it once."""
    global _last_encoded
    last, data = _last_encoded
    if last is model:
        return data
    data = model.model_dump_json().encode()
    if model.model_config.get("frozen"):
        _last_encoded = (model, data)
    return data


def encode(model: BaseModel) -> bytes:
    data = encoded(model)
    if len(data) > MAX_BUS_PAYLOAD_BYTES:
        raise CommandError("payload_too_large", f"bus payload of {len(data)} bytes exceeds the bus limit")
    return data


def decode(model: type[M], data: bytes) -> M:
    if len(data) > MAX_BUS_PAYLOAD_BYTES:
        raise ValueError(f"bus payload of {len(data)} bytes exceeds the bus limit")
    return model.model_validate_json(data)


@dataclass
class _Flags:
    closing: bool = False
    reconnect_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    disconnect_hooks: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class ConnectOptions:
    url: str
    user: str | None = None
    password: str | None = None
    nkey_seed: str | None = None
    inbox_prefix: str | None = None
    name: str = "openchat"
    reconnect_wait_s: float = 1.0
    # The home's CA (PEM): TLS with this CA only, handshake first (ADR 0010). None: plain.
    ca_pem: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Bus:
    """One NATS connection of a process, with typed helpers."""

    def __init__(self, nc: NatsClient, flags: _Flags | None = None) -> None:
        self.nc = nc
        self._flags = flags or _Flags()
        self._js: JetStreamContext | None = None
        self._acks: _AckInbox | None = None
        self._subs: list[Subscription] = []
        self._pending_commands: list[
            tuple[str, str, type[Any], Callable[[str, Any], Awaitable[BaseModel]], int]
        ] = []
        self._handler_tasks: set[asyncio.Task[None]] = set()  # commands served concurrently
        self.refused_replies = 0  # commands refused for their reply subject (``serve``)

    # -- connection -------------------------------------------------------------------------
    @classmethod
    async def connect(cls, opts: ConnectOptions, *, first_attempts: int | None = None) -> Bus:
        """Connect, retrying the first connect with backoff (forever unless ``first_attempts``)."""
        delays = backoff_delays()
        attempt = 0
        while True:
            attempt += 1
            flags = _Flags()
            try:
                nc = await nats.connect(**cls._options(opts, flags))
                log.info(
                    "bus connected", extra={"url": nc.connected_url.netloc if nc.connected_url else opts.url}
                )
                return cls(nc, flags)
            except Exception as exc:  # any connect failure: refused, auth, DNS
                if first_attempts is not None and attempt >= first_attempts:
                    raise
                delay = next(delays)
                log.warning(
                    "bus connect failed, retrying", extra={"error": repr(exc), "retry_in_s": round(delay, 2)}
                )
                await asyncio.sleep(delay)

    @staticmethod
    def _options(opts: ConnectOptions, flags: _Flags) -> dict[str, Any]:
        async def on_error(exc: Exception) -> None:
            log.warning("bus error", extra={"error": repr(exc)})

        async def on_disconnect() -> None:
            if not flags.closing:
                log.warning("bus disconnected")
            for sync_hook in list(flags.disconnect_hooks):
                sync_hook()

        async def on_reconnect() -> None:
            log.info("bus reconnected")
            for hook in list(flags.reconnect_hooks):
                task: asyncio.Future[None] = asyncio.ensure_future(hook())
                _background.add(task)
                task.add_done_callback(_background.discard)

        options: dict[str, Any] = {
            "servers": [u.strip() for u in opts.url.split(",") if u.strip()],  # a cluster: comma-separated
            "name": opts.name,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": opts.reconnect_wait_s,
            "connect_timeout": 2,
            "error_cb": on_error,
            "disconnected_cb": on_disconnect,
            "reconnected_cb": on_reconnect,
            "pending_size": 64 * 1024 * 1024,
            **opts.extra,
        }
        if opts.user is not None:
            options["user"] = opts.user
            options["password"] = opts.password
        if opts.nkey_seed is not None:
            options["nkeys_seed_str"] = opts.nkey_seed
        if opts.ca_pem:
            from services.core.tls import client_context

            options["tls"] = client_context(opts.ca_pem)
            options["tls_handshake_first"] = True
        # A member's connection uses its own prefix (the connection file's); every other bus
        # (services, tools) the services' prefix, below which services accept replies.
        options["inbox_prefix"] = (opts.inbox_prefix or subjects.SERVICE_INBOX_PREFIX).encode()
        return options

    def add_reconnect_hooks(
        self, on_disconnect: Callable[[], None], on_reconnect: Callable[[], Awaitable[None]]
    ) -> None:
        """What was published on core NATS subjects while the connection was down is gone, so a
        subscriber resyncs from the stream (``state.sync``). ``on_disconnect()`` runs at once when
        the connection drops — before any message of the new connection is dispatched, so it can
        start buffering — and ``on_reconnect()`` as a task after every reconnect."""
        self._flags.disconnect_hooks.append(on_disconnect)
        self._flags.reconnect_hooks.append(on_reconnect)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            self._js = self.nc.jetstream()
        return self._js

    async def close(self) -> None:
        """Drain: finish in-flight handlers and flush pending publishes, then close."""
        if self.nc.is_closed:
            return
        self._flags.closing = True
        if self._handler_tasks:  # concurrently served commands: answered before the drain
            await asyncio.wait(set(self._handler_tasks), timeout=5)
        try:
            await asyncio.wait_for(self.nc.drain(), timeout=5)
        except Exception as exc:  # a dead connection cannot drain; close it anyway
            log.warning("bus drain failed", extra={"error": repr(exc)})
            await self.nc.close()

    # -- core pub/sub -----------------------------------------------------------------------
    async def publish(self, subject: str, msg: BaseModel, headers: dict[str, str] | None = None) -> None:
        await self.nc.publish(subject, encode(msg), headers=headers)

    async def subscribe(
        self,
        subject: str,
        model: type[M],
        handler: Callable[[M, Msg], Awaitable[None]],
        queue: str = "",
    ) -> Subscription:
        """Deliver each valid payload to ``handler``; log and drop invalid ones."""

        async def on_msg(msg: Msg) -> None:
            try:
                value = decode(model, msg.data)
            except (ValidationError, ValueError) as exc:
                log.warning(
                    "dropped invalid bus payload", extra={"subject": msg.subject, "error": _short(exc)}
                )
                return
            try:
                await handler(value, msg)
            except Exception:
                log.exception("bus handler failed", extra={"subject": msg.subject})

        sub = await self.nc.subscribe(subject, queue=queue, cb=on_msg)
        self._subs.append(sub)
        return sub

    # -- commands ---------------------------------------------------------------------------
    async def request(
        self,
        subject: str,
        args: BaseModel,
        result_model: type[R],
        timeout: float = 5.0,
    ) -> R:
        """Send a command and return its typed result; raise ``CommandError`` on an error reply."""
        envelope = cast(Any, CommandEnvelope)[type(args)](args=args)
        try:
            reply = await self.nc.request(subject, encode(envelope), timeout=timeout)
        except NoRespondersError as exc:
            raise CommandError(
                "service_unavailable", f"no service answers {subject}", retryable=True
            ) from exc
        except NatsTimeoutError as exc:
            raise CommandError(
                "timeout", f"no reply on {subject} within {timeout:g} s", retryable=True
            ) from exc
        if len(reply.data) > MAX_BUS_PAYLOAD_BYTES:
            # A service that does not bound its replies (an older one): asking again would get
            # the same answer, so this is permanent; the caller asks for less.
            raise CommandError(
                "reply_too_large",
                f"the answer on {subject} is {len(reply.data)} bytes, over the bus limit",
                retryable=False,
            )
        parsed = decode(cast(Any, ReplyEnvelope)[result_model], reply.data)
        if not parsed.ok or parsed.result is None:
            err = parsed.error or ErrorBody(
                code="internal_error", message="empty error reply", retryable=True
            )
            raise CommandError(err.code, err.message, err.retryable)
        result: R = parsed.result
        return result

    def command(
        self,
        service: str,
        verb: str,
        args_model: type[A],
        queue: str | None = None,
        *,
        concurrency: int = 1,
    ) -> Callable[[Callable[[str, A], Awaitable[BaseModel]]], Callable[[str, A], Awaitable[BaseModel]]]:
        """Decorator: serve ``oc.*.cmd.<service>.<verb>`` (queue group ``service``).

        The handler receives ``(member, args)`` and returns a result model. Exceptions become an
        error reply: ``CommandError`` as given, invalid arguments as ``invalid_payload``, anything
        else as ``internal_error`` (retryable, logged with its traceback). ``concurrency``: see
        ``serve``.
        """

        def register(
            fn: Callable[[str, A], Awaitable[BaseModel]],
        ) -> Callable[[str, A], Awaitable[BaseModel]]:
            self._pending_commands.append(
                (subjects.command_wildcard(service, verb), queue or service, args_model, fn, concurrency)
            )
            return fn

        return register

    async def serve_commands(self) -> None:
        """Subscribe every handler registered with ``command``."""
        for subject, queue, args_model, fn, concurrency in self._pending_commands:
            await self.serve(subject, queue, args_model, fn, concurrency=concurrency)
        self._pending_commands.clear()

    async def serve(
        self,
        subject: str,
        queue: str,
        args_model: type[A],
        fn: Callable[[str, A], Awaitable[BaseModel]],
        *,
        concurrency: int = 1,
    ) -> Subscription:
        """Subscribe ``fn``. ``concurrency`` 1: one command at a time, in arrival order (a NATS
        subscription awaits each callback). More: up to that many run at once, each started in
        arrival order (the handler orders what must be ordered, e.g. with a lock per member);
        when all are busy the subscription waits for one to end."""

        async def on_msg(msg: Msg) -> None:
            if msg.reply and not _reply_allowed(msg.subject, msg.reply):
                # Never published, and the command does not run: a reply subject outside the
                # caller's own inbox would write into another member's events, the ingest
                # stream or the JetStream API with the service's credentials.
                self.refused_replies += 1
                log.warning(
                    "refused a command with a foreign reply subject",
                    extra={"subject": msg.subject[:200], "reply": msg.reply[:200]},
                )
                return
            reply = await self._run_handler(msg, args_model, fn)
            if msg.reply:
                await self.nc.publish(msg.reply, reply)

        callback = on_msg
        if concurrency > 1:
            slots = asyncio.Semaphore(concurrency)

            async def one(msg: Msg) -> None:
                try:
                    await on_msg(msg)
                except Exception as exc:  # the reply could not be sent (connection closing)
                    log.warning(
                        "command reply failed", extra={"subject": msg.subject[:200], "error": repr(exc)}
                    )
                finally:
                    slots.release()

            async def callback(msg: Msg) -> None:
                await slots.acquire()
                task = asyncio.create_task(one(msg), name=f"command-{subject}")
                self._handler_tasks.add(task)
                task.add_done_callback(self._handler_tasks.discard)

        sub = await self.nc.subscribe(subject, queue=queue, cb=callback)
        self._subs.append(sub)
        return sub

    async def _run_handler(
        self, msg: Msg, args_model: type[A], fn: Callable[[str, A], Awaitable[BaseModel]]
    ) -> bytes:
        try:
            member = subjects.member_of_subject(msg.subject)
            envelope = decode(cast(Any, CommandEnvelope)[args_model], msg.data)
            result = await fn(member, envelope.args)
            reply = cast(Any, ReplyEnvelope)[type(result)](ok=True, result=result)
            data = cast(bytes, reply.model_dump_json().encode())
            if len(data) <= MAX_BUS_PAYLOAD_BYTES:
                return data
            # Every client refuses a payload over the bus limit: an answer it cannot read would be
            # asked for again and again. Say so, permanently (the caller must ask for less).
            log.warning(
                "reply over the bus limit refused",
                extra={"subject": msg.subject, "bytes": len(data), "limit": MAX_BUS_PAYLOAD_BYTES},
            )
            error = ErrorBody(
                code="reply_too_large",
                message=f"the answer is {len(data)} bytes, over the bus limit of "
                f"{MAX_BUS_PAYLOAD_BYTES}; ask for less (a smaller limit or one server)",
                retryable=False,
            )
        except CommandError as exc:
            error = exc.body
        except (ValidationError, ValueError, subjects.SubjectError) as exc:
            log.info("invalid command", extra={"subject": msg.subject, "error": _short(exc)})
            error = ErrorBody(code="invalid_payload", message=_short(exc), retryable=False)
        except Exception:
            log.exception("command handler failed", extra={"subject": msg.subject})
            error = ErrorBody(
                code="internal_error", message="the service failed to handle the command", retryable=True
            )
        return ReplyEnvelope[BaseModel](ok=False, error=error).model_dump_json().encode()

    # -- JetStream events -------------------------------------------------------------------
    async def ensure_events_stream(
        self,
        name: str = "OC_EVENTS",
        *,
        duplicate_window_s: float = 600.0,
        max_age_s: float = 30 * 86400.0,
        max_bytes: int = 2 * 1024**3,
        replicas: int = 1,
        max_msgs_per_subject: int = -1,
    ) -> None:
        """Create or update the events stream (idempotent; safe from every service at start).

        Updating an existing stream is its migration: limits added by a newer release (e.g.
        ``max_msgs_per_subject``, ADR 0009 — per ``<member>.<server_id>.<kind>``, discarding
        that subject's own oldest) apply to it with its stored events kept."""
        config = StreamConfig(
            name=name,
            description="OpenChat member events, de-duplicated by Nats-Msg-Id",
            subjects=[subjects.INGEST_WILDCARD],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            duplicate_window=duplicate_window_s,
            max_age=max_age_s,
            max_bytes=max_bytes,
            max_msg_size=MAX_BUS_PAYLOAD_BYTES,
            max_msgs_per_subject=max_msgs_per_subject,
            num_replicas=replicas,
            republish=RePublish(src=subjects.REPUBLISH_SRC, dest=subjects.REPUBLISH_DEST),
        )
        try:
            await self.js.stream_info(name)
        except NotFoundError:
            await self.js.add_stream(config)
            log.info("events stream created", extra={"stream": name})
            return
        await self.js.update_stream(config)

    async def publish_event(self, member: str, envelope: EventEnvelope[Any], timeout: float = 5.0) -> PubAck:
        """Store one event (at most once per event within the duplicate window).

        The stream is shared by all members and servers, so the de-duplication key scopes the
        backend's id: ``<member>/<server_id>/<type>/<event_id>``."""
        subject = subjects.ingest(member, envelope.server_id, envelope.type)
        msg_id = f"{member}/{envelope.server_id}/{envelope.type}/{envelope.event_id}"
        return await self.js.publish(
            subject, encode(envelope), timeout=timeout, headers={"Nats-Msg-Id": msg_id}
        )

    async def publish_events(
        self,
        member: str,
        envelopes: Sequence[EventEnvelope[Any]],
        *,
        window: int = PUBLISH_WINDOW,
        timeout: float = 5.0,
    ) -> list[PubAck]:
        """Store many events, pipelined: up to ``window`` publishes in flight (acks are awaited in
        slices of a quarter window, so the pipe never drains until the end), each one acked.

        Same subjects and ``Nats-Msg-Id`` keys as ``publish_event``, so a re-published event is
        de-duplicated. The events are written to one connection in the given order, so the stream
        stores them in that order. Every envelope is encoded before the first publish: one that
        does not fit on the bus raises ``CommandError`` and nothing is published. Returns the
        PubAcks in order; raises on the first failure (an error ack as ``APIError``, no stream as
        ``NoStreamResponseError``, a slice not acked within ``timeout`` as ``TimeoutError``).
        Events before the failed one may be stored — and, since up to ``window`` are in flight,
        some after it too — so a caller moves its anchors only after this returns and re-publishes
        the batch on failure (de-duplicated by ``Nats-Msg-Id``; the order in the stream is
        guaranteed for a batch that succeeds).

        Core publishes with a reply inbox per event rather than ``js.publish_async``: nats-py
        2.16's async-ack handler raises an error ack into the connection's error callback instead
        of failing the future, so a refused event would surface only as a timeout."""
        if window < 1:
            raise ValueError("window must be at least 1")
        prepared: list[tuple[str, bytes, dict[str, str]]] = []
        subject_of: dict[tuple[str, str], str] = {}  # a batch is mostly one server and kind
        for envelope in envelopes:
            server_id, kind = envelope.server_id, envelope.type
            subject = subject_of.get((server_id, kind))
            if subject is None:
                subject = subject_of[server_id, kind] = subjects.ingest(member, server_id, kind)
            prepared.append(
                (
                    subject,
                    encode(envelope),
                    {"Nats-Msg-Id": f"{member}/{server_id}/{kind}/{envelope.event_id}"},
                )
            )
        inbox = self._acks or await self._ack_inbox()
        publish = self.nc.publish
        step = max(1, window // 4)  # acks are tracked per slice: a quarter of the window
        results: list[PubAck] = []
        in_flight: deque[tuple[int, _AckBatch]] = deque()
        try:
            for start in range(0, len(prepared), step):
                chunk = prepared[start : start + step]
                while in_flight and sum(b.size for _, b in in_flight) + len(chunk) > window:
                    results.extend(await self._acked(inbox, *in_flight.popleft(), len(prepared), timeout))
                batch = inbox.expect(len(chunk))
                in_flight.append((start, batch))
                for index, (subject, data, headers) in enumerate(chunk):
                    await publish(subject, data, reply=f"{batch.prefix}{index}", headers=headers)
            while in_flight:
                results.extend(await self._acked(inbox, *in_flight.popleft(), len(prepared), timeout))
        finally:
            for _, batch in in_flight:
                inbox.forget(batch)
        return results

    @staticmethod
    async def _acked(
        inbox: _AckInbox, start: int, batch: _AckBatch, total: int, timeout: float
    ) -> list[PubAck]:
        try:
            await asyncio.wait_for(asyncio.shield(batch.done), timeout)
        except TimeoutError as exc:
            raise NatsTimeoutError(
                f"{batch.missing} of events {start}..{start + batch.size - 1} (of {total}) "
                f"not acked within {timeout:g} s"
            ) from exc
        finally:
            inbox.forget(batch)
        return batch.acks()

    async def _ack_inbox(self) -> _AckInbox:
        inbox = _AckInbox(f"{self.nc.new_inbox()}.")
        self._subs.append(await self.nc.subscribe(inbox.prefix + "*.*", cb=inbox.on_reply))
        self._acks = inbox
        return inbox


class _AckBatch:
    """The PubAcks of one slice: reply subject ``<inbox>.<batch>.<index>``, one future in all."""

    def __init__(self, prefix: str, size: int) -> None:
        self.prefix = prefix
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks: list[PubAck | None] = [None] * size
        self.size = self.missing = size
        if size == 0:
            self.done.set_result(None)

    def acks(self) -> list[PubAck]:
        return [a for a in self._acks if a is not None]

    def reply(self, index: int, data: bytes, status: str | None) -> None:
        if self.done.done() or not 0 <= index < len(self._acks) or self._acks[index] is not None:
            return
        if status == "503":
            self.done.set_exception(NoStreamResponseError())  # no stream takes this subject
            return
        try:
            reply = json.loads(data)
            if "error" in reply:
                APIError.from_error(reply["error"])  # raises the matching APIError
            ack = PubAck(
                stream=reply["stream"],
                seq=reply["seq"],
                domain=reply.get("domain"),
                duplicate=reply.get("duplicate"),
            )
        except Exception as exc:  # an error ack, or a reply that is no ack
            self.done.set_exception(exc)
            return
        self._acks[index] = ack
        self.missing -= 1
        if self.missing == 0:
            self.done.set_result(None)


class _AckInbox:
    """One wildcard reply subscription of a connection for pipelined JetStream PubAcks."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._next = 0
        self._batches: dict[str, _AckBatch] = {}

    def expect(self, size: int) -> _AckBatch:
        self._next += 1
        token = format(self._next, "x")
        batch = _AckBatch(f"{self.prefix}{token}.", size)
        self._batches[token] = batch
        return batch

    def forget(self, batch: _AckBatch) -> None:
        """Drop a finished (or failed) window: late replies to it are ignored."""
        self._batches.pop(batch.prefix[len(self.prefix) : -1], None)
        if not batch.done.done():
            batch.done.cancel()
        elif not batch.done.cancelled():
            batch.done.exception()  # retrieved: no "exception never retrieved" warning

    async def on_reply(self, msg: Msg) -> None:
        token, _, index = msg.subject[len(self.prefix) :].partition(".")
        batch = self._batches.get(token)
        if batch is None or not index.isdigit():
            return
        status = msg.headers.get(JsHeader.STATUS) if msg.headers else None
        batch.reply(int(index), msg.data, status)


def newest_that_fit(items: Sequence[BaseModel], budget: int = MAX_REPLY_RESULT_BYTES) -> int:
    """How many of ``items`` (oldest first), counted from the newest, fit a reply of ``budget``
    bytes: a page of messages is bounded by bytes as well as by its count (bus contract)."""
    size = 256  # the result's own fields
    keep = 0
    for item in reversed(items):
        size += len(item.model_dump_json().encode()) + 1
        if size > budget:
            break
        keep += 1
    return keep


_background: set[asyncio.Future[None]] = set()  # reconnect hooks in flight (kept referenced)


def _reply_allowed(subject: str, reply: str) -> bool:
    try:
        member = subjects.member_of_subject(subject)
    except subjects.SubjectError:
        return False
    return subjects.reply_allowed(member, reply)


def _short(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, ValidationError):
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
    return text[:500]


def parse_json_object(data: bytes) -> dict[str, Any]:
    """Parse a JSON object (for raw event payloads whose kind is only known after reading)."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value
