"""The public backend's HTTP routes (Profile A, wire §1-§9), byte for byte.

Every handler reproduces the Go server's decoding quirks (first JSON value only, case-insensitive
keys, ``null`` ≙ missing), its validation order and its exact error codes and texts.  Profile B
additions that change these routes when switched on (``cursors``, ``server_unread_counts``,
``mentions`` on messages, directory extras) are applied here, gated by ``ctx.cfg.has(...)``; the
Profile B-only routes live in ``features.py``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from services.core.contracts.wire import (
    Capabilities,
    CapabilityAvatarUpload,
    CapabilityDisplayName,
    CapabilityFeatures,
    CapabilityLimits,
    CapabilityProfile,
    CapabilityRtc,
    CapabilitySecurity,
    CapabilityTransport,
    ConnectionPolicy,
    EvidencePolicy,
    IceServer,
    Moderation,
    ModerationActions,
    RtcFeatures,
    VotePolicy,
)
from services.devserver.config import FEATURE_FLAGS, DevserverConfig
from services.devserver.gojson import GoDecodeError, decode_first, str_field
from services.devserver.multipart import MultipartError, is_multipart, parse_form
from services.devserver.realtime import Hub
from services.devserver.rtc import rtc_capabilities_patch
from services.devserver.store import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    MAX_AVATAR_BYTES,
    Store,
    Upload,
    WireError,
)
from services.devserver.wire_http import (
    CORS_HEADERS,
    Identity,
    error_response,
    json_response,
    rfc3339,
    utf8_identity,
)

MULTIPART_SLACK = 16 * 1024
MESSAGE_MULTIPART_CAP = MAX_ATTACHMENT_BYTES * MAX_ATTACHMENTS + MULTIPART_SLACK
AVATAR_MULTIPART_CAP = MAX_AVATAR_BYTES + 1024
JSON_BODY_CAP = 256 * 1024 * 1024
MAX_BATCH = 100
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_INT64_MAX = 2**63 - 1

# Capability keys of Profile B features, advertised only when switched on.


@dataclass
class Context:
    """What every handler needs: config, state, realtime hub, admin knobs."""

    cfg: DevserverConfig
    store: Store
    hub: Hub
    delay_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # HTTP requests answered, per "METHOD /route/{template}" (``/_admin/state``; benchmarks
    # count the requests of a hydrate with it)
    requests: dict[str, int] = field(default_factory=dict)


def go_atoi(raw: str) -> int | None:
    """``strconv.Atoi``: optional sign, decimal digits, 64-bit range."""
    if not _INT_RE.match(raw):
        return None
    value = int(raw)
    return value if -_INT64_MAX - 1 <= value <= _INT64_MAX else None


def first_query(request: Request, name: str) -> str:
    """``r.URL.Query().Get(name)`` — the *first* value (Starlette's ``get`` returns the last)."""
    values = request.query_params.getlist(name)
    return values[0] if values else ""


ContextHandler = Callable[["Context", Request], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def bind_handler(ctx: Context, handler: ContextHandler) -> Endpoint:
    """A Starlette endpoint for ``handler(ctx, request)`` (every devserver module routes with it).
    A ``WireError`` a handler lets through gets the backend's error envelope, never a 500."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(ctx, request)
        except WireError as exc:
            return wire_error(exc)

    endpoint.__name__ = handler.__name__
    return endpoint


def wire_error(exc: WireError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.retryable)


def unauthorized() -> Response:
    return error_response(401, "unauthorized", "missing user identity headers")


def identity(ctx: Context, request: Request) -> Identity:
    return utf8_identity(request, ctx.cfg.production)


def strict_identity(ctx: Context, request: Request) -> Identity | None:
    """Identity of a strict route: ``None`` (→ 401) in production when no uid was asserted."""
    ident = identity(ctx, request)
    if ctx.cfg.production and not ident.asserted:
        return None
    return ident


async def read_body(request: Request, cap: int) -> bytes | None:
    """The request body, or ``None`` when it exceeds ``cap`` bytes (``http.MaxBytesReader``)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request: Request, *, empty_ok: bool = False) -> Any:
    """The request's first JSON value (must be an object or ``null``); raises ``GoDecodeError``."""
    raw = await read_body(request, JSON_BODY_CAP)
    if raw is None:
        raise GoDecodeError("body too large")
    if empty_ok and not raw.strip():
        return None
    value = decode_first(raw)
    if value is not None and not isinstance(value, dict):
        raise GoDecodeError("not an object")
    return value


def path_param(request: Request, name: str) -> str:
    return str(request.path_params.get(name, "")).strip()


def binary_response(data: bytes, content_type: str) -> Response:
    return Response(
        data,
        200,
        headers={**CORS_HEADERS, "Content-Type": content_type, "Cache-Control": "public, max-age=300"},
    )


# ---------------------------------------------------------------------------- capabilities


def capabilities_document(ctx: Context) -> dict[str, Any]:
    """The capability document (``examples/capabilities.json``) plus enabled Profile B flags."""
    cfg = ctx.cfg
    turn_expiry = rfc3339(datetime.now(UTC) + timedelta(minutes=30))
    features = CapabilityFeatures(messaging=True, presence=True, attachments=True, notifications=True)
    doc = Capabilities(
        server_name=ctx.store.server_name,
        server_id=ctx.store.default_server_id,
        api_version="2026-02-14",
        build_version="main",
        build_commit="unknown",
        identity_handshake_modes=["challenge_signature", "token_proof"],
        user_uid_policy="server_scoped",
        profile_data_policy="uid_only",
        transport=CapabilityTransport(websocket=True, sse=False, polling=False),
        features=features,
        limits=CapabilityLimits(
            max_message_bytes=cfg.limit("max_message_bytes", 65536),
            max_upload_bytes=cfg.limit("max_upload_bytes", MAX_ATTACHMENT_BYTES),
            rate_limit_per_minute=cfg.limit("rate_limit_per_minute", 180),
            max_call_participants=cfg.limit("max_call_participants", 200),
        ),
        security=CapabilitySecurity(https_required=cfg.production, certificate_pinning="optional"),
        rtc=CapabilityRtc(
            protocol_version="1.0",
            signaling_url=cfg.signaling_url,
            signaling_transport="websocket",
            topologies=["p2p"],
            features=RtcFeatures(voice=True, video=True, screenshare=True, simulcast=True),
            ice_servers=[
                IceServer(urls=["stun:stun.l.google.com:19302"]),
                IceServer(
                    urls=["turns:turn.example.invalid:5349"],
                    username="dev-user",
                    credential="dev-secret",
                    credential_type="ephemeral",
                    expires_at=turn_expiry,
                ),
            ],
            connection_policy=ConnectionPolicy(
                join_timeout_ms=12000,
                answer_timeout_ms=10000,
                ice_restart_enabled=True,
                reconnect_backoff_ms=[250, 500, 1000, 2000, 5000],
            ),
        ),
        moderation=Moderation(
            enabled=True,
            actions=ModerationActions(
                immediate=["kick", "timeout_short", "channel_lock"],
                vote_required=["ban", "timeout_long", "role_remove"],
            ),
            vote_policy=VotePolicy(threshold=2, quorum=3, window_seconds=86400),
            evidence_policy=EvidencePolicy(report_bundle_required=True, plaintext_disclosure_optional=True),
        ),
        profile=CapabilityProfile(
            enabled=True,
            scope="global",
            fields=["display_name", "avatar"],
            avatar_modes=["generated", "uploaded"],
            display_name=CapabilityDisplayName(min_length=2, max_length=32),
            avatar_upload=CapabilityAvatarUpload(
                max_bytes=MAX_AVATAR_BYTES,
                mime_types=["image/png", "image/jpeg"],
                max_width=1024,
                max_height=1024,
            ),
            realtime_event="profile_updated",
            message_author_profile_mode="snapshot",
        ),
    ).model_dump(exclude_none=True)
    # ``server_creation`` is a declared (None) field: placed only when on, like every other flag.
    enabled = [name for name in FEATURE_FLAGS if cfg.has(name)]
    for name in enabled:
        doc["features"][name] = True
    for name in ("read_acks", "mentions"):
        if cfg.has(name):
            doc[name] = True
    return deep_merge(doc, rtc_capabilities_patch(cfg))


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merge; other values replace; new keys append at the end."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


async def get_capabilities(ctx: Context, request: Request) -> Response:
    return json_response(capabilities_document(ctx))


async def healthz(ctx: Context, request: Request) -> Response:
    return json_response({"status": "ok"})


# ---------------------------------------------------------------------------- directory


def directory_entry(ctx: Context, entry: dict[str, Any]) -> dict[str, Any]:
    """Directory entry; ``description``/``banner_preset`` only on Profile B servers."""
    if ctx.cfg.has("server_creation") or ctx.cfg.has("channel_admin"):
        keys: tuple[str, ...] = ("server_id", "display_name", "description", "banner_preset", "icon_text")
        keys += ("trust_state", "identity_handshake_strategy", "user_identifier_policy")
        return {k: entry.get(k, "") for k in keys}
    return {k: v for k, v in entry.items() if k not in ("description", "banner_preset")}


async def list_servers(ctx: Context, request: Request) -> Response:
    ident = identity(ctx, request)  # lenient in both modes
    return json_response(
        {"servers": [directory_entry(ctx, e) for e in ctx.store.list_servers(ident.user_uid)]}
    )


async def leave_server(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    server_id = path_param(request, "server_id")
    try:
        left_at = ctx.store.leave_server(server_id, ident.user_uid)
    except WireError as exc:
        return wire_error(exc)
    return json_response(
        {"left": True, "left_at": left_at, "server_id": server_id, "user_uid": ident.user_uid}
    )


async def list_channels(ctx: Context, request: Request) -> Response:
    server_id = path_param(request, "server_id")
    try:
        groups = ctx.store.channel_groups(server_id)
    except WireError as exc:
        return wire_error(exc)
    if ctx.cfg.has("server_unread_counts"):
        uid = identity(ctx, request).user_uid
        groups = [
            {
                **group,
                "channels": [
                    {
                        **ch,
                        "unread_count": ctx.store.unread_count(ch["id"], uid) if ch["type"] == "text" else 0,
                    }
                    for ch in group["channels"]
                ],
            }
            for group in groups
        ]
    return json_response({"groups": groups, "server_id": server_id})


async def list_members(ctx: Context, request: Request) -> Response:
    server_id = path_param(request, "server_id")
    try:
        members = ctx.store.members(server_id)
    except WireError as exc:
        return wire_error(exc)
    return json_response({"members": members, "server_id": server_id})


# ---------------------------------------------------------------------------- messages


async def list_messages(ctx: Context, request: Request) -> Response:
    channel_id = path_param(request, "channel_id")
    limit = 100
    raw_limit = first_query(request, "limit").strip()
    if raw_limit:
        parsed = go_atoi(raw_limit)
        if parsed is not None and parsed > 0:
            limit = parsed
    cursors = ctx.cfg.has("cursors")
    before = first_query(request, "before").strip() or None if cursors else None
    try:
        known_channel = ctx.store.channel_type(channel_id) is not None
        if before is not None and known_channel and ctx.store.find_message(channel_id, before) is None:
            return error_response(400, "invalid_cursor", "unknown history cursor")
        page, more = ctx.store.history(channel_id, limit, before)
    except WireError as exc:
        return wire_error(exc)
    body: dict[str, Any] = {"channel_id": channel_id, "messages": page}
    if cursors:
        body["next_cursor"] = page[0]["id"] if more and page else None
    return json_response(body)


async def create_message(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    channel_id = path_param(request, "channel_id")
    content_type = request.headers.get("content-type", "")
    uploads: list[Upload] = []
    if is_multipart(content_type):
        raw = await read_body(request, MESSAGE_MULTIPART_CAP)
        try:
            if raw is None:
                raise MultipartError("http: request body too large")
            form = parse_form(content_type, raw)
        except MultipartError:
            return error_response(400, "invalid_payload", "invalid multipart message payload")
        files = form.files.get("files", [])
        if len(files) > MAX_ATTACHMENTS:
            return error_response(400, "attachment_count_exceeded", "too many attachments in one message")
        for part in files:
            if len(part.data) > MAX_ATTACHMENT_BYTES:
                return error_response(413, "attachment_too_large", "attachment exceeds max upload size")
            uploads.append(Upload(part.file_name, part.content_type, part.data))
        # r.FormValue: multipart values first, then the URL query
        body = (form.values.get("body", []) + request.query_params.getlist("body") + [""])[0]
        reply = (
            form.values.get("reply_to_message_id", [])
            + request.query_params.getlist("reply_to_message_id")
            + [""]
        )[0]
    else:
        raw = await read_body(request, JSON_BODY_CAP)
        try:
            if raw is None:
                raise GoDecodeError("body too large")
            payload = decode_first(raw)
            if payload is not None and not isinstance(payload, dict):
                raise GoDecodeError("not an object")
            body = str_field(payload, "body")
            reply = str_field(payload, "reply_to_message_id")
        except GoDecodeError:
            return error_response(400, "invalid_payload", "invalid message payload")
    try:
        message = ctx.store.create_message(
            channel_id, ident.user_uid, body, uploads, reply, with_mentions=ctx.cfg.has("mentions")
        )
    except WireError as exc:
        return wire_error(exc)
    ctx.hub.broadcast_message(message)
    return json_response({"message": message}, 201)


async def get_attachment(ctx: Context, request: Request) -> Response:
    try:
        blob = ctx.store.attachment(path_param(request, "channel_id"), path_param(request, "attachment_id"))
    except WireError as exc:
        return wire_error(exc)
    return binary_response(blob.data, blob.meta["content_type"])


# ---------------------------------------------------------------------------- profiles


async def get_profile(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    return json_response(ctx.store.profile(ident.user_uid))


def parse_if_match(raw: str) -> tuple[bool, int | None]:
    """``(ok, version)``: ``12``, ``"12"``, ``W/"12"``; empty means unconditional."""
    raw = raw.strip()
    if not raw:
        return True, None
    raw = raw.removeprefix("W/").strip('"').strip()
    if not raw:
        return True, None
    value = go_atoi(raw)
    if value is None or value <= 0:
        return False, None
    return True, value


async def put_profile(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    raw = await read_body(request, JSON_BODY_CAP)
    try:
        if raw is None:
            raise GoDecodeError("body too large")
        payload = decode_first(raw)
        if payload is not None and not isinstance(payload, dict):
            raise GoDecodeError("not an object")
        display_name = str_field(payload, "display_name")
        mode = str_field(payload, "avatar_mode")
        preset = str_field(payload, "avatar_preset_id")
        asset = str_field(payload, "avatar_asset_id")
    except GoDecodeError:
        return error_response(400, "invalid_payload", "invalid profile update payload")
    ok, version = parse_if_match(request.headers.get("if-match", ""))
    if not ok:
        return error_response(400, "invalid_if_match", "If-Match must be an integer profile version")
    try:
        updated = ctx.store.update_profile(ident.user_uid, display_name, mode.strip(), preset, asset, version)
    except WireError as exc:
        return wire_error(exc)
    ctx.hub.broadcast_profile_updated(updated)
    return json_response(updated)


async def upload_avatar(ctx: Context, request: Request) -> Response:
    ident = strict_identity(ctx, request)
    if ident is None:
        return unauthorized()
    too_large = error_response(413, "avatar_too_large", "avatar exceeds max upload size")
    content_type = request.headers.get("content-type", "")
    if not is_multipart(content_type):
        return too_large
    raw = await read_body(request, AVATAR_MULTIPART_CAP)
    if raw is None:
        return too_large
    try:
        form = parse_form(content_type, raw)
    except MultipartError:
        return too_large
    files = form.files.get("file")
    if not files:
        return error_response(400, "invalid_payload", "missing multipart file field 'file'")
    part = files[0]
    if len(part.data) > MAX_AVATAR_BYTES:
        return too_large
    try:
        asset = ctx.store.upload_avatar(part.content_type, part.data)
    except WireError as exc:
        return wire_error(exc)
    return json_response(asset, 201)


async def get_avatar(ctx: Context, request: Request) -> Response:
    try:
        blob = ctx.store.avatar(path_param(request, "asset_id"))
    except WireError as exc:
        return wire_error(exc)
    return binary_response(blob.data, blob.meta["content_type"])


async def batch_profiles(ctx: Context, request: Request) -> Response:
    if strict_identity(ctx, request) is None:
        return unauthorized()
    uids = request.query_params.getlist("user_uid")
    if not uids:
        return error_response(400, "invalid_query", "at least one user_uid is required")
    if len(uids) > MAX_BATCH:
        return error_response(400, "invalid_query", "too many user_uid values")
    return json_response({"profiles": ctx.store.profiles(uids)})


def routes(ctx: Context) -> list[BaseRoute]:
    """Profile A HTTP routes (the WebSocket route is added by ``app.py``)."""

    def bind(handler: ContextHandler) -> Endpoint:
        return bind_handler(ctx, handler)

    return [
        Route("/healthz", bind(healthz), methods=["GET"]),
        Route("/v1/client/capabilities", bind(get_capabilities), methods=["GET"]),
        Route("/v1/servers", bind(list_servers), methods=["GET"]),
        Route("/v1/servers/{server_id}/membership", bind(leave_server), methods=["DELETE"]),
        Route("/v1/servers/{server_id}/channels", bind(list_channels), methods=["GET"]),
        Route("/v1/servers/{server_id}/members", bind(list_members), methods=["GET"]),
        Route("/v1/channels/{channel_id}/messages", bind(list_messages), methods=["GET"]),
        Route("/v1/channels/{channel_id}/messages", bind(create_message), methods=["POST"]),
        Route("/v1/channels/{channel_id}/attachments/{attachment_id}", bind(get_attachment), methods=["GET"]),
        Route("/v1/profile/me", bind(get_profile), methods=["GET"]),
        Route("/v1/profile/me", bind(put_profile), methods=["PUT"]),
        Route("/v1/profile/avatar", bind(upload_avatar), methods=["POST"]),
        Route("/v1/profile/avatar/{asset_id}", bind(get_avatar), methods=["GET"]),
        Route("/v1/profiles:batch", bind(batch_profiles), methods=["GET"]),
    ]
