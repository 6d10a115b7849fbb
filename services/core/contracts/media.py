"""Bus contracts of voice (issue 12): the media service's commands and voice events.

Served by the media service on ``oc.<member>.cmd.media.<verb>`` (the member comes from the subject,
so a member can only ever drive its own call and its own bridge):

=====================  ======================  ===============  ============================================
verb                   args                    result           what it does
=====================  ======================  ===============  ============================================
``join``               ``VoiceJoinArgs``       ``VoiceStatus``  join a voice channel (leaves another call)
``leave``              ``Empty``               ``VoiceStatus``  leave the call (idempotent)
``status``             ``Empty``               ``VoiceStatus``  call state, participants, preferences
``prefs``              ``VoicePrefsArgs``      ``VoiceStatus``  mute / deafen / input volume of one server
``bridge_offer``       ``BridgeOfferArgs``     ``BridgeAnswer`` the client's WebRTC offer → the answer
``bridge_keepalive``   ``BridgeKeepaliveArgs`` ``BridgeAlive``  the client is still there
``bridge_close``       ``BridgeKeepaliveArgs`` ``BridgeAlive``  the client hangs up its bridge
=====================  ======================  ===============  ============================================

Voice events (``oc.<member>.evt.<server_id>.<kind>``):

=====================  ======================  ==================  =====================================
kind                   payload                 ``event_id``        path
=====================  ======================  ==================  =====================================
``voice.state``        ``VoiceStatus``         ``vstate:<uuid>``   JetStream (stored, has a sequence)
``voice.speaking``     ``VoiceSpeaking``       ``vspeak:<uuid>``   core NATS only (ephemeral, no sequence)
=====================  ======================  ==================  =====================================

``voice.state`` carries the whole call (state, participants, preferences) on every change, so a
client that attaches mid-call needs only the latest one. Speaking changes are frequent and worthless
after a second: they are published on the same subject space without going through the stream
(ADR 0011).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.core.contracts.bus import Contract

SERVICE = "media"
ServerId = str  # as in contracts.chat (not imported: chat imports VoiceStatus for ServerView)
ChannelId = str
CallStateName = Literal["idle", "joining", "active", "reconnecting", "error"]
SELF = "self"  # the participant id under which the member's own speaking is reported

MAX_SDP_CHARS = 64 * 1024
MAX_CLIENT_ID = 64
MAX_PARTICIPANTS = 64  # remote participants the media service keeps in one call
INPUT_VOLUME_MAX = 200

KICKED_MESSAGE = "Removed from voice channel by moderation action."
NO_RTC_MESSAGE = "Server does not advertise RTC support"
NO_P2P_MESSAGE = "Voice is not supported on this server (no p2p topology)"
ROOM_FULL_MESSAGE = "Voice channel is full"


# -- commands -------------------------------------------------------------------------------------
class VoiceJoinArgs(Contract):
    server_id: ServerId = Field(min_length=1, max_length=128)
    channel_id: ChannelId = Field(min_length=1, max_length=128)


class VoicePrefsArgs(Contract):
    """Per-server preferences; they work before joining (features 8.3). ``None`` = unchanged.

    Deafen forces mute; unmuting while deafened also undeafens (the reference's dock rule)."""

    server_id: ServerId = Field(min_length=1, max_length=128)
    mic_muted: bool | None = None
    deafened: bool | None = None
    input_volume: int | None = Field(default=None, ge=0, le=INPUT_VOLUME_MAX)


class VoicePrefs(Contract):
    mic_muted: bool = False
    deafened: bool = False
    input_volume: int = Field(default=100, ge=0, le=INPUT_VOLUME_MAX)


class VoiceParticipant(Contract):
    participant_id: str = Field(max_length=128)
    user_uid: str = Field(max_length=256)
    display_name: str = Field(default="", max_length=128)
    mic_muted: bool = False
    deafened: bool = False
    transport: Literal["webrtc", "pcm", "pending", "none"] = "pending"
    speaking: bool = False


class VoiceStatus(Contract):
    """The member's call (one per member at a time) as the media service sees it."""

    state: CallStateName = "idle"
    server_id: ServerId | None = None
    channel_id: ChannelId | None = None
    participant_id: str | None = None
    participants: list[VoiceParticipant] = Field(default_factory=list, max_length=MAX_PARTICIPANTS)
    prefs: VoicePrefs = Field(default_factory=VoicePrefs)
    reason: str = Field(default="", max_length=500)  # why error / reconnecting
    attempt: int = 0  # reconnect attempt number while reconnecting
    bridge_connected: bool = False
    speaking: bool = False  # the member


class BridgeTarget(Contract):
    """The call a client wants to be in: after a media-service restart the new bridge resumes it."""

    server_id: ServerId = Field(min_length=1, max_length=128)
    channel_id: ChannelId = Field(min_length=1, max_length=128)


class BridgeOfferArgs(Contract):
    client_id: str = Field(min_length=1, max_length=MAX_CLIENT_ID, pattern=r"^[A-Za-z0-9_\-]+$")
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)
    resume: BridgeTarget | None = None


class BridgeAnswer(Contract):
    sdp: str = Field(max_length=MAX_SDP_CHARS)
    status: VoiceStatus


class BridgeKeepaliveArgs(Contract):
    client_id: str = Field(min_length=1, max_length=MAX_CLIENT_ID, pattern=r"^[A-Za-z0-9_\-]+$")


class BridgeAlive(Contract):
    """``current`` is False when this client's bridge is not (or no longer) the member's bridge."""

    current: bool
    taken_over: bool = False  # another client of the member holds the bridge now
    status: VoiceStatus


# -- events ---------------------------------------------------------------------------------------
class VoiceSpeaking(Contract):
    channel_id: ChannelId
    participant_id: str = Field(max_length=128)  # ``SELF`` for the member
    user_uid: str = Field(default="", max_length=256)
    speaking: bool
