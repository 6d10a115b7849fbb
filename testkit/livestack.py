"""``openchat up --demo`` as a real process tree for the fault suite and ``bench/bench_faults.py``.

Everything is real: the supervisor, nats-server, redis-server, the four services and two
devservers, in a private ``OPENCHAT_HOME`` created under umask 022 (a default shell's). This
process posts messages on the "Family" devserver (``POST /_admin/messages`` as another uid) and
reads the demo member's view over the bus with the member's own connection file: its live events
(``oc.demo.evt.>``, with ``Nats-Sequence``), ``state.sync`` and ``state.history``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from nats.aio.msg import Msg

from services.cli.chat import MemberClient
from services.cli.home import Endpoints, Home
from services.cli.status import Row, stack_status
from services.core.bus import CommandError
from services.core.contracts import commands as cmd
from services.core.contracts import subjects
from services.core.contracts.chat import (
    SnapshotArgs,
    SyncArgs,
    ViewHistoryArgs,
)
from services.core.members import ConnectionFile
from testkit.stack_env import processes_of as _processes_of
from testkit.stack_env import stack_env as _env

MEMBER = "demo"
SERVER = "srv_family"
CHANNEL = "ch_general"
POSTER_UID = "uid_fault_poster"
QUERY_TIMEOUT_S = 5.0


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class LiveStack:
    """The supervisor process; its output is drained by a thread (never blocks the stack)."""

    def __init__(self, root: Path, umask: int = 0o022, settings: dict[str, str] | None = None) -> None:
        self.home_dir = root / "home"
        self.env = _env(self.home_dir)
        self.env.update(settings or {})  # OPENCHAT_* settings of the stack (``_env`` drops the caller's)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--demo"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=lambda: os.umask(umask) and None,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._home: Home | None = None

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_line(self, needle: str, timeout: float = 120, start: int = 0) -> int:
        """Index of the first output line from ``start`` on that contains ``needle``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    if needle in self.lines[i]:
                        return i
                start = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"no {needle!r} (exit {self.proc.poll()}):\n" + "".join(self.lines[-80:])
                    )
                self._cond.wait(min(left, 0.5))

    def up(self) -> LiveStack:
        self.wait_for_line(f"[demo] {MEMBER} joined srv_harbor")
        self.wait_for_line("stack is up")
        return self

    @property
    def home(self) -> Home:
        if self._home is None:
            with environment(self.env):
                self._home = Home.load()
        return self._home

    def endpoints(self) -> Endpoints:
        ep = self.home.endpoints()
        assert ep is not None, "no endpoints file"
        return ep

    def pid(self, component: str) -> int:
        return self.endpoints().managed[component]

    def connection(self) -> ConnectionFile:
        return ConnectionFile.read(self.home.layout.connection_file(MEMBER))

    @property
    def family_url(self) -> str:
        return self.endpoints().devservers["family"]

    async def status(self) -> list[Row]:
        return await stack_status(self.home)

    async def wait_healthy(self, timeout: float = 60.0, changed: dict[str, int] | None = None) -> float:
        """Seconds until ``openchat status`` is all green (and every component in ``changed``
        runs under a pid other than the one given)."""
        started = time.monotonic()
        while True:
            rows = await self.status()
            pids = self.endpoints().managed
            fresh = all(pids.get(name) not in (None, old) for name, old in (changed or {}).items())
            if rows and all(r.healthy for r in rows) and fresh:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError("not healthy: " + "; ".join(f"{r.component}: {r.detail}" for r in rows))
            await asyncio.sleep(0.1)

    def rss(self) -> dict[str, int]:
        """RSS in bytes of the supervisor and every process it manages."""
        out: dict[str, int] = {}
        for name, pid in {"supervisor": self.proc.pid, **self.endpoints().managed}.items():
            with contextlib.suppress(psutil.Error):
                out[name] = psutil.Process(pid).memory_info().rss
        return out

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # in case a test froze it
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        for leftover in _processes_of(self.home_dir):
            with contextlib.suppress(psutil.Error):
                leftover.kill()
        return self.proc.returncode


