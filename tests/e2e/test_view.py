"""The desktop view under Xvfb, driven through the app's own callbacks with Snapshot/event
objects (no stack needed): layout, navigation, keyboard map, overlays, scale, virtualisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.core.contracts.chat import AttachmentRef, ConnectionState, MessageCreated, Typing
from testkit import fakes
from tests.e2e.conftest import Shooter, label_of, render, text_of
from ui.storage import Storage


def workspace(ui_factory: Any, n_messages: int = 0, **kw: Any) -> Any:
    app = ui_factory(**kw)
    app.screen = "workspace"
    app.member = "vinnie"
    app.model.display_name = "Vinnie"
    app.model.apply_snapshot(fakes.snapshot(n_messages=n_messages))
    app.model.set_stack_online(True)
    app.view.layout(1480, 920)
    return app


def is_shown(tag: str) -> bool:
    import dearpygui.dearpygui as dpg

    return bool(dpg.does_item_exist(tag) and dpg.is_item_shown(tag))


def test_workspace_renders(ui_factory: Any, shooter: Shooter) -> None:
    app = workspace(ui_factory)
    shooter.shot(app, "workspace")
    assert label_of("oc_chip") == "Live"
    assert text_of("oc_build_label") == "build main · a5ab8f8885bc"
    assert text_of("oc_channel_title") == "# test-general"
    assert text_of("oc_members_title") == "Online - 1"
    assert text_of("oc_dock_uid") == "@uid_2c203bed"
    assert app.view.timeline.rendered_count == 7
    struck = [t for mid in app.view.timeline.order for t in _texts_under(app.view.timeline.widgets[mid].tag)]
    assert "g\u0336o\u0336n\u0336e\u0336" in [t.strip() for t in struck]  # ~~gone~~, drawn struck through
    assert app.model.rows()[-1].highlight  # mentions me


def test_switch_channels_and_servers(ui_factory: Any, shooter: Shooter) -> None:
    app = workspace(ui_factory)
    shooter.shot(app, "general")
    app.workspace.select_channel("ch_qa")
    render(app)
    assert text_of("oc_channel_title") == "# qa-playground"
    assert text_of("oc_timeline_state") == "No messages yet."
    shooter.shot(app, "qa_empty")
    app.workspace.select_server("srv_harbor")
    render(app)
    assert text_of("oc_channel_title") == "# harbor-general"
    assert text_of("oc_dock_uid") == "@uid_77aa0d11"  # the uid of THAT server
    shooter.shot(app, "harbor")
    app.workspace.select_server("srv_testlab")
    assert app.model.channel_id == "ch_qa"  # remembered per server


def test_keyboard_map(ui_factory: Any, shooter: Shooter) -> None:
    app = workspace(ui_factory)
    render(app)
    assert app.workspace.on_key("down", alt=True) and app.model.channel_id == "ch_qa"
    assert app.workspace.on_key("up", alt=True) and app.model.channel_id == "ch_general"
    assert app.workspace.on_key("down", ctrl=True, alt=True) and app.model.active_server == "srv_harbor"
    assert app.workspace.on_key("up", ctrl=True, alt=True) and app.model.active_server == "srv_testlab"
    ev = MessageCreated(message=fakes.msg("srv_harbor", "ch_ops", "k1", "uid_h", "x", fakes.NOW))
    app.model.apply_event(50, fakes.event("message.created", "srv_harbor", ev))
    assert app.workspace.on_key("down", alt=True, shift=True)
    assert (app.model.active_server, app.model.channel_id) == ("srv_harbor", "ch_ops")
    # type-to-focus
    assert app.workspace.on_key("h") and app.workspace.on_key("i", shift=True)
    render(app)
    assert text_of("oc_composer") == "hI"
    # Ctrl+K quick switcher, fuzzy, arrows, Enter; Esc closes
    app.workspace.on_key("k", ctrl=True)
    render(app)
    assert is_shown("oc_switcher")
    items = app.workspace.quick_query("tgen")
    assert items[0].label == "# test-general"
    shooter.shot(app, "switcher")
    app.workspace.on_key("enter")
    render(app)
    assert not is_shown("oc_switcher")
    assert (app.model.active_server, app.model.channel_id) == ("srv_testlab", "ch_general")
    app.workspace.on_key("k", ctrl=True)
    render(app)
    app.workspace.on_key("escape")
    render(app)
    assert not is_shown("oc_switcher")


def test_collapse_filter_persist_across_restart(ui_factory: Any, tmp_path: Path, shooter: Shooter) -> None:
    storage = Storage(tmp_path / "cfg")
    app = workspace(ui_factory, storage=storage)
    shooter.shot(app, "expanded")
    app.workspace.toggle_group("grp_voice")
    render(app)
    assert not is_shown("oc_chan_ch_huddle") and is_shown("oc_chan_ch_general")
    shooter.shot(app, "collapsed")
    app.workspace.set_filter("qa")
    render(app)
    assert is_shown("oc_chan_ch_qa") and not is_shown("oc_chan_ch_general")
    app.workspace.set_filter("")
    app.workspace.select_channel("ch_qa")
    app.save_prefs()
    app.view.destroy()
    app2 = workspace(ui_factory, storage=storage)
    render(app2)
    assert ("srv_testlab", "grp_voice") in app2.model.collapsed  # D16
    assert ("srv_harbor", "grp_voice") not in app2.model.collapsed
    assert app2.model.channel_id == "ch_qa"  # remembered across restarts (3.3)
    assert not is_shown("oc_chan_ch_huddle")


def test_typing_chip_and_banners(ui_factory: Any, shooter: Shooter) -> None:
    app = workspace(ui_factory)
    shooter.shot(app, "live")
    typing = Typing(channel_id="ch_general", user_uid="uid_tl_1", is_typing=True)
    app.model.apply_event(20, fakes.event("typing", "srv_testlab", typing))
    retry = datetime.now(UTC) + timedelta(seconds=5)
    st = ConnectionState(state="reconnecting", attempt=1, next_retry_at=retry)
    app.model.apply_event(21, fakes.event("server.connection", "srv_testlab", st))
    render(app, 40)
    assert text_of("oc_typing") == "User tl_1 is typing..."
    assert label_of("oc_chip").startswith("Reconnecting in ")
    shooter.shot(app, "reconnecting")
    app.model.apply_event(22, fakes.event("server.connection", "srv_testlab", ConnectionState(state="live")))
    render(app, 40)
    assert label_of("oc_chip") == "Live"
    off = ConnectionState(state="offline", reason="connection refused", next_retry_at=retry)
    app.model.apply_event(23, fakes.event("server.connection", "srv_testlab", off))
    render(app, 40)
    assert label_of("oc_chip") == "Offline"
    assert text_of("oc_banner_offline:srv_testlab").startswith("TestLab Server is unreachable. Retrying in")
    shooter.shot(app, "server_offline")


def test_composer_limits_and_reply(ui_factory: Any, tmp_path: Path, shooter: Shooter) -> None:
    app = workspace(ui_factory)
    render(app)
    app.workspace.set_composer("x" * 70_000)
    app.workspace.on_composer_enter(shift=False)
    render(app)
    assert text_of("oc_composer_error") == "Message is too large. Max 64 KB."
    shooter.shot(app, "too_large")
    png = tmp_path / "pic.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 40, 40)).save(png)
    assert app.workspace.attach_files([png] * 5) == "Only the first 4 images were added."
    app.workspace.reply_to("m3")
    render(app)
    assert is_shown("oc_reply_banner") and text_of("oc_reply_name") == "Vinnie"
    shooter.shot(app, "reply_and_attachments")
    app.workspace.select_channel("ch_qa")  # switching channels clears draft, attachments and reply
    render(app)
    assert not is_shown("oc_reply_banner") and not app.composer.attachments


def test_image_card_and_lightbox(ui_factory: Any, shooter: Shooter) -> None:
    import numpy as np

    app = workspace(ui_factory)
    att = AttachmentRef(
        attachment_id="a1",
        file_name="image.png",
        content_type="image/png",
        bytes=4096,
        width=64,
        height=48,
        url="https://x/a1",
    )
    m = fakes.msg("srv_testlab", "ch_general", "img1", "uid_tl_2", "logo", fakes.NOW, attachments=[att])
    key = app.images.key(m, att)
    rgba = np.zeros((48, 64, 4), dtype=np.float32)
    rgba[..., 2] = 1.0
    rgba[..., 3] = 1.0
    rgba[10:38, 10:54, 0] = 1.0
    app.images.put_rgba(key, 64, 48, rgba.reshape(-1))
    app.model.apply_event(30, fakes.event("message.created", "srv_testlab", MessageCreated(message=m)))
    shooter.shot(app, "image_card")
    app.view.open_lightbox(m, att)
    render(app)
    assert is_shown("oc_lightbox")
    assert app.view.lightbox_zoom(3) == pytest.approx(1.54)
    cx, _cy = app.view.lightbox_pan(-40, 0)  # drag left: look further right
    assert cx > 0.5
    shooter.shot(app, "lightbox")
    app.workspace.on_key("escape")
    render(app)
    assert not is_shown("oc_lightbox")


def test_links_open_only_http(monkeypatch: pytest.MonkeyPatch) -> None:
    from ui.view import timeline

    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url))
    assert timeline.open_link("https://example.org/x")
    assert not timeline.open_link("javascript:alert(1)")
    assert not timeline.open_link("file:///etc/passwd")
    assert opened == ["https://example.org/x"]


def test_scale_200_and_narrow_widths(ui_factory: Any, shooter: Shooter) -> None:
    app = workspace(ui_factory, scale=2.0)
    app.view.layout(1480, 920)
    shooter.shot(app, "scale200")
    app.view.destroy()
    app2 = workspace(ui_factory)
    app2.view.layout(1200, 800)
    render(app2)
    assert not is_shown("oc_members")  # below 1240 px
    assert is_shown("oc_channels")
    shooter.shot(app2, "w1200")
    app2.view.layout(850, 700)
    render(app2)
    assert not is_shown("oc_channels") and not is_shown("oc_dock")  # below 900 px
    shooter.shot(app2, "w850")
    app2.view.layout(1480, 920)
    app2.workspace.toggle_members()
    render(app2)
    assert not is_shown("oc_members")


def test_menus_settings_and_first_run(ui_factory: Any, shooter: Shooter) -> None:
    app = workspace(ui_factory)
    ev = MessageCreated(message=fakes.msg("srv_harbor", "ch_ops", "q1", "uid_h", "x", fakes.NOW))
    app.model.apply_event(40, fakes.event("message.created", "srv_harbor", ev))
    render(app)
    app.view.open_server_menu("srv_harbor")
    render(app)
    assert is_shown("oc_ctx") and label_of("oc_ctx_leave") == "Leave Server"
    shooter.shot(app, "server_menu")
    app.view._menu(app.workspace.mark_server_read, "srv_harbor")
    render(app)
    assert app.model.rail_badge("srv_harbor") == ("", False)
    app.workspace.on_key("escape")
    # the message menu (features 5.8): Copy Message Link puts the backend URL form on the clipboard
    import dearpygui.dearpygui as dpg

    app.workspace.select_server("srv_testlab")
    render(app)
    mid = app.view.timeline.order[-1]
    app.view.open_message_menu(mid)
    render(app)
    labels = [
        dpg.get_item_label(i) for i in dpg.get_item_children(dpg.get_item_children("oc_ctx_items", 1)[0], 1)
    ]
    assert labels == ["Reply", "Copy Text", "Copy Message Link", "Mark Unread"]
    shooter.shot(app, "message_menu")
    app.view._menu(app.workspace.copy_link, mid)
    render(app)
    assert dpg.get_clipboard_text() == f"https://chat.example.test/channels/ch_general?message_id={mid}"
    assert app.model.toasts[-1].text == "Message link copied."
    app.workspace.open_settings()
    render(app)
    assert text_of("oc_set_uid") == "current UID: uid_2c203bed"
    assert text_of("oc_set_disclosure") == "This server sees only a server-scoped UID and proof."
    shooter.shot(app, "settings")
    app.workspace.on_key("escape")
    app.view.destroy()
    first = ui_factory()
    first.start()
    first.view.layout(1480, 920)
    render(first)
    assert first.screen == "firstrun" and is_shown("oc_firstrun")
    assert not first.choose_connection("/nonexistent/member.json")
    render(first)
    assert text_of("oc_conn_error").startswith("Cannot read a connection file")
    shooter.shot(first, "first_run")


def test_long_timeline_renders_only_a_window(ui_factory: Any, shooter: Shooter) -> None:
    app = workspace(ui_factory, n_messages=5000)
    render(app, 5)
    tl = app.view.timeline
    assert tl.rendered_count <= 80 and tl.following
    assert tl.order[-1] == "bulk004999"
    shooter.shot(app, "bottom")
    for _ in range(60):  # scroll up to the top of the window: it shifts to older rows
        tl.scroll_by(-4000)
        render(app, 2)
    assert tl.start < 5000 - 60 and tl.rendered_count <= 80
    shooter.shot(app, "scrolled_up")
    # a message arriving while scrolled up does not move the view
    first = tl.order[0]
    ev = MessageCreated(
        message=fakes.msg("srv_testlab", "ch_general", "new1", "uid_x", "new", fakes.NOW + timedelta(hours=1))
    )
    app.model.apply_event(99, fakes.event("message.created", "srv_testlab", ev))
    render(app, 3)
    assert tl.order[0] == first and not tl.following


def test_scrolling_through_a_long_channel_keeps_objects_bounded(ui_factory: Any, shooter: Shooter) -> None:
    """2,000 messages: the timeline reaches the oldest and back with at most a bounded window of
    message objects; the rest waits in compact pages; arrivals while reading history wait in the
    tail and show once the reader is back at the present."""
    from ui.state.store import PAGE, WINDOW_IDLE, WINDOW_MAX

    app = workspace(ui_factory, n_messages=2000)
    tl = app.view.timeline
    sm = app.model.server
    log = sm.logs["ch_general"]
    every = [m.id for m in log.window]  # the snapshot's, in timeline order (before any paging)
    assert len(every) > 2000
    render(app, 5)
    assert len(log) <= WINDOW_IDLE + PAGE and log.spilled >= 2000 - WINDOW_IDLE - PAGE
    assert not is_shown("oc_jump")
    seen: set[str] = set(tl.order)
    biggest = 0
    for _ in range(400):
        tl.scroll_by(-4000)
        render(app, 2)
        seen.update(tl.order)
        biggest = max(biggest, len(log))
        if tl.start == 0 and not log.older:
            break
    assert tl.order[0] == every[0] and biggest <= WINDOW_MAX + 2 * PAGE
    assert seen == set(every)
    assert log.detached and is_shown("oc_jump")
    shooter.shot(app, "oldest")
    # a message arriving now goes to the compact tail, not under the reader's eyes
    ev = MessageCreated(
        message=fakes.msg(
            "srv_testlab", "ch_general", "late1", "uid_x", "late", fakes.NOW + timedelta(hours=1)
        )
    )
    app.model.apply_event(99, fakes.event("message.created", "srv_testlab", ev))
    render(app, 3)
    assert "late1" not in tl.order and tl.order[0] == every[0]
    # scrolling down reaches the present and the late message, following again
    for _ in range(400):
        tl.scroll_by(4000)
        render(app, 2)
        if tl.following:
            break
    render(app, 4)
    assert tl.following and tl.order[-1] == "late1" and not log.detached
    assert not is_shown("oc_jump")
    shooter.shot(app, "present")
    # "Jump to present" from deep history without paging through what lies between
    for _ in range(30):
        tl.scroll_by(-4000)
        render(app, 2)
    assert is_shown("oc_jump")
    app.workspace.jump_to_present()
    render(app, 5)
    assert tl.following and tl.order[-1] == "late1" and not is_shown("oc_jump")


def test_mention_autocomplete_and_emoji_picker(ui_factory: Any, shooter: Shooter) -> None:
    app = workspace(ui_factory)
    render(app)
    app.workspace.on_draft("hi @us")
    render(app)
    tokens = [t for t, _ in app.workspace.mention_items]
    assert sorted(tokens) == ["@uid_tl_1", "@uid_tl_2"]
    shooter.shot(app, "mention_list")
    assert app.workspace.on_key("down", text_active=True) and app.workspace.mention_index == 1
    app.workspace.on_composer_enter(shift=False)  # Enter inserts the mention, does not send
    render(app)
    assert app.composer.draft == f"hi {tokens[1]} " and not app.workspace.mention_items
    app.workspace.on_draft(f"hi {tokens[1]} and @he")
    assert app.workspace.on_key("tab", text_active=True)
    assert app.composer.draft.endswith("@here ")
    app.view.toggle_emoji()
    render(app)
    assert is_shown("oc_emoji_picker")
    shooter.shot(app, "emoji_picker")
    app.workspace.insert_emoji("🔥")
    render(app)
    assert app.composer.draft.endswith("🔥 ") and not is_shown("oc_emoji_picker")
    render(app, 4)
    assert text_of("oc_composer") == f"hi {tokens[1]} and @here 🔥 "


def _texts_under(tag: Any) -> list[str]:
    """Every text value and button label inside a widget (a row), depth first."""
    import dearpygui.dearpygui as dpg

    out: list[str] = []
    for slot in (0, 1, 2, 3):
        for child in dpg.get_item_children(tag, slot) or []:
            kind = dpg.get_item_type(child)
            if kind.endswith("mvText"):
                out.append(str(dpg.get_value(child)))
            elif kind.endswith("mvButton"):
                out.append(str(dpg.get_item_label(child)))
            out.extend(_texts_under(child))
    return out


def test_link_preview_card_arrives_after_the_message(ui_factory: Any, shooter: Shooter) -> None:
    """The stack's ``message.previews`` event turns into a card under the message (ux.md 2.5)."""
    from services.core.contracts.chat import LinkPreview, MessagePreviews

    app = workspace(ui_factory)
    render(app, 3)
    tl = app.view.timeline
    mid = tl.order[-2]
    before = _texts_under(tl.widgets[mid].tag)
    shooter.shot(app, "before")
    card = LinkPreview(
        url="https://example.org/x",
        site_name="example.org",
        title="Example Domain",
        description="This domain is for use in documentation examples without needing permission.",
    )
    ev = MessagePreviews(channel_id="ch_general", message_id=mid, previews=[card])
    app.model.apply_event(98, fakes.event("message.previews", "srv_testlab", ev, channel_id="ch_general"))
    render(app, 4)
    after = _texts_under(tl.widgets[mid].tag)
    assert "Example Domain" in after and "example.org" in after and "Example Domain" not in before
    assert any(t.startswith("This domain is for use") for t in after)
    assert app.model.messages()[-2].link_previews == [card]
    shooter.shot(app, "card")
    # a preview for a message the desktop does not hold is ignored, not an error
    other = MessagePreviews(channel_id="ch_general", message_id="nope", previews=[card])
    app.model.apply_event(99, fakes.event("message.previews", "srv_testlab", other, channel_id="ch_general"))
    render(app, 2)


