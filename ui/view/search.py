"""The message search panel (Ctrl+F, issue 17): a thin Dear PyGui view of ``ui.state.search``.

Owns the ``oc_search*`` tags. It renders ``SearchPanel`` whenever its ``version`` moves and sends
the member's input as intents (``ui.state.intents``: ``SearchQuery``, ``SearchScope``,
``RunSearch``, ``JumpToHit``, ``CloseSearch``) to the controller; it never calls the stack.
Results are grouped by server and channel; the matched words of each snippet are drawn bold in
amber, CJK and Hangul runs in their own fonts, lines wrapped to the panel.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dearpygui.dearpygui as dpg

from ui import fonts
from ui.state import intents as it
from ui.state.search import SCOPES, ResultGroup, SearchPanel, Segment
from ui.view.timeline import _words

TAG = "oc_search"
WIDTH, HEIGHT = 760, 560


class SearchView:
    """``host`` is the workspace view (``ui.view.shell.View``): scale, fonts, themes, overlays."""

    def __init__(self, host: Any, dispatch: Callable[[it.Intent], None], panel: SearchPanel) -> None:
        self.host = host
        self.dispatch = dispatch
        self.panel = panel
        self.rendered = -1
        self._shown = False
        self.hit_buttons: list[int | str] = []  # one per hit, in ``panel.hits`` order (tests click them)

    def s(self, px: float) -> int:
        return int(self.host.s(px))

    # -- build ----------------------------------------------------------------------------------
    def build(self) -> None:
        s = self.s
        with dpg.window(
            tag=TAG,
            label="Search messages",
            modal=True,
            show=False,
            width=s(WIDTH),
            height=s(HEIGHT),
            no_resize=True,
            on_close=lambda: self.dispatch(it.CloseSearch()),
        ):
            with dpg.group(horizontal=True):
                dpg.add_input_text(
                    tag="oc_search_query",
                    hint='Search: words, "exact phrase", prefix*, from:uid, in:channel',
                    width=s(WIDTH - 130),
                    on_enter=True,
                    callback=lambda s_, a: self._submit(a),
                )
                dpg.add_button(
                    label="Search",
                    tag="oc_search_go",
                    callback=lambda: self._submit(dpg.get_value("oc_search_query")),
                )
            dpg.add_radio_button(
                tag="oc_search_scope",
                items=[label for _, label in SCOPES],
                horizontal=True,
                default_value=SCOPES[0][1],
                callback=lambda s_, a: self._scope(a),
            )
            dpg.add_text("", tag="oc_search_status", color=fonts.MUTED, wrap=s(WIDTH - 40))
            with dpg.child_window(tag="oc_search_results", border=False):
                pass
        with dpg.item_handler_registry(tag="oc_search_handlers"):
            dpg.add_item_edited_handler(
                callback=lambda: self.dispatch(it.SearchQuery(dpg.get_value("oc_search_query")))
            )
        dpg.bind_item_handler_registry("oc_search_query", "oc_search_handlers")

    def destroy(self) -> None:
        for tag in (TAG, "oc_search_handlers"):
            if dpg.does_item_exist(tag):
                dpg.delete_item(tag)

    # -- input ----------------------------------------------------------------------------------
    def _submit(self, text: str) -> None:
        self.dispatch(it.SearchQuery(text))
        self.dispatch(it.RunSearch())

    def _scope(self, label: str) -> None:
        for scope, name in SCOPES:
            if name == label:
                self.dispatch(it.SearchScope(scope))

    def open(self) -> None:
        """Show the panel (the controller opened ``panel``) with the cursor in the box."""
        dpg.set_value("oc_search_query", self.panel.query)
        self.host.show(TAG)
        self._shown = True
        dpg.focus_item("oc_search_query")
        self.rendered = -1

    # -- per frame ------------------------------------------------------------------------------
    def render(self) -> None:
        if not dpg.does_item_exist(TAG):
            return
        shown = dpg.is_item_shown(TAG) or self.host._pending_show == TAG
        if self._shown and not shown:  # closed from outside (Esc, another overlay)
            self._shown = False
            if self.panel.open:
                self.dispatch(it.CloseSearch())
        elif not self.panel.open and shown:
            self.host.hide(TAG)
            self._shown = False
        if self.panel.version == self.rendered or not self.panel.open:
            return
        self.rendered = self.panel.version
        label = dict(SCOPES)[self.panel.scope]
        if dpg.get_value("oc_search_scope") != label:
            dpg.set_value("oc_search_scope", label)
        dpg.set_value("oc_search_status", self.panel.summary())
        dpg.configure_item(
            "oc_search_status", color=fonts.RED if self.panel.status == "error" else fonts.MUTED
        )
        self._render_results()

    def _render_results(self) -> None:
        m = self.host.model
        dpg.delete_item("oc_search_results", children_only=True)
        self.hit_buttons = []

        def server_name(sid: str) -> str:
            sm = m.servers.get(sid)
            return str(sm.record.display_name) if sm is not None else sid

        def channel_name(sid: str, ch: str) -> str:
            sm = m.servers.get(sid)
            info = sm.channel(ch) if sm is not None else None
            return str(info.name) if info is not None else ch

        def author_name(sid: str, uid: str) -> str:
            sm = m.servers.get(sid)
            return str(m.display_of(sm, uid)) if sm is not None else uid

        groups = self.panel.groups(server_name, channel_name, author_name, datetime.now(UTC))
        index = {id(h): i for i, h in enumerate(self.panel.hits)}
        for group in groups:
            self._render_group(group, index)

    def _render_group(self, group: ResultGroup, index: dict[int, int]) -> None:
        s = self.s
        f = self.host.fonts
        head = dpg.add_text(group.title, parent="oc_search_results", color=fonts.TEXT)
        dpg.bind_item_font(head, f.bold)
        for row in group.hits:
            i = index[id(row.hit)]
            with dpg.group(parent="oc_search_results"):
                with dpg.group(horizontal=True):
                    dpg.add_spacer(width=s(8))
                    b = dpg.add_button(
                        label=f"{row.author}  ·  {row.time_text}  ·  Jump to message",
                        tag=f"oc_search_hit_{i}",
                        callback=lambda s_, a, u: self.dispatch(it.JumpToHit(u)),
                        user_data=i,
                    )
                    dpg.bind_item_theme(b, self.host.themes["link"])
                    self.hit_buttons.append(b)
                self._flow(row.segments, float(s(WIDTH - 80)))
            dpg.add_spacer(height=s(4), parent="oc_search_results")
        dpg.add_separator(parent="oc_search_results")

    def _flow(self, segs: tuple[Segment, ...], width: float) -> None:
        """The snippet in lines of at most ``width`` pixels; matches bold and amber."""
        f = self.host.fonts
        tl = self.host.timeline
        items: list[tuple[str, bool, int | str]] = []
        for text, matched in segs:
            base = f.bold if matched else f.regular
            for chunk, script in fonts.split_emoji(text):
                font = base
                if script in fonts.LAZY_ROLES:
                    font = fonts.script_font(dpg, f, script) or base
                elif script == "emoji" and f.emoji:
                    font = f.emoji
                for word in list(chunk) if script in fonts.LAZY_ROLES else _words(chunk):
                    items.append((word, matched, font))
        lines: list[list[tuple[str, bool, int | str]]] = [[]]
        x = 0.0
        for word, matched, font in items:
            w = tl.measure(word, font) if tl is not None else len(word) * 8.0
            if x + w > width and x > 0:
                lines.append([])
                x = 0.0
                word = word.lstrip(" ")
                if not word:
                    continue
                w = tl.measure(word, font) if tl is not None else len(word) * 8.0
            cur = lines[-1]
            if cur and cur[-1][1] == matched and cur[-1][2] == font:
                cur[-1] = (cur[-1][0] + word, matched, font)
            else:
                cur.append((word, matched, font))
            x += w
        for line in lines:
            with dpg.group(horizontal=True, horizontal_spacing=0):
                dpg.add_spacer(width=self.s(16))
                for text, matched, font in line:
                    t = dpg.add_text(text, color=fonts.AMBER if matched else fonts.MUTED)
                    if font:
                        dpg.bind_item_font(t, font)
