"""Media bytes over the member's bus connection (issue 11, ADR 0010).

``oc.<member>.cmd.state.media`` (``MediaArgs`` -> ``MediaChunk``): one bounded chunk of an
attachment, an avatar or a link-preview image in the member's view. The member comes from the
subject, so a member can only ever read bytes of its own view: anything not in it answers
``not_found``, exactly like something that does not exist. A desktop streams a file by asking
for consecutive chunks (``offset``), a few in flight; the first answer says the ``total``.

Chunks are at most ``MEDIA_CHUNK_MAX_BYTES`` raw bytes (base64 in the JSON reply, well under the
bus payload limit), so no single message is large and a slow link never stalls the connection
for long. The state service fetches the file from the backend once and keeps it in its on-disk
LRU cache (``services.state.media``); later chunks are read from there.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from services.core.contracts.bus import Contract

SERVICE = "state"
VERB_MEDIA = "media"
MEDIA_CHUNK_MAX_BYTES = 512 * 1024
MEDIA_CHUNKS_IN_FLIGHT = 4  # a desktop's window of outstanding chunk requests
IdText = Annotated[str, Field(min_length=1, max_length=256)]
ServerId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{1,128}$")]
ChannelId = Annotated[str, Field(min_length=1, max_length=128)]


class AttachmentMedia(Contract):
    """An attachment of a message in the member's view."""

    kind: Literal["attachment"] = "attachment"
    server_id: ServerId
    channel_id: ChannelId
    message_id: IdText
    attachment_id: IdText


class AvatarMedia(Contract):
    """The uploaded avatar of a profile in the member's view."""

    kind: Literal["avatar"] = "avatar"
    server_id: ServerId
    user_uid: IdText


class PreviewImageMedia(Contract):
    """The image of link preview ``index`` of a message in the member's view (fetched by the
    stack, never by the desktop; images only)."""

    kind: Literal["preview_image"] = "preview_image"
    server_id: ServerId
    channel_id: ChannelId
    message_id: IdText
    index: int = Field(ge=0, le=2)


MediaRef = Annotated[AttachmentMedia | AvatarMedia | PreviewImageMedia, Field(discriminator="kind")]


class MediaArgs(Contract):
    ref: MediaRef
    offset: int = Field(default=0, ge=0)
    length: int = Field(default=MEDIA_CHUNK_MAX_BYTES, ge=1, le=MEDIA_CHUNK_MAX_BYTES)


class MediaChunk(Contract):
    """``data_b64`` holds bytes ``offset .. offset+len`` of a file of ``total`` bytes; ``eof``
    when they reach its end. ``content_type`` is a safe image type or
    ``application/octet-stream``."""

    content_type: str = Field(max_length=128)
    total: int = Field(ge=0)
    offset: int = Field(ge=0)
    data_b64: str = Field(max_length=(MEDIA_CHUNK_MAX_BYTES * 4) // 3 + 8)
    eof: bool


# -- uploads larger than one bus message -----------------------------------------------------------
# ``oc.<member>.cmd.connector.upload`` (``UploadChunkArgs`` -> ``UploadChunkResult``): the desktop
# stages an image in consecutive chunks (appended in order; a chunk at another offset is refused
# with the offset expected), then sends the message with ``UploadedImage(upload_id=...)`` instead
# of inline ``data_b64``. Staged files belong to the member (the subject) and are deleted after
# the send, or after ``UPLOAD_TTL_S``.
UPLOAD_SERVICE = "connector"
VERB_UPLOAD = "upload"
UPLOAD_MAX_BYTES = 64 * 1024 * 1024  # one staged file
UPLOAD_MEMBER_MAX_BYTES = 256 * 1024 * 1024  # everything a member has staged at once
UPLOAD_TTL_S = 3600.0
UPLOAD_ID_PATTERN = r"^up_[0-9a-f]{32}$"
INLINE_IMAGE_MAX_BYTES = 1024 * 1024  # larger images are staged (keeps a send well under the bus limit)


class UploadChunkArgs(Contract):
    upload_id: str = Field(pattern=UPLOAD_ID_PATTERN)
    offset: int = Field(ge=0)
    total: int = Field(ge=1, le=UPLOAD_MAX_BYTES)
    data_b64: str = Field(max_length=(MEDIA_CHUNK_MAX_BYTES * 4) // 3 + 8)


class UploadChunkResult(Contract):
    upload_id: str
    received: int = Field(ge=0)
    complete: bool
