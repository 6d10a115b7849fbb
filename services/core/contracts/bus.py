"""Base contract models of the bus: event, command, reply and error envelopes.

Every payload on the bus is one of these (or a model built on them); subjects live in
``services.core.contracts.subjects``. The event envelope mirrors the backend contract's
(``event_id``, ``server_id``, ``channel_id``, ``ts``, ``type``, ``payload``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

MAX_BUS_PAYLOAD_BYTES = 4 * 1024 * 1024
# The one limit of every reply: a ``ReplyEnvelope`` is at most ``MAX_BUS_PAYLOAD_BYTES`` (what every
# client accepts; nats-server's max_payload is larger). A paged or list result fills at most
# ``MAX_REPLY_RESULT_BYTES`` (room left for the envelope) *and* at most the count it was asked
# for, whichever comes first; a reply that would still be larger is refused by the bus with the
# permanent error ``reply_too_large`` (never sent, never retried as is).
REPLY_ENVELOPE_RESERVE_BYTES = 16 * 1024
MAX_REPLY_RESULT_BYTES = MAX_BUS_PAYLOAD_BYTES - REPLY_ENVELOPE_RESERVE_BYTES


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class Contract(BaseModel):
    """Base of every bus model: strict about unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Empty(Contract):
    """A command or payload without fields."""


P = TypeVar("P", bound=BaseModel)
A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class EventEnvelope(Contract, Generic[P]):
    """One event of a member's view. ``event_id`` is the de-duplication key (``Nats-Msg-Id``):
    the backend's id where one exists (message id, backend event id), else a fresh id."""

    event_id: str = Field(min_length=1, max_length=256)
    server_id: str = Field(min_length=1, max_length=128)
    channel_id: str | None = Field(default=None, max_length=128)
    ts: datetime = Field(default_factory=utcnow)
    type: str = Field(min_length=1, max_length=128)
    payload: P


class ErrorBody(Contract):
    """The error of a failed command: what the member's client shows and whether to retry."""

    code: str = Field(min_length=1, max_length=64)
    message: str = Field(max_length=2000)
    retryable: bool = False


class CommandEnvelope(Contract, Generic[A]):
    """A request on ``oc.<member>.cmd.<service>.<verb>``. The member is taken from the subject,
    never from the payload, so a member cannot act for another."""

    command_id: str = Field(default_factory=lambda: new_id("cmd"), max_length=128)
    ts: datetime = Field(default_factory=utcnow)
    args: A


class ReplyEnvelope(Contract, Generic[R]):
    """The reply to a command: ``ok`` with a ``result``, or not ``ok`` with an ``error``."""

    ok: bool
    result: R | None = None
    error: ErrorBody | None = None


class HealthPing(Contract):
    """Internal liveness probe of a service over the bus (``oc.sys.health.<service>``)."""

    service: str


class HealthPong(Contract):
    service: str
    status: Literal["ok", "degraded"]
    checks: dict[str, bool]
    uptime_s: float


class BusEvent(Contract):
    """A received event with its place in the stream (the ``Nats-Sequence`` header)."""

    seq: int
    subject: str
    data: dict[str, Any]
