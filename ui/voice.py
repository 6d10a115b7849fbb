"""Voice in the desktop (features 8.1-8.5, 8.8-8.10, 4.5): the controller of calls and devices.

No Dear PyGui. Main thread, except the work it submits to the adapter's bus thread:

    voice row click --> VoiceState.click --> bridge up (DesktopBridge) --> media.join
    voice.state / snapshot / answers --> VoiceState (cards, rows, stage) + the audio engine on/off
    voice.speaking (core NATS, DesktopBridge) --> VoiceState.speaking
    mic / deafen --> VoiceState (at once) --> media.prefs (the answer confirms)
    devices, volumes, processing --> MediaPrefs (persisted) --> AudioEngine

Leaving: hang-up only. Browsing other channels and servers keeps the call (Discord's behaviour; the
reference client leaves on a server switch — docs/ui.md says why this differs).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from services.core.bus import CommandError
from services.core.contracts import commands as cmd
from services.core.contracts.bus import Empty
from services.core.contracts.chat import Snapshot
from services.core.contracts.media import VoiceJoinArgs, VoicePrefsArgs, VoiceStatus
from ui.audio import prefs as media_prefs
from ui.audio.devices import DeviceList
from ui.audio.engine import AudioEngine
from ui.audio.prefs import MediaPrefs
from ui.state.model import ViewModel
from ui.state.voice import UNREACHABLE, VoiceState, error_message

if TYPE_CHECKING:  # aiortc and PyAV load with the first call, not at the desktop's start
    from ui.audio.bridge import DesktopBridge

log = logging.getLogger("openchat.ui.voice")


class Submitter(Protocol):
    def submit(
        self,
        work: Callable[[Any], Awaitable[Any]],
        callback: Callable[[Any, BaseException | None], None] | None = None,
    ) -> Future[Any] | None: ...


class VoiceController:
    def __init__(
        self,
        model: ViewModel,
        stack: Callable[[], Submitter | None],
        *,
        config_dir: Path | None = None,
        engine: AudioEngine | None = None,
    ) -> None:
        self.model = model
        self.state = VoiceState()
        self._stack = stack
        self.config_dir = config_dir
        self.prefs: MediaPrefs = media_prefs.load(config_dir) if config_dir is not None else MediaPrefs()
        self.engine = engine or AudioEngine(self.prefs)
        self.engine.prefs = self.prefs
        self.client_id = f"desktop_{uuid.uuid4().hex[:12]}"
        self.bridge: DesktopBridge | None = None
        self.settings_open = False
        self.joins = 0  # join commands sent (tests: a click on the connected channel sends none)
        self._shown_error = ""
        self._last_state = "idle"
        self._dock_key: Any = None

    # -- helpers ------------------------------------------------------------------------------------
    def _submit(
        self,
        work: Callable[[Any], Awaitable[Any]],
        done: Callable[[Any, BaseException | None], None] | None = None,
    ) -> Future[Any] | None:
        stack = self._stack()
        if stack is None:
            if done is not None:
                done(
                    None, CommandError("stack_unreachable", "The home stack is unreachable.", retryable=True)
                )
            return None
        return stack.submit(work, done)

    def _names(self, sid: str, ch: str | None) -> tuple[str, str]:
        sm = self.model.servers.get(sid)
        if sm is None:
            return ch or "", sid
        c = sm.channel(ch) if ch else None
        return (c.name if c is not None else ch or ""), sm.record.display_name

    def is_voice(self, sid: str | None, ch: str) -> bool:
        sm = self.model.servers.get(sid) if sid else None
        c = sm.channel(ch) if sm is not None else None
        return c is not None and c.type == "voice"

    # -- what the stack says ------------------------------------------------------------------------
    def on_status(self, sid: str, st: VoiceStatus) -> None:
        self.state.apply_status(sid, st)
        self._after_change()

    def on_snapshot(self, snap: Snapshot) -> None:
        for view in snap.servers:
            if view.voice is not None:
                self.state.apply_status(view.server.server_id, view.voice)
        self._after_change()
        st = self.state
        if st.in_call() and self.bridge is None and st.pending is None and st.call_server:
            self._attach(st.call_server, st.status.channel_id or "")

    def _attach(self, sid: str, ch: str) -> None:
        """The app (re)started while the member is in a call: take the call over with a new bridge
        (the media service keeps the call; the newest client's bridge wins, ADR 0011)."""
        engine = self.engine

        async def work(c: Any) -> None:
            if self.bridge is None:
                from ui.audio.bridge import DesktopBridge

                self.bridge = DesktopBridge(c, c.member, self.client_id, engine)
                await self.bridge.ensure(sid, ch)

        def done(_v: Any, error: BaseException | None) -> None:
            if error is None and self.bridge is not None and self.state.in_call():
                engine.start_call(self.bridge.mic_sink)

        self._submit(work, done)

    def _after_change(self) -> None:
        st = self.state.status
        if st.state == "error" and st.reason and st.reason != self._shown_error:
            self._shown_error = st.reason
            self.model.toast(self._error_text(st.reason), error=True, history=True)
        elif st.state == "reconnecting" and self._last_state == "active":
            self.model.toast("Voice connection lost; reconnecting…", error=True)
        if st.state != "error":
            self._shown_error = ""
        if self._last_state in ("joining", "active", "reconnecting") and st.state in ("idle", "error"):
            self.engine.stop_call()
            self.engine.stop_test()  # the mic test stops when a call is left (8.10)
            if st.state == "error":
                self._close_bridge()
        elif st.state in ("active", "reconnecting") and self.bridge is not None and not self.engine.in_call:
            self.engine.start_call(self.bridge.mic_sink)
        self._last_state = st.state
        sid = self._prefs_target()
        key = (st.state, sid, self.state.prefs_of(sid) if sid else None)
        if key != self._dock_key:  # the dock's buttons are rebuilt only when what they show changed
            self._dock_key = key
            self.model.touch("dock")

    def _error_text(self, reason: str) -> str:
        sid = self.state.call_server
        sm = self.model.servers.get(sid) if sid else None
        caps = sm.capabilities if sm is not None else None
        limit = getattr(caps, "max_call_participants", None) if caps is not None else None
        return error_message(reason, limit if isinstance(limit, int) else None)

    def tick(self) -> int:
        """Per frame: speaking changes and device notices to the state; returns how many."""
        n = 0
        bridge = self.bridge
        if bridge is not None:
            while not bridge.speaking.empty():
                sid, sp = bridge.speaking.get_nowait()
                self.state.apply_speaking(sid, sp)
                n += 1
            if bridge.taken_over and self.state.in_call():
                bridge.taken_over = False
                self.model.toast("Another OpenChat window of yours took over the call.", error=True)
                self.engine.stop_call()
        while not self.engine.notices.empty():
            self.model.toast(self.engine.notices.get_nowait(), error=True, history=True)
            n += 1
        return n

    # -- what the member does -----------------------------------------------------------------------
    def click(self, sid: str, ch: str) -> None:
        """A voice row: the Call Stage, and a join unless this is already the call (8.1)."""
        if self.state.click(sid, ch):
            self.join(sid, ch)
        self.model.touch("channels", "dock", "header")

    def join(self, sid: str, ch: str) -> None:
        self.joins += 1
        engine = self.engine
        volume = self.prefs.input_volume
        member_prefs = self.state.prefs_of(sid)

        async def work(c: Any) -> VoiceStatus:
            if self.bridge is None or self.bridge.client is not c:
                if self.bridge is not None:
                    await self.bridge.close()
                from ui.audio.bridge import DesktopBridge

                self.bridge = DesktopBridge(c, c.member, self.client_id, engine)
            await self.bridge.ensure(sid, ch)
            if member_prefs.input_volume != volume:  # D11: the gain on what is sent, per server
                await c.call(cmd.VOICE_PREFS, VoicePrefsArgs(server_id=sid, input_volume=volume))
            status: VoiceStatus = await c.call(cmd.VOICE_JOIN, VoiceJoinArgs(server_id=sid, channel_id=ch))
            return status

        def done(status: VoiceStatus | None, error: BaseException | None) -> None:
            if error is not None or status is None:
                msg = self._join_error(error)
                self.state.join_failed(sid, ch, msg)
                self._after_change()
                return
            self.state.apply_status(sid, status)
            if self.bridge is not None:
                engine.start_call(self.bridge.mic_sink)
            self._after_change()

        self._submit(work, done)

    def _join_error(self, error: BaseException | None) -> str:
        if isinstance(error, CommandError):
            if error.code in ("service_unavailable", "timeout", "stack_unreachable"):
                return UNREACHABLE
            return self._error_text(error.body.message)
        log.warning("voice join failed", extra={"error": type(error).__name__})
        return "Voice join failed: the home stack did not answer."

    def hang_up(self) -> Future[Any] | None:
        """The red button on the voice card: leave, stop the microphone and the speaker."""
        self.state.hang_up()
        self.engine.stop_call()
        self.engine.stop_test()
        self._last_state = "idle"
        self.model.touch("channels", "dock", "header")
        bridge = self.bridge
        self.bridge = None

        async def work(c: Any) -> VoiceStatus:
            try:
                status: VoiceStatus = await c.call(cmd.VOICE_LEAVE, Empty(), timeout=10)
                return status
            finally:
                if bridge is not None:
                    await bridge.close()

        def done(status: VoiceStatus | None, error: BaseException | None) -> None:
            if error is not None:
                self.model.toast("Leaving the call failed: the media service did not answer.", error=True)

        return self._submit(work, done)

    def _close_bridge(self) -> None:
        bridge, self.bridge = self.bridge, None
        if bridge is not None:
            self._submit(lambda c: bridge.close())

    def _prefs_target(self) -> str | None:
        return self.state.call_server or self.model.active_server

    def toggle_mic(self) -> None:
        sid = self._prefs_target()
        if sid is not None:
            self._send_prefs(sid, self.state.toggle_mic(sid))

    def toggle_deafen(self) -> None:
        sid = self._prefs_target()
        if sid is not None:
            self._send_prefs(sid, self.state.toggle_deafen(sid))

    def _send_prefs(self, sid: str, args: VoicePrefsArgs) -> None:
        self.model.touch("dock", "channels")

        def done(status: VoiceStatus | None, error: BaseException | None) -> None:
            if status is not None:
                self.state.apply_status(sid, status)
                self._after_change()
            elif error is not None:
                self.model.toast("Voice settings not applied: the media service did not answer.", error=True)

        self._submit(lambda c: c.call(cmd.VOICE_PREFS, args), done)

    # -- devices, volumes, processing (persisted) -----------------------------------------------------
    def refresh_devices(self) -> DeviceList:
        return self.engine.refresh_devices()

    def update_prefs(self, **change: Any) -> None:
        new = self.prefs.model_copy(update=change)
        new = MediaPrefs.model_validate(new.model_dump())  # bounds checked
        volume_changed = new.input_volume != self.prefs.input_volume
        self.prefs = new
        self.engine.apply_prefs(new)
        if self.config_dir is not None:
            try:
                media_prefs.save(self.config_dir, new)
            except OSError as exc:
                log.warning("cannot save call-media preferences", extra={"error": type(exc).__name__})
        sid = self.state.call_server
        if volume_changed and sid is not None and self.state.in_call():
            self._send_prefs(sid, VoicePrefsArgs(server_id=sid, input_volume=new.input_volume))

    def start_mic_test(self) -> None:
        self.engine.start_test()

    def stop_mic_test(self) -> None:
        self.engine.stop_test()

    def close(self, timeout: float = 3.0) -> None:
        """The app closes: leave the call (briefly waited for) and stop the audio threads."""
        if self.state.in_call():
            fut = self.hang_up()
            if fut is not None:
                try:
                    fut.result(timeout)
                except Exception as exc:
                    log.info("leave on close failed", extra={"error": type(exc).__name__})
        self.engine.close()
