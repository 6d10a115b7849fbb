"""The virtualised chat timeline: only a window of rows exists as widgets.

The window ``[start, end)`` of the active channel's messages is rendered into one scrolling
child window (at most ``max_rows`` row groups — enough to fill the box with the smallest rows, and
a margin — reconciled by message id: rows that leave the
window are deleted, new ones inserted in place). Following (within 120 px of the bottom, 5.10)
keeps the window on the newest rows and the scroll at the bottom; reaching the top shifts the
window up (keeping the visible row in place) and, at the oldest local message, asks for an
older page; reaching the bottom of a window that is not the newest shifts it down.
"""

from __future__ import annotations

import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import dearpygui.dearpygui as dpg

from services.core.contracts.chat import AttachmentRef, ChatMessage, LinkPreview
from ui import fonts
from ui.markdown import Block, Span, parse, safe_url, split_mentions
from ui.ports import PaneHost
from ui.state.model import TimelineRow, ViewModel, format_bytes
from ui.state.store import MessageLog

FOLLOW_PX = 120
MIN_ROW_PX = 22  # the smallest row (a compact one-line message) at 100 %
SHIFT = 8  # rows added per frame at an edge of the window (a few ms of widget building)
PREFETCH_PX = 600  # the window grows before the reader reaches its edge
AVATAR = 40


@dataclass
class RowWidget:
    tag: int | str
    signature: tuple[Any, ...]
    inputs: tuple[Any, ...] = ()  # what the row was computed from: unchanged → not recomputed


