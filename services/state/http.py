"""The state service's HTTP routes: media bytes and a read-only state API, per member.

Mounted next to ``/healthz`` and ``/metrics`` (``Service.routes``), so ``/openapi.json`` documents
them. Every route needs ``Authorization: Bearer <token>`` from the ``state.http_token`` bus
command; the token names the member, and the member only sees its own view: a server, channel,
message or profile that is not in that member's view answers 404, exactly like one that does not
exist. Missing, forged or expired tokens answer 401.

(No ``from __future__ import annotations`` here: FastAPI must see the dependency annotations
of the nested route functions as objects.)
"""

import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.core.contracts.chat import ChannelGroupInfo, ServerList, ServerRecord, ViewHistoryResult
from services.state import tokens
from services.state.media import MediaError
from services.state.runtime import StateRuntime
from services.state.store import ViewBusy

ServerIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_\-]{1,128}$")]
IdPath = Annotated[str, Path(min_length=1, max_length=256)]
bearer = HTTPBearer(auto_error=False, description="a token from the bus command state.http_token")


def build_router(provider: Callable[[], StateRuntime | None]) -> APIRouter:
    """The routes; ``provider`` answers the runtime once it exists (the routes are mounted before
    the bus is up), ``None`` meanwhile (503)."""
    router = APIRouter()

    def runtime() -> StateRuntime:
        rt = provider()
        if rt is None:
            raise HTTPException(503, "the state service is starting")
        return rt

    def member_of(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        rt = runtime()
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        try:
            return tokens.verify(rt.secret, credentials.credentials, time.time())
        except tokens.InvalidToken:
            raise HTTPException(
                401, "invalid or expired token", headers={"WWW-Authenticate": "Bearer"}
            ) from None

    Member = Annotated[str, Depends(member_of)]

    async def joined(rt: StateRuntime, member: str, server_id: str) -> ServerRecord:
        record = await rt.store.server(member, server_id)
        if record is None:
            if await rt.store.view_missing():
                raise HTTPException(503, "the view is being rebuilt", headers={"Retry-After": "1"})
            raise HTTPException(404, "no such server in your view")
        return record

    @router.get("/api/v1/servers", response_model=ServerList, tags=["state"])
    async def list_servers(member: Member) -> ServerList:
        """The member's joined servers with their connection state."""
        rt = runtime()
        try:
            seq, statuses = await rt.store.read_consistent(lambda: rt.store.statuses(member))
        except ViewBusy as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from None
        return ServerList(seq=seq, servers=statuses)

    @router.get("/api/v1/servers/{server_id}/channels", response_model=list[ChannelGroupInfo], tags=["state"])
    async def list_channels(member: Member, server_id: ServerIdPath) -> list[ChannelGroupInfo]:
        """The channel tree of one joined server."""
        rt = runtime()
        await joined(rt, member, server_id)
        return await rt.store.groups(member, server_id)

    @router.get(
        "/api/v1/servers/{server_id}/channels/{channel_id}/messages",
        response_model=ViewHistoryResult,
        tags=["state"],
    )
    async def list_messages(
        member: Member,
        server_id: ServerIdPath,
        channel_id: IdPath,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> ViewHistoryResult:
        """The newest ``limit`` messages of the channel's window, oldest first."""
        rt = runtime()
        await joined(rt, member, server_id)
        return await rt.history(member, server_id, channel_id, limit)

    @router.get(
        "/media/v1/attachments/{server_id}/{channel_id}/{message_id}/{attachment_id}",
        tags=["media"],
        responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}}},
    )
    async def attachment(
        member: Member, server_id: ServerIdPath, channel_id: IdPath, message_id: IdPath, attachment_id: IdPath
    ) -> Response:
        """The bytes of an attachment of a message in the member's view."""
        rt = runtime()
        record = await joined(rt, member, server_id)
        message = await rt.store.message(member, server_id, channel_id, message_id)
        ref = (
            next((a for a in message.attachments if a.attachment_id == attachment_id), None)
            if message
            else None
        )
        if ref is None:
            raise HTTPException(404, "no such attachment in your view")
        return await _serve(rt, member, record, ref.url, ref.content_type, ref.bytes)

    @router.get(
        "/media/v1/avatars/{server_id}/{user_uid}",
        tags=["media"],
        responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}}},
    )
    async def avatar(member: Member, server_id: ServerIdPath, user_uid: IdPath) -> Response:
        """The avatar image of a profile in the member's view."""
        rt = runtime()
        record = await joined(rt, member, server_id)
        profile = await rt.store.profile(member, server_id, user_uid)
        if profile is None or not profile.avatar_url:
            raise HTTPException(404, "no such avatar in your view")
        return await _serve(rt, member, record, profile.avatar_url, "image/png", None)

    return router


async def _serve(
    rt: StateRuntime, member: str, record: ServerRecord, url: str, content_type: str, size: int | None
) -> Response:
    try:
        media = await rt.media.get(member, record, url, content_type, size)
    except MediaError as exc:
        raise HTTPException(exc.status, exc.reason) from None
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
    if media.content_type == "application/octet-stream":
        headers["Content-Disposition"] = "attachment"
    return Response(media.data, media_type=media.content_type, headers=headers)
