"""The stack around the media service for the voice tests (members, the connector, the media
service as a real process).  The remote participants themselves (aiortc mesh peers, the PCM peer)
and the tone analysis live in ``testkit.voice_peers`` (the benchmarks use them too) and are
re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.msg import Msg

from services.cli.chat import MemberClient
from services.cli.members import add_member
from services.core.contracts import commands as cmd
from services.core.contracts.bus import Empty
from services.core.contracts.media import VoiceStatus
from services.core.members import ConnectionFile
from services.core.procs import ManagedProcess, free_port
from services.core.servers import ServerStore
from services.devserver.runner import arunning_devserver, start_devserver_process, wait_healthy
from testkit.voice_peers import (
    FRAME,
    SAMPLE_RATE,
    Floats,
    Heard,
    MeshPeer,
    PcmPeer,
    Signaling,
    ToneTrack,
    TricklePeer,
    band_share,
    mean_abs,
    read_wav,
    tone,
    write_wav,
)
from tests.integration.conftest import StackNats, connector_running

__all__ = [
    "FRAME",
    "SAMPLE_RATE",
    "Floats",
    "Heard",
    "MeshPeer",
    "PcmPeer",
    "Signaling",
    "ToneTrack",
    "TricklePeer",
    "VoiceStack",
    "band_share",
    "cli_voice",
    "heard_tone",
    "mean_abs",
    "media_process",
    "read_wav",
    "run_cli",
    "tone",
    "voice_stack",
    "wait_until",
    "write_wav",
]


# -- processes -----------------------------------------------------------------------------------
def media_process(home: Path, nats_url: str, service_password: str, log: Path, **env: str) -> ManagedProcess:
    port = free_port()
    environ = {
        **os.environ,
        "OPENCHAT_HOME": str(home),
        "OPENCHAT_NATS_URL": nats_url,
        "OPENCHAT_SERVICE_PASSWORD": service_password,
        "OPENCHAT_HTTP_PORT": str(port),
        "OPENCHAT_LOG_LEVEL": "INFO",
        **env,
    }
    return ManagedProcess("media", [sys.executable, "-m", "services.media"], "127.0.0.1", port, environ, log)


async def wait_until(pred: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def cli_voice(
    home: Path, member: str, *args: str, env: dict[str, str] | None = None
) -> Any:  # yields the process
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "voice",
        *args,
        "--member",
        member,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "OPENCHAT_HOME": str(home), **(env or {})},
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()


# -- the stack around the media service ----------------------------------------------------------
@dataclass
class VoiceStack:
    nats: StackNats
    base: str  # the devserver as the stack reaches it
    media: ManagedProcess
    alice_uid: str
    tmp: Path

    @property
    def home(self) -> Path:
        return self.nats.home.layout.root

    def connection(self, member: str = "alice") -> ConnectionFile:
        return ConnectionFile.read(self.nats.home.layout.connection_file(member))

    async def status(self, member: str = "alice") -> VoiceStatus:
        async with MemberClient.connect(self.connection(member)) as client:
            result: VoiceStatus = await client.call(cmd.VOICE_STATUS, Empty(), timeout=5)
            return result

    async def admin(self, path: str, body: dict[str, object]) -> dict[str, object]:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(f"{self.base}/_admin/{path}", json=body)
            resp.raise_for_status()
            doc: dict[str, object] = resp.json()
            return doc

    @contextlib.asynccontextmanager
    async def voice_events(self, member: str = "alice") -> AsyncIterator[list[tuple[float, dict[str, Any]]]]:
        """Every voice event of ``member`` (with its arrival time), as its client sees them."""
        seen: list[tuple[float, dict[str, Any]]] = []
        async with MemberClient.connect(self.connection(member)) as client:

            async def on_msg(msg: Msg) -> None:
                seen.append((time.monotonic(), json.loads(msg.data)))

            sub = await client.bus.nc.subscribe(f"oc.{member}.evt.*.voice.>", cb=on_msg)
            await client.bus.nc.flush()
            yield seen
            await sub.unsubscribe()


@contextlib.asynccontextmanager
async def _devserver(mode: str, overrides: dict[str, Any], tmp: Path) -> AsyncIterator[str]:
    if mode == "public-defaults":
        # A separate process with the public backend's defaults (OPENCHAT_PUBLIC_BASE_URL unset:
        # the ticket's signaling_url says ws://localhost:8080, which the stack must rewrite).
        port = free_port()
        env = {k: "" for k in ("OPENCHAT_PUBLIC_BASE_URL", "OPENCHAT_HTTP_ADDR", "OPENCHAT_ENV")}
        proc = start_devserver_process(
            ["--port", str(port), "--admin"], env=env, log_path=tmp / "devserver.log"
        )
        try:
            await asyncio.to_thread(wait_healthy, f"http://127.0.0.1:{port}", 20.0, proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 10)
    else:
        async with arunning_devserver(seed="public", admin=True, **overrides) as devserver:
            yield devserver.base_url


@pytest.fixture
async def voice_stack(
    request: pytest.FixtureRequest, stack_nats: StackNats, tmp_path: Path
) -> AsyncIterator[VoiceStack]:
    """``request.param`` (indirect): ``{"mode": "inprocess" | "public-defaults", "media_env": {…},
    **devserver cfg}``."""
    params = dict(getattr(request, "param", None) or {})
    mode = params.pop("mode", "inprocess")
    media_env: dict[str, str] = params.pop("media_env", {})
    await asyncio.to_thread(add_member, stack_nats.home, "alice", out=lambda _: None)
    await asyncio.to_thread(add_member, stack_nats.home, "bob", out=lambda _: None)
    async with _devserver(mode, params, tmp_path) as base, connector_running(stack_nats):
        cf = ConnectionFile.read(stack_nats.home.layout.connection_file("alice"))
        async with MemberClient.connect(cf) as client:
            await client.join(base, "srv_harbor")
        record = ServerStore(stack_nats.home.layout.registry_db).get("alice", "srv_harbor")
        media = media_process(
            stack_nats.home.layout.root,
            stack_nats.url,
            stack_nats.service_password,
            tmp_path / "media.log",
            OPENCHAT_MEDIA_CLIENT_GRACE_S="4",
            **media_env,
        )
        await asyncio.to_thread(media.start)
        try:
            yield VoiceStack(stack_nats, base, media, record.user_uid, tmp_path)
        finally:
            await asyncio.to_thread(media.stop)


async def heard_tone(peer: MeshPeer, uid: str, hz: float, share: float = 0.5, timeout: float = 30) -> str:
    """Wait until ``peer`` hears ``hz`` from ``uid`` (its current participant id); return that id."""
    found: list[str] = []

    def ok() -> bool:
        pid = peer.pid_of(uid)
        if pid is not None and pid in peer.heard and band_share(peer.heard[pid].last(1.0), hz) > share:
            found.append(pid)
            return True
        return False

    await wait_until(ok, timeout, f"{peer.uid} hearing {hz} Hz from {uid}")
    return found[-1]


async def run_cli(home: Path, member: str, *args: str) -> tuple[int, str]:
    async with cli_voice(home, member, *args) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode() + err.decode()
