"""Voice faults, policy, speaking and isolation with real processes (issue 12 acceptance).

Same stack as test_voice_acceptance: NATS with member credentials, the connector, the media service
as a process, ``openchat voice join`` as a process, the devserver's signaling and aiortc peers.
"""

from __future__ import annotations

import asyncio
import signal
import time

import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from services.cli.chat import MemberClient
from services.core.contracts import commands as cmd
from services.core.contracts.media import (
    KICKED_MESSAGE,
    BridgeKeepaliveArgs,
    VoiceJoinArgs,
)
from tests.integration.voice_peers import (
    MeshPeer,
    TricklePeer,
    VoiceStack,
    band_share,
    cli_voice,
    heard_tone,
    mean_abs,
    run_cli,
    tone,
    voice_stack,  # noqa: F401 - the fixture
    wait_until,
    write_wav,
)

pytestmark = pytest.mark.timeout(180)
CHANNEL = "vc_general"


async def test_input_volume_is_a_gain_on_the_transmitted_audio(voice_stack: VoiceStack) -> None:  # noqa: F811
    stack = voice_stack
    a = MeshPeer("uid_peer_a", 440)
    await a.join(stack.base, CHANNEL)
    play = write_wav(stack.tmp / "tone660.wav", tone(660, 2.0, amplitude=0.2))
    try:
        async with cli_voice(stack.home, "alice", "join", "srv_harbor", CHANNEL, "--play", str(play)) as proc:
            pid = await heard_tone(a, stack.alice_uid, 660)
            await asyncio.sleep(1.0)  # one second of the full level (media time)
            full = mean_abs(a.heard[pid].last(1.0))
            code, out = await run_cli(stack.home, "alice", "volume", "50")
            assert code == 0 and "input volume 50 %" in out
            changed = time.monotonic()
            await wait_until(lambda: time.monotonic() - changed > 1.5, 5, "1.5 s at the new level")
            half = mean_abs(a.heard[pid].last(1.0))
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.communicate(), 30)
        assert 0.4 < half / full < 0.6, (full, half)  # about -6 dB
    finally:
        await a.close()


async def test_bad_and_foreign_signaling_frames_are_skipped(voice_stack: VoiceStack) -> None:  # noqa: F811
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
            bad = [
                # an untargeted SFU-style offer (the Electron client's): ignored
                {
                    "type": "rtc.offer.publish",
                    "payload": {"type": "offer", "sdp": "v=0", "from_participant_id": "x"},
                },
                # an offer for somebody else
                {"type": "rtc.offer.subscribe", "payload": {"sdp": "v=0", "target_participant_id": "nobody"}},
                # PCM frames that break every rule: wrong rate, oversized chunk, not base64
                {
                    "type": "rtc.media.state",
                    "payload": {
                        "participant_id": a.sig.participant_id if a.sig else "",
                        "stream_kind": "audio_pcm_s16le_48k_mono",
                        "stream_id": "s",
                        "seq": 0,
                        "chunk_b64": "%%%",
                        "sample_rate_hz": 8000,
                    },
                },
                {
                    "type": "rtc.ice.candidate",
                    "payload": {"candidate": "garbage", "from_participant_id": "x"},
                },
                {"type": "rtc.participant.joined", "payload": {"participant": "not an object"}},
                {"type": "rtc.error", "payload": {"code": "rtc_unknown_event", "message": "x" * 5000}},
            ]
            for frame in bad:
                await stack.admin("rtc/inject", {**frame, "user_uid": stack.alice_uid})
            await stack.admin(
                "rtc/inject", {"type": "rtc.pong", "payload": [1, 2], "user_uid": stack.alice_uid}
            )
            heard_from = len(a.heard[pid].chunks)
            await wait_until(lambda: len(a.heard[pid].chunks) > heard_from + 50, 10, "audio still flowing")
            assert band_share(a.heard[pid].last(1.0), 660) > 0.5
            status = await stack.status()
            assert status.state == "active" and [p.user_uid for p in status.participants] == ["uid_peer_a"]
            assert "error" not in states(events)
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
    finally:
        await a.close()


