"""Admin surface for tests, demos and benchmarks (only with ``--admin``; never on the public backend).

All routes live under ``/_admin``, take and return JSON, and need no identity.

``POST /_admin/messages`` ``{channel_id, user_uid, body, reply_to_message_id?, silent?}``
    Post a message as any uid (same validation and realtime fan-out as the public route) →
    ``201 {"message": …}`` or the public route's error. ``silent: true`` stores it without the
    realtime fan-out: a message every socket's overflowing queue dropped (tests of the reconcile).
``POST /_admin/burst`` ``{channel_id, count, user_uid?, body_prefix?}``
    Post ``count`` (1-100000) text messages as fast as possible →
    ``{"count", "elapsed_ms", "first_id", "last_id"}``.
``POST /_admin/realtime/drop``
    Abort every realtime socket (TCP drop, no close frame; peers get ``chat.presence.left``) →
    ``{"dropped": n}``.
``POST /_admin/realtime/inject`` ``{kind, user_uid?, client_id?, size?}``
    Send a bad frame to the selected realtime sockets (all by default) → ``{"sockets": n}``.  Kinds:
    ``invalid_json`` (text frame that is not JSON), ``binary`` (binary frame), ``oversized`` (a valid
    ``chat.noise`` envelope of about ``size`` bytes, default 2 MiB), ``garbage`` (raw bytes that break
    the WebSocket framing).
``PUT /_admin/delay`` ``{ms}`` / ``GET /_admin/delay``
    Delay every non-admin HTTP response by ``ms`` milliseconds (0 turns it off) → ``{"delay_ms"}``.
``POST /_admin/reset``
    Back to the seed: state, leaves, profiles, event counter; realtime sockets are dropped →
    ``{"reset": true}``.
``POST /_admin/rtc/drop`` ``{user_uid?}``
    Abort the signaling sockets (all, or one uid's) without a close frame → ``{"dropped": n}``.
``POST /_admin/rtc/inject`` ``{type, payload?, user_uid?}``
    Send a signaling frame of any ``type`` (e.g. ``rtc.kicked``, which the public backend never
    sends) to the joined participants (all, or one uid's) → ``{"participants": n}``.
``GET /_admin/state``
    Introspection for tests: ``{"realtime_clients", "rooms": {channel_id: sockets}, "messages":
    {channel_id: count}, "dropped_frames", "realtime_by_uid": {user_uid: sockets}, "http_requests":
    {"METHOD /route/template": count}}`` (every non-admin HTTP request answered, OPTIONS excepted).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from services.devserver.gojson import GoDecodeError, field, is_missing, str_field
from services.devserver.http_api import Context, bind_handler, json_object, wire_error
from services.devserver.realtime import envelope
from services.devserver.store import WireError
from services.devserver.wire_http import DEV_UID, dumps_text, error_response, json_response, ws_control

MAX_BURST = 100_000
INJECT_KINDS = ("invalid_json", "binary", "oversized", "garbage")


async def _payload(request: Request) -> Any:
    return await json_object(request, empty_ok=True)


def _int_field(payload: Any, name: str, default: int) -> int:
    value = field(payload, name)
    if is_missing(value) or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise GoDecodeError(f"{name} must be an integer")
    return value


def bad_request(message: str) -> Response:
    return error_response(400, "invalid_payload", message)


async def post_message(ctx: Context, request: Request) -> Response:
    try:
        payload = await _payload(request)
        channel_id = str_field(payload, "channel_id").strip()
        uid = str_field(payload, "user_uid").strip() or DEV_UID
        body = str_field(payload, "body")
        reply = str_field(payload, "reply_to_message_id")
        silent = field(payload, "silent")
        if not is_missing(silent) and silent is not None and not isinstance(silent, bool):
            raise GoDecodeError("silent must be a boolean")
    except GoDecodeError as exc:
        return bad_request(str(exc))
    try:
        message = ctx.store.create_message(
            channel_id, uid, body, [], reply, with_mentions=ctx.cfg.has("mentions")
        )
    except WireError as exc:
        return wire_error(exc)
    if silent is not True:
        ctx.hub.broadcast_message(message)
    return json_response({"message": message}, 201)


async def burst(ctx: Context, request: Request) -> Response:
    try:
        payload = await _payload(request)
        channel_id = str_field(payload, "channel_id").strip()
        uid = str_field(payload, "user_uid").strip() or "uid_bench"
        prefix = str_field(payload, "body_prefix") or "burst"
        count = _int_field(payload, "count", 100)
    except GoDecodeError as exc:
        return bad_request(str(exc))
    if not 1 <= count <= MAX_BURST:
        return bad_request(f"count must be between 1 and {MAX_BURST}")
    first_id = last_id = ""
    started = time.perf_counter()
    try:
        for index in range(count):
            message = ctx.store.create_message(
                channel_id, uid, f"{prefix} {index + 1}", [], "", with_mentions=ctx.cfg.has("mentions")
            )
            ctx.hub.broadcast_message(message)
            first_id = first_id or message["id"]
            last_id = message["id"]
    except WireError as exc:
        return wire_error(exc)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
    return json_response({"count": count, "elapsed_ms": elapsed_ms, "first_id": first_id, "last_id": last_id})


async def drop_sockets(ctx: Context, request: Request) -> Response:
    return json_response({"dropped": await ctx.hub.drop_all()})


async def inject(ctx: Context, request: Request) -> Response:
    try:
        payload = await _payload(request)
        kind = str_field(payload, "kind").strip() or "invalid_json"
        uid = str_field(payload, "user_uid").strip() or None
        client_id = str_field(payload, "client_id").strip() or None
        size = _int_field(payload, "size", 2 * 1024 * 1024)
    except GoDecodeError as exc:
        return bad_request(str(exc))
    if kind not in INJECT_KINDS:
        return bad_request(f"kind must be one of {', '.join(INJECT_KINDS)}")
    targets = ctx.hub.select(uid, client_id)
    for client in targets:
        if kind == "invalid_json":
            ctx.hub.enqueue(client, "this is not json\n")
        elif kind == "binary":
            ctx.hub.enqueue(client, b"\x00\x01binary\xff")
        elif kind == "oversized":
            ctx.hub.enqueue(client, dumps_text(envelope("chat.noise", {"pad": "x" * max(0, size)})))
        else:
            control = ws_control(client.websocket)
            if control is not None:
                # an unmasked frame with reserved opcode 0x3 and bogus length: not valid WebSocket
                control.inject_raw(b"\x83\x7f\xff\xff\xff\xff\xff\xff\xff\xff")
    return json_response({"sockets": len(targets)})


async def set_delay(ctx: Context, request: Request) -> Response:
    try:
        ms = _int_field(await _payload(request), "ms", 0)
    except GoDecodeError as exc:
        return bad_request(str(exc))
    if not 0 <= ms <= 600_000:
        return bad_request("ms must be between 0 and 600000")
    ctx.delay_ms = ms
    return json_response({"delay_ms": ctx.delay_ms})


async def get_delay(ctx: Context, request: Request) -> Response:
    return json_response({"delay_ms": ctx.delay_ms})


async def reset(ctx: Context, request: Request) -> Response:
    await ctx.hub.drop_all()
    ctx.hub.log.clear()
    ctx.store.reset()
    ctx.delay_ms = 0
    return json_response({"reset": True})


async def state(ctx: Context, request: Request) -> Response:
    hub = ctx.hub
    by_uid: dict[str, int] = {}
    for client in hub.clients.values():
        by_uid[client.user_uid] = by_uid.get(client.user_uid, 0) + 1
    return json_response(
        {
            "realtime_clients": len(hub.clients),
            "rooms": {cid: len(room) for cid, room in hub.rooms.items()},
            "messages": {cid: len(msgs) for cid, msgs in ctx.store.state.messages.items()},
            "dropped_frames": sum(c.dropped for c in hub.clients.values()),
            "realtime_by_uid": by_uid,
            "http_requests": dict(sorted(ctx.requests.items())),
        }
    )


async def rtc_drop(ctx: Context, request: Request) -> Response:
    from services.devserver.rtc import get_rtc_hub

    try:
        uid = str_field(await _payload(request), "user_uid").strip() or None
    except GoDecodeError as exc:
        return bad_request(str(exc))
    return json_response({"dropped": await get_rtc_hub(request.app).drop(uid)})


async def rtc_inject(ctx: Context, request: Request) -> Response:
    from services.devserver.rtc import get_rtc_hub

    try:
        payload = await _payload(request)
        kind = str_field(payload, "type").strip()
        uid = str_field(payload, "user_uid").strip() or None
        body = field(payload, "payload")
    except GoDecodeError as exc:
        return bad_request(str(exc))
    if not kind.startswith("rtc."):
        return bad_request("type must start with rtc.")
    data = dict(body) if isinstance(body, dict) else {}
    return json_response({"participants": get_rtc_hub(request.app).inject(uid, kind, data)})


def routes(ctx: Context) -> list[BaseRoute]:
    def bind(
        handler: Callable[[Context, Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        return bind_handler(ctx, handler)

    return [
        Route("/_admin/messages", bind(post_message), methods=["POST"]),
        Route("/_admin/burst", bind(burst), methods=["POST"]),
        Route("/_admin/realtime/drop", bind(drop_sockets), methods=["POST"]),
        Route("/_admin/realtime/inject", bind(inject), methods=["POST"]),
        Route("/_admin/delay", bind(set_delay), methods=["PUT"]),
        Route("/_admin/delay", bind(get_delay), methods=["GET"]),
        Route("/_admin/reset", bind(reset), methods=["POST"]),
        Route("/_admin/state", bind(state), methods=["GET"]),
        Route("/_admin/rtc/drop", bind(rtc_drop), methods=["POST"]),
        Route("/_admin/rtc/inject", bind(rtc_inject), methods=["POST"]),
    ]
