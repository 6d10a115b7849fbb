"""Pure voice logic: call state machine (8.2, D12), preferences (8.3, D11), speaking (8.5), PCM order."""

from __future__ import annotations

import pytest

from services.core.contracts.media import VoicePrefs, VoicePrefsArgs
from services.core.contracts.wire import ConnectionPolicy, IceServer
from services.core.rtc import PcmFrame, SignalingFrameError, parse_frame, usable_ice_servers
from services.media.domain import (
    CallMachine,
    CallPolicy,
    PcmStreamOrder,
    Reconnect,
    SpeakingDetector,
    Teardown,
    apply_prefs,
    input_gain,
    room_full,
)


def state_of(m: CallMachine) -> str:
    return m.state  # (a function: no literal narrowing between transitions)


def test_default_backoff_is_1_2_4_8_then_8() -> None:
    policy = CallPolicy()
    assert [policy.delay_s(n) for n in range(1, 8)] == [1, 2, 4, 8, 8, 8, 8]


def test_server_policy_overrides_backoff_and_timeouts() -> None:
    policy = CallPolicy.from_server(
        ConnectionPolicy(
            join_timeout_ms=3000,
            answer_timeout_ms=2500,
            ice_restart_enabled=True,
            reconnect_backoff_ms=[250, 500, 1000, 2000, 5000],
        ),
        max_participants=3,
    )
    assert [policy.delay_s(n) for n in range(1, 8)] == [0.25, 0.5, 1, 2, 5, 5, 5]
    assert policy.join_timeout_s == 3 and policy.answer_timeout_s == 2.5 and policy.ice_restart
    assert policy.max_participants == 3
    assert CallPolicy.from_server(ConnectionPolicy(reconnect_backoff_ms=[]), None).delay_s(3) == 4


def test_room_full_counts_the_joiner() -> None:
    assert room_full(2, 3) is False
    assert room_full(3, 3) is True
    assert room_full(500, None) is False


def test_first_join_failure_is_an_error_without_retry() -> None:
    m = CallMachine()
    m.handle("join_requested")
    assert state_of(m) == "joining"
    effects = m.handle("join_failed", "ticket refused")
    assert state_of(m) == "error" and m.reason == "ticket refused"
    assert not any(isinstance(e, Reconnect) for e in effects)


def test_signal_loss_reconnects_with_the_ladder_and_recovers() -> None:
    m = CallMachine()
    m.handle("join_requested")
    m.handle("join_succeeded")
    assert state_of(m) == "active"
    effects = m.handle("signal_disconnected", "socket closed")
    assert state_of(m) == "reconnecting" and Reconnect(1, 1.0) in effects and Teardown() in effects
    m.handle("join_requested")  # the retry (keeps the attempt count)
    effects = m.handle("join_failed", "ticket refused")  # a failed *re*-join keeps retrying
    assert state_of(m) == "reconnecting" and Reconnect(2, 2.0) in effects
    m.handle("join_requested")
    m.handle("join_succeeded")
    assert state_of(m) == "active" and m.attempt == 0


def test_kick_is_an_error_and_no_rejoin() -> None:
    m = CallMachine()
    m.handle("join_requested")
    m.handle("join_succeeded")
    effects = m.handle("kicked", "Removed from voice channel by moderation action.")
    assert state_of(m) == "error" and effects == [Teardown()]
    assert m.handle("signal_disconnected") == [] and state_of(m) == "error"


def test_left_goes_idle_and_idle_ignores_disconnects() -> None:
    m = CallMachine()
    m.handle("join_requested")
    m.handle("join_succeeded")
    m.handle("left")
    assert state_of(m) == "idle" and not m.wants_call
    assert m.handle("signal_disconnected") == [] and state_of(m) == "idle"


def test_disconnect_during_first_join_is_an_error() -> None:
    m = CallMachine()
    m.handle("join_requested")
    m.handle("signal_disconnected", "socket closed before rtc.joined")
    assert state_of(m) == "error"


