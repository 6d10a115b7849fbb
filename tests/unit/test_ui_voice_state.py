"""The desktop's voice state (ui/state/voice.py): pure, no display, no bus."""

from __future__ import annotations

from services.core.contracts.media import (
    KICKED_MESSAGE,
    SELF,
    VoiceParticipant,
    VoicePrefs,
    VoiceSpeaking,
    VoiceStatus,
)
from ui.state.voice import HINT_ELSEWHERE, HINT_JOIN, VoiceState, error_message, meter_level, short_uid


def active(
    sid: str = "s1", ch: str = "v1", participants: list[VoiceParticipant] | None = None
) -> VoiceStatus:
    peer = VoiceParticipant(participant_id="p1", user_uid="uid_peer", display_name="Peer")
    return VoiceStatus(
        state="active",
        server_id=sid,
        channel_id=ch,
        participant_id="me",
        participants=[peer] if participants is None else participants,
    )


def test_click_joins_once_and_the_card_follows_the_call() -> None:
    v = VoiceState()
    assert v.card_title() is None
    assert v.click("s1", "v1") is True
    assert v.card_title() == "Connecting..." and v.stage == ("s1", "v1")
    assert v.click("s1", "v1") is False  # a join on its way: nothing more
    v.apply_status("s1", active())
    assert v.card_title() == "Voice Connected"
    assert v.sub_line("General Voice", "Harbor") == "General Voice / Harbor · 2 online"
    assert v.click("s1", "v1") is False  # clicking the connected channel does nothing
    assert v.click("s1", "v2") is True  # another channel: a join (the media service leaves the first)
    v.apply_status("s1", VoiceStatus(state="reconnecting", server_id="s1", channel_id="v1", reason="x"))
    v.apply_status("s1", VoiceStatus(state="reconnecting", server_id="s1", channel_id="v2", reason="lost"))
    assert v.card_title() == "Reconnecting..." and v.stage_chip("s1", "v2") == "Reconnecting"
    v.hang_up()
    assert v.card_title() is None and not v.in_call()


def test_idle_of_another_server_does_not_end_the_call() -> None:
    v = VoiceState()
    v.click("s1", "v1")
    v.apply_status("s1", active())
    assert v.apply_status("s2", VoiceStatus(state="idle")) is False
    assert v.state == "active" and v.call_server == "s1"
    assert v.apply_status("s1", VoiceStatus(state="idle")) is True
    assert v.state == "idle" and v.call_server is None


def test_participants_only_under_the_joined_channel_with_rings_and_flags() -> None:
    v = VoiceState()
    v.click("s1", "v1")
    v.apply_status("s1", active())
    assert v.participants("s1", "v2", "uid_me", "Me") == []
    rows = v.participants("s1", "v1", "uid_me", "Me")
    assert [(p.name, p.is_self, p.badge) for p in rows] == [("Me", True, "🛰️"), ("Peer", False, "🎧")]
    assert [p.speaking for p in rows] == [False, False]
    v.apply_speaking("s1", VoiceSpeaking(channel_id="v1", participant_id="p1", speaking=True))
    v.apply_speaking("s1", VoiceSpeaking(channel_id="v1", participant_id=SELF, speaking=True))
    assert [p.speaking for p in v.participants("s1", "v1", "uid_me", "Me")] == [True, True]
    v.apply_speaking("s2", VoiceSpeaking(channel_id="v1", participant_id="p1", speaking=False))
    assert v.participants("s1", "v1", "uid_me", "Me")[1].speaking  # another server's event: ignored
    # the member's own ring is suppressed while muted (8.5)
    v.toggle_mic("s1")
    assert not v.self_speaking() and v.participants("s1", "v1", "u", "Me")[0].mic_muted