class Timeline:
    def __init__(self, view: PaneHost, container: int | str, rows_parent: int | str) -> None:
        self.view = view
        self.container = container
        self.rows_parent = rows_parent
        self.widgets: dict[str, RowWidget] = {}
        self.order: list[str] = []
        self.key: tuple[str, str] | None = None
        self.start = 0
        self.end = 0
        self.following = True
        self.bottom_frames = 0
        self.anchor: tuple[str, float] | None = None
        self.width = 600.0
        self.on_older: Callable[[str, str, str], None] | None = None
        self._text_width: dict[tuple[str, int | str], float] = {}
        self.rendered_count = 0
        self.focus_id: str | None = None  # the message a search jump showed (marked)
        self._reveal: tuple[str, int] | None = None  # (message id, frames spent placing it)

    @property
    def tail_rows(self) -> int:
        """Rows kept while following: the box filled with the smallest rows, plus a few."""
        box = float(dpg.get_item_height(self.container) or 700)
        return max(20, int(box / self.view.s(MIN_ROW_PX)) + 8)

    @property
    def max_rows(self) -> int:
        """Rows kept while reading history: the tail plus a shift above and below."""
        return self.tail_rows + 3 * SHIFT

    @property
    def model(self) -> ViewModel:
        return self.view.model

    def reset(self) -> None:
        for w in self.widgets.values():
            if dpg.does_item_exist(w.tag):
                dpg.delete_item(w.tag)
        self.widgets.clear()
        self.order.clear()
        self.following = True
        self.bottom_frames = 3
        self.anchor = None

    # -- per frame ------------------------------------------------------------------------------
    def update(self, changed: bool) -> None:
        sid, ch = self.model.active_server, self.model.channel_id
        key = (sid or "", ch or "")
        if key != self.key:
            self.key = key
            self.reset()
            changed = True
            if self._reveal is None:
                self.focus_id = None
        msgs = self.model.messages()
        n = len(msgs)
        if self._reveal is not None:
            self._place_reveal(msgs)
            return
        if self.anchor is not None:
            self._restore_anchor()
        y = dpg.get_y_scroll(self.container)
        ymax = dpg.get_y_scroll_max(self.container)
        if not changed and self.bottom_frames == 0:
            if self.following or not self.order:
                pass
            elif y <= self.view.s(PREFETCH_PX) and (self.start > 0 or self._can_load_older(msgs)):
                changed = self._shift_up(msgs)
            elif ymax - y <= self.view.s(PREFETCH_PX) and (self.end < n or self._detached()):
                changed = self._shift_down(msgs)
            n = len(msgs)  # a page may have come back from the compact store
            if ymax > 0:
                self.following = ymax - y <= FOLLOW_PX and self.end >= n and not self._detached()
        if changed:
            if self.following or not self.order:
                self.end = n
                self.start = max(0, n - self.tail_rows)
            else:
                self.end = min(n, max(self.end, self.start + 1))
                if self.end < n and self.end - self.start < self.max_rows:
                    self.end = min(n, self.start + self.max_rows)
            self._reconcile(msgs)
            self._trim()
            if self.following:
                self.bottom_frames = 3
        self._anchor_bottom()
        if self.bottom_frames > 0:
            dpg.set_y_scroll(self.container, dpg.get_y_scroll_max(self.container))
            self.bottom_frames -= 1

    def _anchor_bottom(self) -> None:
        """Few messages sit at the bottom of the timeline, next to the composer (as in ux.md)."""
        if not dpg.does_item_exist("oc_rows_top"):
            return
        rows_h = float(dpg.get_item_rect_size(self.rows_parent)[1])
        box_h = float(dpg.get_item_height(self.container) or 0)
        want = max(0.0, box_h - rows_h - self.view.s(40))
        have = float(dpg.get_item_height("oc_rows_top") or 0)
        if abs(want - have) > 2:
            dpg.configure_item("oc_rows_top", height=int(want))

    def scroll_by(self, dy: float) -> None:
        """Programmatic scroll (the benchmark and tests; the mouse wheel does the same)."""
        y = dpg.get_y_scroll(self.container)
        ymax = dpg.get_y_scroll_max(self.container)
        ny = max(0.0, min(ymax, y + dy))
        dpg.set_y_scroll(self.container, ny)
        if dy < 0:
            self.following = False
            self.bottom_frames = 0

    def _log(self) -> MessageLog | None:
        sm = self.model.server
        ch = self.model.channel_id
        return sm.logs.get(ch) if sm is not None and ch is not None else None

    def away_from_present(self) -> bool:
        """The reader is in older messages: far above the newest, or beyond the kept window."""
        return self._detached() or (
            not self.following and len(self.model.messages()) - self.end > self.tail_rows
        )

    def reveal(self, message_id: str) -> None:
        """Show ``message_id`` (in the open channel's window) a third down the box, marked, not
        following (a search hit; ``ui.search_flow``)."""
        self.focus_id = message_id
        self._reveal = (message_id, 0)
        self.model.touch("timeline")

    def _place_reveal(self, msgs: list[ChatMessage]) -> None:
        assert self._reveal is not None
        mid, frames = self._reveal
        idx = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].id == mid), None)
        if idx is None:
            self._reveal = None
            return
        if frames == 0:
            # the rows around it: more than a prefetch margin on both sides, so no shift of the
            # window follows at once (the reader has not moved yet)
            self.following = False
            self.bottom_frames = 0
            self.anchor = None
            self.start = max(0, idx - self.tail_rows - 2 * SHIFT)
            self.end = min(len(msgs), idx + self.tail_rows)
            self._reconcile(msgs)
            self._trim()
            self._reveal = (mid, 1)
            return
        w = self.widgets.get(mid)  # laid out: scroll to it (until the scroll is where it should be)
        if w is None or frames > 12:
            self._reveal = None
            return
        self._anchor_bottom()
        rows_y = float(dpg.get_item_rect_min(self.rows_parent)[1])  # the rows' group: its top
        content_y = float(dpg.get_item_rect_min(w.tag)[1]) - rows_y
        box_h = float(dpg.get_item_height(self.container) or 0)
        ymax = dpg.get_y_scroll_max(self.container)
        target = max(0.0, min(ymax, content_y - box_h / 3))
        if frames > 2 and abs(dpg.get_y_scroll(self.container) - target) <= 2:
            self._reveal = None  # in place (the layout and the scroll range have settled)
            return
        dpg.set_y_scroll(self.container, target)
        self._reveal = (mid, frames + 1)

    def revealed(self) -> bool:
        """A reveal asked for is done (tests wait for it)."""
        return self._reveal is None and self.focus_id is not None and self.focus_id in self.widgets

    def jump_to_present(self) -> None:
        self.focus_id = None
        log = self._log()
        if log is not None:
            log.attach()
        self.key = None  # rebuilt at the newest rows on the next update
        self.view.model.touch("timeline")

    def _detached(self) -> bool:
        log = self._log()
        return log is not None and log.detached

    def _trim(self) -> None:
        """Keep the channel's live objects bounded around the rows on screen (ui.state.store)."""
        log = self._log()
        if log is None:
            return
        front = log.trim(self.start, self.end, self.following)
        self.start -= front
        self.end -= front

    def _can_load_older(self, msgs: list[ChatMessage]) -> bool:
        sm = self.model.server
        ch = self.model.channel_id
        if sm is None or ch is None or not msgs:
            return False
        log = sm.logs.get(ch)
        return bool(log is not None and log.older) or (sm.has_more.get(ch, False) and ch not in sm.loading)

    def _shift_up(self, msgs: list[ChatMessage]) -> bool:
        if self.start == 0:
            log = self._log()
            back = log.unspill_older() if log is not None else 0
            if back:  # older messages kept compactly: no round trip to the stack
                self.start += back
                self.end += back
            else:
                sm = self.model.server
                ch = self.model.channel_id
                if sm is not None and ch is not None and self.on_older is not None and msgs:
                    sm.loading.add(ch)
                    self.on_older(sm.server_id, ch, msgs[0].id)
                return False
        if self.order:
            self.anchor = (self.order[0], self._screen_y(self.order[0]))
        self.start = max(0, self.start - SHIFT)
        self.end = min(len(msgs), self.start + self.max_rows)
        return True

    def _shift_down(self, msgs: list[ChatMessage]) -> bool:
        if self.end >= len(msgs):
            log = self._log()
            if log is None or not log.unspill_newer():
                return False
        n = len(msgs)
        if self.order:
            self.anchor = (self.order[-1], self._screen_y(self.order[-1]))
        self.end = min(n, self.end + SHIFT)
        self.start = max(0, self.end - self.max_rows)
        return True

    def on_prepended(self, added: int) -> None:
        """Older messages were inserted before the window: keep it on the same messages."""
        self.start += added
        self.end += added
        if self.order:
            self.anchor = (self.order[0], self._screen_y(self.order[0]))

    def _screen_y(self, mid: str) -> float:
        w = self.widgets.get(mid)
        if w is None:
            return 0.0
        return float(dpg.get_item_rect_min(w.tag)[1])

    def _restore_anchor(self) -> None:
        assert self.anchor is not None
        mid, old_y = self.anchor
        self.anchor = None
        w = self.widgets.get(mid)
        if w is None:
            return
        new_y = float(dpg.get_item_rect_min(w.tag)[1])
        if new_y != old_y:
            y = dpg.get_y_scroll(self.container)
            dpg.set_y_scroll(self.container, max(0.0, y + (new_y - old_y)))

    # -- reconcile ------------------------------------------------------------------------------
    def _reconcile(self, msgs: list[ChatMessage]) -> None:
        sm = self.model.server
        if sm is None:
            self.reset()
            return
        want = [msgs[i].id for i in range(self.start, self.end)]
        want_set = set(want)
        for mid in [m for m in self.order if m not in want_set]:
            w = self.widgets.pop(mid)
            if dpg.does_item_exist(w.tag):
                dpg.delete_item(w.tag)
        existing = [m for m in self.order if m in want_set]
        # build rows; insert each before the next existing one
        next_existing: dict[int, str | None] = {}
        nxt: str | None = None
        for idx in range(len(want) - 1, -1, -1):
            next_existing[idx] = nxt
            if want[idx] in self.widgets:
                nxt = want[idx]
        version = (self.model.rows_version, self.model.display_name, date.today())
        images = self.view.app.images
        for idx, mid in enumerate(want):
            i = self.start + idx
            m = msgs[i]
            ready = (
                sum(1 for a in m.attachments if images.key(m, a) in images.textures) if m.attachments else 0
            )
            inputs = (msgs[i - 1].id if i > 0 else None, ready, version, mid == self.focus_id)
            old = self.widgets.get(mid)
            if old is not None and old.inputs == inputs:
                continue
            row = self.model.row(msgs, i, sm)
            cards = tuple(
                (p.url, p.title, self.view.app.preview_texture(m, i) is not None)
                for i, p in enumerate(m.link_previews)
            )
            avatar = None if row.compact else self.view.app.avatar_texture(sm.server_id, m.author_uid)
            pic = avatar[0] if avatar is not None else self.view.avatar_colors(m.author_uid)
            sig = (
                row.compact,
                row.author,
                row.time_text,
                row.quote,
                row.highlight,
                m.body,
                ready,
                cards,
                pic,
                mid == self.focus_id,
            )
            if old is not None and old.signature == sig:
                old.inputs = inputs
                continue
            before_id = next_existing[idx]
            if old is not None:
                tag = self._build_row(row, before=old.tag)
                dpg.delete_item(old.tag)
            else:
                before = self.widgets[before_id].tag if before_id else 0
                tag = self._build_row(row, before=before)
            self.widgets[mid] = RowWidget(tag, sig, inputs)
        del existing
        self.order = want
        self.rendered_count = len(self.order)

    # -- row building -----------------------------------------------------------------------------
    def _build_row(self, row: TimelineRow, before: int | str = 0) -> int | str:
        v = self.view
        s = v.s
        m = row.message
        kwargs: dict[str, Any] = {"parent": self.rows_parent}
        if before:
            kwargs["before"] = before
        with dpg.group(**kwargs) as g:
            if not row.compact:
                dpg.add_spacer(height=s(6))
            if m.id == self.focus_id:  # the search hit jumped to
                with dpg.group(horizontal=True):
                    dpg.add_spacer(width=s(AVATAR))
                    mark = dpg.add_text("• Search result", color=fonts.LINK)
                    dpg.bind_item_font(mark, v.fonts.bold)
            if row.quote:
                with dpg.group(horizontal=True):
                    dpg.add_spacer(width=s(AVATAR))
                    corner = dpg.add_text("╭", color=fonts.MUTED)
                    dpg.bind_item_font(corner, v.fonts.emoji)
                    ref = m.reply_to
                    if ref is not None and ref.author_uid and not ref.is_unavailable:
                        self._small_avatar(ref.author_uid)
                    q = dpg.add_text(row.quote, color=fonts.MUTED)
                    dpg.bind_item_font(q, v.fonts.small)
            body_w = max(100.0, self.width - s(AVATAR + 40))
            with dpg.group(horizontal=True):
                if row.compact:
                    dpg.add_spacer(width=s(AVATAR))
                else:
                    self._avatar(row)
                with dpg.group():
                    if not row.compact:
                        with dpg.group(horizontal=True):
                            if row.highlight:
                                mark = dpg.add_text("▎", color=fonts.AMBER)
                                dpg.bind_item_font(mark, v.fonts.emoji)
                            name = dpg.add_text(
                                row.author, color=fonts.AMBER if row.highlight else fonts.TEXT
                            )
                            dpg.bind_item_font(name, v.fonts.bold)
                            t = dpg.add_text(row.time_text, color=fonts.MUTED)
                            dpg.bind_item_font(t, v.fonts.small)
                            with dpg.tooltip(t):
                                dpg.add_text(row.full_time)
                    self.render_body(m.body, body_w, inline_time=row.time_text if row.compact else None)
                    for att in m.attachments:
                        self._attachment(m, att)
                    for index, card in enumerate(m.link_previews):
                        self._preview(m, index, card, body_w)
        return g  # type: ignore[no-any-return]

    def _avatar(self, row: TimelineRow) -> None:
        s = self.view.s
        size = s(AVATAR)
        with dpg.drawlist(width=size, height=size):
            sid = self.model.active_server or ""
            tex = self.view.app.avatar_texture(sid, row.message.author_uid)
            if tex is not None:
                round_image(tex[0], size, fonts.BG)
                return
            top, rim = self.view.avatar_colors(row.message.author_uid)
            dpg.draw_circle(
                (size / 2, size / 2), size / 2 - 1, fill=(*top, 255), color=(*rim, 255), thickness=2
            )
            initial = (row.author[:1] or "?").upper()
            fsz = size * 0.5
            dpg.draw_text(
                (size / 2 - fsz * 0.3, size / 2 - fsz * 0.6), initial, size=fsz, color=(255, 255, 255)
            )

    def _small_avatar(self, uid: str) -> None:
        """The quoted author's avatar on a reply's quote line (ux.md 2.5)."""
        size = self.view.s(14)
        line = self.view.s(20)  # centred on the small text's line
        with dpg.drawlist(width=size, height=line):
            dy = (line - size) / 2 + self.view.s(2)
            top, _ = self.view.avatar_colors(uid)
            dpg.draw_circle((size / 2, dy + size / 2), size / 2, fill=(*top, 255), color=(*top, 255))

    def _attachment(self, m: ChatMessage, att: AttachmentRef) -> None:
        v = self.view
        tex = v.app.images.texture_for(m, att)
        label = att.file_name or "image.png"
        if tex is not None:
            tag, w, h = tex
            scale = min(1.0, v.s(360) / max(1, w), v.s(240) / max(1, h))
            dpg.add_image_button(
                tag,
                width=int(w * scale),
                height=int(h * scale),
                callback=lambda: v.open_lightbox(m, att),
            )
        else:
            dpg.add_button(
                label=f"Image: {label} · {format_bytes(att.bytes)}",
                callback=lambda: v.open_lightbox(m, att),
            )
        cap = dpg.add_text(label, color=fonts.MUTED)
        dpg.bind_item_font(cap, v.fonts.small)

    def _preview(self, m: ChatMessage, index: int, card: LinkPreview, width: float) -> None:
        """A link preview card (ux.md 2.5 item 5): site, title (opens the link), description and
        the image. The stack fetched all of it (P6); the image comes over the member's bus
        connection (``App.preview_texture``, ADR 0010), never from the page's host."""
        v = self.view
        s = v.s
        with dpg.group(horizontal=True):
            bar = dpg.add_text("▎", color=fonts.LINK)
            dpg.bind_item_font(bar, v.fonts.emoji)
            tex = v.app.preview_texture(m, index) if card.image_url else None
            if tex is not None:
                scale = min(s(80) / max(tex[2], 1), s(120) / max(tex[1], 1), 1.0 * s(1))
                dpg.add_image(tex[0], width=max(1, int(tex[1] * scale)), height=max(1, int(tex[2] * scale)))
            with dpg.group():
                if card.site_name:
                    site = dpg.add_text(card.site_name, color=fonts.MUTED)
                    dpg.bind_item_font(site, v.fonts.small)
                title = card.title or card.url
                if safe_url(card.url):
                    b = dpg.add_button(
                        label=_clip(title, 90), callback=lambda s_, a_, u: open_link(u), user_data=card.url
                    )
                    dpg.bind_item_theme(b, v.themes["link"])
                    dpg.bind_item_font(b, v.fonts.bold)
                    with dpg.tooltip(b):
                        dpg.add_text(card.url)
                else:
                    t = dpg.add_text(_clip(title, 90))
                    dpg.bind_item_font(t, v.fonts.bold)
                if card.description:
                    d = dpg.add_text(
                        _clip(card.description, 300), wrap=int(min(width, s(520))), color=fonts.MUTED
                    )
                    dpg.bind_item_font(d, v.fonts.small)

    # -- markdown-lite as widgets -------------------------------------------------------------------
    def render_body(self, text: str, width: float, inline_time: str | None = None) -> None:
        v = self.view
        blocks = parse(text) if text else []
        if not blocks and inline_time:
            t = dpg.add_text(inline_time, color=fonts.MUTED)
            dpg.bind_item_font(t, v.fonts.small)
            return
        for bi, block in enumerate(blocks):
            last = bi == len(blocks) - 1
            suffix = inline_time if last else None
            self._block(block, width, suffix)

    def _block(self, block: Block, width: float, suffix: str | None) -> None:
        v = self.view
        s = v.s
        if block.kind == "divider":
            dpg.add_separator()
            return
        if block.kind == "code":
            with dpg.group(horizontal=True):
                dpg.add_spacer(width=s(4))
                with dpg.group():
                    if block.lang:
                        lang = dpg.add_text(block.lang, color=fonts.MUTED)
                        dpg.bind_item_font(lang, v.fonts.small)
                    code = dpg.add_text(block.spans[0].text if block.spans else "", color=(200, 210, 230))
                    dpg.bind_item_font(code, v.fonts.mono)
            return
        font = v.fonts.heading if block.kind == "heading" else v.fonts.regular
        indent = 0.0
        prefix: list[Span] = []
        if block.kind == "list_item":
            indent = s(16) * (block.level + 1)
            prefix = [Span(f"{block.marker} ")]
        elif block.kind == "quote":
            indent = s(12)
        spans = prefix + split_mentions(block.spans)
        color = fonts.MUTED if block.kind == "quote" else fonts.TEXT
        plain = all(
            not (sp.bold or sp.italic or sp.strike or sp.code or sp.url or sp.mention) for sp in spans
        ) and not any(fonts.has_emoji(sp.text) for sp in spans)
        with dpg.group(horizontal=True):
            if indent:
                if block.kind == "quote":
                    bar = dpg.add_text("▎", color=fonts.MUTED)
                    dpg.bind_item_font(bar, v.fonts.emoji)
                else:
                    dpg.add_spacer(width=indent)
            with dpg.group():
                if plain and suffix is None:
                    t = dpg.add_text("".join(sp.text for sp in spans), wrap=int(width - indent), color=color)
                    dpg.bind_item_font(t, font)
                else:
                    self._flow(spans, width - indent, font, color, suffix)

    def _font_for(self, sp: Span, base: int | str) -> int | str:
        f = self.view.fonts
        if sp.code:
            return f.mono
        if sp.bold:
            return f.bold
        if sp.italic:
            return f.italic
        return base

    def _script_font(self, script: str, sp: Span, base: int | str) -> int | str:
        f = self.view.fonts
        if script == "emoji" and f.emoji:
            return f.emoji
        if script in fonts.LAZY_ROLES:
            font = fonts.script_font(dpg, f, script)
            if font:
                return font
        return self._font_for(sp, base)

    def measure(self, text: str, font: int | str) -> float:
        key = (text, font)
        w = self._text_width.get(key)
        if w is None:
            size = dpg.get_text_size(text, font=font) if font else dpg.get_text_size(text)
            w = float(size[0]) if size and size[0] > 0 else len(text) * self.view.fonts.size * 0.55
            if len(self._text_width) > 50_000:
                self._text_width.clear()
            self._text_width[key] = w
        return w

    def _flow(
        self, spans: list[Span], width: float, base: int | str, color: tuple[int, ...], suffix: str | None
    ) -> None:
        """Lay styled runs out in lines of at most ``width`` pixels, one widget per run."""
        v = self.view
        lines: list[list[tuple[str, Span, str]]] = [[]]
        x = 0.0
        items: list[tuple[str, Span, str]] = []
        sm = self.model.server
        for sp in spans:
            if sp.mention:
                token = sp.mention[1:]
                label = f"@{sm.name_of(token)}" if sm is not None and token.startswith("uid_") else sp.mention
                items.append((label, sp, ""))
                continue
            for chunk, emoji in fonts.split_emoji(sp.text):
                parts = chunk.split("\n")
                for pi, part in enumerate(parts):
                    if pi > 0:
                        items.append(("\n", sp, ""))
                    for word in list(part) if emoji in ("cjk", "hangul") else _words(part):
                        items.append((word, sp, emoji))
        if suffix:
            items.append(("  " + suffix, Span("", italic=False), ""))
        for word, sp, emoji in items:
            if word == "\n":
                lines.append([])
                x = 0.0
                continue
            font = self._script_font(emoji, sp, base)
            w = self.measure(word, font)
            if x + w > width and x > 0:
                lines.append([])
                x = 0.0
                word = word.lstrip(" ")
                if not word:
                    continue
                w = self.measure(word, font)
            cur = lines[-1]
            if cur and cur[-1][1] == sp and cur[-1][2] == emoji:
                cur[-1] = (cur[-1][0] + word, sp, emoji)
            else:
                cur.append((word, sp, emoji))
            x += w
        for line in lines:
            with dpg.group(horizontal=True, horizontal_spacing=0):
                if not line:
                    dpg.add_text("")
                for text, sp, emoji in line:
                    font = self._script_font(emoji, sp, base)
                    if sp.url and safe_url(sp.url):
                        url = sp.url
                        b = dpg.add_button(label=text, callback=lambda s_, a_, u: open_link(u), user_data=url)
                        dpg.bind_item_theme(b, v.themes["link"])
                        dpg.bind_item_font(b, font)
                        with dpg.tooltip(b):
                            dpg.add_text(url)
                        continue
                    if sp.mention:
                        pill = dpg.add_button(label=text, small=True)
                        mine = sm is not None and sp.mention in (
                            f"@{sm.record.user_uid}",
                            "@here",
                            "@channel",
                        )
                        dpg.bind_item_theme(pill, v.themes["pill_me" if mine else "pill"])
                        dpg.bind_item_font(pill, font)
                        with dpg.tooltip(pill):
                            dpg.add_text(sp.mention)
                        continue
                    col = color
                    if sp.code:
                        col = (235, 190, 130)
                    elif not sp.text and suffix:
                        col = fonts.MUTED
                    if sp.strike and not emoji:  # U+0336 COMBINING LONG STROKE OVERLAY: a real line
                        core = text.strip()
                        lead = text[: len(text) - len(text.lstrip())]
                        trail = text[len(text.rstrip()) :]
                        text = lead + "".join(ch + "\u0336" for ch in core) + trail
                    t = dpg.add_text(text, color=col)
                    dpg.bind_item_font(t, font)


def round_image(texture: int | str, size: float, bg: tuple[int, int, int]) -> None:
    """An image drawn as a round avatar: the square's corners covered by a ring in the colour
    behind it (Dear PyGui draws images unclipped)."""
    dpg.draw_image(texture, (0, 0), (size, size))
    ring = size * 0.22
    dpg.draw_circle((size / 2, size / 2), size / 2 + ring / 2, color=(*bg, 255), thickness=ring)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _words(text: str) -> list[str]:
    """Split keeping the leading spaces with each word (so runs re-join exactly)."""
    out: list[str] = []
    cur = ""
    for ch in text:
        if ch == " " and cur and not cur.endswith(" "):
            out.append(cur)
            cur = ch
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def open_link(url: str) -> bool:
    """P3: only http/https URLs are handed to the system browser."""
    ok = safe_url(url)
    if ok is None:
        return False
    webbrowser.open(ok)
    return True