@dataclass
class Poster:
    """Posts messages on the Family devserver at a steady rate; remembers their ids in order."""

    base_url: str
    ids: list[str] = field(default_factory=list)
    # ``message_key`` of each post (id and body): the backend's ids are only 32 bits random (wire
    # spec "Ids"), so two posts of a long soak may get the same id; the body tells them apart
    keys: list[str] = field(default_factory=list)
    failures: int = 0
    milestone: int = 0  # ``reached`` is set once this many messages were posted
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    async def post(self, client: httpx.AsyncClient, body: str) -> None:
        for _attempt in range(50):
            try:
                resp = await client.post(
                    f"{self.base_url}/_admin/messages",
                    json={"channel_id": CHANNEL, "user_uid": POSTER_UID, "body": body},
                    timeout=10,
                )
            except httpx.HTTPError:
                self.failures += 1
                await asyncio.sleep(0.1)
                continue
            resp.raise_for_status()
            posted = resp.json()["message"]
            self.ids.append(str(posted["id"]))
            self.keys.append(message_key(str(posted["id"]), body))
            if len(self.ids) >= self.milestone:
                self.reached.set()
            return
        raise AssertionError("the devserver refused posts for 5 s")

    async def run(self, count: int, rate: float, tag: str, stop: asyncio.Event | None = None) -> None:
        interval = 1.0 / rate
        start = time.monotonic()
        async with httpx.AsyncClient() as client:
            for n in range(count):
                if stop is not None and stop.is_set():
                    return
                delay = start + n * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # the pacing of the load itself
                await self.post(client, f"{tag} {n}")


@dataclass
class Tail:
    """The member's live events as a desktop receives them: ``message.created`` of the Family
    channel by stream sequence; gaps are filled by ``state.sync`` (what a desktop does)."""

    client: MemberClient
    live: list[tuple[int, str]] = field(default_factory=list)  # (Nats-Sequence, message id)
    seqs_seen: set[int] = field(default_factory=set)
    duplicate_deliveries: int = 0

    async def start(self) -> None:
        async def cb(msg: Msg) -> None:
            seq = int((msg.headers or {}).get("Nats-Sequence", "0"))
            if seq in self.seqs_seen:
                self.duplicate_deliveries += 1
                return
            self.seqs_seen.add(seq)
            key = message_key_of(msg.data)
            if key is not None:
                self.live.append((seq, key))

        await self.client.bus.nc.subscribe(subjects.events_of_member(self.client.member), cb=cb)
        await self.client.bus.nc.flush()

    async def synced(
        self, since_seq: int, entries: dict[str, list[dict[str, Any]]] | None = None
    ) -> list[tuple[int, str]]:
        """Every ``message.created`` of the channel in the stream after ``since_seq``, as
        ``(seq, message_key)``; ``entries`` (when given) gets each stream entry's evidence by key
        (seq, event id, created_at, ts — no bodies beyond the bench's own tags)."""
        out: list[tuple[int, str]] = []
        seq = since_seq
        while True:
            try:
                result = await self.client.call(
                    cmd.SYNC, SyncArgs(since_seq=seq, limit=1000), timeout=QUERY_TIMEOUT_S
                )
            except TimeoutError:
                continue  # lost in a reconnect: ask again
            assert not result.truncated
            for ev in result.events:
                key = message_key_of(ev.data.encode())
                if key is not None:
                    out.append((ev.seq, key))
                    if entries is not None:
                        entries.setdefault(key, []).append(stream_entry(ev.seq, ev.subject, ev.data))
            seq = result.last_seq
            if result.complete:
                return out


def _channel_message(data: bytes | str) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(data)
    except ValueError:
        return None
    if doc.get("type") != "message.created" or doc.get("channel_id") != CHANNEL:
        return None
    if doc.get("server_id") != SERVER:
        return None
    return doc


def message_id(data: bytes) -> str | None:
    doc = _channel_message(data)
    return None if doc is None else str(doc["payload"]["message"]["id"])


def message_key(message_id: str, body: str) -> str:
    """What tells one posted message from another: its id *and* its body (the bench's tag)."""
    return f"{message_id}|{body}"


def message_key_of(data: bytes) -> str | None:
    doc = _channel_message(data)
    if doc is None:
        return None
    msg = doc["payload"]["message"]
    return message_key(str(msg["id"]), str(msg.get("body", "")))