async def test_joining_another_channel_leaves_the_first(voice_stack: VoiceStack) -> None:  # noqa: F811
    stack = voice_stack
    a, b = MeshPeer("uid_peer_a", 440), MeshPeer("uid_peer_b", 550)
    await a.join(stack.base, CHANNEL)
    await b.join(stack.base, "vc_party")
    play = write_wav(stack.tmp / "tone660.wav", tone(660, 2.0))
    try:
        async with cli_voice(stack.home, "alice", "join", "srv_harbor", CHANNEL, "--play", str(play)) as proc:
            first = await heard_tone(a, stack.alice_uid, 660)
            async with MemberClient.connect(stack.connection()) as client:
                status = await client.call(
                    cmd.VOICE_JOIN, VoiceJoinArgs(server_id="srv_harbor", channel_id="vc_party")
                )
            assert status.state == "active" and status.channel_id == "vc_party"
            await wait_until(lambda: first in a.left, 10, "the first channel left")
            assert b.pid_of(stack.alice_uid) is not None  # in the other room now
            assert a.pid_of(stack.alice_uid) is None
            _, err = await asyncio.wait_for(proc.communicate(), 30)  # this client's call was replaced
            assert proc.returncode == 1 and "the call was left" in err.decode()
    finally:
        await a.close()
        await b.close()


async def test_trickled_ice_candidates_are_applied(voice_stack: VoiceStack) -> None:  # noqa: F811
    stack = voice_stack
    play = write_wav(stack.tmp / "tone660.wav", tone(660, 2.0))
    t = TricklePeer("uid_browser", 440)
    try:
        async with (
            stack.voice_events() as events,
            cli_voice(stack.home, "alice", "join", "srv_harbor", CHANNEL, "--play", str(play)) as proc,
        ):
            await wait_until(lambda: "active" in states(events), 30, "the member in the call")
            await t.join(stack.base, CHANNEL)  # newcomer: offers without candidates, then trickles them
            await heard_tone(t, stack.alice_uid, 660)
            log = stack.tmp / "media.log"
            await wait_until(
                lambda: "peer connected with trickled ICE" in log.read_text(), 10, "the log line"
            )
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
    finally:
        await t.close()


def states(events: list[tuple[float, dict[str, object]]]) -> list[str]:
    out: list[str] = []
    for _, doc in events:
        payload = doc.get("payload")
        if doc.get("type") == "voice.state" and isinstance(payload, dict):
            state = str(payload.get("state"))
            if not out or out[-1] != state:
                out.append(state)
    return out


async def test_signaling_drop_reconnects_and_audio_flows_again(voice_stack: VoiceStack) -> None:  # noqa: F811
    stack = voice_stack
    a = MeshPeer("uid_peer_a", 440)
    await a.join(stack.base, CHANNEL)
    play = write_wav(stack.tmp / "tone660.wav", tone(660, 2.0))
    try:
        async with (
            stack.voice_events() as events,
            cli_voice(stack.home, "alice", "join", "srv_harbor", CHANNEL, "--play", str(play)) as proc,
        ):
            first = await heard_tone(a, stack.alice_uid, 660)
            dropped = await stack.admin("rtc/drop", {"user_uid": stack.alice_uid})
            assert dropped == {"dropped": 1}
            await wait_until(lambda: first in a.left, 10, "the peer seeing the member leave")
            again = await heard_tone(a, stack.alice_uid, 660)  # a new participant id: a full re-join
            assert again != first
            seen = states(events)
            assert "reconnecting" in seen and seen[-1] == "active", seen
            assert seen.index("reconnecting") > seen.index("active")
            assert proc.returncode is None  # the client rode through it
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
    finally:
        await a.close()


