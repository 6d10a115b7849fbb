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

import numpy as np
import pytest

from tests.integration.voice_peers import (
    MeshPeer,
    PcmPeer,
    VoiceStack,
    band_share,
    cli_voice,
    heard_tone,
    mean_abs,
    read_wav,
    run_cli,
    tone,
    voice_stack,  # noqa: F401 - the fixture
    wait_until,
    write_wav,
)

pytestmark = pytest.mark.timeout(180)
CHANNEL = "vc_general"


@pytest.mark.parametrize(
    "voice_stack", [{}, {"mode": "public-defaults"}], indirect=True, ids=["devserver", "public-defaults"]
)
async def test_member_and_peers_hear_each_other(voice_stack: VoiceStack) -> None:  # noqa: F811 - the imported fixture
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
            await heard_tone(a, stack.alice_uid, 660)
            await b.join(stack.base, CHANNEL)  # after the member: it offers, the media service answers
            await heard_tone(b, stack.alice_uid, 660)

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
            # display names from the server's profiles (the devserver creates "User " + uid[4:14])
            assert [p.display_name for p in status.participants] == ["User peer_a", "User pcm", "User peer_b"]
            await asyncio.sleep(2.5)  # record 2.5 s of the full mix (media time, not an event)
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        assert "voice: active" in text and "participant joined: " in text and "User peer_b" in text
        assert "voice: left" in text
        assert "speaking: you on" in text  # the member's own speaking (the 660 Hz tone)
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


async def test_mute_and_deafen(voice_stack: VoiceStack) -> None:  # noqa: F811 - the imported fixture
    stack = voice_stack
    a = MeshPeer("uid_peer_a", 440)
    await a.join(stack.base, CHANNEL)
    play = write_wav(stack.tmp / "tone660.wav", tone(660, 2.0))
    rec = stack.tmp / "heard.wav"
    try:
        async with cli_voice(
            stack.home, "alice", "join", "srv_harbor", CHANNEL, "--play", str(play), "--record", str(rec)
        ) as proc:
            await heard_tone(a, stack.alice_uid, 660)
            pid = a.pid_of(stack.alice_uid)
            assert pid is not None
            code, out = await run_cli(stack.home, "alice", "mute")
            assert code == 0 and "mic muted" in out
            await wait_until(
                lambda: any(s.get("mic_muted") is True for s in a.media_states), 10, "mic_muted: true"
            )
            await wait_until(
                lambda: mean_abs(a.heard[pid].last(0.5)) < 0.002, 10, "the member's level dropping"
            )
            code, _ = await run_cli(stack.home, "alice", "deafen")
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


async def test_status_json_and_leave(voice_stack: VoiceStack) -> None:  # noqa: F811 - the imported fixture
    stack = voice_stack
    code, out = await run_cli(stack.home, "alice", "status", "--json")
    assert code == 0 and json.loads(out)["state"] == "idle"
    code, out = await run_cli(stack.home, "alice", "leave")
    assert code == 0
