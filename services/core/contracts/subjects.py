"""Subject names of the bus: the API of the stack (architecture.md, "The bus").

- commands (request/reply): ``oc.<member>.cmd.<service>.<verb>``
- events delivered to members: ``oc.<member>.evt.<server_id>.<kind>``
- internal traffic: ``oc.sys.>``; events are *ingested* on ``oc.sys.ev.<member>.<server_id>.<kind>``
  into the JetStream stream, which de-duplicates them and republishes each stored event once,
  with its stream sequence, on the member's ``evt`` subject.
"""

from __future__ import annotations

import re

MEMBER_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
RESERVED_MEMBERS = frozenset({"sys", "svc", "all", "admin"})
SYS_PREFIX = "oc.sys"
INGEST_PREFIX = "oc.sys.ev"
SERVICES = ("connector", "state", "notification", "media")


class SubjectError(ValueError):
    """A name that cannot be used as a subject token."""


def check_member(member: str) -> str:
    if not MEMBER_RE.match(member) or member in RESERVED_MEMBERS:
        raise SubjectError(
            f"invalid member name {member!r}: 1-32 of a-z 0-9 _ -, starting with a letter, not one of "
            f"{sorted(RESERVED_MEMBERS)}"
        )
    return member


def check_token(value: str, what: str = "token") -> str:
    """A subject token from outside (server id, kind…): no dots, wildcards or spaces."""
    if not TOKEN_RE.match(value):
        raise SubjectError(f"invalid {what} {value!r} for a subject token")
    return value


def kind_tokens(kind: str) -> str:
    """An event kind such as ``message.created``: dot-separated tokens."""
    for part in kind.split("."):
        check_token(part, "event kind")
    return kind


def command(member: str, service: str, verb: str) -> str:
    return f"oc.{check_member(member)}.cmd.{check_token(service, 'service')}.{check_token(verb, 'verb')}"


def command_wildcard(service: str, verb: str = "*") -> str:
    """What a service subscribes to (in a queue group) to serve every member."""
    return f"oc.*.cmd.{check_token(service, 'service')}.{verb}"


def member_of_subject(subject: str) -> str:
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != "oc":
        raise SubjectError(f"not a member subject: {subject!r}")
    return check_member(parts[1])


def event(member: str, server_id: str, kind: str) -> str:
    return f"oc.{check_member(member)}.evt.{check_token(server_id, 'server id')}.{kind_tokens(kind)}"


def events_of_member(member: str) -> str:
    return f"oc.{check_member(member)}.evt.>"


def ingest(member: str, server_id: str, kind: str) -> str:
    return f"{INGEST_PREFIX}.{check_member(member)}.{check_token(server_id, 'server id')}.{kind_tokens(kind)}"


INGEST_WILDCARD = f"{INGEST_PREFIX}.>"
# JetStream republish: oc.sys.ev.<member>.<rest> -> oc.<member>.evt.<rest>
REPUBLISH_SRC = f"{INGEST_PREFIX}.*.>"
REPUBLISH_DEST = "oc.{{wildcard(1)}}.evt.>"


def inbox_prefix(member: str) -> str:
    """Each member's private reply-inbox prefix (its credentials may subscribe only below it)."""
    return f"_INBOX_{check_member(member)}"


SERVICE_INBOX_PREFIX = "_INBOX_svc"  # the services' own requests ("svc" is no member name)
MAX_REPLY_SUBJECT_CHARS = 256
_REPLY_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def reply_allowed(member: str, reply: str) -> bool:
    """May a service answer a command of ``member`` on ``reply``?

    Only below the member's own inbox prefix (what the member's credentials may subscribe to and
    what the desktop app and the CLI request from), or below the services' inbox prefix (the
    notification service calls the connector for a member; no member can subscribe there). Every
    token after the prefix is a plain token (no wildcard, no dot tricks), so a reply can never
    land on another member's events, ``oc.sys.>`` ingest subjects, ``$JS.API.>`` or ``$KV.>``."""
    if not reply or len(reply) > MAX_REPLY_SUBJECT_CHARS:
        return False
    prefix, _, rest = reply.partition(".")
    if prefix not in (inbox_prefix(member), SERVICE_INBOX_PREFIX) or not rest:
        return False
    return all(_REPLY_TOKEN_RE.match(token) for token in rest.split("."))


def service_health(service: str) -> str:
    return f"{SYS_PREFIX}.health.{check_token(service, 'service')}"
