"""The desktop's byte-fetching path: attachments, avatars and link-preview images over the
member's own bus connection (``state.media``, ADR 0010) — no second URL, no second secret.

``MediaFetcher.fetch`` streams one file in chunks of at most ``MEDIA_CHUNK_MAX_BYTES``: the first
chunk says the total, then up to ``MEDIA_CHUNKS_IN_FLIGHT`` requests are outstanding at once.
Every chunk is checked (offset, total unchanged, length), and a file larger than ``max_bytes``
is refused before it is fetched further. Runs on the adapter's bus thread; the main thread
only sees the finished bytes (through the adapter's callbacks).

``stage_images`` is the upload direction: an image larger than ``INLINE_IMAGE_MAX_BYTES`` is
staged with ``connector.upload`` in consecutive chunks before the send, which then names it by
``upload_id`` — so a send never exceeds one bus message, whatever the server's upload limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel

from services.core.bus import CommandError
from services.core.contracts.blobs import (
    INLINE_IMAGE_MAX_BYTES,
    MEDIA_CHUNK_MAX_BYTES,
    MEDIA_CHUNKS_IN_FLIGHT,
    SERVICE,
    UPLOAD_SERVICE,
    VERB_MEDIA,
    VERB_UPLOAD,
    AttachmentMedia,
    AvatarMedia,
    MediaArgs,
    MediaChunk,
    MediaRef,
    PreviewImageMedia,
    UploadChunkArgs,
    UploadChunkResult,
)
from services.core.contracts.chat import AttachmentRef, ChatMessage, SendArgs

MAX_MEDIA_BYTES = 64 * 1024 * 1024  # the largest file a desktop accepts (attachments ≤ 50 MiB)
CHUNK_TIMEOUT_S = 20.0
NOT_FOUND_RETRY_S = (0.25, 0.5, 1.0, 2.0)

Call = Callable[[str, str, BaseModel, type[MediaChunk], float], Awaitable[MediaChunk]]
UploadCall = Callable[[str, str, BaseModel, type[UploadChunkResult], float], Awaitable[UploadChunkResult]]


class MediaFetchError(Exception):
    """The stack answered, but not with a consistent file (a bug or a hostile peer)."""


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str


class MediaFetcher:
    def __init__(
        self,
        call: Call,
        *,
        chunk: int = MEDIA_CHUNK_MAX_BYTES,
        in_flight: int = MEDIA_CHUNKS_IN_FLIGHT,
        max_bytes: int = MAX_MEDIA_BYTES,
        not_found_retry: tuple[float, ...] = NOT_FOUND_RETRY_S,
    ) -> None:
        self._call = call
        self.not_found_retry = not_found_retry
        self.chunk = min(chunk, MEDIA_CHUNK_MAX_BYTES)
        self.in_flight = max(1, in_flight)
        self.max_bytes = max_bytes

    async def _one(self, ref: MediaRef, offset: int) -> tuple[MediaChunk, bytes]:
        args = MediaArgs(ref=ref, offset=offset, length=self.chunk)
        reply = await self._call(SERVICE, VERB_MEDIA, args, MediaChunk, CHUNK_TIMEOUT_S)
        try:
            data = base64.b64decode(reply.data_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaFetchError("a media chunk is not valid base64") from exc
        if reply.offset != offset or len(data) > self.chunk:
            raise MediaFetchError("a media chunk does not match its request")
        return reply, data

    async def _first(self, ref: MediaRef) -> tuple[MediaChunk, bytes]:
        """The first chunk. ``not_found`` is retried a few times: the desktop sees a live event
        (a new message, its previews) at the moment the state service applies it, so a request
        made at once may reach the view a moment early."""
        for delay in (*self.not_found_retry, None):
            try:
                return await self._one(ref, 0)
            except CommandError as exc:
                if exc.code != "not_found" or delay is None:
                    raise
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def fetch(self, ref: MediaRef) -> Fetched:
        first, data = await self._first(ref)
        total, ctype = first.total, first.content_type
        if total > self.max_bytes:
            raise MediaFetchError(f"the file is too large ({total} bytes)")
        parts = [data]
        offsets = list(range(len(data), total, self.chunk)) if data else []
        if not first.eof and not offsets:
            raise MediaFetchError("a media chunk made no progress")
        for start in range(0, len(offsets), self.in_flight):
            window = offsets[start : start + self.in_flight]
            replies = await asyncio.gather(*(self._one(ref, o) for o in window))
            for (reply, chunk), offset in zip(replies, window, strict=True):
                expected = min(self.chunk, total - offset)
                if reply.total != total or len(chunk) != expected:
                    raise MediaFetchError("the file changed while it was fetched")
                parts.append(chunk)
        blob = b"".join(parts)
        if len(blob) != total:
            raise MediaFetchError("the file is shorter than announced")
        return Fetched(blob, ctype)

    # -- what the desktop shows ---------------------------------------------------------------
    async def attachment(self, msg: ChatMessage, att: AttachmentRef) -> bytes:
        ref = AttachmentMedia(
            server_id=msg.server_id,
            channel_id=msg.channel_id,
            message_id=msg.id,
            attachment_id=att.attachment_id,
        )
        return (await self.fetch(ref)).data

    async def avatar(self, server_id: str, user_uid: str) -> bytes:
        return (await self.fetch(AvatarMedia(server_id=server_id, user_uid=user_uid))).data

    async def preview_image(self, msg: ChatMessage, index: int) -> bytes:
        ref = PreviewImageMedia(
            server_id=msg.server_id, channel_id=msg.channel_id, message_id=msg.id, index=index
        )
        return (await self.fetch(ref)).data


async def stage_images(
    call: UploadCall,
    args: SendArgs,
    *,
    inline_max: int = INLINE_IMAGE_MAX_BYTES,
    chunk: int = MEDIA_CHUNK_MAX_BYTES,
) -> SendArgs:
    """``args`` with every image over ``inline_max`` bytes staged on the stack (by reference)."""
    import uuid

    if not any(not i.upload_id and len(i.data_b64) * 3 // 4 > inline_max for i in args.images):
        return args
    images = []
    for image in args.images:
        if image.upload_id or len(image.data_b64) * 3 // 4 <= inline_max:
            images.append(image)
            continue
        data = base64.b64decode(image.data_b64)
        upload_id = f"up_{uuid.uuid4().hex}"
        for offset in range(0, len(data), chunk):
            part = data[offset : offset + chunk]
            chunk_args = UploadChunkArgs(
                upload_id=upload_id, offset=offset, total=len(data), data_b64=base64.b64encode(part).decode()
            )
            result = await call(UPLOAD_SERVICE, VERB_UPLOAD, chunk_args, UploadChunkResult, CHUNK_TIMEOUT_S)
            if result.received != offset + len(part):
                raise MediaFetchError("the stack did not store the upload in order")
        images.append(image.model_copy(update={"data_b64": "", "upload_id": upload_id}))
    return args.model_copy(update={"images": images})
