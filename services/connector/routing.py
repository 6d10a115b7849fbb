"""Commands for a session held by another connector replica (issue 16, ADR 0021).

Member commands reach any replica (queue group ``connector``). A command that needs the
session of ``(member, server_id)`` — send, typing, delete, history, members, profiles, consent,
read-acks, leave — runs where the session runs: a replica that does not hold it looks up the
holder in the leases bucket and forwards the command (``ForwardedCommand`` on
``oc.sys.connector.fwd.<replica>``, services only); the holder runs the same handler and its
ordinary reply comes back. While a session has no holder (a hand-over: at most the lease TTL
and one tick), the command waits for one up to ``wait_s``, then fails as retryable
``session_moving``. A forwarded command never travels twice: a holder that lost the session
meanwhile answers ``session_moving`` itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from services.core.bus import Bus, CommandError, decode
from services.core.contracts.bus import CommandEnvelope, ErrorBody, ReplyEnvelope
from services.core.contracts.cluster import ForwardedCommand, forward_subject, lease_key
from services.core.contracts.commands import CommandSpec

log = logging.getLogger("openchat.connector.routing")

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class _ServerArgs(Protocol):
    server_id: str


class Holders(Protocol):
    replica: str

    async def holder(self, member_key: str) -> str | None: ...


def moving(server_id: str) -> CommandError:
    return CommandError(
        "session_moving",
        f"the connection to {server_id} is moving between connector replicas; try again",
        retryable=True,
    )


class Router:
    def __init__(
        self,
        bus: Bus,
        holders: Holders,
        is_local: Callable[[str, str], bool],
        *,
        wait_s: float = 10.0,
        poll_s: float = 0.25,
    ) -> None:
        self.bus = bus
        self.holders = holders
        self.is_local = is_local
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._local: dict[str, tuple[type[BaseModel], Callable[[str, Any], Awaitable[BaseModel]]]] = {}
        self.forwarded = 0  # commands this replica sent to a holder
        self.served = 0  # forwarded commands this replica ran

    def route(
        self, spec: CommandSpec[A, R], handler: Callable[[str, A], Awaitable[R]]
    ) -> Callable[[str, A], Awaitable[R]]:
        """``handler`` where the session runs: here when held here, else at its holder."""

        async def local_only(member: str, args: A) -> R:
            if not self.is_local(member, cast(_ServerArgs, args).server_id):
                raise moving(cast(_ServerArgs, args).server_id)
            return await handler(member, args)

        self._local[spec.verb] = (spec.args, cast(Any, local_only))

        async def routed(member: str, args: A) -> R:
            server_id = cast(_ServerArgs, args).server_id
            deadline = time.monotonic() + self.wait_s
            while True:
                if self.is_local(member, server_id):
                    return await handler(member, args)
                holder = await self.holders.holder(lease_key(member, server_id))
                if holder is not None and holder != self.holders.replica:
                    return await self._forward(holder, spec, member, args)
                if holder is None and spec.verb == "leave":
                    return await handler(member, args)  # nobody runs it: leave from here
                if time.monotonic() >= deadline:
                    raise moving(server_id)
                await asyncio.sleep(self.poll_s)

        return routed

    async def _forward(self, holder: str, spec: CommandSpec[A, R], member: str, args: A) -> R:
        self.forwarded += 1
        forwarded = ForwardedCommand(member=member, verb=spec.verb, args=args.model_dump(mode="json"))
        try:
            return await self.bus.request(forward_subject(holder), forwarded, spec.result, spec.timeout_s)
        except CommandError as exc:
            if exc.code == "service_unavailable":  # the holder died a moment ago
                raise moving(cast(_ServerArgs, args).server_id) from exc
            raise

    async def subscribe(self) -> Subscription:
        """Run the commands other replicas forward to this one."""
        envelope_model = cast(Any, CommandEnvelope)[ForwardedCommand]

        async def on_msg(msg: Msg) -> None:
            try:
                fwd: ForwardedCommand = decode(envelope_model, msg.data).args
                row = self._local.get(fwd.verb)
                if row is None:
                    raise CommandError("unknown_command", f"no forwarded command {fwd.verb[:64]}")
                args_model, fn = row
                args = args_model.model_validate(fwd.args)
                self.served += 1
                result = await fn(fwd.member, args)
                data = cast(Any, ReplyEnvelope)[type(result)](ok=True, result=result).model_dump_json()
            except CommandError as exc:
                data = ReplyEnvelope[BaseModel](ok=False, error=exc.body).model_dump_json()
            except (ValidationError, ValueError) as exc:
                error = ErrorBody(code="invalid_payload", message=str(exc)[:300], retryable=False)
                data = ReplyEnvelope[BaseModel](ok=False, error=error).model_dump_json()
            except Exception:
                log.exception("forwarded command failed")
                error = ErrorBody(
                    code="internal_error", message="the service failed to handle the command", retryable=True
                )
                data = ReplyEnvelope[BaseModel](ok=False, error=error).model_dump_json()
            if msg.reply:
                await self.bus.nc.publish(msg.reply, data.encode())

        return await self.bus.nc.subscribe(forward_subject(self.holders.replica), cb=on_msg)
