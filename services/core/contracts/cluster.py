"""Contracts of a clustered stack (issue 16, ADR 0021): connector session leases in NATS KV,
the replicas' registrations, commands forwarded to the replica that holds a session, and media
call pins.

- ``LEASES_BUCKET``: key ``<member>.<server_id>`` → ``SessionLease`` (who holds the session);
  the bucket's TTL is the lease TTL, a holder renews with a compare-and-set on its revision.
- ``REPLICAS_BUCKET``: key ``<replica id>`` → ``ReplicaInfo``; a replica refreshes its entry, so
  the live replicas are the bucket's keys (a killed replica's entry expires with the TTL).
- ``forward_subject(replica)``: a connector replica that receives a command for a session it
  does not hold forwards it (``ForwardedCommand``) to the holder, which answers with the
  command's ordinary ``ReplyEnvelope``. Only the services' users may publish on ``oc.sys.>``.
- ``SERVICE_LEASES_BUCKET``: key ``<service>`` → ``CallPin`` (which replica of an active/standby
  service — notification, media — is the active one; every media call is pinned to it).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from services.core.contracts import subjects

LEASES_BUCKET = "oc_connector_leases"
REPLICAS_BUCKET = "oc_connector_replicas"
SERVICE_LEASES_BUCKET = "oc_service_leases"  # active/standby services: key = service name
FORWARD_PREFIX = f"{subjects.SYS_PREFIX}.connector.fwd"
REPLICA_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_FORWARD_TIMEOUT_S = 60.0


def lease_key(member: str, server_id: str) -> str:
    subjects.check_member(member)
    subjects.check_token(server_id, "server id")
    return f"{member}.{server_id}"


def parse_lease_key(key: str) -> tuple[str, str] | None:
    """``(member, server_id)`` of a lease key; None for anything else."""
    member, dot, server_id = key.partition(".")
    if not dot or not subjects.MEMBER_RE.match(member) or not subjects.TOKEN_RE.match(server_id):
        return None
    return member, server_id


def check_replica_id(replica: str) -> str:
    if not REPLICA_ID_RE.match(replica):
        raise ValueError(f"not a replica id: {replica[:80]!r}")
    return replica


def forward_subject(replica: str) -> str:
    return f"{FORWARD_PREFIX}.{check_replica_id(replica)}"


class SessionLease(BaseModel):
    replica: str = Field(max_length=64)
    acquired_at: str = Field(max_length=64)


class ReplicaInfo(BaseModel):
    replica: str = Field(max_length=64)
    name: str = Field(default="", max_length=64)  # the supervisor's component name (connector-2)
    host: str = Field(default="", max_length=255)
    pid: int = 0
    started_at: str = Field(default="", max_length=64)
    sessions: int = 0  # sessions held at the last refresh


class ForwardedCommand(BaseModel):
    member: str = Field(max_length=32)
    verb: str = Field(max_length=64)
    args: dict[str, Any]


class CallPin(BaseModel):
    replica: str = Field(max_length=64)
    since: str = Field(max_length=64)
