"""The notification service: unread and mention counts, read cursors, notification policy.

Wiring only: the domain is ``services.notification.domain`` (plain synchronous rules), the
durable tables ``services.notification.store`` (registry database, ADR 0001), the adapters
``services.notification.service`` (events stream consumer, bus commands, read-ack calls).
It needs no Redis: everything it keeps must survive a restart, so it lives in the durable store.
"""

from __future__ import annotations

from services.core.paths import HomeLayout
from services.core.service import Service, ServiceContext
from services.notification.service import NotificationService


async def setup(ctx: ServiceContext) -> None:
    assert ctx.bus is not None
    svc = NotificationService(
        ctx.bus, HomeLayout(ctx.settings.home).registry_db, stream=ctx.settings.events_stream
    )
    await svc.start()
    ctx.extras["notification"] = svc

    async def consuming() -> bool:
        return svc.consuming

    ctx.health.add("consumer", consuming)


async def teardown(ctx: ServiceContext) -> None:
    """Stop consuming and unsubscribe before the bus drains (a pull subscription never drains)."""
    svc = ctx.extras.get("notification")
    if isinstance(svc, NotificationService):
        await svc.stop()


SERVICE = Service(name="notification", needs_redis=False, setup=setup, teardown=teardown, standby=True)
