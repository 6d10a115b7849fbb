"""The controller's part of message search (issue 17): Ctrl+F panel requests and the jump to a hit.

No Dear PyGui. ``Controller.dispatch`` hands the search intents here; the state is
``ui.state.search`` (the panel, the jump plan), the command is the commands table's
``state.search`` (through the stack port, like every command), and showing the found message is a
``RevealMessage`` effect for the timeline pane.

The jump: the hit's channel is opened (as a click in the channel list would), then ``JumpPlan``
decides step by step — unpack the desktop's compact pages, or ask the stack for an older page
(``connector.history``, which also indexes it) — until the message is in the log with history
above it; then the timeline shows it. A jump started while another runs replaces it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, Protocol

from services.core.contracts import commands as cmd
from services.core.contracts.chat import HistoryArgs, HistoryResult
from services.core.contracts.search import SearchHit, SearchResult
from ui.adapter import StackClient, error_text
from ui.state import intents as it
from ui.state.model import ViewModel
from ui.state.search import FetchOlder, Found, JumpPlan, Missing, Scope, SearchCmd, SearchPanel


class FlowHost(Protocol):
    """What the flow needs of the controller (``ui.controller.Controller``)."""

    model: ViewModel
    stack: Any  # ui.controller.StackPort | None

    def emit(self, effect: it.Effect) -> None: ...

    def _submit(
        self,
        work: Callable[[StackClient], Awaitable[Any]],
        callback: Callable[[Any, BaseException | None], None] | None = None,
    ) -> Future[Any] | None: ...


class SearchFlow:
    def __init__(self, controller: FlowHost) -> None:
        self.c = controller
        self.panel = SearchPanel()
        self.jump: JumpPlan | None = None
        self.jumps_done = 0  # messages shown by a jump (tests and the e2e read it)

    @property
    def model(self) -> ViewModel:
        return self.c.model

    # -- the panel ------------------------------------------------------------------------------------
    def open(self, scope: Scope | None = None) -> None:
        """Ctrl+F: the panel with the last query, scope and results (or ``scope``)."""
        self.panel.show(scope)

    def close(self) -> None:
        self.panel.close()

    def set_query(self, text: str) -> None:
        self.panel.set_query(text)

    def set_scope(self, scope: Scope) -> None:
        self.panel.set_scope(scope)
        if self.panel.searched:
            self.run()  # the scope changed what the shown results mean: search again

    def run(self) -> None:
        request = self.panel.submit(self.model.active_server, self.model.channel_id)
        if request is None:
            return
        if self.c.stack is None:
            self.panel.answered(request.request, None, "the home stack is unreachable")
            return
        self._send(request)

    def _send(self, request: SearchCmd) -> None:
        def done(value: SearchResult | None, error: BaseException | None) -> None:
            self.panel.answered(request.request, value, error_text(error) if error is not None else None)

        self.c._submit(lambda c: c.call(cmd.SEARCH, request.args), done)

    # -- the jump -------------------------------------------------------------------------------------
    def jump_to_hit(self, index: int) -> bool:
        hits = self.panel.hits
        if not 0 <= index < len(hits):
            return False
        return self.jump_to(hits[index])

    def jump_to(self, hit: SearchHit) -> bool:
        m = self.model
        sm = m.servers.get(hit.server_id)
        if sm is None or sm.channel(hit.channel_id) is None:
            m.toast("That channel is no longer available.", error=True)
            return False
        self.panel.close()
        self.c.emit(it.CloseOverlays())
        if (m.active_server, m.channel_id) != (hit.server_id, hit.channel_id):
            m.select_channel(hit.channel_id, hit.server_id)
        self.jump = JumpPlan(hit.server_id, hit.channel_id, hit.message_id, hit.created_at)
        self._step()
        return True

    def _step(self) -> None:
        plan = self.jump
        if plan is None:
            return
        m = self.model
        sm = m.servers.get(plan.server_id)
        if sm is None or (m.active_server, m.channel_id) != (plan.server_id, plan.channel_id):
            self.jump = None  # the member went elsewhere meanwhile
            return
        log = sm.log(plan.channel_id)
        step = plan.step(log, sm.has_more.get(plan.channel_id, True))
        match step:
            case Found():
                self.jump = None
                self.jumps_done += 1
                m.touch("timeline")
                self.c.emit(it.RevealMessage(plan.server_id, plan.channel_id, plan.message_id))
            case Missing(reason=reason):
                self.jump = None
                m.toast(reason, error=True)
            case FetchOlder(before=before, limit=limit):
                self._fetch(plan, before, limit)

    def _fetch(self, plan: JumpPlan, before: str | None, limit: int) -> None:
        sid, ch = plan.server_id, plan.channel_id
        sm = self.model.servers.get(sid)
        if sm is not None:
            sm.loading.add(ch)
        self.model.toast("Loading the history around the message…")

        def done(page: HistoryResult | None, error: BaseException | None) -> None:
            if self.jump is not plan:
                return  # replaced or abandoned
            if error is not None or page is None:
                server = self.model.servers.get(sid)
                if server is not None:
                    server.loading.discard(ch)
                self.jump = None
                detail = error_text(error) if error is not None else "no answer"
                self.model.toast(f"Could not load the message's history: {detail}", error=True)
                return
            added = self.model.prepend_history(sid, ch, page.messages, page.has_more)
            if added and self.model.channel_id == ch:
                self.c.emit(it.TimelinePrepended(added))
            self._step()

        if before is None:
            args = HistoryArgs(server_id=sid, channel_id=ch, limit=limit)  # the newest page
            work = self.c._submit(lambda c: c.call(cmd.HISTORY, args), done)
        else:
            work = self.c._submit(lambda c: c.older(sid, ch, before, limit), done)
        if work is None:
            self.jump = None
            if sm is not None:
                sm.loading.discard(ch)
            self.model.toast("The home stack is unreachable.", error=True)
