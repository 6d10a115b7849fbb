"""Local server ids and uid scopes for joined servers (issue #14, ADR 0018). Pure: no I/O.

Every instance of the public backend calls its first server ``srv_harbor``, so two independent
backends can use the same server id. The stack keys everything of a joined server (registry,
bus subjects, Redis keys, stores, UI) by the member's **local id**; the connector speaks the
backend's id on the wire. The local id is the backend's id when the member has no server of
that id yet, else one derived from the backend's host (readable and stable: the same backend
gets the same proposal), or the one the member chose (``openchat join … --as``, the desktop's
Add Server dialog).

The uid a server sees is projected from ``root + ":" + scope``. The first server of an id keeps
the reference projection (scope = its id, so an imported identity stays the same user there); a
server whose id collides with one the member already joined on another backend is projected
from ``<id>@<backend URL>``, so the two backends never see the same uid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.core.contracts.chat import ServerRecord

MAX_ID = 128
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


class LocalIdError(ValueError):
    """A local id the member chose that cannot be used (``code``: ``invalid_server_id`` or
    ``server_exists``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def valid_local_id(value: str) -> bool:
    """A local id is a bus subject token: letters, digits, ``_`` and ``-``, 1-128 characters."""
    return bool(_TOKEN.match(value))


def host_slug(base_url: str) -> str:
    """The backend's host (and a non-default port) as a token: ``chat.example.org`` ->
    ``chat-example-org``, ``http://127.0.0.1:8082`` -> ``127-0-0-1-8082``."""
    try:
        parts = urlsplit(base_url)
        host, port, scheme = parts.hostname or "", parts.port, parts.scheme
    except ValueError:
        host, port, scheme = "", None, ""
    text = host if port is None or port == {"http": 80, "https": 443}.get(scheme) else f"{host}-{port}"
    return _UNSAFE.sub("-", text).strip("-").lower() or "backend"


def derived_local_id(backend_id: str, base_url: str) -> str:
    """``<backend id>-<host slug>``, cut to a token's length (the id part first)."""
    slug = host_slug(base_url)
    room = MAX_ID - len(slug) - 1
    return f"{backend_id[: max(room, 1)]}-{slug}"[:MAX_ID]


def propose_local_id(backend_id: str, base_url: str, taken: Iterable[str]) -> str:
    """The backend's id when free, else the derived id, else the derived id with ``-2``, ``-3``…"""
    used = set(taken)
    if backend_id not in used:
        return backend_id
    base = derived_local_id(backend_id, base_url)
    candidate, n = base, 2
    while candidate in used:
        suffix = f"-{n}"
        candidate = base[: MAX_ID - len(suffix)] + suffix
        n += 1
    return candidate


def origin_scope(backend_id: str, base_url: str) -> str:
    """The projection scope of a server whose id collides: its id and its backend's URL."""
    return f"{backend_id}@{base_url.rstrip('/')}"


@dataclass(frozen=True)
class JoinPlan:
    backend_id: str
    local_id: str
    uid_scope: str | None  # None: the reference projection (the backend's id)

    @property
    def projection_scope(self) -> str:
        return self.uid_scope or self.backend_id


def plan_join(
    backend_id: str,
    base_url: str,
    joined: Iterable[ServerRecord],
    chosen: str | None = None,
    *,
    check_taken: bool = True,
) -> JoinPlan:
    """Local id and uid scope for joining ``backend_id`` at ``base_url``, given the member's
    joined servers. Raises ``LocalIdError`` when the server is already joined (same backend URL
    and id), or the chosen local id is invalid or in use (unless ``check_taken`` is off: a
    probe only proposes)."""
    records = list(joined)
    base = base_url.rstrip("/")
    same = next((r for r in records if r.backend_id == backend_id and r.base_url.rstrip("/") == base), None)
    if same is not None:
        if check_taken:
            raise LocalIdError("server_exists", f"Server already added: {backend_id} (as {same.server_id})")
        return JoinPlan(backend_id, same.server_id, same.uid_scope)  # a probe of a joined server
    taken = {r.server_id for r in records}
    if chosen is not None:
        if not valid_local_id(chosen):
            raise LocalIdError(
                "invalid_server_id",
                f"Invalid local server id {chosen!r}: use 1-128 letters, digits, '_' or '-'.",
            )
        if chosen in taken and check_taken:
            raise LocalIdError("server_exists", f"Local server id already in use: {chosen}")
        local = chosen
    else:
        local = propose_local_id(backend_id, base, taken)
    # the reference projection belongs to the first server of this id (on another backend)
    collides = any(r.backend_id == backend_id and r.uid_scope is None for r in records)
    return JoinPlan(backend_id, local, origin_scope(backend_id, base) if collides else None)