def test_mic_and_deafen_rules() -> None:
    v = VoiceState()
    args = v.toggle_deafen("s1")  # before joining: a per-server preference
    assert args.deafened is True and v.prefs_of("s1") == VoicePrefs(mic_muted=True, deafened=True)
    args = v.toggle_mic("s1")  # mic while deafened clears both
    assert args.mic_muted is False and v.prefs_of("s1") == VoicePrefs(mic_muted=False, deafened=False)
    v.toggle_mic("s1")
    assert v.prefs_of("s1").mic_muted and not v.prefs_of("s1").deafened
    assert v.prefs_of("s2") == VoicePrefs()  # per server


def test_errors_and_hints() -> None:
    v = VoiceState()
    v.click("s1", "v1")
    v.join_failed("s1", "v1", "Server does not advertise RTC support")
    assert v.card_title() == "Voice Error" and v.card_error() == "Server does not advertise RTC support"
    v.click("s1", "v1")
    v.apply_status("s1", active())
    v.apply_status("s1", VoiceStatus(state="error", server_id="s1", channel_id="v1", reason=KICKED_MESSAGE))
    assert v.card_title() == "Voice Error" and v.card_error() == KICKED_MESSAGE
    v.hang_up()
    assert v.stage_hint("s1", "v1", "General", None) == HINT_JOIN.format(channel="General")
    v.click("s1", "v1")
    v.apply_status("s1", active())
    assert v.stage_hint("s1", "v1", "General", "General") == ""
    assert v.stage_hint("s1", "v2", "Party", "General") == HINT_ELSEWHERE.format(other="General")
    assert error_message("Voice channel is full", 4) == "This voice channel is full (4 participants)."
    assert error_message("Voice channel is full", None) == "Voice channel is full"


def test_meter_and_names() -> None:
    assert meter_level(0.0) == 0.0 and abs(meter_level(0.1) - 0.36) < 1e-9 and meter_level(0.5) == 1.0
    assert short_uid("uid_0123456789abcdef") == "uid_0123…cdef" and short_uid("uid_short") == "uid_short"


def test_a_late_answer_does_not_turn_rings_off() -> None:
    v = VoiceState()
    v.click("s1", "v1")
    v.apply_status("s1", active())
    v.apply_speaking("s1", VoiceSpeaking(channel_id="v1", participant_id="p1", speaking=True))
    v.apply_status("s1", active())  # e.g. the join's answer, computed before the edge
    assert "p1" in v.speaking
    v.apply_status("s1", active(participants=[]))  # p1 left: its ring goes with it
    assert "p1" not in v.speaking


def test_a_speaking_change_alone_only_moves_the_rings_counter() -> None:
    """The panes re-render on ``version``; a ring that turns on or off (several times a second
    in a call) moves ``rings`` only, so the panes just show or hide rings (bench_ui --voice-panes)."""
    v = VoiceState()
    v.click("s1", "v1")
    v.apply_status("s1", active())
    version, rings = v.version, v.rings
    v.apply_speaking("s1", VoiceSpeaking(channel_id="v1", participant_id="p1", speaking=True))
    assert (v.version, v.rings) == (version, rings + 1)
    v.apply_speaking("s1", VoiceSpeaking(channel_id="v1", participant_id="p1", speaking=True))
    assert (v.version, v.rings) == (version, rings + 1)  # no edge: nothing
    v.apply_status("s1", active())  # the same call said again (it keeps p1's ring): nothing to draw
    assert (v.version, v.rings) == (version, rings + 1) and "p1" in v.speaking
    speaking_self = active().model_copy(update={"speaking": True})
    v.apply_status("s1", speaking_self)  # the status carries the member's own ring
    assert v.self_speaking()
    assert v.version == version + 1  # the status itself differs: a full render
    v.apply_status("s1", speaking_self)
    assert v.version == version + 1
    muted = speaking_self.model_copy(update={"prefs": VoicePrefs(mic_muted=True)})
    v.apply_status("s1", muted)  # the dock's buttons change: a full render
    assert v.version == version + 2 and not v.self_speaking()
    joined = muted.model_copy(
        update={"participants": [*muted.participants, VoiceParticipant(participant_id="p2", user_uid="u2")]}
    )
    v.apply_status("s1", joined)  # someone joined: rows and tiles are rebuilt
    assert v.version == version + 3
