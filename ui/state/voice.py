"""The desktop's voice state (features 8.1-8.5, 8.8, 4.5): pure, no Dear PyGui, no I/O.

Fed by the media service (``voice.state`` events and the snapshot's ``ServerView.voice``, the
answers of ``media.join/leave/prefs``, ``voice.speaking``); read by the channel rows, the dock's
voice card and buttons, and the Call Stage. The member has at most one call across all servers
(the media service leaves the previous call when another is joined); browsing other channels
and servers keeps it (a deliberate difference from the reference client, which leaves on a server
switch: docs/ui.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.core.contracts.media import (
    ROOM_FULL_MESSAGE,
    SELF,
    VoicePrefs,
    VoicePrefsArgs,
    VoiceSpeaking,
    VoiceStatus,
)

CARD_TITLES = {
    "joining": "Connecting...",
    "active": "Voice Connected",
    "reconnecting": "Reconnecting...",
    "error": "Voice Error",
}
STAGE_CHIPS = {
    "active": "Connected",
    "joining": "Connecting",
    "reconnecting": "Reconnecting",
    "error": "Disconnected",
    "idle": "Idle",
}
INPUT_FALLBACK = "Selected input device was unavailable; using system default microphone."
OUTPUT_FALLBACK = "Selected output device was unavailable; using system default speaker."
OUTPUT_UNSUPPORTED = "Output device switching is not supported on this runtime."
ROOM_FULL = "This voice channel is full ({n} participants)."
UNREACHABLE = "Voice is unavailable: the media service is not answering."
NO_VIDEO_YET = "No video streams yet"
HINT_JOIN = "Join {channel} to view live video and screen shares."
HINT_ELSEWHERE = "You are connected in {other}. Select that channel to view live video."
SELF_BADGE, OTHER_BADGE = "\U0001f6f0\ufe0f", "\U0001f3a7"  # 🛰️ you, 🎧 others (4.5)
IN_CALL = ("joining", "active", "reconnecting")


@dataclass(frozen=True)
class Participant:
    """One row under the voice channel / one stage tile."""

    participant_id: str
    user_uid: str
    name: str
    mic_muted: bool
    deafened: bool
    speaking: bool
    is_self: bool

    @property
    def badge(self) -> str:
        return SELF_BADGE if self.is_self else OTHER_BADGE


@dataclass
class VoiceState:
    """The member's call as the desktop shows it."""

    status: VoiceStatus = field(default_factory=VoiceStatus)  # the current call (or idle)
    call_server: str | None = None  # the server whose voice.state is the current call
    pending: tuple[str, str] | None = None  # a join asked for, not yet answered
    prefs: dict[str, VoicePrefs] = field(default_factory=dict)  # per server, in memory (8.3)
    speaking: set[str] = field(default_factory=set)  # participant ids; ``SELF`` for the member
    error: str = ""  # the most recent call error (card, in red)
    stage: tuple[str, str] | None = None  # the voice channel whose Call Stage is shown
    version: int = 0  # bumped on every change the panes show, except a speaking ring alone
    rings: int = 0  # bumped when only who speaks changed (the panes toggle rings, nothing else)

    # -- what the stack says ---------------------------------------------------------------------
    def apply_status(self, sid: str, st: VoiceStatus) -> bool:
        """A ``voice.state`` of server ``sid`` (or a command's answer). Returns whether the
        current call changed."""
        if st.server_id is not None and st.server_id != sid:
            return False
        before = (self.status, self.call_server, self.pending, self.error, self.prefs.get(sid))
        self.prefs[sid] = st.prefs
        ours = self.call_server == sid or self.call_server is None
        if st.state == "idle":
            if not ours or (self.pending is not None and self.pending[0] != sid):
                self.version += 1  # only the prefs of another server
                return False
            if self.pending is not None and self.status.state == "idle":
                return False  # the idle answer of a previous call while a join is on its way
            changed = self.status.state != "idle"
            self.status = st
            self.call_server = None
            self.speaking.clear()
            self.version += 1
            return changed
        if self.pending is not None and (sid, st.channel_id) == self.pending:
            self.pending = None
        if st.state == "error" and st.reason:
            self.error = st.reason
        elif st.state == "active":
            self.error = ""
        same_call = self.call_server == sid and self.status.channel_id == st.channel_id
        present = {p.participant_id for p in st.participants} | {SELF}
        # speaking comes as edges (voice.speaking); a state or an answer that raced them must not
        # turn a ring off: keep what the edges said for who is still there, add what it says
        kept = {pid for pid in self.speaking if pid in present} if same_call else set()
        speaking = self.speaking
        self.status = st
        self.call_server = sid
        self.speaking = kept | {p.participant_id for p in st.participants if p.speaking}
        if st.speaking:
            self.speaking.add(SELF)
        if before != (self.status, self.call_server, self.pending, self.error, self.prefs.get(sid)):
            self.version += 1
        elif speaking != self.speaking:
            self.rings += 1  # the same call said again with other speakers: only rings to toggle
        return True

    def apply_speaking(self, sid: str, sp: VoiceSpeaking) -> None:
        if sid != self.call_server or sp.channel_id != self.status.channel_id:
            return
        was = sp.participant_id in self.speaking
        if sp.speaking:
            self.speaking.add(sp.participant_id)
        else:
            self.speaking.discard(sp.participant_id)
        if was != sp.speaking:
            self.rings += 1  # several times a second in a call: the panes only toggle rings

    def join_failed(self, sid: str, ch: str, message: str) -> None:
        """A join command refused (no rtc, room full, media service unreachable)."""
        if self.pending == (sid, ch):
            self.pending = None
        self.error = message
        self.status = VoiceStatus(state="error", server_id=sid, channel_id=ch, reason=message)
        self.call_server = sid
        self.version += 1

    # -- what the member does ----------------------------------------------------------------------
    def click(self, sid: str, ch: str) -> bool:
        """A click on a voice row: shows its stage; True when it is a join to send (not when
        that channel is already the call: clicking the connected channel does nothing)."""
        self.stage = (sid, ch)
        self.version += 1
        if self.connected_to(sid, ch) or self.pending == (sid, ch):
            return False
        self.pending = (sid, ch)
        self.error = ""
        self.status = VoiceStatus(state="joining", server_id=sid, channel_id=ch, prefs=self.prefs_of(sid))
        self.call_server = sid
        self.speaking.clear()
        return True

    def hang_up(self) -> None:
        self.pending = None
        self.error = ""
        sid = self.call_server
        self.status = VoiceStatus(prefs=self.prefs_of(sid) if sid else VoicePrefs())
        self.call_server = None
        self.speaking.clear()
        self.version += 1

    def leave_stage(self) -> None:
        if self.stage is not None:
            self.stage = None
            self.version += 1

    def prefs_of(self, sid: str) -> VoicePrefs:
        return self.prefs.get(sid, VoicePrefs())

    def toggle_mic(self, sid: str) -> VoicePrefsArgs:
        """Mute/unmute; pressing mic while deafened clears both (8.3). Applied at once (the
        media service's answer confirms it) and returned as the command to send."""
        p = self.prefs_of(sid)
        if p.deafened:
            new = VoicePrefs(mic_muted=False, deafened=False, input_volume=p.input_volume)
        else:
            new = VoicePrefs(mic_muted=not p.mic_muted, deafened=False, input_volume=p.input_volume)
        return self._set(sid, new, VoicePrefsArgs(server_id=sid, mic_muted=new.mic_muted))

    def toggle_deafen(self, sid: str) -> VoicePrefsArgs:
        """Deafen forces mute; undeafen unmutes (the media service's rule, ``apply_prefs``)."""
        p = self.prefs_of(sid)
        deaf = not p.deafened
        new = VoicePrefs(mic_muted=deaf, deafened=deaf, input_volume=p.input_volume)
        return self._set(sid, new, VoicePrefsArgs(server_id=sid, deafened=deaf))

    def _set(self, sid: str, new: VoicePrefs, args: VoicePrefsArgs) -> VoicePrefsArgs:
        self.prefs[sid] = new
        if self.call_server == sid:
            self.status = self.status.model_copy(update={"prefs": new})
        self.version += 1
        return args

    # -- reads -------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self.status.state

    def in_call(self) -> bool:
        return self.status.state in IN_CALL

    def connected_to(self, sid: str, ch: str) -> bool:
        return self.in_call() and self.call_server == sid and self.status.channel_id == ch

    def card_title(self) -> str | None:
        """The voice card's title, or None when the card is hidden (idle)."""
        return CARD_TITLES.get(self.status.state)

    def card_error(self) -> str:
        return self.error if self.status.state in ("error", "reconnecting") or self.error else ""

    def online_count(self) -> int:
        """Everyone in the call, the member included."""
        return len(self.status.participants) + (1 if self.status.state == "active" else 0)

    def sub_line(self, channel: str, server: str) -> str:
        return f"{channel} / {server} · {self.online_count()} online"

    def self_speaking(self) -> bool:
        """The dock ring: suppressed while muted or deafened (8.5)."""
        sid = self.call_server
        if sid is None or self.status.state != "active":
            return False
        p = self.prefs_of(sid)
        return SELF in self.speaking and not p.mic_muted and not p.deafened

    def participants(self, sid: str, ch: str, own_uid: str, own_name: str) -> list[Participant]:
        """The rows under a voice channel: only for the channel the member is in (4.5), the
        member first, then the others in the media service's order."""
        if not self.connected_to(sid, ch):
            return []
        st = self.status
        p = self.prefs_of(sid)
        out = []
        if st.state == "active":
            out.append(
                Participant(
                    st.participant_id or SELF,
                    own_uid,
                    own_name,
                    p.mic_muted,
                    p.deafened,
                    self.self_speaking(),
                    True,
                )
            )
        for q in st.participants:
            out.append(
                Participant(
                    q.participant_id,
                    q.user_uid,
                    q.display_name or short_uid(q.user_uid),
                    q.mic_muted,
                    q.deafened,
                    q.participant_id in self.speaking,
                    False,
                )
            )
        return out

    def stage_chip(self, sid: str, ch: str) -> str:
        if self.call_server == sid and self.status.channel_id == ch:
            return STAGE_CHIPS.get(self.status.state, "Idle")
        return "Idle"

    def stage_hint(self, sid: str, ch: str, channel: str, other: str | None) -> str:
        """The empty-state hint under "No video streams yet" (8.8)."""
        if self.connected_to(sid, ch):
            return ""
        if self.in_call() and other is not None:
            return HINT_ELSEWHERE.format(other=other)
        return HINT_JOIN.format(channel=channel)


def short_uid(uid: str) -> str:
    """Fallback name (11.2): ``uid_xxxx…yyyy`` (first 8 + last 4) when longer than 12."""
    return f"{uid[:8]}…{uid[-4:]}" if len(uid) > 12 else uid


def error_message(reason: str, max_participants: int | None = None) -> str:
    """The user-facing text of a join refusal."""
    if reason.startswith(ROOM_FULL_MESSAGE) and max_participants:
        return ROOM_FULL.format(n=max_participants)
    return reason


def meter_level(mean_abs: float) -> float:
    """The mic test's level (8.10): ``clamp(meanAbs · 3.6)`` in 0..1."""
    return max(0.0, min(1.0, mean_abs * 3.6))
