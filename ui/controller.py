"""The desktop app's controller: intents in, state changes and commands out (no Dear PyGui).

One direction of data:

    stack (bus thread) --ops--> Controller.process_ops --> ui.state (the view model applies events)
    panes --intents--> Controller.dispatch --> ui.state + commands (the commands table, via the port)
    Controller --effects--> the app's wiring (only what a pane alone can do: move the timeline,
                            set the composer widget, show a dialog)
    ui.state --> panes render it

The stack is a port (``StackPort``: ``submit`` a typed command, get the answer as a ``ResultOp``
on the same queue as events); ``ui.adapter.StackAdapter`` is the real one. Whole flows run
without a display: tests drive a ``Controller`` against a real bus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from services.core.contracts import events as ev
from services.core.contracts.chat import (
    DiscoverResult,
    JoinResult,
    LeaveResult,
    MessageDeleted,
    ProbeResult,
    SendResult,
)
from services.core.contracts.events import TypedEvent
from services.core.contracts.media import VoiceStatus
from services.core.contracts.notify import FocusArgs, NotifyPrefs, UnreadResult
from services.core.version import package_version
from ui.adapter import EventOp, HistoryPage, Op, ResultOp, SnapshotOp, StackClient, StackOp, error_text
from ui.controls import Controls
from ui.search_flow import SearchFlow
from ui.state import control_intents as ci
from ui.state import intents as it
from ui.state.add_server import AddServerFlow, DiscoverCmd, JoinCmd, ProbeCmd
from ui.state.composer import Composer
from ui.state.model import ViewModel
from ui.state.search import as_scope
from ui.state.updater import UpdateChecker
from ui.voice import VoiceController

log = logging.getLogger("openchat.ui.controller")
T = TypeVar("T")
WINDOW_MESSAGES = 150  # a channel opened with fewer held asks the state service for its window


class StackPort(Protocol):
    """What the controller needs of the stack: fire a command, drain what came back."""

    online: bool

    def submit(
        self,
        work: Callable[[StackClient], Awaitable[T]],
        callback: Callable[[Any, BaseException | None], None] | None = None,
    ) -> Future[T] | None: ...

    def drain(self, max_ops: int = 2000) -> list[Op]: ...


class Controller:
    """Turns intents and stack answers into state changes, commands and effects."""

    def __init__(
        self,
        model: ViewModel,
        composer: Composer,
        *,
        client_id: str,
        effects: Callable[[it.Effect], None] | None = None,
        voice: VoiceController | None = None,
        updater: UpdateChecker | None = None,
    ) -> None:
        self.model = model
        self.composer = composer
        self.add = AddServerFlow()
        self.stack: StackPort | None = None
        self.client_id = client_id
        self.visible = True
        self.focus_sent: FocusArgs | None = None  # the last focus report the service answered
        self.focus_at = 0.0
        self.last_typing: tuple[str, str] | None = None
        self.effects: list[it.Effect] = []  # kept when no sink is given (tests read them)
        self._sink = effects
        model.on_channel_opened = self.on_channel_opened
        self.voice = voice or VoiceController(model, lambda: self.stack)  # ui/voice.py
        self.search = SearchFlow(self)
        self.controls = Controls(
            self, updater or UpdateChecker(package_version(), clock=model.clock, now=model.now)
        )

    def emit(self, effect: it.Effect) -> None:
        if self._sink is not None:
            self._sink(effect)
        else:
            self.effects.append(effect)

    def take_effects(self) -> list[it.Effect]:
        out, self.effects = self.effects, []
        return out

    def _submit(
        self,
        work: Callable[[StackClient], Awaitable[Any]],
        callback: Callable[[Any, BaseException | None], None] | None = None,
    ) -> Future[Any] | None:
        if self.stack is None:
            return None
        return self.stack.submit(work, callback)

    # -- what came from the stack -------------------------------------------------------------------
    def process_ops(self) -> int:
        ticked = self.voice.tick()
        if self.stack is None:
            return ticked
        ops = self.stack.drain()
        for op in ops:
            if isinstance(op, EventOp):
                self.apply_event(op.event)
            elif isinstance(op, SnapshotOp):
                self.model.apply_snapshot(op.snapshot, from_cache=op.from_cache)
                self.voice.on_snapshot(op.snapshot)
                self._after_snapshot()
            elif isinstance(op, StackOp):
                was = self.model.stack_online
                self.model.set_stack_online(op.online, op.detail)
                if op.online and not was:
                    self._on_stack_back()
            elif isinstance(op, ResultOp):
                try:
                    op.callback(op.value, op.error)
                except Exception:
                    log.exception("ui callback failed")
        return len(ops) + ticked

    def apply_event(self, event: TypedEvent) -> None:
        before = self.model.servers.get(event.server_id)
        self.model.apply(event)
        if event.kind == ev.VOICE_STATE.kind and isinstance(event.payload, VoiceStatus):
            self.voice.on_status(event.server_id, event.payload)
        if event.kind == ev.MESSAGE_DELETED.kind and isinstance(event.payload, MessageDeleted):
            self.search.panel.drop_message(event.server_id, event.payload.message_id)
        elif event.kind == ev.SERVER_LEFT.kind:
            self.search.panel.drop_server(event.server_id)
        for note in self.model.take_notifications():
            if self.model.notify.allows(note, self.model.now()):  # DND set a moment ago (issue 18)
                self.emit(it.Notify(note))
        if event.kind == ev.SERVER_UPDATED.kind or (
            event.kind == ev.CAPABILITIES.kind and before is not None
        ):
            self.emit(it.AskConsent())

    def _after_snapshot(self) -> None:
        if self.model.active_server and self.model.channel_id:
            opened = self.model.on_channel_opened or self.on_channel_opened  # the app's hook saves prefs
            opened(self.model.active_server, self.model.channel_id)
        self.refresh_counts()
        self.emit(it.SnapshotApplied())

    def _on_stack_back(self) -> None:
        self.refresh_counts()
        self.refresh_prefs()
        self.focus_report(True)
        self.emit(it.StackBack())

    # -- counts, preferences, focus (notification service) ------------------------------------------
    def refresh_counts(self) -> None:
        self._submit(lambda c: c.unread(), self._on_counts)

    def _on_counts(self, value: UnreadResult | None, error: BaseException | None) -> None:
        if error is not None or value is None:
            return  # notification service missing: local counting stays (model.add_message)
        self.model.apply_counts(value)

    def refresh_prefs(self) -> None:
        def done(value: NotifyPrefs | None, error: BaseException | None) -> None:
            if value is not None:
                self.model.apply_notify_prefs(value)

        self._submit(lambda c: c.prefs(), done)

    def focus_report(self, focused: bool) -> None:
        """Tell the notification service what this desktop shows (on every change and at least
        every 30 s: it forgets a report after 90 s)."""
        self.focus_at = time.monotonic()
        if self.stack is None or not self.model.stack_online:
            return
        args = FocusArgs(
            client_id=self.client_id,
            server_id=self.model.active_server,
            channel_id=self.model.channel_id,
            focused=focused,
            visible=self.visible,
        )

        def done(value: UnreadResult | None, error: BaseException | None) -> None:
            if error is None:
                self.focus_sent = args

        self._submit(lambda c: c.focus(args), done)

    def set_window_focus(self, focused: bool, visible: bool = True) -> None:
        """The window gained or lost focus or visibility: rule D4 clears the active channel on
        refocus, and the notification service hears of it at once."""
        self.visible = visible
        self.model.set_focus(focused and visible)
        self.focus_report(focused and visible)

    # -- navigation ---------------------------------------------------------------------------------
    def on_channel_opened(self, sid: str, ch: str) -> None:
        self.voice.state.leave_stage()  # a text channel replaces the Call Stage; the call goes on
        if self.composer.typing_stop_due() and self.stack is not None and self.last_typing:
            psid, pch = self.last_typing
            self._submit(lambda c: c.typing(psid, pch, False))
        self.composer.reset()
        self.emit(it.TimelineReset())
        sm = self.model.servers.get(sid)
        if sm is not None:
            sm.log(ch).attach()  # opened at the newest messages, whatever was read before
        online = self.stack is not None and self.model.stack_online
        if sm is not None and len(sm.window(ch)) < WINDOW_MESSAGES and online:
            if not sm.window(ch):
                sm.loading.add(ch)
            self._submit(
                lambda c: c.window(sid, ch, WINDOW_MESSAGES), lambda v, e: self._on_window(sid, ch, v, e)
            )
        if online:
            self._submit(lambda c: c.mark_read(sid, ch), lambda v, e: None)
        self.focus_report(self.model.focused)

    def _on_window(self, sid: str, ch: str, page: HistoryPage | None, error: BaseException | None) -> None:
        sm = self.model.servers.get(sid)
        if sm is None:
            return
        sm.loading.discard(ch)
        if error is None and page is not None:
            added = self.model.prepend_history(sid, ch, page.messages, page.has_more or True)
            if added:
                self.emit(it.TimelinePrepended(0))
        self.model.touch("timeline")

    def load_older(self, sid: str, ch: str, before: str) -> None:
        if self.stack is None:
            return

        def done(page: HistoryPage | None, error: BaseException | None) -> None:
            sm = self.model.servers.get(sid)
            if sm is None:
                return
            sm.loading.discard(ch)
            if error is not None or page is None:
                sm.has_more[ch] = False
                if error is not None:
                    self.model.toast(f"Older messages unavailable: {error_text(error)}", error=True)
                return
            added = self.model.prepend_history(sid, ch, page.messages, page.has_more)
            if self.model.channel_id == ch:
                self.emit(it.TimelinePrepended(added))

        if self._submit(lambda c: c.older(sid, ch, before), done) is None:
            sm = self.model.servers.get(sid)
            if sm is not None:
                sm.loading.discard(ch)

    # -- composer -------------------------------------------------------------------------------------
    def typing(self, due: bool | None) -> None:
        """The draft changed; ``due`` is what the composer says to report (None: nothing)."""
        sid, ch = self.model.active_server, self.model.channel_id
        if due is not None and sid and ch and self.stack is not None and self.model.stack_online:
            self.last_typing = (sid, ch)
            self._submit(lambda c: c.typing(sid, ch, due))

    def composer_blur(self) -> None:
        if self.composer.typing_stop_due() and self.stack is not None and self.last_typing:
            sid, ch = self.last_typing
            self._submit(lambda c: c.typing(sid, ch, False))

    def send(self) -> bool:
        m = self.model
        sid, ch = m.active_server, m.channel_id
        if sid is None or ch is None or self.composer.sending:
            return False
        if m.read_only:
            self.composer.error = "The home stack is unreachable; sending is paused."
            return False
        max_msg, max_up = m.limits()
        args = self.composer.build(sid, ch, max_msg, max_up)
        if args is None:
            return False
        self.composer.sending = True
        if self.composer.typing_stop_due() and self.stack is not None:
            self._submit(lambda c: c.typing(sid, ch, False))
        self.last_typing = None
        if self.stack is None:
            self.composer.failed("The home stack is unreachable.")
            return False

        def done(res: SendResult | None, error: BaseException | None) -> None:
            if error is not None or res is None:
                self.composer.failed(send_error(error))
                return
            self.composer.sent()
            self.emit(it.ComposerText(""))
            self.model.add_message(res.message)  # de-duplicated against the echo by id
            self.emit(it.FollowTimeline())
            self.model.touch("timeline")

        self._submit(lambda c: c.send(args), done)
        return True

    def reply_to(self, message_id: str) -> bool:
        sm = self.model.server
        ch = self.model.channel_id
        if sm is None or ch is None:
            return False
        msg = self.model._find(sm, ch, message_id)
        if msg is None:
            return False
        self.composer.set_reply(message_id, sm.name_of(msg.author_uid), msg.author_uid)
        self.emit(it.ComposerText(self.composer.draft))
        return True

    def delete_message(self, message_id: str) -> None:
        """Delete Message (features 5.8): no confirmation; the row goes once the server confirms
        (``message.deleted``); a failure shows above the composer."""
        sm = self.model.server
        ch = self.model.channel_id
        msg = self.model._find(sm, ch, message_id) if sm and ch else None
        if msg is None or self.stack is None or not self.model.can_delete(msg):
            return
        self.model.toast("Delete requested.")

        def done(_v: Any, error: BaseException | None) -> None:
            if error is not None:
                self.composer.error = f"Delete failed: {error_text(error)}"

        self._submit(lambda c: c.delete(msg.server_id, msg.channel_id, msg.id), done)

    # -- servers ----------------------------------------------------------------------------------------
    def mark_server_read(self, sid: str) -> None:
        self.model.mark_read(sid)
        self._submit(lambda c: c.mark_read(sid, None), lambda v, e: None)

    def set_mute(self, sid: str, muted: bool) -> None:
        if sid in self.model.servers:
            self.controls.set_mute(sid, None, muted, None)

    def leave(self, sid: str) -> None:
        if self.stack is None:
            return
        name = self.model.servers[sid].record.display_name if sid in self.model.servers else sid

        def done(res: LeaveResult | None, error: BaseException | None) -> None:
            if error is not None:
                self.model.toast(
                    f"Failed to leave server {name}: {error_text(error)}", error=True, history=True
                )
                return
            self.model.remove_server(sid)
            self.model.toast("Left server.", history=True)
            if not self.model.order:
                self.emit(it.ShowAddServer())

        self._submit(lambda c: c.leave(sid), done)

    def answer_consent(self, sid: str, share: bool) -> None:
        def done(v: Any, error: BaseException | None) -> None:
            if error is not None:
                self.model.toast(f"Profile choice not saved: {error_text(error)}", error=True)

        self._submit(lambda c: c.consent(sid, share), done)

    # -- add server (discover, probe, trust, join) -------------------------------------------------------
    def _probe(self, cmd: ProbeCmd | None) -> None:
        if cmd is None or self.stack is None:
            return
        flow = self.add

        def done(res: ProbeResult | None, error: BaseException | None) -> None:
            flow.probed(res, error_text(error) if error is not None else None)

        self._submit(lambda c: c.probe(cmd.url, cmd.server_id), done)

    def _discover(self, cmd: DiscoverCmd | None) -> None:
        if cmd is None or self.stack is None:
            return
        flow = self.add

        def done(res: DiscoverResult | None, error: BaseException | None) -> None:
            err = error_text(error) if error is not None else None
            self._probe(flow.discovered(res.servers if res is not None else None, err))

        self._submit(lambda c: c.discover(cmd.url), done)

    def _join(self, cmd: JoinCmd | None) -> None:
        if cmd is None or self.stack is None:
            return
        flow = self.add
        probe = flow.probe

        def done(res: JoinResult | None, error: BaseException | None) -> None:
            record = res.server if res is not None else None
            if not flow.joined(record, error_text(error) if error is not None else None) or record is None:
                return
            self.emit(it.CloseOverlays())
            if record.server_id not in self.model.servers:
                self.model.server_joined(record)
            self.model.select_server(record.server_id)
            self.model.toast(f"Joined {record.display_name}.", history=True)
            if probe is not None:
                for w in probe.trust.warnings:
                    self.model.status_history.append(w)
            self.emit(it.AskConsent())

        self._submit(lambda c: c.join(cmd.url, cmd.server_id, cmd.local_id), done)

    # -- intents --------------------------------------------------------------------------------------
    def dispatch(self, intent: it.Intent | ci.ControlIntent) -> None:
        """Apply one intent of the member."""
        match intent:
            case it.SelectServer(server_id=sid):
                self.model.select_server(sid)
            case it.SelectChannel(channel_id=ch):
                if self.voice.is_voice(self.model.active_server, ch):
                    self.voice.click(self.model.active_server or "", ch)  # join + Call Stage (8.1)
                else:
                    self.model.select_channel(ch)
            case it.Send():
                self.send()
            case it.ReplyTo(message_id=mid):
                self.reply_to(mid)
            case it.CancelReply():
                self.composer.clear_reply()
            case it.DeleteMessage(message_id=mid):
                self.delete_message(mid)
            case it.LoadOlder(server_id=sid, channel_id=ch, before=before):
                self.load_older(sid, ch, before)
            case it.MarkServerRead(server_id=sid):
                self.mark_server_read(sid)
            case it.SetMute(server_id=sid, muted=muted):
                self.set_mute(sid, muted)
            case it.Leave(server_id=sid):
                self.leave(sid)
            case it.OpenAddServer(url=url):
                self.add.open(url)
            case it.SetAddUrl(url=url):
                self.add.set_url(url)
            case it.Discover(url=url):
                self._discover(self.add.discover(url))
            case it.PickServer(label=label):
                self._probe(self.add.pick(label))
            case it.Probe(url=url):
                self._probe(self.add.probe_cmd(url))
            case it.Join(url=url):
                self._join(self.add.join(url, {sid: sm.record for sid, sm in self.model.servers.items()}))
            case it.SetAddLocalId(local_id=local):
                self.add.set_local_id(local)
            case it.AnswerConsent(server_id=sid, share=share):
                self.answer_consent(sid, share)
            case it.OpenSearch(scope=scope):
                self.search.open(as_scope(scope))
            case it.SearchQuery(text=text):
                self.search.set_query(text)
            case it.SearchScope(scope=scope):
                if (known := as_scope(scope)) is not None:
                    self.search.set_scope(known)
            case it.RunSearch():
                self.search.run()
            case it.CloseSearch():
                self.search.close()
            case it.JumpToHit(index=index):
                self.search.jump_to_hit(index)
            case _:
                self.controls.dispatch(intent)  # status, notification settings, backup, updates


def send_error(error: BaseException | None) -> str:
    from services.core.bus import CommandError

    if isinstance(error, CommandError):
        if error.code in ("payload_too_large", "too_large"):
            return "Message payload is too large for this server. Reduce text or attachments and try again."
        return f"Failed to send message ({error.code}): {error.body.message}"
    return "Failed to send message: the home stack did not answer."
