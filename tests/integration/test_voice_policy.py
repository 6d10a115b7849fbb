"""Voice: the ICE restart of D12 before a full re-join, and what ``rtc.error`` does to a call
(features 8.2), with real processes (the stack of test_voice_acceptance: NATS with member
credentials, the connector, the media service as a process, ``openchat voice join`` as a process,
the devserver's signaling, whose ``connection_policy`` has ``ice_restart_enabled: true`` and a
10 s answer timeout, and aiortc peers).
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.integration.test_voice_faults import states
from tests.integration.voice_peers import (
    MeshPeer,
    VoiceStack,
    cli_voice,
    heard_tone,
    tone,
    voice_stack,  # noqa: F401 - the fixture
    wait_until,
    write_wav,
)

pytestmark = pytest.mark.timeout(240)
CHANNEL = "vc_general"
# consent checks every ~0.5 s: a broken path is declared failed after ~3-6 s (default ~30 s)
FAST_CONSENT = {"media_env": {"OPENCHAT_MEDIA_ICE_CONSENT_INTERVAL_S": "0.5"}}


def quiet_for(peer: MeshPeer, pid: str, seconds: float) -> bool:
    """Nothing (or only near-silence) heard from ``pid`` for ``seconds``."""
    recent = peer.heard[pid].last(seconds)
    return len(recent) == 0


@pytest.mark.parametrize("voice_stack", [FAST_CONSENT], indirect=True)
async def test_ice_restart_comes_before_a_full_rejoin(voice_stack: VoiceStack) -> None:  # noqa: F811
    stack = voice_stack
    a = MeshPeer("uid_peer_a", 440)
    await a.join(stack.base, CHANNEL)
    play = write_wav(stack.tmp / "tone660.wav", tone(660, 2.0))
    try:
        async with (
            stack.voice_events() as events,
            cli_voice(stack.home, "alice", "join", "srv_harbor", CHANNEL, "--play", str(play)) as proc,
        ):
            pid = await heard_tone(a, stack.alice_uid, 660)
            first_pc = a.pcs[pid]

            # 1. the path breaks: the media service's ICE fails, it restarts ICE with that peer
            #    (a fresh offer through the relay) and the audio comes back on the same call
            assert a.vanish(pid) > 0
            await wait_until(lambda: quiet_for(a, pid, 1.0), 15, "the audio stopping")
            await wait_until(lambda: a.pcs[pid] is not first_pc, 30, "an ICE restart offer")
            await heard_tone(a, stack.alice_uid, 660, timeout=20)
            assert a.pid_of(stack.alice_uid) == pid  # the same participant: no re-join
            assert "reconnecting" not in states(events)
            status = await stack.status()
            assert status.state == "active" and status.participants[0].transport == "webrtc"

            # 2. the path breaks again and the peer answers nothing any more: the restart gets no
            #    answer within answer_timeout_ms, so the call re-joins in full (a new participant)
            a.ignore_offers = True
            second_pc = a.pcs[pid]
            assert a.vanish(pid) > 0
            t0 = time.monotonic()
            await wait_until(lambda: pid in a.left, 60, "the full re-join leaving the old session")
            await wait_until(
                lambda: a.pid_of(stack.alice_uid) not in (None, pid), 30, "the member back in the room"
            )
            assert a.pcs[pid] is second_pc  # no answer was given to the restart offer
            assert time.monotonic() - t0 > 5  # the restart was tried first (10 s answer timeout)
            await wait_until(lambda: states(events)[-1:] == ["active"], 20, "the call active again")
            assert "reconnecting" in states(events)
            reasons = [d["payload"].get("reason") for _, d in events if d.get("type") == "voice.state"]
            assert "ICE restart got no answer" in reasons
            assert proc.returncode is None
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
    finally:
        await a.close()


async def test_rtc_errors_resync_or_end_the_call(voice_stack: VoiceStack) -> None:  # noqa: F811
    """A retryable "connection closed" negotiation error → a full re-join (resync); a fatal code →
    error with the server's message, no retry; benign codes leave the call alone
    (test_voice_faults: rtc_unknown_event; here rtc_target_not_found)."""
    stack = voice_stack
    a = MeshPeer("uid_peer_a", 440)
    await a.join(stack.base, CHANNEL)
    play = write_wav(stack.tmp / "tone660.wav", tone(660, 2.0))

    async def inject(payload: dict[str, object]) -> None:
        done = await stack.admin(
            "rtc/inject", {"type": "rtc.error", "payload": payload, "user_uid": stack.alice_uid}
        )
        assert done == {"participants": 1}

    try:
        async with (
            stack.voice_events() as events,
            cli_voice(stack.home, "alice", "join", "srv_harbor", CHANNEL, "--play", str(play)) as proc,
        ):
            pid = await heard_tone(a, stack.alice_uid, 660)
            await inject(
                {
                    "code": "rtc_target_not_found",
                    "message": "target participant is not available",
                    "retryable": True,
                }
            )
            heard = len(a.heard[pid].chunks)
            await wait_until(lambda: len(a.heard[pid].chunks) > heard + 50, 10, "audio still flowing")
            assert states(events)[-1] == "active" and a.pid_of(stack.alice_uid) == pid

            await inject(
                {"code": "rtc_negotiation_failed", "message": "connection closed", "retryable": True}
            )
            await wait_until(lambda: pid in a.left, 15, "the resync leaving the old session")
            again = await heard_tone(a, stack.alice_uid, 660)
            assert again != pid
            await wait_until(lambda: states(events)[-1:] == ["active"], 20, "the call active again")
            assert "reconnecting" in states(events)

            await inject(
                {"code": "rtc_media_denied", "message": "speaking is not allowed here", "retryable": False}
            )
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 1
            assert "speaking is not allowed here (rtc_media_denied)" in err.decode()
            await wait_until(lambda: again in a.left, 10, "the member leaving the room")
            seen = states(events)
            assert "error" in seen[-2:], seen
        # an absence can only be watched for a while: a re-join would show within the first
        # backoff step (250 ms on this server) plus a join
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert a.pid_of(stack.alice_uid) is None
            await asyncio.sleep(0.1)
    finally:
        await a.close()
