"""Fault tests: nats-server killed (SIGKILL) and restarted on the same port and store."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from services.core.bus import Bus, ConnectOptions
from services.core.contracts.bus import Contract, EventEnvelope
from services.core.procs import ManagedProcess

pytestmark = pytest.mark.faults


class Tick(Contract):
    n: int


async def test_reconnect_after_kill_keeps_every_accepted_event(nats_ctl: ManagedProcess) -> None:
    url = f"nats://127.0.0.1:{nats_ctl.port}"
    bus = await Bus.connect(ConnectOptions(url=url, name="fault", reconnect_wait_s=0.2), first_attempts=3)
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    bus.nc._reconnected_cb = on_reconnect
    await bus.ensure_events_stream("OC_FAULT", duplicate_window_s=120)
    accepted: set[int] = set()

    async def publish(n: int) -> bool:
        env = EventEnvelope[Tick](event_id=f"tick_{n}", server_id="srv_a", type="tick", payload=Tick(n=n))
        try:
            await bus.publish_event("alice", env, timeout=1)
        except Exception:
            return False  # not accepted: the producer keeps it and retries (below)
        accepted.add(n)
        return True

    for n in range(200):
        assert await publish(n)
    nats_ctl.kill()
    # Publishes while the server is down are not accepted; nothing is claimed for them.
    assert not await publish(200)
    nats_ctl.start()
    await asyncio.wait_for(reconnected.wait(), 15)
    for n in range(200, 400):
        # JetStream may need a moment after the reconnect to recover the stream: retry, bounded.
        for _attempt in range(100):
            if await publish(n):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"event {n} was never accepted after the restart")
    # Replay of the kill window (the producer retries from its last acknowledged event):
    # de-duplicated by Nats-Msg-Id, so nothing is doubled.
    for n in range(190, 200):
        assert await publish(n)

    info = await bus.js.stream_info("OC_FAULT")
    assert info.state.messages == 400
    sub = await bus.js.subscribe("oc.sys.ev.alice.>", ordered_consumer=True)
    seen = []
    for _ in range(400):
        msg: Msg = await sub.next_msg(timeout=5)
        seen.append(EventEnvelope[Tick].model_validate_json(msg.data).payload.n)
    assert seen == sorted(accepted) == list(range(400))
    await bus.close()


async def test_first_connect_retries_until_server_starts(nats_ctl: ManagedProcess) -> None:
    nats_ctl.stop()
    url = f"nats://127.0.0.1:{nats_ctl.port}"
    connecting = asyncio.create_task(Bus.connect(ConnectOptions(url=url, name="late")))
    await asyncio.sleep(0.5)  # the server is down for a while on purpose: connect must keep trying
    assert not connecting.done()
    await asyncio.to_thread(nats_ctl.start)
    bus = await asyncio.wait_for(connecting, 15)
    assert bus.connected
    await bus.close()
