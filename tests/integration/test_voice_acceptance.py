"""Voice end to end with real processes (issue 12 acceptance).

NATS as ``openchat up`` configures it (member credentials), the connector in-process (it records
the joined server), the media service as its own process (``python -m services.media``), the
member's client as ``openchat voice join`` (a process: WebRTC to the media service, negotiated over
NATS with alice's credentials), the devserver's real signaling, and remote participants written
here: aiortc mesh peers and a PCM peer speaking like ``openchat-rtc-joiner``.  What everyone hears
is checked by FFT.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from services.cli.chat import MemberClient
from services.cli.members import add_member
from services.core.contracts.bus import Empty
from services.core.contracts.media import SERVICE, VoiceStatus
from services.core.members import ConnectionFile
from services.core.procs import ManagedProcess
from services.core.servers import ServerStore
from services.devserver.runner import DevserverHandle, arunning_devserver
from tests.integration.conftest import StackNats, connector_running
from tests.integration.voice_peers import (
    MeshPeer,
    PcmPeer,
    band_share,
    cli_voice,
    mean_abs,
    media_process,
    read_wav,
    tone,
    wait_until,
    write_wav,
)

pytestmark = pytest.mark.timeout(180)
CHANNEL = "vc_general"


@dataclass
class VoiceStack:
    nats: StackNats
    devserver: DevserverHandle
    media: ManagedProcess
    alice_uid: str
    tmp: Path

    @property
    def home(self) -> Path:
        return self.nats.home.layout.root

    @property
    def base(self) -> str:
        return self.devserver.base_url

    async def status(self, member: str = "alice") -> VoiceStatus:
        cf = ConnectionFile.read(self.nats.home.layout.connection_file(member))
        async with MemberClient.connect(cf) as client:
            result: VoiceStatus = await client.call(SERVICE, "status", Empty(), VoiceStatus, timeout=5)
            return result

    async def admin(self, path: str, body: dict[str, object]) -> dict[str, object]:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(f"{self.base}/_admin/{path}", json=body)
            resp.raise_for_status()
            doc: dict[str, object] = resp.json()
            return doc


@pytest.fixture
async def voice_stack(stack_nats: StackNats, tmp_path: Path) -> AsyncIterator[VoiceStack]:
    await asyncio.to_thread(add_member, stack_nats.home, "alice", out=lambda _: None)
    await asyncio.to_thread(add_member, stack_nats.home, "bob", out=lambda _: None)
    async with arunning_devserver(seed="public", admin=True) as devserver, connector_running(stack_nats):
        cf = ConnectionFile.read(stack_nats.home.layout.connection_file("alice"))
        async with MemberClient.connect(cf) as client:
            await client.join(devserver.base_url, "srv_harbor")
        record = ServerStore(stack_nats.home.layout.registry_db).get("alice", "srv_harbor")
        media = media_process(
            stack_nats.home.layout.root,
            stack_nats.url,
            stack_nats.service_password,
            tmp_path / "media.log",
            OPENCHAT_MEDIA_CLIENT_GRACE_S="4",
        )
        await asyncio.to_thread(media.start)
        try:
            yield VoiceStack(stack_nats, devserver, media, record.user_uid, tmp_path)
        finally:
            await asyncio.to_thread(media.stop)


async def _heard_tone(peer: MeshPeer, uid: str, hz: float, share: float = 0.5) -> None:
    def ok() -> bool:
        pid = peer.pid_of(uid)
        return pid is not None and pid in peer.heard and band_share(peer.heard[pid].last(1.0), hz) > share

    await wait_until(ok, 30, f"{peer.uid} hearing {hz} Hz from {uid}")


async def test_member_and_peers_hear_each_other(voice_stack: VoiceStack) -> None:
    stack = voice_stack
    a, pcm = MeshPeer("uid_peer_a", 440), PcmPeer("uid_pcm", 880)
    await a.join(stack.base, CHANNEL)  # before the member: the media service offers to it
    await pcm.join(stack.base, CHANNEL)
    play = write_wav(stack.tmp / "tone660.wav", tone(660, 2.0))
    rec = stack.tmp / "heard.wav"
    b = MeshPeer("uid_peer_b", 550)
    try:
        async with cli_voice(
            stack.home, "alice", "join", "srv_harbor", CHANNEL, "--play", str(play), "--record", str(rec)
        ) as proc:
            await _heard_tone(a, stack.alice_uid, 660)
            await b.join(stack.base, CHANNEL)  # after the member: it offers, the media service answers
            await _heard_tone(b, stack.alice_uid, 660)

            def pcm_got_member() -> bool:
                pid = a.pid_of(stack.alice_uid)
                return any(
                    p == pid and band_share(np.frombuffer(d, "<i2").astype(float), 660) > 0.5
                    for p, _, _, d in pcm.files
                )

            await wait_until(pcm_got_member, 30, "the PCM peer reconstructing the member's audio")
            status = await stack.status()
            assert status.state == "active"
            assert {p.user_uid: p.transport for p in status.participants} == {
                "uid_peer_a": "webrtc",
                "uid_pcm": "pcm",
                "uid_peer_b": "webrtc",
            }
            await asyncio.sleep(2.5)  # record 2.5 s of the full mix (media time, not an event)
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        assert "voice: active" in text and "participant joined: " in text and "voice: left" in text
        heard = read_wav(rec)[-2 * 48_000 :]
        shares = {hz: band_share(heard, hz) for hz in (440, 550, 660, 880)}
        assert shares[440] > 0.05 and shares[550] > 0.05 and shares[880] > 0.05, shares
        assert shares[660] < 0.01, shares  # never the member's own voice
        names = [f for _, _, f, _ in pcm.files]
        streams = {s for p, s, _, _ in pcm.files}
        assert len(streams) == len(pcm.files) and all(n.endswith(".pcm") for n in names)
    finally:
        for peer in (a, b, pcm):
            await peer.close()


async def test_mute_and_deafen(voice_stack: VoiceStack) -> None:
    stack = voice_stack
    a = MeshPeer("uid_peer_a", 440)
    await a.join(stack.base, CHANNEL)
    play = write_wav(stack.tmp / "tone660.wav", tone(660, 2.0))
    rec = stack.tmp / "heard.wav"
    try:
        async with cli_voice(
            stack.home, "alice", "join", "srv_harbor", CHANNEL, "--play", str(play), "--record", str(rec)
        ) as proc:
            await _heard_tone(a, stack.alice_uid, 660)
            pid = a.pid_of(stack.alice_uid)
            assert pid is not None
            code, out = await _cli(stack, "mute")
            assert code == 0 and "mic muted" in out
            await wait_until(
                lambda: any(s.get("mic_muted") is True for s in a.media_states), 10, "mic_muted: true"
            )
            await wait_until(
                lambda: mean_abs(a.heard[pid].last(0.5)) < 0.002, 10, "the member's level dropping"
            )
            code, _ = await _cli(stack, "deafen")
            assert code == 0
            await wait_until(
                lambda: any(s.get("deafened") is True for s in a.media_states), 10, "deafened: true"
            )
            status = await stack.status()
            assert status.prefs.deafened and status.prefs.mic_muted
            await asyncio.sleep(1.5)  # record 1.5 s while deafened (media time)
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
        heard = read_wav(rec)
        assert mean_abs(heard[-48_000:]) < 0.001  # deafened: silence
        assert band_share(heard, 440) > 0.2  # ...after having heard the peer
    finally:
        await a.close()


async def _cli(stack: VoiceStack, *args: str) -> tuple[int, str]:
    async with cli_voice(stack.home, "alice", *args) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode() + err.decode()


async def test_status_json_and_leave(voice_stack: VoiceStack) -> None:
    stack = voice_stack
    code, out = await _cli(stack, "status", "--json")
    assert code == 0 and json.loads(out)["state"] == "idle"
    code, out = await _cli(stack, "leave")
    assert code == 0
