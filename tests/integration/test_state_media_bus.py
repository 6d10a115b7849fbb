"""``state.media``: media bytes over the member's bus connection, in bounded chunks (issue 11).

Real NATS, Redis and a real HTTP backend (the ``backend`` fixture of test_state_http); the
desktop side is ``ui.media.MediaFetcher``, the code the desktop runs, over the member's subject.
"""

# ruff: noqa: F811  (pytest fixtures imported from the support modules are parameters here)

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from pydantic import BaseModel

from services.core.bus import Bus, CommandError
from services.core.contracts import subjects
from services.core.contracts.blobs import (
    MEDIA_CHUNK_MAX_BYTES,
    AttachmentMedia,
    MediaArgs,
    MediaChunk,
)
from services.core.contracts.chat import LinkPreview, MessageCreated
from services.state.app import StateRuntime
from tests.integration.test_state_http import Backend, attachment, backend, png  # noqa: F401
from tests.integration.test_state_support import (  # noqa: F401  (fixtures)
    applied,
    bus,
    clock,
    emit,
    join,
    make_state,
    message,
    post,
    redis,
    stream,
)
from ui.media import MediaFetcher, MediaFetchError

MakeState = Callable[..., Awaitable[StateRuntime]]


def fetcher(bus: Bus, member: str, **kw: int) -> MediaFetcher:
    """The desktop's fetcher over ``member``'s subject (no retry of ``not_found``: the views here
    are applied before any request)."""

    async def call(
        service: str, verb: str, args: BaseModel, result: type[MediaChunk], timeout: float
    ) -> MediaChunk:
        return await bus.request(subjects.command(member, service, verb), args, result, timeout)

    return MediaFetcher(call, not_found_retry=(), **kw)


async def test_media_chunks_per_member(bus: Bus, backend: Backend, make_state: MakeState) -> None:
    rt = await make_state(state_media_max_bytes=100_000)
    base = backend.base_url
    await join(bus, "alice", "srv_a", base_url=base, uid="uid_alice")
    await join(bus, "bob", "srv_a", base_url=base, uid="uid_bob")  # same server, bob's own view
    files = [attachment(n, base) for n in ("cat.png", "page.html", "huge.png")]
    ack = await post(bus, "alice", message("m1", attachments=files))
    await applied(rt, ack.seq)
    m1 = message("m1", attachments=files)

    # streamed in many small chunks, a few in flight; fetched from the backend once
    alice = fetcher(bus, "alice", chunk=16, in_flight=3)
    assert await alice.attachment(m1, files[0]) == png() and len(png()) > 3 * 16
    assert await fetcher(bus, "alice").attachment(m1, files[0]) == png()
    assert backend.hits == [("/files/cat.png", "uid_alice")]

    # bob: the same ids are not in his view
    with pytest.raises(CommandError) as err:
        await fetcher(bus, "bob").attachment(m1, files[0])
    assert err.value.code == "not_found"
    assert len(backend.hits) == 1

    # unsafe content is opaque bytes; oversized is refused; a chunk request is bounded
    got = await fetcher(bus, "alice").fetch(
        AttachmentMedia(
            server_id="srv_a", channel_id="general", message_id="m1", attachment_id="att-page.html"
        )
    )
    assert got.content_type == "application/octet-stream"
    with pytest.raises(CommandError) as err:
        await fetcher(bus, "alice").attachment(m1, files[2])
    assert err.value.code == "backend_error"
    with pytest.raises(ValueError):
        MediaArgs(ref=AttachmentMedia(server_id="srv_a", channel_id="g", message_id="m", attachment_id="a"),
                  length=MEDIA_CHUNK_MAX_BYTES + 1)  # fmt: skip

    # a desktop refuses a file larger than it accepts before fetching the rest
    with pytest.raises(MediaFetchError):
        await fetcher(bus, "alice", chunk=40, max_bytes=50).attachment(m1, files[0])


async def test_preview_images_only_public_hosts_and_images(
    bus: Bus, backend: Backend, make_state: MakeState
) -> None:
    base = backend.base_url
    previews = [
        LinkPreview(url="https://example.test/a", title="A", image_url=f"{base}/files/cat.png"),
        LinkPreview(url="https://example.test/b", title="B", image_url=f"{base}/files/page.html"),
    ]
    m = message("m2").model_copy(update={"link_previews": previews})

    strict = await make_state()  # the default: never fetch from the household network
    await join(bus, "alice", "srv_a", base_url="http://backend.test", uid="uid_alice")
    ack = await emit(bus, "alice", "srv_a", "message.created", MessageCreated(message=m), "msg:m2")
    await applied(strict, ack.seq)
    with pytest.raises(CommandError) as err:
        await fetcher(bus, "alice").preview_image(m, 0)
    assert err.value.code == "not_found" and backend.hits == []


async def test_preview_image_served_without_member_headers(
    bus: Bus, backend: Backend, make_state: MakeState
) -> None:
    base = backend.base_url
    previews = [
        LinkPreview(url="https://example.test/a", title="A", image_url=f"{base}/files/cat.png"),
        LinkPreview(url="https://example.test/b", title="B", image_url=f"{base}/files/page.html"),
        LinkPreview(url="https://example.test/c", title="C"),
    ]
    m = message("m3").model_copy(update={"link_previews": previews})
    rt = await make_state(preview_allow_private=True)  # the test's "public" host is on loopback
    await join(bus, "alice", "srv_a", base_url="http://backend.test", uid="uid_alice")
    ack = await emit(bus, "alice", "srv_a", "message.created", MessageCreated(message=m), "msg:m3")
    await applied(rt, ack.seq)

    assert await fetcher(bus, "alice").preview_image(m, 0) == png()
    assert backend.hits == [("/files/cat.png", "")]  # no uid header to a third-party host
    with pytest.raises(CommandError) as err:
        await fetcher(bus, "alice").preview_image(m, 1)
    assert err.value.code == "unsupported_media"
    with pytest.raises(CommandError) as err:
        await fetcher(bus, "alice").preview_image(m, 2)
    assert err.value.code == "not_found"
    with pytest.raises(CommandError) as err:
        await fetcher(bus, "bob").preview_image(m, 0)
    assert err.value.code == "not_found"
