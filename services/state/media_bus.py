"""``state.media``: attachment, avatar and link-preview image bytes over the member's bus
connection, in bounded chunks (contracts: ``services.core.contracts.blobs``; ADR 0010).

Authorization is the view: the member comes from the subject, and only a server, message,
attachment, profile or preview in *that member's* view is served; anything else answers
``not_found`` like something that does not exist. Bytes come from the shared ``MediaFetcher``
(backend origin only for attachments and avatars, with the member's uid headers; any public
host for preview images, without them), cached on disk, so each chunk after the first is a
file read.
"""

from __future__ import annotations

import base64
from typing import Protocol

from services.core.bus import Bus, CommandError
from services.core.contracts import commands as cmd
from services.core.contracts.blobs import (
    AttachmentMedia,
    AvatarMedia,
    MediaArgs,
    MediaChunk,
    PreviewImageMedia,
)
from services.core.contracts.chat import ServerRecord
from services.core.rpc import serve
from services.state.media import MediaError, MediaFetcher
from services.state.settings import StateSettings
from services.state.store import ViewStore


class StateRuntime(Protocol):
    """What ``state.media`` needs of the state runtime (``services.state.runtime``, which
    registers this command: a protocol here, so neither module imports the other back)."""

    bus: Bus
    store: ViewStore
    media: MediaFetcher
    settings: StateSettings


NOT_FOUND = "not_found"


def register_media(rt: StateRuntime) -> None:
    async def media(member: str, args: MediaArgs) -> MediaChunk:
        return await media_chunk(rt, member, args)

    serve(rt.bus, cmd.MEDIA_BYTES, media)


async def _joined(rt: StateRuntime, member: str, server_id: str) -> ServerRecord:
    record = await rt.store.server(member, server_id)
    if record is None:
        raise CommandError(NOT_FOUND, "no such server in your view")
    return record


async def media_chunk(rt: StateRuntime, member: str, args: MediaArgs) -> MediaChunk:
    ref = args.ref
    record = await _joined(rt, member, ref.server_id)
    try:
        if isinstance(ref, AttachmentMedia):
            message = await rt.store.message(member, ref.server_id, ref.channel_id, ref.message_id)
            att = (
                next((a for a in message.attachments if a.attachment_id == ref.attachment_id), None)
                if message
                else None
            )
            if att is None:
                raise CommandError(NOT_FOUND, "no such attachment in your view")
            data, ctype, total = await rt.media.read_range(
                member, record, att.url, att.content_type, att.bytes, args.offset, args.length
            )
        elif isinstance(ref, AvatarMedia):
            profile = await rt.store.profile(member, ref.server_id, ref.user_uid)
            if profile is None or not profile.avatar_url:
                raise CommandError(NOT_FOUND, "no such avatar in your view")
            data, ctype, total = await rt.media.read_range(
                member, record, profile.avatar_url, "image/png", None, args.offset, args.length
            )
        else:
            assert isinstance(ref, PreviewImageMedia)
            message = await rt.store.message(member, ref.server_id, ref.channel_id, ref.message_id)
            previews = message.link_previews if message else []
            url = previews[ref.index].image_url if ref.index < len(previews) else None
            if url is None:
                raise CommandError(NOT_FOUND, "no such preview image in your view")
            data, ctype, total = await rt.media.preview_range(
                member,
                ref.server_id,
                url,
                args.offset,
                args.length,
                allow_private=rt.settings.preview_allow_private,
            )
    except MediaError as exc:
        code = {404: NOT_FOUND, 413: "too_large", 415: "unsupported_media"}.get(exc.status, "backend_error")
        raise CommandError(code, exc.reason, retryable=exc.status >= 500) from None
    if args.offset > total:
        raise CommandError("invalid_payload", f"offset {args.offset} is past the end ({total} bytes)")
    return MediaChunk(
        content_type=ctype,
        total=total,
        offset=args.offset,
        data_b64=base64.b64encode(data).decode(),
        eof=args.offset + len(data) >= total,
    )
