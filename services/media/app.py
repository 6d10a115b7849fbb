"""The media service: voice through the backends' signaling, bridged to members' clients.

It joins voice channels on a member's behalf (wire §11.4 A p2p mesh, §11.4 B PCM interop), holds the
WebRTC connections to the remote participants and bridges audio to and from that member's client
over one WebRTC connection negotiated over NATS (``oc.<member>.cmd.media.*``; ADR 0011, ADR 0012).
It reads the member's joined servers (base URL, uid, device id) from the registry database the
connector writes (``services.core.servers``) and imports nothing of another service.
"""

from __future__ import annotations

from services.core.contracts.chat import ServerRecord
from services.core.paths import HomeLayout
from services.core.servers import ServerStore
from services.core.service import Service, ServiceContext
from services.media.service import MediaService, MediaSettings


def build(ctx: ServiceContext, settings: MediaSettings | None = None) -> MediaService:
    assert ctx.bus is not None
    store = ServerStore(HomeLayout(ctx.settings.home).registry_db)

    def servers(member: str, server_id: str) -> ServerRecord:
        return store.get(member, server_id)

    return MediaService(ctx.bus, servers, settings or MediaSettings())


async def setup(ctx: ServiceContext) -> None:
    media = build(ctx)
    media.register()
    ctx.extras["media"] = media


async def teardown(ctx: ServiceContext) -> None:
    """Leave every call (closing sockets and peers) and publish the final states."""
    media = ctx.extras.get("media")
    if isinstance(media, MediaService):
        await media.close()


SERVICE = Service(name="media", setup=setup, teardown=teardown, standby=True)

__all__ = ["SERVICE", "build"]
