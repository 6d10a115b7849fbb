"""Pure voice logic of the media service (no I/O): the call state machine (features 8.2, D12),
the reconnect ladder, per-server preferences (8.3), speaking detection (8.5) and PCM stream
reassembly (wire §11.4 B).  The adapters in ``call.py`` / ``service.py`` feed these with events
and carry out what they return.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from services.core.contracts.media import CallStateName, VoicePrefs, VoicePrefsArgs
from services.core.contracts.wire import ConnectionPolicy

DEFAULT_BACKOFF_MS = (1000, 2000, 4000, 8000)  # then 8000 forever (min(8000, 1000·2^(n-1)))
DEFAULT_JOIN_TIMEOUT_S = 12.0
DEFAULT_ANSWER_TIMEOUT_S = 10.0


# -- reconnect ladder and the server's call policy, honoured when present (D12) ------------------------------
@dataclass(frozen=True)
class CallPolicy:
    """Timings of one server: the built-in ones, overridden by the server's
    ``rtc.connection_policy`` where it sets them (D12)."""

    backoff_ms: tuple[int, ...] = DEFAULT_BACKOFF_MS
    join_timeout_s: float = DEFAULT_JOIN_TIMEOUT_S
    answer_timeout_s: float = DEFAULT_ANSWER_TIMEOUT_S
    ice_restart: bool = False
    max_participants: int | None = None

    @classmethod
    def from_server(cls, policy: ConnectionPolicy | None, max_participants: int | None) -> CallPolicy:
        base = cls(max_participants=max_participants if max_participants and max_participants > 0 else None)
        if policy is None:
            return base
        backoff = tuple(max(50, min(60_000, int(v))) for v in (policy.reconnect_backoff_ms or [])[:32])
        return cls(
            backoff_ms=backoff or base.backoff_ms,
            join_timeout_s=_ms(policy.join_timeout_ms, base.join_timeout_s),
            answer_timeout_s=_ms(policy.answer_timeout_ms, base.answer_timeout_s),
            ice_restart=bool(policy.ice_restart_enabled),
            max_participants=base.max_participants,
        )

    def delay_s(self, attempt: int) -> float:
        """Delay before reconnect ``attempt`` (1-based); the last value repeats."""
        index = min(max(attempt, 1), len(self.backoff_ms)) - 1
        return self.backoff_ms[index] / 1000.0


def _ms(value: int | None, default_s: float) -> float:
    if value is None or value <= 0:
        return default_s
    return min(120.0, value / 1000.0)


def room_full(others_in_room: int, max_participants: int | None) -> bool:
    """``max_call_participants`` counts everyone, the joiner included: a full room is refused
    with a message (D12)."""
    return max_participants is not None and others_in_room + 1 > max_participants


# -- the call state machine (8.2) ------------------------------------------------------------------
EventName = Literal[
    "join_requested",
    "join_succeeded",
    "join_failed",
    "signal_disconnected",
    "signal_reconnected",
    "left",
    "fatal_error",
    "kicked",
]


@dataclass(frozen=True)
class Reconnect:
    """Effect: re-join after ``delay_s`` (a full join: probe, new ticket, socket)."""

    attempt: int
    delay_s: float


@dataclass(frozen=True)
class Teardown:
    """Effect: close the socket and every peer connection."""


Effect = Reconnect | Teardown


@dataclass
class CallMachine:
    """States ``idle``, ``joining``, ``active``, ``reconnecting``, ``error`` and their transitions.

    - join_requested → joining (a new target resets the attempt counter and ``was_active``);
    - join_succeeded → active;
    - join_failed → reconnecting when the call had been active (a failed *re*-join), else error;
    - signal_disconnected → reconnecting (idle and error stay where they are);
    - left → idle; fatal_error → error; kicked → error with the moderation message, no rejoin.
    """

    policy: CallPolicy = field(default_factory=CallPolicy)
    state: CallStateName = "idle"
    reason: str = ""
    attempt: int = 0
    was_active: bool = False

    def handle(self, event: EventName, reason: str = "") -> list[Effect]:
        if event == "join_requested":
            if self.state not in ("reconnecting",):
                self.attempt = 0
                self.was_active = False
            self.state, self.reason = "joining", ""
            return []
        if event in ("join_succeeded", "signal_reconnected"):
            if self.state not in ("joining", "reconnecting"):
                return []
            self.state, self.reason, self.attempt, self.was_active = "active", "", 0, True
            return []
        if event == "join_failed":
            if self.state not in ("joining", "reconnecting"):
                return []
            if self.was_active:
                return self._reconnect(reason)
            self.state, self.reason = "error", reason
            return [Teardown()]
        if event == "signal_disconnected":
            if self.state in ("idle", "error"):
                return []
            if self.state == "joining" and not self.was_active:
                self.state, self.reason = "error", reason
                return [Teardown()]
            return self._reconnect(reason)
        if event == "left":
            self.state, self.reason, self.attempt, self.was_active = "idle", "", 0, False
            return [Teardown()]
        if event in ("fatal_error", "kicked"):
            self.state, self.reason = "error", reason
            self.was_active = False
            return [Teardown()]
        raise ValueError(f"unknown call event {event!r}")

    def _reconnect(self, reason: str) -> list[Effect]:
        self.attempt += 1
        self.state, self.reason = "reconnecting", reason
        return [Teardown(), Reconnect(self.attempt, self.policy.delay_s(self.attempt))]

    @property
    def wants_call(self) -> bool:
        return self.state in ("joining", "active", "reconnecting")


# -- peer connection failures (D12) and backend errors (8.2, wire §11.4) ----------------------------
PeerFailureAction = Literal["restart", "rejoin"]


def peer_failure_action(ice_restart_enabled: bool, already_restarted: bool) -> PeerFailureAction:
    """A peer connection whose ICE failed: with ``ice_restart_enabled`` it is renegotiated once (an
    ICE restart) before the full re-join of the reconnect ladder; without it, or when the restart
    failed too, the call re-joins (new probe, new ticket, every peer renegotiated)."""
    return "restart" if ice_restart_enabled and not already_restarted else "rejoin"


RtcErrorAction = Literal["fatal", "resync", "ignore"]
# Codes that answer one of our own frames and leave the call working (wire §11.4, §12): a frame type
# the backend does not know, a relay target that just left.  Everything else not retryable is fatal.
BENIGN_RTC_ERRORS = frozenset({"rtc_unknown_event", "rtc_target_not_found"})


def rtc_error_action(code: str, message: str, retryable: bool) -> RtcErrorAction:
    """What ``rtc.error {code, message, retryable}`` does to a call (features 8.2):

    - retryable and a "connection closed" negotiation message → ``resync`` (a full re-join);
    - other retryable errors and the benign codes → ``ignore`` (logged; the call goes on);
    - anything else (``rtc_join_denied``, ``rtc_media_denied``, a code this client does not know
      sent as not retryable) → ``fatal``: the call goes to ``error`` with the message, no retry."""
    if retryable:
        return "resync" if "connection closed" in message.lower() else "ignore"
    if code in BENIGN_RTC_ERRORS:
        return "ignore"
    return "fatal"


def rtc_error_reason(code: str, message: str) -> str:
    text = " ".join(message.split())[:200] or "no message"
    return f"voice error from the server: {text} ({code[:64] or 'no code'})"


# -- preferences (voice settings; the input volume is a gain on what is sent, D11) ----------------
def apply_prefs(current: VoicePrefs, change: VoicePrefsArgs) -> VoicePrefs:
    """Deafen forces mute; unmuting while deafened undeafens too; undeafen keeps the mic muted
    only if it was muted on its own before (the reference restores the pre-deafen mic state: here
    simply unmuted)."""
    muted, deafened, volume = current.mic_muted, current.deafened, current.input_volume
    if change.deafened is not None:
        deafened = change.deafened
        muted = True if deafened else (change.mic_muted if change.mic_muted is not None else False)
    elif change.mic_muted is not None:
        muted = change.mic_muted
        if not muted and deafened:
            deafened = False
    if deafened:
        muted = True
    if change.input_volume is not None:
        volume = change.input_volume
    return VoicePrefs(mic_muted=muted, deafened=deafened, input_volume=volume)


def input_gain(prefs: VoicePrefs) -> float:
    """The input volume (0 to 200 %) is a gain on the transmitted audio; muted → 0."""
    return 0.0 if prefs.mic_muted else prefs.input_volume / 100.0


# -- speaking detection (8.5) ----------------------------------------------------------------------
SPEAKING_THRESHOLD = 0.018  # mean absolute amplitude (full scale 1.0)
SPEAKING_WINDOW_S = 0.18
SPEAKING_HOLD_S = 0.45


@dataclass
class SpeakingDetector:
    """Mean absolute amplitude over 180 ms windows ≥ 0.018 → speaking, held 450 ms after the last
    loud window.  ``feed`` takes the sum of |samples| (full scale 1.0) of a chunk, its sample count
    and the time at its end; it returns the new state when it changed, else ``None``."""

    sample_rate: int = 48_000
    threshold: float = SPEAKING_THRESHOLD
    window_s: float = SPEAKING_WINDOW_S
    hold_s: float = SPEAKING_HOLD_S
    speaking: bool = False
    _acc: float = 0.0
    _count: int = 0
    _last_loud: float | None = None

    def feed(self, abs_sum: float, samples: int, now: float) -> bool | None:
        self._acc += abs_sum
        self._count += samples
        changed: bool | None = None
        window = int(self.sample_rate * self.window_s)
        if self._count >= window:
            level = self._acc / self._count
            self._acc, self._count = 0.0, 0
            if level >= self.threshold:
                self._last_loud = now
                if not self.speaking:
                    self.speaking = changed = True
        changed = self._expire(now) if changed is None else changed
        return changed

    def tick(self, now: float) -> bool | None:
        """Time passes without audio (a silent or stopped source)."""
        return self._expire(now)

    def reset(self) -> bool | None:
        was = self.speaking
        self.speaking, self._acc, self._count, self._last_loud = False, 0.0, 0, None
        return False if was else None

    def _expire(self, now: float) -> bool | None:
        if self.speaking and (self._last_loud is None or now - self._last_loud >= self.hold_s):
            self.speaking = False
            return False
        return None


# -- PCM streams (§11.4 B) -------------------------------------------------------------------------
@dataclass
class PcmStreamOrder:
    """Orders one participant's PCM frames by ``seq`` across its short streams.

    Frames of one stream are released in ``seq`` order; a missing frame is skipped once ``window``
    later frames have arrived (dropped by the backend under backpressure); frames older than what
    was released are dropped (duplicates, late).  Bounded: at most ``window`` frames held."""

    window: int = 5
    stream_id: str | None = None
    next_seq: int = 0
    held: dict[int, bytes] = field(default_factory=dict)
    finished: deque[str] = field(default_factory=lambda: deque(maxlen=16))
    dropped: int = 0

    def push(self, stream_id: str, seq: int, chunk: bytes, eof: bool) -> list[bytes]:
        if stream_id in self.finished:
            self.dropped += 1
            return []
        out: list[bytes] = []
        if stream_id != self.stream_id:
            out.extend(self.flush())  # a new stream starts: whatever the old one held goes first
            self.stream_id, self.next_seq = stream_id, 0
        if seq < self.next_seq or seq in self.held:
            self.dropped += 1
            return out
        self.held[seq] = chunk
        out.extend(self._release())
        if len(self.held) > self.window:
            # give up on the gap: jump to the oldest held frame
            self.next_seq = min(self.held)
            out.extend(self._release())
        if eof and not self.held:
            self.finished.append(stream_id)
            self.stream_id = None
        return out

    def _release(self) -> list[bytes]:
        out: list[bytes] = []
        while self.next_seq in self.held:
            out.append(self.held.pop(self.next_seq))
            self.next_seq += 1
        return out

    def flush(self) -> list[bytes]:
        out = [self.held[s] for s in sorted(self.held)]
        self.held.clear()
        return out