def stream_entry(seq: int, subject: str, data: str) -> dict[str, Any]:
    """The evidence of one stored ``message.created``: where and when it was stored, by which id."""
    doc = _channel_message(data) or {}
    msg = doc.get("payload", {}).get("message", {})
    return {
        "seq": seq,
        "subject": subject,
        "event_id": doc.get("event_id"),
        "ts": doc.get("ts"),
        "created_at": msg.get("created_at"),
    }


def id_collisions(ids: list[str], keys: list[str]) -> dict[str, list[str]]:
    """Ids the backend gave to more than one posted message: id -> those messages' keys."""
    by_id: dict[str, list[str]] = {}
    for mid, key in zip(ids, keys, strict=True):
        by_id.setdefault(mid, []).append(key)
    return {mid: group for mid, group in by_id.items() if len(group) > 1}


@dataclass
class Verdict:
    lost: int
    duplicated: int
    out_of_order: int

    @property
    def exact(self) -> bool:
        return self.lost == self.duplicated == self.out_of_order == 0


def judge(expected: list[str], got: list[str]) -> Verdict:
    """``got`` against ``expected`` (posting order): restricted to the expected ids."""
    wanted = set(expected)
    mine = [m for m in got if m in wanted]
    seen: set[str] = set()
    duplicated = 0
    deduped = []
    for m in mine:
        if m in seen:
            duplicated += 1
        else:
            seen.add(m)
            deduped.append(m)
    lost = len(wanted - seen)
    order = {m: i for i, m in enumerate(expected)}
    out_of_order = sum(1 for a, b in itertools.pairwise(deduped) if order[a] > order[b])
    return Verdict(lost, duplicated, out_of_order)


async def history_ids(client: MemberClient, limit: int = 500) -> list[str] | None:
    """The channel's messages in the member's view, oldest first (None while state rebuilds)."""
    args = ViewHistoryArgs(server_id=SERVER, channel_id=CHANNEL, limit=limit)
    try:
        # A short timeout: a request lost while NATS restarts is asked again at once instead of
        # waiting out the CLI's 30 s (which would be measured as recovery time).
        result = await client.call(cmd.VIEW_HISTORY, args, timeout=QUERY_TIMEOUT_S)
    except (CommandError, TimeoutError):
        return None  # rebuilding (or the server not re-announced yet): not exact, ask again
    return [m.id for m in result.messages]


async def view_difference(client: MemberClient, baseline: list[str], posted: list[str]) -> str | None:
    """None when the member's view of the channel is exactly what the backend holds (what the
    view held before, then every posted message once, in order) and both demo servers are in
    the snapshot; else what differs."""
    ids = await history_ids(client)
    if ids is None:
        return "no history answer (rebuilding, or the server not in the view yet)"
    expected = (baseline + posted)[-500:]
    if ids != expected:
        extra = [m for m in ids if m not in set(expected)]
        return f"history differs: posted {judge(posted, ids)}, {len(extra)} unexpected, {len(ids)}/{len(expected)}"
    try:
        snap = await client.call(cmd.SNAPSHOT, SnapshotArgs(messages_per_channel=0), timeout=QUERY_TIMEOUT_S)
    except (CommandError, TimeoutError) as exc:
        return f"snapshot failed: {exc!r}"
    servers = {s.server.server_id for s in snap.servers}
    if not servers >= {"srv_family", "srv_harbor"}:
        return f"snapshot has servers {sorted(servers)}"
    return None


async def wait_exact(client: MemberClient, baseline: list[str], posted: list[str], timeout: float) -> float:
    """Seconds until the view is exact (``view_difference``); raises with the difference."""
    started = time.monotonic()
    while (diff := await view_difference(client, baseline, posted)) is not None:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"view not exact after {timeout:g} s: {diff}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def settled_history(client: MemberClient, timeout: float = 60.0) -> list[str]:
    """The channel's view once hydration is over: the same twice, a second apart."""
    deadline = time.monotonic() + timeout
    last = await history_ids(client)
    while True:
        await asyncio.sleep(1.0)  # "unchanged for a second": there is no event for "hydrated"
        now = await history_ids(client)
        if now is not None and now == last:
            return now
        if time.monotonic() > deadline:
            raise AssertionError("the member's view never settled")
        last = now


@contextlib.asynccontextmanager
async def member(stack: LiveStack) -> AsyncIterator[MemberClient]:
    async with MemberClient.connect(stack.connection()) as client:
        yield client


def kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    os.kill(pid, sig)