def test_new_join_after_error_starts_fresh() -> None:
    m = CallMachine()
    m.handle("join_requested")
    m.handle("join_failed", "x")
    m.handle("join_requested")
    assert state_of(m) == "joining" and m.attempt == 0 and not m.was_active


def test_deafen_forces_mute_and_unmute_undeafens() -> None:
    prefs = apply_prefs(VoicePrefs(), VoicePrefsArgs(server_id="s", deafened=True))
    assert prefs.mic_muted and prefs.deafened
    prefs = apply_prefs(prefs, VoicePrefsArgs(server_id="s", mic_muted=False))
    assert not prefs.mic_muted and not prefs.deafened
    prefs = apply_prefs(prefs, VoicePrefsArgs(server_id="s", mic_muted=True))
    assert prefs.mic_muted and not prefs.deafened
    prefs = apply_prefs(prefs, VoicePrefsArgs(server_id="s", deafened=True))
    prefs = apply_prefs(prefs, VoicePrefsArgs(server_id="s", deafened=False))
    assert not prefs.deafened and not prefs.mic_muted


def test_input_volume_is_the_transmit_gain() -> None:
    assert input_gain(VoicePrefs(input_volume=50)) == 0.5
    assert input_gain(VoicePrefs(input_volume=200)) == 2.0
    assert input_gain(VoicePrefs(mic_muted=True, input_volume=200)) == 0.0
    assert apply_prefs(VoicePrefs(), VoicePrefsArgs(server_id="s", input_volume=150)).input_volume == 150


def _feed(det: SpeakingDetector, level: float, seconds: float, t0: float) -> list[tuple[float, bool]]:
    out: list[tuple[float, bool]] = []
    t = t0
    for _ in range(round(seconds / 0.02)):
        t += 0.02
        change = det.feed(level * 960, 960, t)
        if change is not None:
            out.append((round(t, 2), change))
    return out


def test_speaking_turns_on_within_a_window_and_off_after_the_hold() -> None:
    det = SpeakingDetector()
    assert _feed(det, 0.001, 1.0, 0.0) == []
    on = _feed(det, 0.2, 1.0, 1.0)
    assert on and on[0][1] is True and on[0][0] - 1.0 <= 0.2 + 1e-9
    off = _feed(det, 0.0, 1.5, 2.0)
    assert len(off) == 1 and off[0][1] is False
    assert 0.45 <= off[0][0] - 2.0 <= 0.45 + 0.18 + 0.02 + 1e-9


def test_speaking_threshold_is_0_018() -> None:
    det = SpeakingDetector()
    assert _feed(det, 0.017, 0.5, 0.0) == []
    assert _feed(det, 0.019, 0.5, 0.5)[0][1] is True


def test_speaking_tick_expires_a_stopped_source() -> None:
    det = SpeakingDetector()
    _feed(det, 0.3, 0.4, 0.0)
    assert det.speaking
    assert det.tick(0.5) is None
    assert det.tick(1.0) is False


def test_pcm_order_releases_in_seq_order_and_skips_gaps() -> None:
    order = PcmStreamOrder(window=3)
    assert order.push("a", 1, b"1", False) == []
    assert order.push("a", 0, b"0", False) == [b"0", b"1"]
    assert order.push("a", 0, b"0", False) == []  # duplicate
    assert order.push("a", 3, b"3", False) == []  # 2 is missing
    assert order.push("a", 4, b"4", False) == []
    assert order.push("a", 5, b"5", False) == []
    assert order.push("a", 6, b"6", True) == [b"3", b"4", b"5", b"6"]  # gave up on 2
    assert order.push("a", 2, b"2", False) == []  # the finished stream's late frame
    assert order.push("b", 0, b"b0", False) == [b"b0"]
    assert order.dropped == 2


def test_pcm_order_is_bounded() -> None:
    order = PcmStreamOrder(window=5)
    for seq in range(1, 100):
        order.push("a", seq, b"x", False)
        assert len(order.held) <= 5


