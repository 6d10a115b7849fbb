"""Issue 17 acceptance through the real processes: ``openchat up`` (NATS, Redis, connector, state,
notification, media), two devserver subprocesses, and the ``openchat search`` CLI.

A token is posted on each of two servers, 800 newer messages after one of them, and one more
while the whole stack is down (the connector gap-fills it after the restart): ``openchat search
TOKEN`` returns exactly those three with their servers and channels, newest first. Another member
joined to only one server finds only that server's. A deleted message disappears from results;
a Japanese and a Korean word are found inside unspaced text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from services.cli.chat import MemberClient
from services.core.bus import Bus, ConnectOptions
from services.core.contracts import commands as cmd
from services.core.contracts.chat import DeleteMessageArgs, SendArgs
from services.core.contracts.search import SearchArgs
from services.core.members import ConnectionFile
from services.core.procs import free_port
from services.devserver.runner import start_devserver_process, wait_healthy
from tests.integration.conftest import until
from tests.integration.test_openchat_up import READY_LINE, Stack, _env, _processes_of

TOKEN = "xylophonic"
FAMILY, HARBOR = "srv_family", "srv_harbor"


class Devserver:
    def __init__(self, tmp: Path, seed: str, *features: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ["--host", "127.0.0.1", "--port", str(self.port), "--seed", seed, "--admin"]
        self.args += ["--public-base-url", self.url, *(a for f in features for a in ("--feature", f))]
        self.log = tmp / f"devserver-{seed}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_devserver_process(self.args, log_path=self.log)
        wait_healthy(self.url, 30, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "home"
    yield path
    for leftover in _processes_of(path):
        leftover.kill()


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_search(home: Path, member: str, *args: str) -> list[dict[str, object]]:
    done = cli(home, "search", *args, "--member", member, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    hits: list[dict[str, object]] = json.loads(done.stdout)
    return hits


async def post(http: httpx.AsyncClient, channel_id: str, body: str, uid: str = "uid_guest") -> str:
    r = await http.post("/_admin/messages", json={"channel_id": channel_id, "user_uid": uid, "body": body})
    assert r.status_code == 201, r.text
    return str(r.json()["message"]["id"])


async def hits_of(client: MemberClient, query: str) -> list[tuple[str, str, str]]:
    result = await client.call(cmd.SEARCH, SearchArgs(query=query, limit=200), timeout=10)
    return [(h.server_id, h.channel_id, h.message_id) for h in result.hits]


def step(what: str) -> None:
    """Progress, shown with the output of a failing run."""
    print(f"{time.strftime('%H:%M:%S')} {what}", flush=True)


async def found(client: MemberClient, query: str, expected: list[tuple[str, str, str]]) -> None:
    """Until the member finds exactly ``expected`` (as a set: messages of different servers in the
    same second have no defined order; the order is checked on the CLI's output below)."""
    last: list[object] = []
    deadline = time.monotonic() + 120  # a plain deadline: asyncio.wait_for can hang on 3.11 here
    while time.monotonic() < deadline:
        try:
            hits = await hits_of(client, query)
        except Exception as exc:  # the state service restarting: ask again
            last[:] = [repr(exc)]
        else:
            last[:] = hits
            if sorted(hits) == sorted(expected):
                return
        await asyncio.sleep(0.2)  # polling a command's answer: no event says "indexed"
    raise AssertionError(f"{client.member} searching {query!r} finds {last}, not {expected}")


@contextlib.asynccontextmanager
async def member(cf: ConnectionFile) -> AsyncIterator[MemberClient]:
    """A member's bus client, closed without draining (a drain that outlives the stack it talked
    to can wait forever on Python 3.11; nothing is in flight here when it closes)."""
    opts = ConnectOptions(
        url=cf.nats_url, nkey_seed=cf.nkey_seed, inbox_prefix=cf.inbox_prefix, name="search-test"
    )
    bus = await Bus.connect(opts, first_attempts=5)
    try:
        yield MemberClient(bus, cf.member)
    finally:
        closing = asyncio.create_task(bus.nc.close())
        await asyncio.wait({closing}, timeout=10)  # never waits on a close that does not end
        step(f"{cf.member}'s client closed: {closing.done()}")


def start_stack(home: Path) -> Stack:
    """``openchat up``, ready; its output (every service's log) is read on from then on, so the
    pipe never fills up and blocks the stack."""
    stack = Stack(home)
    stack.wait_for_line(READY_LINE)
    out = stack.proc.stdout
    assert out is not None
    threading.Thread(target=lambda: stack.lines.extend(iter(out.readline, "")), daemon=True).start()
    return stack


def stop_stack(stack: Stack) -> int:
    """Ctrl-C, as a member would stop ``openchat up`` (its output is read by ``start_stack``)."""
    stack.proc.send_signal(signal.SIGINT)
    return stack.proc.wait(60)


@pytest.mark.timeout(
    900
)  # two stack starts, two devservers, 800 messages: ~1 min alone, far more on a busy box
async def test_search_every_server_through_restarts_deletes_and_members(home: Path, tmp_path: Path) -> None:
    family = Devserver(tmp_path, "family", "message_delete")
    harbor = Devserver(tmp_path, "harbor")
    await asyncio.gather(asyncio.to_thread(family.start), asyncio.to_thread(harbor.start))
    stack = await asyncio.to_thread(start_stack, home)
    try:
        step("stack up")
        for name in ("alice", "bob"):
            added = await asyncio.to_thread(cli, home, "member", "add", name)
            assert added.returncode == 0, added.stderr
        alice_cf = ConnectionFile.read(home / "members" / "alice.json")
        bob_cf = ConnectionFile.read(home / "members" / "bob.json")
        async with (
            member(alice_cf) as alice,
            member(bob_cf) as bob,
            httpx.AsyncClient(base_url=family.url, timeout=30) as fam,
            httpx.AsyncClient(base_url=harbor.url, timeout=30) as har,
        ):
            await alice.join(family.url, FAMILY)
            await alice.join(harbor.url, HARBOR)
            await bob.join(harbor.url, HARBOR)

            async def live() -> bool:
                snap = await alice.snapshot()
                return len(snap.servers) == 2 and all(v.connection.state == "live" for v in snap.servers)

            await until(live, timeout=60)
            step("joined, live")

            first = (FAMILY, "ch_plans", await post(fam, "ch_plans", f"pack the {TOKEN} for the lake"))
            burst = await fam.post("/_admin/burst", json={"channel_id": "ch_plans", "count": 800})
            assert burst.status_code == 200, burst.text
            second = (HARBOR, "ch_design", await post(har, "ch_design", f"{TOKEN} sketches are up"))
            japanese = (HARBOR, "ch_general", await post(har, "ch_general", "私は東京都に住んでいます"))
            korean = (HARBOR, "ch_general", await post(har, "ch_general", "저는 한국어를 공부합니다"))
            sent = await alice.send(SendArgs(server_id=FAMILY, channel_id="ch_general", body=f"oops {TOKEN}"))
            doomed = (FAMILY, "ch_general", sent.message.id)
            await found(alice, TOKEN, [doomed, second, first])
            step("three found")

            await alice.call(
                cmd.DELETE, DeleteMessageArgs(server_id=FAMILY, channel_id="ch_general", message_id=doomed[2])
            )
            await found(alice, TOKEN, [second, first])
            await found(bob, TOKEN, [second])
            step("deleted; bob finds one")

        step("stopping the stack")
        assert await asyncio.to_thread(stop_stack, stack) == 0  # the whole stack is down
        step("stack down")
        async with httpx.AsyncClient(base_url=family.url, timeout=30) as fam:
            third = (FAMILY, "ch_general", await post(fam, "ch_general", f"while you were away: {TOKEN}!"))
        stack = await asyncio.to_thread(start_stack, home)
        step("stack up again")
        # openchat up takes port 4222 when free, else another one: after a restart the connection
        # files may name a stale port, and `member rotate` rewrites them (docs/operations.md)
        for name in ("alice", "bob"):
            rotated = await asyncio.to_thread(cli, home, "member", "rotate", name)
            assert rotated.returncode == 0, rotated.stderr
        alice_cf = ConnectionFile.read(home / "members" / "alice.json")
        async with member(alice_cf) as alice:
            await found(alice, TOKEN, [third, second, first])  # gap-filled after the restart
            step("restarted; gap-filled one found")

        hits = await asyncio.to_thread(cli_search, home, "alice", TOKEN)
        assert [(h["server_id"], h["channel_id"], h["message_id"]) for h in hits] == [third, second, first]
        times = [str(h["created_at"]) for h in hits]
        assert times == sorted(times, reverse=True)  # newest first
        assert hits[0]["snippet"] == f"while you were away: «{TOKEN}»!"
        assert hits[2]["author_uid"] == "uid_guest" and str(hits[2]["created_at"]).startswith("20")
        bob_hits = await asyncio.to_thread(cli_search, home, "bob", TOKEN)
        assert [(h["server_id"], h["channel_id"], h["message_id"]) for h in bob_hits] == [second]

        jp = await asyncio.to_thread(cli_search, home, "alice", "東京")
        assert [(h["server_id"], h["channel_id"], h["message_id"]) for h in jp] == [japanese]
        assert jp[0]["snippet"] == "私は«東京»都に住んでいます"
        kr = await asyncio.to_thread(cli_search, home, "alice", "한국어")
        assert [(h["server_id"], h["channel_id"], h["message_id"]) for h in kr] == [korean]
        scoped = await asyncio.to_thread(
            cli_search, home, "alice", TOKEN, "--server", FAMILY, "--channel", "ch_plans"
        )
        assert [h["message_id"] for h in scoped] == [first[2]]
        text = await asyncio.to_thread(cli, home, "search", TOKEN, "--member", "alice", "--limit", "1")
        assert text.returncode == 0 and f"{FAMILY} #ch_general" in text.stdout and f"«{TOKEN}»" in text.stdout
    finally:
        if stack.proc.poll() is None:
            await asyncio.to_thread(stop_stack, stack)
        print("--- openchat up (last lines)\n" + "".join(stack.lines[-60:]))  # shown when the test fails
        family.stop()
        harbor.stop()
