"""The connector as a real process (``python -m services.connector``) for fault tests and benches:
started with its own ``OPENCHAT_HOME`` and events stream, JSON logs in a file, RSS read with
psutil, commands sent as a member over the bus."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, TypeVar

import psutil
from pydantic import BaseModel

from services.core.bus import Bus, CommandError, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.chat import JoinArgs, JoinResult

FAST_BACKOFF_S = (0.05, 0.1, 0.2, 0.3, 0.5)  # the reconnect ladder of tests/connector_harness.FAST

R = TypeVar("R", bound=BaseModel)


class ConnectorProc:
    def __init__(self, nats_url: str, tmp: Path, stream: str, **settings: Any) -> None:
        self.nats_url = nats_url
        self.tmp = tmp
        self.stream = stream
        self.log_path = tmp / "connector.log"
        self.env = {
            **os.environ,
            "OPENCHAT_NATS_URL": nats_url,
            "OPENCHAT_HOME": str(tmp / "home"),
            "OPENCHAT_SECRET_KEY_FILE": str(tmp / "keys" / "secret.key"),
            "OPENCHAT_EVENTS_STREAM": stream,
            "OPENCHAT_EVENTS_DUPLICATE_WINDOW_S": "120",
            "OPENCHAT_LOG_JSON": "true",
            "OPENCHAT_CONNECTOR_BACKOFF_S": json.dumps(list(FAST_BACKOFF_S)),
            "OPENCHAT_CONNECTOR_JITTER": "0.1",
            "OPENCHAT_CONNECTOR_RECONCILE_INTERVAL_S": "0",
            "OPENCHAT_CONNECTOR_REQUEST_TIMEOUT_S": "60",  # a hostile 100k answer is parsed in this time
        }
        for key in ("OPENCHAT_SERVICE_PASSWORD", "OPENCHAT_REDIS_URL"):
            self.env.pop(key, None)
        self.env.update({k.upper(): str(v) for k, v in settings.items()})
        self.proc: subprocess.Popen[bytes] | None = None
        self.bus: Bus | None = None
        self.starts = 0

    async def drop_streams(self) -> None:
        """Delete every stream of this NATS server (a stream owns ``oc.sys.ev.>``; tests and
        benches each start from an empty one, as the other connector tests do)."""
        bus = await Bus.connect(ConnectOptions(url=self.nats_url, name="fault-setup"), first_attempts=3)
        try:
            for info in await bus.js.streams_info():
                if info.config.name is not None:
                    await bus.js.delete_stream(info.config.name)
        finally:
            await bus.close()

    def _spawn(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.connector"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def start(self) -> None:
        self.starts += 1
        self._spawn()
        if self.bus is None:
            self.bus = await Bus.connect(
                ConnectOptions(url=self.nats_url, name="fault-member"), first_attempts=3
            )
        await self._until_answering()

    async def _until_answering(self) -> None:
        from services.core.contracts.chat import ProfileGetArgs, ProfileGetResult

        for _ in range(300):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the connector exited with {self.proc.returncode}; see {self.log_path}")
            try:
                await self.call("readiness", "profile_get", ProfileGetArgs(), ProfileGetResult, timeout=2)
                return
            except CommandError as exc:
                if exc.code not in ("service_unavailable", "timeout"):
                    return
                await asyncio.sleep(0.1)
        raise TimeoutError("the connector process never answered")

    async def call(
        self, member: str, verb: str, args: BaseModel, result: type[R], timeout: float = 30.0
    ) -> R:
        assert self.bus is not None
        return await self.bus.request(subjects.command(member, "connector", verb), args, result, timeout)

    async def join(self, member: str, url: str, server_id: str) -> JoinResult:
        return await self.call(
            member, "join", JoinArgs(url=url, server_id=server_id, confirmed=True), JoinResult
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        assert self.proc is not None
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = {"msg": raw.decode("utf-8", "replace"), "level": "raw"}
            if isinstance(doc, dict):
                lines.append(doc)
        return lines

    def log_count(self, msg: str, **fields: Any) -> int:
        return sum(
            1 for d in self.logs() if d.get("msg") == msg and all(d.get(k) == v for k, v in fields.items())
        )

    async def wait_log(self, msg: str, count: int = 1, timeout: float = 30.0, **fields: Any) -> None:
        """Poll the log file (a log line is no event) until ``msg`` appears ``count`` times."""

        async def loop() -> None:
            while self.log_count(msg, **fields) < count:  # noqa: ASYNC110 - a file: nothing to await
                await asyncio.sleep(0.05)

        await asyncio.wait_for(loop(), timeout)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 5)
        self.proc = None

    async def close(self) -> None:
        await self.stop()
        if self.bus is not None:
            await self.bus.close()
            self.bus = None


class DevserverProc:
    """A devserver subprocess (the reference backend) that can be stopped and started again on the
    same port and state file."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        from services.core.procs import free_port

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = [
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--public-base-url",
            self.base_url,
            *extra,
        ]
        self.log = tmp / f"devserver-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    async def start(self) -> None:
        from services.devserver.runner import start_devserver_process, wait_healthy

        self.proc = start_devserver_process(self.args, log_path=self.log)
        await asyncio.to_thread(wait_healthy, self.base_url, 30.0, self.proc)

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 15)
            self.proc = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()
        self.restarts += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    async def admin(self, path: str, doc: dict[str, object]) -> dict[str, Any]:
        import httpx

        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
            response = await client.post(path, json=doc)
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    async def history_ids(self, channel_id: str) -> list[str]:
        import httpx

        async with httpx.AsyncClient(base_url=self.base_url, timeout=60) as client:
            response = await client.get(f"/v1/channels/{channel_id}/messages", params={"limit": 1_000_000})
            response.raise_for_status()
            return [m["id"] for m in response.json()["messages"]]


def stream_report(expected: list[str], got: list[str]) -> dict[str, int]:
    """lost / duplicated / out of order of what a member received against the backend's order."""
    position = {mid: i for i, mid in enumerate(expected)}
    seen: set[str] = set()
    duplicated = 0
    for mid in got:
        if mid in seen:
            duplicated += 1
        seen.add(mid)
    firsts = [position[m] for m in dict.fromkeys(got) if m in position]
    out_of_order = sum(1 for a, b in itertools.pairwise(firsts) if b < a)
    return {
        "expected": len(expected),
        "received": len(got),
        "lost": sum(1 for m in expected if m not in seen),
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "foreign": sum(1 for m in seen if m not in position),
    }
