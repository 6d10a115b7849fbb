"""``openchat member remove`` as a bus command each owning service handles (issue 13).

Real parts: a nats-server configured as ``openchat up`` configures it, Redis, a devserver, and the
connector, state and notification services. The CLI deletes no service's rows; each service
forgets the member itself, at once over ``oc.sys.member.remove.<service>``, or at its next start
when it was not running.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from services.cli.chat import MemberClient
from services.cli.members import add_member, remove_member
from services.connector.anchors import AnchorStore
from services.connector.previews import PreviewPrefs
from services.connector.profile import ProfileStore
from services.core.bus import Bus, ConnectOptions
from services.core.contracts.chat import ProfileSetArgs
from services.core.members import ConnectionFile, MemberRegistry
from services.core.servers import ServerStore
from services.devserver.config import DevserverConfig
from services.devserver.runner import arunning_devserver
from services.notification.service import NotificationService
from services.notification.store import NotifyStore
from services.state.runtime import StateRuntime
from services.state.settings import StateSettings
from tests.integration.conftest import StackNats, connector_running, until

STREAM = "OC_EVENTS"


def kept(db: Path, member: str) -> dict[str, bool]:
    """Which store of the registry database still holds rows of ``member``."""
    notify = NotifyStore(db)
    try:
        in_notify = any(
            notify._conn.execute(f"SELECT 1 FROM {t} WHERE member = ?", (member,)).fetchone()  # noqa: S608
            for t in ("notify_members", "notify_servers", "notify_channels")
        )
    finally:
        notify.close()
    return {
        "joined_servers": member in ServerStore(db).members(),
        "profiles": member in ProfileStore(db).members(),
        "anchors": member in AnchorStore(db).members(),
        "preview_prefs": member in PreviewPrefs(db).members(),
        "notification": in_notify,
    }


async def test_member_removal_reaches_every_service(
    stack_nats: StackNats, redis_url: str, tmp_path: Path
) -> None:
    home = stack_nats.home
    db = home.layout.registry_db
    for name in ("kim", "lee"):
        await asyncio.to_thread(add_member, home, name, out=lambda _: None)
    svc = await Bus.connect(
        ConnectOptions(url=stack_nats.url, user="svc", password=stack_nats.service_password), first_attempts=3
    )
    await svc.ensure_events_stream(STREAM, duplicate_window_s=60)
    notify = NotificationService(svc, db)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=False)
    state = StateRuntime(svc, redis, StateSettings(home=home.settings.home, events_stream=STREAM))
    cfg = DevserverConfig(port=0, host="127.0.0.1", seed="harbor", admin=True)
    await notify.start()
    await state.start()
    prefix = f"{state.store.prefix}:m:kim:"
    try:
        async with arunning_devserver(cfg) as dev, connector_running(stack_nats):
            for name in ("kim", "lee"):
                cf = ConnectionFile.read(home.layout.connection_file(name))
                async with MemberClient.connect(cf) as client:
                    await client.join(dev.base_url, "srv_harbor")
                    await client.previews(False)
                    await client.profile_set(ProfileSetArgs(display_name=f"{name.title()} K"))
            async with httpx.AsyncClient(base_url=dev.base_url) as http:
                r = await http.post(
                    "/_admin/messages", json={"channel_id": "ch_general", "user_uid": "u", "body": "x"}
                )
                assert r.status_code < 300

            async def everything_kept() -> bool:
                has_view = bool([k async for k in redis.scan_iter(match=prefix + "*", count=1000)])
                return has_view and all(v for k, v in kept(db, "kim").items() if k != "anchors")

            await until(everything_kept)
            outcome: list[str] = []
            await asyncio.to_thread(remove_member, home, "kim", out=outcome.append)
            text = "\n".join(outcome)
            assert "config reloaded" in outcome[0]
            for service in ("connector", "state", "notification"):
                assert f"  {service}: forgotten" in text, text
            assert "joined_servers 1" in text and "profiles" in text and "preview_prefs 1" in text
            assert not any(kept(db, "kim").values()), kept(db, "kim")
            assert not [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
            info = await svc.js.stream_info(STREAM, subjects_filter="oc.sys.ev.kim.>")
            assert not info.state.subjects  # its events are gone from the stream too
            # the other member keeps everything
            assert all(v for k, v in kept(db, "lee").items() if k != "anchors")
            assert MemberRegistry(db).removed() == ["kim"]
    finally:
        await state.stop()
        await notify.stop()
        await svc.close()
        await redis.aclose()


async def test_a_service_not_running_forgets_at_its_next_start(stack_nats: StackNats) -> None:
    home = stack_nats.home
    db = home.layout.registry_db
    await asyncio.to_thread(add_member, home, "max", out=lambda _: None)
    from services.core.contracts.bus import utcnow
    from services.core.contracts.chat import ServerRecord

    record = ServerRecord(
        server_id="srv_x",
        base_url="https://x.example.test",
        display_name="X",
        icon_text="X",
        user_uid="uid_x",
        device_id="d",
        joined_at=utcnow(),
    )
    ServerStore(db).add("max", record)
    PreviewPrefs(db).set("max", False)
    outcome: list[str] = []
    await asyncio.to_thread(remove_member, home, "max", out=outcome.append)
    assert "connector: not reached" in "\n".join(outcome)
    assert kept(db, "max")["joined_servers"] and kept(db, "max")["preview_prefs"]  # the CLI deleted nothing
    async with connector_running(stack_nats):
        assert not kept(db, "max")["joined_servers"] and not kept(db, "max")["preview_prefs"]
    # added again: a new member, nothing forgotten at the next start
    await asyncio.to_thread(add_member, home, "max", out=lambda _: None)
    assert MemberRegistry(db).removed() == []