def _own_clipboard(app: Any, xvfb: str, path: Path, ctype: str) -> Any:
    """Put an image on the X clipboard of the test display, as a screenshot tool would: a
    separate X client (xclip) owns the selection and serves it. Frames keep rendering while
    asking: until xclip owns it, the app's own window may (text copied earlier), and it answers
    only from its render loop."""
    import os
    import shutil
    import subprocess

    if shutil.which("xclip") is None:
        pytest.skip("xclip (Debian package) is not installed")
    env = {**os.environ, "DISPLAY": xvfb}
    owner = subprocess.Popen(
        ["xclip", "-quiet", "-selection", "clipboard", "-t", ctype, "-i", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):  # the selection is xclip's once it answers a TARGETS request with the type
        ask = subprocess.Popen(
            ["xclip", "-selection", "clipboard", "-t", "TARGETS", "-o"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        while ask.poll() is None:
            render(app, 1)
        out = ask.stdout.read() if ask.stdout is not None else b""
        if ctype.encode() in out:
            return owner
        assert owner.poll() is None, "xclip exited"
    raise AssertionError("xclip never owned the clipboard")


def _paste(app: Any) -> None:
    from tests.e2e.test_app_bus import pump

    assert app.workspace.on_key("v", ctrl=True, text_active=True) is False
    pump(app, lambda: not app.workspace._pasting, timeout=10, what="the clipboard read")


def test_paste_image_from_the_clipboard(ui_factory: Any, xvfb: str, tmp_path: Path, shooter: Shooter) -> None:
    """Ctrl+V with an image on the system clipboard attaches it (PNG as is, BMP converted to
    PNG, ux.md 3.8); text on the clipboard attaches nothing."""
    from PIL import Image

    app = workspace(ui_factory)
    render(app, 2)
    import dearpygui.dearpygui as dpg

    # this window owns the clipboard (text copied in the app): the read must not wait on itself
    dpg.set_clipboard_text("copied in the app")
    render(app, 2)
    _paste(app)
    assert app.composer.attachments == [] and app.composer.error == ""
    png = tmp_path / "shot.png"
    Image.new("RGB", (120, 80), (40, 160, 220)).save(png)
    owner = _own_clipboard(app, xvfb, png, "image/png")
    try:
        _paste(app)
        assert [a.name for a in app.composer.attachments] == ["image-1.png"]
        assert app.composer.attachments[0].data == png.read_bytes()
    finally:
        owner.kill()
    bmp = tmp_path / "shot.bmp"
    Image.new("RGB", (64, 48), (220, 60, 90)).save(bmp)
    owner = _own_clipboard(app, xvfb, bmp, "image/bmp")
    try:
        _paste(app)
        second = app.composer.attachments[1]
        assert second.name == "image-2.png" and second.content_type == "image/png"
        import io

        with Image.open(io.BytesIO(second.data)) as img:
            assert img.format == "PNG" and img.size == (64, 48)
    finally:
        owner.kill()
    shooter.shot(app, "pasted")
    kinds = [
        dpg.get_item_type(c)
        for g in dpg.get_item_children("oc_attachments", 1)
        for c in dpg.get_item_children(g, 1)
    ]
    assert sum(k.endswith("mvImageButton") for k in kinds) == 2  # a thumbnail on each card
    app.view.view_draft(1)
    render(app, 3)
    assert is_shown("oc_lightbox") and text_of("oc_lightbox_caption").startswith("image-2.png")
    shooter.shot(app, "viewed")
    app.workspace.close_overlays()
    jpg = tmp_path / "other.jpg"
    Image.new("RGB", (30, 30), (0, 200, 0)).save(jpg)
    assert app.workspace.replace_attachment_with(0, jpg) == ""
    assert [a.name for a in app.composer.attachments] == ["other.jpg", "image-2.png"]
    text = tmp_path / "note.txt"
    text.write_text("just words")
    owner = _own_clipboard(app, xvfb, text, "UTF8_STRING")
    try:
        _paste(app)
        assert len(app.composer.attachments) == 2 and app.composer.error == ""
    finally:
        owner.kill()


def test_image_textures_are_bounded_but_never_under_a_row(ui_factory: Any) -> None:
    """Cards are decoded at 720 px a side; the lightbox gets one full-size texture from the kept
    bytes; releasing the least recently used textures spares the ones rows still draw."""
    import io

    import dearpygui.dearpygui as dpg
    from PIL import Image

    from ui.images import CARD_SIDE, MAX_TEXTURES, ImageCache

    ui_factory()  # the session's Dear PyGui context
    cache = ImageCache(dpg, lambda m, a: None)
    buf = io.BytesIO()
    Image.new("RGB", (1600, 1200), (10, 120, 200)).save(buf, "PNG")
    big = buf.getvalue()
    assert cache.put_bytes("big", big, keep=True)
    assert max(cache.textures["big"][1:]) == CARD_SIDE
    full = cache.full_texture("big")
    assert full is not None and full[1:] == (1280, 960)
    assert cache.full_texture("big") == full  # one at a time, reused
    cache.pinned = lambda: {"big"}
    small = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 0, 0)).save(small, "PNG")
    for i in range(MAX_TEXTURES + 10):
        cache.put_bytes(f"k{i}", small.getvalue())
    assert len(cache.textures) == MAX_TEXTURES
    assert "big" in cache.textures and "k0" not in cache.textures  # the pinned one stayed
    cache.release_full()
    assert cache.full is None and not dpg.does_item_exist(full[0])


def test_idle_app_renders_at_the_idle_rate(ui_factory: Any) -> None:
    """Full frame rate while anything happens; after a second of nothing, the idle rate (less
    CPU: under a software renderer every frame fills the window); an event wakes it."""
    from ui.app import FPS_CAP, IDLE_AFTER_S, IDLE_FPS

    now = [1000.0]
    app = ui_factory(clock=lambda: now[0])
    app.screen = "workspace"
    app.model.apply_snapshot(fakes.snapshot())
    app.model.set_stack_online(True)
    render(app, 3)  # the first frames draw everything: active
    assert app.frame_interval() == 1 / FPS_CAP
    # Nothing changes from here on: a second later the idle rate. Input from the session's shared
    # X server is not this test's subject (input keeps the full rate, rightly): a key an earlier
    # test's XTEST left held repeats, and the window's first events may arrive a few frames late —
    # either failed this test in a clean-clone CI run. So the window's input handlers are off
    # meanwhile, and a bounded number of quiet seconds is allowed; an app that never goes idle
    # still fails.
    import dearpygui.dearpygui as dpg

    dpg.configure_item("oc_keys", show=False)
    try:
        for _ in range(10):
            now[0] += IDLE_AFTER_S + 0.1
            render(app, 2)
            if app.frame_interval() == 1 / IDLE_FPS:
                break
    finally:
        dpg.configure_item("oc_keys", show=True)
    assert app.frame_interval() == 1 / IDLE_FPS
    ev = MessageCreated(message=fakes.msg("srv_testlab", "ch_general", "wake", "uid_x", "hi", fakes.NOW))
    app.model.apply_event(50, fakes.event("message.created", "srv_testlab", ev))
    render(app, 1)
    assert app.frame_interval() == 1 / FPS_CAP