def test_ice_placeholders_are_dropped() -> None:
    servers = [
        IceServer(urls=["stun:stun.l.google.com:19302"]),
        IceServer(urls=["turns:turn.example.invalid:5349"], username="u", credential="c"),
    ]
    assert [s.urls for s in usable_ice_servers(servers)] == [["stun:stun.l.google.com:19302"]]


def test_bad_signaling_frames_are_refused() -> None:
    for bad in ("not json", "[1,2]", '{"payload": {}}', "x" * (1 << 21)):
        with pytest.raises(SignalingFrameError):
            parse_frame(bad)
    env = parse_frame('{"type":"rtc.pong","payload":[1]}')
    assert env.type == "rtc.pong" and env.payload == {}


def test_pcm_frame_validation() -> None:
    good = {
        "stream_id": "s",
        "stream_kind": "audio_pcm_s16le_48k_mono",
        "seq": 0,
        "chunk_b64": "AAAAAA==",
        "sample_rate_hz": 48000,
        "channels": 1,
    }
    assert PcmFrame.model_validate(good).samples() == bytes(4)
    with pytest.raises(ValueError):
        PcmFrame.model_validate({**good, "sample_rate_hz": 44100})
    with pytest.raises(ValueError):
        PcmFrame.model_validate({**good, "chunk_b64": "A" * 4000}).samples()


def test_mono_converter_rechunks_and_downmixes() -> None:
    import numpy as np
    from av import AudioFrame

    from services.core.audio import MonoConverter

    conv = MonoConverter()
    left = np.arange(1500, dtype=np.int16)
    stereo = np.stack([left, left + 2], axis=1).reshape(1, -1)  # packed s16 stereo
    frame = AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
    frame.sample_rate = 48_000
    out = conv.push(frame)
    assert len(out) == 1 and len(out[0]) == 960
    assert list(out[0][:3]) == [1, 2, 3]  # (l + r) / 2
    out = conv.push(frame)  # 540 pending + 1500 new = 2040 → two frames, 120 pending
    assert [len(o) for o in out] == [960, 960] and int(out[0][0]) == 961
    slow = MonoConverter()  # another rate goes through the resampler
    mono = AudioFrame.from_ndarray(np.zeros((1, 441), dtype=np.int16), format="s16", layout="mono")
    mono.sample_rate = 44_100
    total = sum(len(o) for _ in range(10) for o in slow.push(mono))
    assert 3 * 960 <= total <= 5 * 960


def test_peer_failure_restarts_ice_once_before_a_full_rejoin() -> None:
    from services.media.domain import peer_failure_action

    assert peer_failure_action(ice_restart_enabled=True, already_restarted=False) == "restart"
    assert peer_failure_action(ice_restart_enabled=True, already_restarted=True) == "rejoin"
    assert peer_failure_action(ice_restart_enabled=False, already_restarted=False) == "rejoin"


def test_rtc_errors_are_fatal_unless_benign_or_retryable() -> None:
    from services.media.domain import rtc_error_action, rtc_error_reason

    # answers to one of our own frames: the call goes on
    assert rtc_error_action("rtc_unknown_event", "unsupported signaling event type", False) == "ignore"
    assert rtc_error_action("rtc_target_not_found", "target participant is not available", True) == "ignore"
    # a retryable "connection closed" negotiation error: resync (a full re-join)
    assert rtc_error_action("rtc_negotiation_failed", "Connection closed", True) == "resync"
    # fatal: the documented denials and any code not known as benign, not retryable
    assert rtc_error_action("rtc_join_denied", "join ticket expired", False) == "fatal"
    assert rtc_error_action("rtc_media_denied", "speak not allowed", False) == "fatal"
    assert rtc_error_action("rtc_something_new", "", False) == "fatal"
    reason = rtc_error_reason("rtc_media_denied", "speak\nnot   allowed" + "x" * 500)
    assert reason.startswith("voice error from the server: speak not allowed") and len(reason) < 300
    assert reason.endswith("(rtc_media_denied)")