async def test_kicked_is_an_error_without_rejoin(voice_stack: VoiceStack) -> None:  # noqa: F811
    stack = voice_stack
    a = MeshPeer("uid_peer_a", 440)
    await a.join(stack.base, CHANNEL)
    try:
        async with (
            stack.voice_events() as events,
            cli_voice(stack.home, "alice", "join", "srv_harbor", CHANNEL) as proc,
        ):
            pid = await _member_joined(a, stack)
            injected = await stack.admin("rtc/inject", {"type": "rtc.kicked", "user_uid": stack.alice_uid})
            assert injected == {"participants": 1}
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 1
            assert KICKED_MESSAGE in err.decode()
            await wait_until(lambda: pid in a.left, 10, "the member leaving the room")
            seen = states(events)
            assert seen[-2:] == ["active", "error"] or seen[-3:] == ["active", "error", "idle"], seen
            reasons = [d["payload"].get("reason") for _, d in events if d.get("type") == "voice.state"]
            assert KICKED_MESSAGE in reasons
        assert a.pid_of(stack.alice_uid) is None  # no rejoin
    finally:
        await a.close()


async def _member_joined(peer: MeshPeer, stack: VoiceStack) -> str:
    await wait_until(lambda: peer.pid_of(stack.alice_uid) is not None, 30, "the member in the room")
    pid = peer.pid_of(stack.alice_uid)
    assert pid is not None
    return pid


@pytest.mark.parametrize("voice_stack", [{"limits": {"max_call_participants": 2}}], indirect=True)
async def test_full_room_is_refused_with_its_message(voice_stack: VoiceStack) -> None:  # noqa: F811
    stack = voice_stack
    a, b = MeshPeer("uid_peer_a", 440), MeshPeer("uid_peer_b", 550)
    await a.join(stack.base, CHANNEL)
    await b.join(stack.base, CHANNEL)
    try:
        code, out = await run_cli(stack.home, "alice", "join", "srv_harbor", CHANNEL, "--seconds", "5")
        assert code == 2
        assert "error: voice join failed: Voice channel is full (2 participants at most)" in out
        assert a.pid_of(stack.alice_uid) is None  # refused before anyone was offered anything
    finally:
        await a.close()
        await b.close()


async def test_no_media_service_is_a_clear_error(voice_stack: VoiceStack) -> None:  # noqa: F811
    stack = voice_stack
    await asyncio.to_thread(stack.media.stop)
    code, out = await run_cli(stack.home, "alice", "join", "srv_harbor", CHANNEL, "--seconds", "1")
    assert code == 3 and "no media service answers" in out


async def test_media_service_restart_resumes_the_call(voice_stack: VoiceStack) -> None:  # noqa: F811
    stack = voice_stack
    a = MeshPeer("uid_peer_a", 440)
    await a.join(stack.base, CHANNEL)
    play = write_wav(stack.tmp / "tone660.wav", tone(660, 2.0))
    try:
        async with cli_voice(stack.home, "alice", "join", "srv_harbor", CHANNEL, "--play", str(play)) as proc:
            first = await heard_tone(a, stack.alice_uid, 660)
            await asyncio.to_thread(stack.media.kill)
            await wait_until(lambda: first in a.left, 10, "the killed service's socket dropping")
            started = time.monotonic()
            await asyncio.to_thread(stack.media.start)
            again = await heard_tone(a, stack.alice_uid, 660, timeout=30)
            assert again != first
            assert time.monotonic() - started < 20
            proc.send_signal(signal.SIGINT)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
        assert "bridge lost; reconnecting" in out.decode()
    finally:
        await a.close()


async def test_vanished_client_leaves_after_the_grace_period(voice_stack: VoiceStack) -> None:  # noqa: F811
    stack = voice_stack  # OPENCHAT_MEDIA_CLIENT_GRACE_S=4 in the fixture
    a = MeshPeer("uid_peer_a", 440)
    await a.join(stack.base, CHANNEL)
    try:
        async with cli_voice(stack.home, "alice", "join", "srv_harbor", CHANNEL) as proc:
            pid = await _member_joined(a, stack)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            killed = time.monotonic()
            await wait_until(lambda: pid in a.left, 15, "the media service leaving the call")
            assert 3.0 < time.monotonic() - killed < 12
        assert (await stack.status()).state == "idle"
    finally:
        await a.close()


