"""Profile B features (wire §0.2), each behind its own flag (``--feature NAME``).

Off (the default) a feature is absent exactly like on the public backend: its routes are not
registered, so the router answers ``404 page not found`` (or an empty ``405`` where the path exists
for another method, ``examples/absent_*.json``) and nothing is advertised.  On, it is advertised in
the capability document (``features.<name>: true``; ``read_acks``/``mentions`` also as top-level
keys, the ones the Electron client reads) and works as below.

``legacy_capabilities_path``  ``GET /client/capabilities`` serves the capability document.
``cursors``                   history takes ``before=<message_id>`` and pages carry ``next_cursor``
                              (the id to pass as ``before`` for the next older page; ``null`` at the
                              start of the channel).  Unknown cursor → ``400 invalid_cursor``.
``event_ids``                 realtime events carry ``event_id``/``event_type``/``server_id``/
                              ``timestamp``; ``/v1/realtime?resume_from=<event_id>`` replays missed
                              events (``realtime.py``).
``read_acks``                 ``GET``/``PUT /v1/channels/{cid}/read-ack`` →
                              ``{applied, channel_id, read_ack:{channel_id, user_uid,
                              last_read_message_id, acked_at, cursor_index}}``; monotonic (an older
                              cursor is not applied); ``chat.read_ack.updated`` (the record, flat in
                              ``payload``) to every socket of that uid.
``mentions``                  ``GET /v1/channels/{cid}/mentions:resolve?query=&limit=`` →
                              ``{channel_id, query, results:[{type, token, target_id,
                              display_text}]}``; messages carry ``mentions[]`` parsed from ``@uid``,
                              ``@here`` and ``@channel`` tokens (``range`` in UTF-8 byte offsets).
``message_delete``            ``DELETE /v1/channels/{cid}/messages/{mid}`` (author only, else 403) →
                              ``{channel_id, deleted, deleted_at, message_id}`` and realtime
                              ``chat.message.deleted {channel_id, deleted_at, deleted_by_uid,
                              message_id}``; replies to it get ``reply_to.is_unavailable: true``.
``server_unread_counts``      channel entries carry ``unread_count`` for the requesting uid
                              (messages after its read-ack, own messages excluded).
``server_creation``           ``POST /v1/servers {display_name, description, banner_preset}`` →
                              201 ``{server, created_by_uid, created_at, ownership_claim:{token,
                              expires_at}}``; ``POST /v1/servers/{sid}/ownership:claim
                              {claim_token}`` → ``{server_id, owner_user_uid, claimed_at}``.
``channel_admin``             ``POST /v1/servers/{sid}/channels``, ``POST …/categories``,
                              ``PUT``/``DELETE …/categories/{gid}``, ``PUT …/channel-layout``,
                              ``GET``/``PUT …/settings`` and realtime ``chat.channel.created``,
                              ``chat.category.created``, ``chat.category.updated``,
                              ``chat.channel.layout.updated``, ``chat.server.updated``.  The first uid
                              to change a seed server becomes its owner; others get 403.
``sfu_events``                implemented by ``rtc.py`` (server-sent ``rtc.track.*``).

With either ``server_creation`` or ``channel_admin`` on, directory entries also carry
``description`` and ``banner_preset``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from services.devserver.gojson import GoDecodeError, field, is_missing, str_field
from services.devserver.http_api import (
    Context,
    bind_handler,
    directory_entry,
    first_query,
    get_capabilities,
    go_atoi,
    json_object,
    path_param,
    strict_identity,
    unauthorized,
    wire_error,
)
from services.devserver.store import WireError
from services.devserver.wire_http import error_response, json_response, rfc3339

Handler = Callable[[Context, Request], Awaitable[Response]]


# ---------------------------------------------------------------------------- read-acks


async def get_read_ack(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    channel_id = path_param(request, "channel_id")
    try:
        ack = ctx.store.read_ack(channel_id, ident.user_uid)
    except WireError as exc:
        return wire_error(exc)
    return json_response({"applied": False, "channel_id": channel_id, "read_ack": ack})


async def put_read_ack(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    channel_id = path_param(request, "channel_id")
    try:
        payload = await json_object(request, empty_ok=True)
        last_read = str_field(payload, "last_read_message_id")
    except GoDecodeError:
        return error_response(400, "invalid_payload", "invalid read ack payload")
    try:
        ack, applied = ctx.store.update_read_ack(channel_id, ident.user_uid, last_read)
    except WireError as exc:
        return wire_error(exc)
    if applied:
        ctx.hub.broadcast_read_ack(ack)
    return json_response({"applied": applied, "channel_id": channel_id, "read_ack": ack})


# ---------------------------------------------------------------------------- mentions


async def resolve_mentions(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    channel_id = path_param(request, "channel_id")
    limit = 20
    parsed = go_atoi(first_query(request, "limit").strip())
    if parsed is not None and parsed > 0:
        limit = min(parsed, 50)
    query = first_query(request, "query").strip()
    try:
        results = ctx.store.mention_candidates(channel_id, ident.user_uid, query, limit)
    except WireError as exc:
        return wire_error(exc)
    return json_response({"channel_id": channel_id, "query": query, "results": results})


# ---------------------------------------------------------------------------- message delete


async def delete_message(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    channel_id = path_param(request, "channel_id")
    message_id = path_param(request, "message_id")
    found = ctx.store.find_message(channel_id, message_id)
    if found is not None and found[1]["author_uid"] != ident.user_uid:
        return error_response(403, "message_delete_forbidden", "only the author can delete this message")
    try:
        ctx.store.delete_message(channel_id, message_id)
    except WireError as exc:
        return wire_error(exc)
    deleted_at = rfc3339(ctx.store.clock())
    ctx.hub.broadcast_message_deleted(
        {
            "channel_id": channel_id,
            "deleted_at": deleted_at,
            "deleted_by_uid": ident.user_uid,
            "message_id": message_id,
        }
    )
    return json_response(
        {"channel_id": channel_id, "deleted": True, "deleted_at": deleted_at, "message_id": message_id}
    )


# ---------------------------------------------------------------------------- server creation


async def create_server(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    try:
        payload = await json_object(request)
        display_name = str_field(payload, "display_name")
        description = str_field(payload, "description")
        banner = str_field(payload, "banner_preset")
    except GoDecodeError:
        return error_response(400, "invalid_payload", "invalid server payload")
    try:
        created = ctx.store.create_server(ident.user_uid, display_name, description, banner)
    except WireError as exc:
        return wire_error(exc)
    created["server"] = directory_entry(ctx, created["server"])
    return json_response(created, 201)


async def claim_ownership(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    try:
        payload = await json_object(request)
        token = str_field(payload, "claim_token")
    except GoDecodeError:
        return error_response(400, "invalid_payload", "invalid ownership claim payload")
    try:
        claimed = ctx.store.claim_ownership(path_param(request, "server_id"), ident.user_uid, token)
    except WireError as exc:
        return wire_error(exc)
    return json_response(claimed)


# ---------------------------------------------------------------------------- channel admin


async def create_channel(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    server_id = path_param(request, "server_id")
    try:
        payload = await json_object(request)
        name, ctype, group_id = (str_field(payload, k) for k in ("name", "type", "group_id"))
    except GoDecodeError:
        return error_response(400, "invalid_payload", "invalid channel payload")
    try:
        event = ctx.store.create_channel(server_id, ident.user_uid, group_id, name, ctype.strip())
    except WireError as exc:
        return wire_error(exc)
    ctx.hub.broadcast_server_event("chat.channel.created", server_id, event)
    return json_response(event, 201)


async def create_category(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    server_id = path_param(request, "server_id")
    try:
        payload = await json_object(request)
        name, kind = str_field(payload, "name"), str_field(payload, "kind")
    except GoDecodeError:
        return error_response(400, "invalid_payload", "invalid category payload")
    try:
        event = ctx.store.create_category(server_id, ident.user_uid, name, kind)
    except WireError as exc:
        return wire_error(exc)
    ctx.hub.broadcast_server_event("chat.category.created", server_id, event)
    return json_response(event, 201)


async def rename_category(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    server_id = path_param(request, "server_id")
    try:
        payload = await json_object(request)
        name = str_field(payload, "name")
    except GoDecodeError:
        return error_response(400, "invalid_payload", "invalid category payload")
    try:
        event = ctx.store.rename_category(server_id, ident.user_uid, path_param(request, "group_id"), name)
    except WireError as exc:
        return wire_error(exc)
    ctx.hub.broadcast_server_event("chat.category.updated", server_id, event)
    return json_response(event)


async def delete_category(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    server_id = path_param(request, "server_id")
    try:
        event = ctx.store.delete_category(server_id, ident.user_uid, path_param(request, "group_id"))
    except WireError as exc:
        return wire_error(exc)
    ctx.hub.broadcast_server_event("chat.channel.layout.updated", server_id, event)
    return json_response({"groups": event["groups"], "server_id": server_id})


def _layout(payload: Any) -> list[tuple[str, list[str]]]:
    groups = field(payload, "groups")
    if is_missing(groups) or groups is None:
        return []
    if not isinstance(groups, list):
        raise GoDecodeError("groups is not a list")
    layout: list[tuple[str, list[str]]] = []
    for group in groups:
        if group is None:
            layout.append(("", []))
            continue
        if not isinstance(group, dict):
            raise GoDecodeError("group is not an object")
        ids = field(group, "channel_ids")
        if is_missing(ids) or ids is None:
            ids = []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise GoDecodeError("channel_ids is not a list of strings")
        layout.append((str_field(group, "id"), list(ids)))
    return layout


async def put_layout(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    server_id = path_param(request, "server_id")
    try:
        layout = _layout(await json_object(request))
    except GoDecodeError:
        return error_response(400, "invalid_payload", "invalid channel layout payload")
    try:
        event = ctx.store.update_layout(server_id, ident.user_uid, layout)
    except WireError as exc:
        return wire_error(exc)
    ctx.hub.broadcast_server_event("chat.channel.layout.updated", server_id, event)
    return json_response(event)


async def get_settings(ctx: Context, request: Request) -> Response:
    if strict_identity(ctx, request) is None:
        return unauthorized()
    try:
        return json_response(ctx.store.settings(path_param(request, "server_id")))
    except WireError as exc:
        return wire_error(exc)


async def put_settings(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    server_id = path_param(request, "server_id")
    try:
        payload = await json_object(request)
        values = [str_field(payload, k) for k in ("display_name", "description", "banner_preset")]
    except GoDecodeError:
        return error_response(400, "invalid_payload", "invalid server settings payload")
    try:
        event = ctx.store.update_settings(server_id, ident.user_uid, *values)
    except WireError as exc:
        return wire_error(exc)
    ctx.hub.broadcast_server_event("chat.server.updated", server_id, event)
    return json_response({k: v for k, v in event.items() if k not in ("updated_by_uid", "updated_at")})


def routes(ctx: Context) -> list[BaseRoute]:
    """Routes of the switched-on Profile B features."""

    def bind(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        return bind_handler(ctx, handler)

    has = ctx.cfg.has
    out: list[BaseRoute] = []
    if has("legacy_capabilities_path"):
        out.append(Route("/client/capabilities", bind(get_capabilities), methods=["GET"]))
    if has("read_acks"):
        out.append(Route("/v1/channels/{channel_id}/read-ack", bind(get_read_ack), methods=["GET"]))
        out.append(Route("/v1/channels/{channel_id}/read-ack", bind(put_read_ack), methods=["PUT"]))
    if has("mentions"):
        out.append(
            Route("/v1/channels/{channel_id}/mentions:resolve", bind(resolve_mentions), methods=["GET"])
        )
    if has("message_delete"):
        out.append(
            Route("/v1/channels/{channel_id}/messages/{message_id}", bind(delete_message), methods=["DELETE"])
        )
    if has("server_creation"):
        out.append(Route("/v1/servers", bind(create_server), methods=["POST"]))
        out.append(Route("/v1/servers/{server_id}/ownership:claim", bind(claim_ownership), methods=["POST"]))
    if has("channel_admin"):
        out += [
            Route("/v1/servers/{server_id}/channels", bind(create_channel), methods=["POST"]),
            Route("/v1/servers/{server_id}/categories", bind(create_category), methods=["POST"]),
            Route("/v1/servers/{server_id}/categories/{group_id}", bind(rename_category), methods=["PUT"]),
            Route("/v1/servers/{server_id}/categories/{group_id}", bind(delete_category), methods=["DELETE"]),
            Route("/v1/servers/{server_id}/channel-layout", bind(put_layout), methods=["PUT"]),
            Route("/v1/servers/{server_id}/settings", bind(get_settings), methods=["GET"]),
            Route("/v1/servers/{server_id}/settings", bind(put_settings), methods=["PUT"]),
        ]
    return out
