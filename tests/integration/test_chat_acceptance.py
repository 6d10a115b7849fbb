"""Issue #4 acceptance through the real processes: ``openchat up`` (NATS, Redis, connector,
state, notification, media) and a devserver subprocess with a state file.

The member's realtime sockets are dropped and the devserver is restarted while 1,000 messages
are posted; afterwards every message is in the member's view exactly once, in order — both in
the event history a desktop replays (``state.sync``) and in the state's channel window.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from nats.aio.msg import Msg

from services.cli.chat import MemberClient
from services.core.contracts import commands as cmd
from services.core.contracts.chat import SyncArgs
from services.core.members import ConnectionFile
from services.core.procs import free_port
from services.devserver.runner import start_devserver_process, wait_healthy
from tests.integration.test_openchat_up import READY_LINE, Stack, _env, _processes_of

CHANNEL = "ch_general"
TOTAL = 1000


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "home")
    try:
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGINT)
            s.proc.wait(60)
        for leftover in _processes_of(s.home):
            leftover.kill()


class Devserver:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            "--host", "127.0.0.1", "--port", str(self.port), "--seed", "family", "--admin",
            "--public-base-url", self.url, "--state-file", str(tmp / "devserver-state.json"),
        ]  # fmt: skip
        self.log = tmp / "devserver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_devserver_process(self.args, log_path=self.log)
        wait_healthy(self.url, 30, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


async def _sync_all(client: MemberClient) -> list[tuple[int, dict[str, object]]]:
    events: list[tuple[int, dict[str, object]]] = []
    since = 0
    while True:
        result = await client.call(cmd.SYNC, SyncArgs(since_seq=since, limit=5000))
        events += [(e.seq, json.loads(e.data)) for e in result.events if e.type == "message.created"]
        since = result.last_seq
        if result.complete:
            return events


def _message_ids(events: list[tuple[int, dict[str, object]]]) -> list[str]:
    ids = []
    for _, env in events:
        payload = env["payload"]
        assert isinstance(payload, dict)
        message = payload["message"]
        assert isinstance(message, dict)
        if message["channel_id"] == CHANNEL:
            ids.append(str(message["id"]))
    return ids


async def test_every_message_once_in_order_through_drops_and_a_backend_restart(
    stack: Stack, tmp_path: Path
) -> None:
    stack.wait_for_line(READY_LINE)
    dev = Devserver(tmp_path)
    await asyncio.to_thread(dev.start)
    try:
        added = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.cli", "member", "add", "alice"],
            env=_env(stack.home),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr
        cf = ConnectionFile.read(stack.home / "members" / "alice.json")
        async with MemberClient.connect(cf) as alice, httpx.AsyncClient(base_url=dev.url, timeout=10) as http:
            live = asyncio.Event()

            async def on_connection(msg: Msg) -> None:
                data = json.loads(msg.data)
                if data["payload"]["state"] == "live":
                    live.set()

            await alice.bus.nc.subscribe("oc.alice.evt.srv_family.server.connection", cb=on_connection)
            await alice.join(dev.url, "srv_family")
            await asyncio.wait_for(live.wait(), 30)
            before = set(_message_ids(await _sync_all(alice)))  # the seed history

            posted: list[str] = []

            async def post(n: int) -> None:
                r = await http.post(
                    "/_admin/messages", json={"channel_id": CHANNEL, "user_uid": "uid_bob", "body": f"m{n}"}
                )
                assert r.status_code == 201, r.text
                posted.append(r.json()["message"]["id"])

            for n in range(TOTAL):
                if n == 300:
                    assert (await http.post("/_admin/realtime/drop")).status_code < 300
                if n == 600:
                    live.clear()
                    await asyncio.to_thread(dev.stop)  # state kept in the state file
                    await asyncio.to_thread(dev.start)
                if n == 800:
                    live.clear()
                    assert (await http.post("/_admin/realtime/drop")).status_code < 300
                await post(n)
            await asyncio.wait_for(live.wait(), 60)

            # Wait (bounded) until the connector has gap-filled everything into the stream.
            for _ in range(300):
                ids = [i for i in _message_ids(await _sync_all(alice)) if i not in before]
                if len(set(ids)) >= TOTAL:
                    break
                await asyncio.sleep(0.2)  # polling the member's view: no event says "complete"
            assert ids == posted, f"{len(ids)} in view, {len(set(ids))} distinct, {TOTAL} posted"

            window = await alice.history("srv_family", CHANNEL, 500)
            assert [m.id for m in window.messages] == posted[-500:]
    finally:
        dev.stop()
