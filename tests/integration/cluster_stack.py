"""``openchat up --nats-cluster 3 --replicas 2 --demo`` as a real process tree, for the cluster
acceptance tests and the failover bench (issue 16): the CLI in a subprocess with a private
OPENCHAT_HOME, its output read by a thread (a full pipe would stall the supervisor), ``openchat
status --json`` and ``openchat tail --json`` as a member's attached client, the desktop app without
its window (``HeadlessDesktop``: the real controller, view model and stack adapter of ``ui/``) as
another, and a watcher of the devserver's realtime sockets per uid."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from services.cli.home import SECRET_VARS
from services.core.members import ConnectionFile

READY_LINE = "stack is up"
DEMO = "demo"


def cli_env(home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("OPENCHAT_") or k.startswith("OPENCHAT_TEST")
    }
    env.pop("OPENCHAT_TEST_NATS_URL", None)
    env.pop("OPENCHAT_TEST_REDIS_URL", None)
    for var in SECRET_VARS:
        env.pop(var, None)
    env["OPENCHAT_HOME"] = str(home)
    env["OPENCHAT_SECRET_KEY_FILE"] = str(home.parent / "keys" / "secret.key")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Lines:
    """A subprocess's output lines, read by a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, needle: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"no {needle!r} (exit {self.proc.poll()}):\n" + "".join(self.lines[-80:])
                    )
                self._cond.wait(min(left, 0.5))


class ClusterStack:
    def __init__(self, home: Path, *args: str) -> None:
        self.home = home
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", *args],
            env=cli_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.out = Lines(self.proc)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=cli_env(self.home),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def status(self) -> list[dict[str, Any]]:
        done = self.cli("status", "--json")
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    def row(self, name: str) -> dict[str, Any]:
        return next(r for r in self.status() if r["name"] == name)

    def holder(self, session: str) -> dict[str, Any] | None:
        """The connector replica whose /healthz lists ``session`` (None: nobody holds it)."""
        holders = [r for r in self.status() if r["kind"] == "connector" and session in (r["sessions"] or [])]
        assert len(holders) <= 1, f"{session} held by {[r['name'] for r in holders]}"
        return holders[0] if holders else None

    def endpoints(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.home / "run" / "endpoints.json").read_text())
        return doc

    def devserver(self, name: str) -> str:
        return str(self.endpoints()["devservers"][name])

    def stop(self) -> None:
        (self.home.parent / "up.log").write_text("".join(self.out.lines))  # kept for a failure
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for leftover in processes_of(self.home):
            leftover.kill()


def processes_of(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            env = proc.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if proc.pid != os.getpid() and (str(home) in cmd or env.get("OPENCHAT_HOME") == str(home)):
            found.append(proc)
    return found


class Tail:
    """``openchat tail --json --member demo``: a member's client attached throughout (it resyncs
    from the stream after every reconnect)."""

    def __init__(self, stack: ClusterStack, member: str = DEMO) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "tail", "--json", "--member", member],
            env=cli_env(stack.home),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.out = Lines(self.proc)

    def message_ids(self, server_id: str, channel_id: str) -> list[str]:
        ids = []
        for line in list(self.out.lines):
            try:
                event = json.loads(line)["event"]
            except (ValueError, KeyError):
                continue
            if (
                event.get("type") == "message.created"
                and event.get("server_id") == server_id
                and event.get("channel_id") == channel_id
            ):
                ids.append(event["payload"]["message"]["id"])
        return ids

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class HeadlessDesktop:
    """The desktop app without its window, attached to a member's stack: ``ui.controller.Controller``
    over the ``ui.state`` view model and the real ``ui.adapter.StackAdapter`` (its own bus thread,
    every NATS URL of the connection file), pumped by a thread as the app's frame loop pumps it.
    The server and channel are selected, so the timeline shows them. Each pump also checks that
    the shown timeline never holds one message twice."""

    def __init__(self, stack: ClusterStack, server_id: str, channel_id: str, member: str = DEMO) -> None:
        from ui.adapter import StackAdapter
        from ui.controller import Controller
        from ui.state import intents as it
        from ui.state.composer import Composer
        from ui.state.model import ViewModel

        self.server_id, self.channel_id = server_id, channel_id
        self.model = ViewModel()
        self.controller = Controller(self.model, Composer(), client_id="acceptance-desktop")
        cf = ConnectionFile.read(stack.home / "members" / f"{member}.json")
        self.adapter = StackAdapter(cf, last_seq=self.model.last_seq)
        self.adapter.retry_s = 0.2
        self.controller.stack = self.adapter
        self.duplicates_shown: list[str] = []  # ids the timeline held twice at some pump
        self.offline_pumps = 0  # pumps while the desktop saw its stack unreachable
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._select: list[it.Intent] = [it.SelectServer(server_id), it.SelectChannel(channel_id)]
        self.adapter.start()
        self._thread = threading.Thread(target=self._pump, name="headless-desktop", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self.controller.process_ops()
                m = self.model
                if self._select and m.snapshot_loaded and self.server_id in m.servers:
                    for intent in self._select:
                        self.controller.dispatch(intent)
                    self._select = []
                if not m.stack_online:
                    self.offline_pumps += 1
                ids = self._shown()
                if len(ids) != len(set(ids)):
                    self.duplicates_shown.extend(i for i in set(ids) if ids.count(i) > 1)
            time.sleep(0.02)

    def _shown(self) -> list[str]:
        sm = self.model.servers.get(self.server_id)
        if sm is None:
            return []
        return [m.id for m in sm.log(self.channel_id).latest(100_000)]

    def ready(self) -> bool:
        with self._lock:
            return bool(self.model.stack_online and self.model.snapshot_loaded and not self._select)

    def message_ids(self) -> list[str]:
        """The selected channel's timeline, oldest first."""
        with self._lock:
            return self._shown()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.adapter.stop()


class SocketWatch:
    """Polls the devserver's realtime sockets per uid; remembers every moment a uid had two."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=10)
        self.overlaps: list[dict[str, int]] = []
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                counts = (await self.client.get("/_admin/state")).json()["realtime_by_uid"]
            except (httpx.HTTPError, ValueError, KeyError):
                await asyncio.sleep(0.05)
                continue
            self.samples += 1
            if any(n > 1 for n in counts.values()):
                self.overlaps.append(dict(counts))
            await asyncio.sleep(0.05)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.aclose()


async def post(client: httpx.AsyncClient, channel_id: str, body: str) -> str:
    """One message by another user of the devserver; its id."""
    response = await client.post(
        "/_admin/burst", json={"channel_id": channel_id, "count": 1, "body_prefix": body}
    )
    response.raise_for_status()
    return str(response.json()["last_id"])