async def test_speaking_events_follow_the_tone(voice_stack: VoiceStack) -> None:  # noqa: F811
    stack = voice_stack
    a = MeshPeer("uid_peer_a", 440)
    a.tone.sounding = False
    await a.join(stack.base, CHANNEL)
    try:
        async with (
            stack.voice_events() as events,
            cli_voice(stack.home, "alice", "join", "srv_harbor", CHANNEL),
        ):

            def speaking(on: bool, since: float) -> float | None:
                for t, doc in events:
                    p = doc.get("payload")
                    if (
                        t >= since
                        and doc.get("type") == "voice.speaking"
                        and isinstance(p, dict)
                        and p.get("participant_id") == a.sig.participant_id  # type: ignore[union-attr]
                        and p.get("speaking") is on
                    ):
                        return t
                return None

            def transport_up() -> bool:
                for _, doc in reversed(events):
                    p = doc.get("payload")
                    if doc.get("type") == "voice.state" and isinstance(p, dict):
                        return any(x.get("transport") == "webrtc" for x in p.get("participants", []))
                return False

            await wait_until(transport_up, 30, "the peer connected over WebRTC")
            await asyncio.sleep(1.0)  # let the jitter buffers settle on silence (media time)
            assert speaking(True, 0) is None  # silence is not speech
            start = time.monotonic()
            a.tone.sounding = True
            await wait_until(lambda: speaking(True, start) is not None, 5, "speaking on")
            on_after = (speaking(True, start) or 0) - start
            stop = time.monotonic()
            a.tone.sounding = False
            await wait_until(lambda: speaking(False, stop) is not None, 5, "speaking off")
            off_after = (speaking(False, stop) or 0) - stop
        # The detector itself is exact to the spec (unit test: on within one 180 ms window, off
        # 450 to 630 ms after the last loud window); end to end adds encode, network, decode and the
        # scheduling of a shared 2-core machine, so the bounds here are looser.
        assert on_after < 0.6, on_after  # "within about 0.2 s"
        assert 0.35 < off_after < 1.5, off_after  # "about 0.5 s after it stops"
    finally:
        await a.close()


async def test_bob_cannot_drive_or_watch_alices_voice(voice_stack: VoiceStack) -> None:  # noqa: F811
    stack = voice_stack
    a = MeshPeer("uid_peer_a", 440)
    await a.join(stack.base, CHANNEL)
    bob_cf = stack.connection("bob")
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    bob = await nats.connect(
        bob_cf.nats_url,
        nkeys_seed_str=bob_cf.nkey_seed,
        inbox_prefix=bob_cf.inbox_prefix.encode(),
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        async with (
            stack.voice_events("alice") as alice_events,
            cli_voice(stack.home, "alice", "join", "srv_harbor", CHANNEL),
        ):
            await _member_joined(a, stack)
            peeked: list[bytes] = []

            async def peek(msg: Msg) -> None:
                peeked.append(msg.data)

            await bob.subscribe("oc.alice.evt.>", cb=peek)
            body = BridgeKeepaliveArgs(client_id="x").model_dump_json()
            for verb in ("bridge_offer", "leave", "prefs", "status"):
                with pytest.raises((NoRespondersError, NatsTimeoutError)):
                    await bob.request(f"oc.alice.cmd.media.{verb}", body.encode(), timeout=1)
            await wait_until(
                lambda: any("permissions violation" in str(e).lower() for e in errors), 5, "violation"
            )
            # alice's call goes on and produces events bob never sees
            await stack.admin("rtc/drop", {"user_uid": stack.alice_uid})
            await wait_until(lambda: len(alice_events) > 2, 15, "alice's voice events")
            bob_status = await stack.status("bob")
            assert bob_status.state == "idle" and bob_status.participants == []
        assert peeked == []
    finally:
        await bob.close()
        await a.close()
