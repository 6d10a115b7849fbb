"""The desktop app against the REAL stack: ``openchat up --demo`` (NATS, Redis, connector,
state, notification, media and two devservers, the demo member joined to both) in a private
``OPENCHAT_HOME``, with the demo member's connection file.

Flows: first run (snapshot, consent prompt), send, receive from another user, reply, send and
view an image, unread badge on another server that clears when read, the chip going
Reconnecting and back to Live when a devserver drops its sockets, and the offline banner when
the stack stops (last test: it stops the module's stack).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.demo_stack import READY, DemoStack, demo_env
from tests.e2e.conftest import Shooter, label_of, render, text_of
from tests.e2e.test_app_bus import pump
from tests.e2e.test_view import _texts_under


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = DemoStack(tmp_path_factory.mktemp("demo") / "home")
    try:
        stack.wait_for(READY, "demo joined srv_family", "demo joined srv_harbor")
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def app(demo: DemoStack, ui_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    a = ui_factory(connection=demo.home / "members" / "demo.json")
    a.start()
    try:
        pump(
            a,
            lambda: a.model.stack_online and {"srv_family", "srv_harbor"} <= set(a.model.servers),
            timeout=60,
            what="the demo member's snapshot",
        )
    except AssertionError as exc:
        tail = "".join(line for line in demo.lines[-30:] if "httpx" not in line)
        raise AssertionError(f"{exc}\nopenchat up (last lines):\n{tail}") from None
    # the Welcome dialog first (the demo member has joined servers but set no profile): skipped
    # here, walked through in test_real_welcome_*; then the D18 consent prompts
    pump(a, lambda: a.account.settled, timeout=20, what="the identity and profile read")
    if a.account.step is not None:
        a.account.skip()
        render(a, 3)
    for _ in range(3):  # D18 consent prompts on the first hydrate of profile-capable servers
        if a.view.overlay_open():
            a.workspace.answer_consent(False)
        render(a, 3)
    return a


def admin_post(demo: DemoStack, server: str, channel_id: str, uid: str, body: str) -> str:
    url = demo.endpoints["devservers"][server]
    r = httpx.post(
        f"{url}/_admin/messages", json={"channel_id": channel_id, "user_uid": uid, "body": body}, timeout=10
    )
    r.raise_for_status()
    return str(r.json()["message"]["id"])


def test_real_first_run(app: Any, shooter: Shooter) -> None:
    assert app.model.active_server in ("srv_family", "srv_harbor")
    assert label_of("oc_chip") == "Live"
    for sid in ("srv_family", "srv_harbor"):
        assert app.model.servers[sid].record.user_uid.startswith("uid_")
    shooter.shot(app, "workspace")


def test_real_send_receive_reply(app: Any, demo: DemoStack, shooter: Shooter) -> None:
    app.workspace.select_server("srv_family")
    app.workspace.select_channel("ch_general")
    render(app, 3)
    shooter.shot(app, "family_general")
    app.workspace.set_composer("hello from the **desktop**")
    app.workspace.on_composer_enter(shift=False)
    pump(app, lambda: not app.composer.sending, timeout=20, what="send")
    assert not app.composer.error, app.composer.error
    pump(
        app,
        lambda: any(m.body == "hello from the **desktop**" for m in app.model.messages()),
        what="own message",
    )
    mid = admin_post(demo, "family", "ch_general", "uid_mum", "Mum here: dinner at 7")
    pump(
        app,
        lambda: any(m.id == mid for m in app.model.messages()),
        timeout=15,
        what="message from another user",
    )
    shooter.shot(app, "received")
    app.workspace.reply_to(mid)
    app.workspace.set_composer("see you then")
    app.workspace.on_composer_enter(shift=False)
    pump(app, lambda: not app.composer.sending, timeout=20, what="reply")
    assert not app.composer.error, app.composer.error
    pump(
        app,
        lambda: any(m.reply_to is not None and m.reply_to.message_id == mid for m in app.model.messages()),
        timeout=15,
        what="reply echo",
    )
    row = [
        r for r in app.model.rows() if r.message.reply_to is not None and r.message.reply_to.message_id == mid
    ][-1]
    assert row.quote is not None and "dinner at 7" in row.quote
    shooter.shot(app, "replied")


def test_real_image(app: Any, tmp_path: Path, shooter: Shooter) -> None:
    from PIL import Image

    app.workspace.select_server("srv_family")
    app.workspace.select_channel("ch_general")
    png = tmp_path / "logo.png"
    img = Image.new("RGB", (96, 64), (88, 101, 242))
    for x in range(20, 76):
        for y in range(16, 48):
            img.putpixel((x, y), (250, 166, 26))
    img.save(png)
    assert app.workspace.attach_files([png]) == ""
    render(app, 3)
    shooter.shot(app, "attached")
    app.workspace.send()
    pump(app, lambda: not app.composer.sending, timeout=30, what="image send")
    assert not app.composer.error, app.composer.error
    pump(app, lambda: any(m.attachments for m in app.model.messages()), timeout=15, what="image message")
    msg = [m for m in app.model.messages() if m.attachments][-1]
    key = app.images.key(msg, msg.attachments[0])
    pump(app, lambda: key in app.images.textures or key in app.images.failed, timeout=15, what="image bytes")
    err = app.images.errors.get(key) or ""
    assert key in app.images.textures, f"attachment not served: {err}"
    shooter.shot(app, "image_card")
    app.view.open_lightbox(msg, msg.attachments[0])
    render(app, 3)
    shooter.shot(app, "lightbox")
    # Save… writes the very bytes that were sent (fetched again through the state media API)
    saved = tmp_path / "saved.png"
    app.workspace.save_image(msg, msg.attachments[0], saved)
    pump(app, lambda: saved.exists() and saved.stat().st_size > 0, timeout=15, what="the saved image")
    assert saved.read_bytes() == png.read_bytes()
    assert app.model.toasts[-1].text == "Image saved to saved.png."
    app.workspace.on_key("escape")


def test_real_unread_badge_other_server(app: Any, demo: DemoStack, shooter: Shooter) -> None:
    app.workspace.select_server("srv_family")
    app.workspace.select_channel("ch_general")
    render(app, 3)
    app.workspace.mark_server_read("srv_harbor")
    pump(app, lambda: app.model.rail_badge("srv_harbor")[0] == "", what="harbor read")
    shooter.shot(app, "before")
    admin_post(demo, "harbor", "ch_general", "uid_seed_1", "news from harbor")
    pump(app, lambda: app.model.rail_badge("srv_harbor")[0] != "", timeout=15, what="badge")
    shooter.shot(app, "badge")
    app.workspace.select_server("srv_harbor")
    app.workspace.select_channel("ch_general")
    pump(app, lambda: app.model.servers["srv_harbor"].unread.get("ch_general", 0) == 0, what="cleared")
    shooter.shot(app, "cleared")


def test_real_chip_reconnecting_then_live(app: Any, demo: DemoStack, shooter: Shooter) -> None:
    app.workspace.select_server("srv_family")
    render(app, 3)
    assert label_of("oc_chip") == "Live"
    url = demo.endpoints["devservers"]["family"]
    httpx.post(f"{url}/_admin/realtime/drop", timeout=10).raise_for_status()
    seen: list[str] = []

    def left_live() -> bool:
        seen.append(app.model.chip().label)
        return seen[-1] != "Live"

    pump(app, left_live, timeout=15, what="the chip leaving Live")
    app.view._chip_at = 0.0
    render(app, 2)
    label = label_of("oc_chip")
    shooter.shot(app, "dropped")
    pump(app, lambda: app.model.chip().label == "Live", timeout=30, what="Live again")
    app.view._chip_at = 0.0
    render(app, 2)
    assert label_of("oc_chip") == "Live"
    shooter.shot(app, "live_again")
    assert label.startswith("Reconnecting"), label  # features 6.2: a dropped live socket reconnects


@pytest.fixture
def public_devserver() -> Iterator[str]:
    """A devserver with the public backend's two-server directory (Harbor + TestLab)."""
    yield from _devserver("public")


@pytest.fixture
def deleting_devserver() -> Iterator[str]:
    """A devserver (TestLab) that advertises and serves message deletion (Profile B)."""
    yield from _devserver(
        "testlab", "--server-id", "srv_dellab", "--name", "Delete Lab", "--feature", "message_delete"
    )


def _devserver(seed: str, *extra: str) -> Iterator[str]:
    from services.core.procs import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.devserver",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--seed",
            seed,
            "--public-base-url",
            url,
            "--log-level",
            "warning",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "devserver did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_real_add_server(app: Any, public_devserver: str, shooter: Shooter) -> None:
    app.workspace.open_add_server()
    app.workspace.set_add_url(public_devserver)
    app.workspace.discover()
    pump(
        app,
        lambda: app.workspace.add_flow.probe is not None or bool(app.workspace.add_flow.error),
        timeout=20,
        what="discover",
    )
    assert not app.workspace.add_flow.error, app.workspace.add_flow.error
    names = [s.server_id for s in app.workspace.add_flow.servers]
    assert names == ["srv_harbor", "srv_testlab"]
    app.workspace.pick_discovered(
        next(
            f"{s.display_name} ({s.server_id})"
            for s in app.workspace.add_flow.servers
            if s.server_id == "srv_testlab"
        )
    )
    pump(app, lambda: app.workspace.add_flow.probe is not None, timeout=20, what="probe")
    assert text_of("oc_add_warning") == ""  # localhost: no HTTPS warning
    assert "UID" in text_of("oc_add_disclosure")
    shooter.shot(app, "dialog")
    app.workspace.add_server()
    pump(
        app, lambda: app.model.active_server == "srv_testlab", timeout=30, what="join"
    )  # D1: the picked entry
    pump(app, lambda: app.model.channel_id is not None, timeout=20, what="channels")
    for _ in range(3):
        if app.view.overlay_open():
            app.workspace.answer_consent(False)
        render(app, 3)
    assert {c.name for c in app.model.servers["srv_testlab"].text_channels()} >= {
        "test-general",
        "qa-playground",
    }
    shooter.shot(app, "joined")


def _join(app: Any, url: str, server_id: str) -> None:
    """Add Server through the dialog's own steps (discover, pick, probe, confirm)."""
    app.workspace.open_add_server()
    app.workspace.set_add_url(url)
    app.workspace.discover()
    pump(
        app,
        lambda: app.workspace.add_flow.probe is not None or bool(app.workspace.add_flow.error),
        20,
        "discover",
    )
    app.workspace.pick_discovered(
        next(
            f"{e.display_name} ({e.server_id})"
            for e in app.workspace.add_flow.servers
            if e.server_id == server_id
        )
    )
    pump(app, lambda: app.workspace.add_flow.probe is not None, timeout=20, what="probe")
    app.workspace.add_server()
    pump(app, lambda: app.model.active_server == server_id, timeout=30, what="join")
    pump(app, lambda: app.model.channel_id is not None, timeout=20, what="channels")
    for _ in range(3):
        if app.view.overlay_open():
            app.workspace.answer_consent(False)
        render(app, 3)


def test_real_delete_own_message(app: Any, deleting_devserver: str, shooter: Shooter) -> None:
    """features 5.8 on a server that advertises deletion: Delete Message on your own row; it
    goes once the server confirms; others' rows have no Delete."""
    import dearpygui.dearpygui as dpg

    _join(app, deleting_devserver, "srv_dellab")
    pump(app, lambda: app.model.servers["srv_dellab"].connection.state == "live", timeout=30, what="live")
    dpg.set_value("oc_composer", "a typo I regret")
    assert app.workspace.on_composer_enter(force=True)
    pump(app, lambda: any(m.body == "a typo I regret" for m in app.model.messages()), timeout=20, what="sent")
    mine = next(m for m in app.model.messages() if m.body == "a typo I regret")
    theirs = next(m for m in app.model.messages() if m.author_uid != mine.author_uid)
    app.view.open_message_menu(theirs.id)
    render(app, 2)
    assert not dpg.does_item_exist("oc_ctx_delete")
    app.workspace.on_key("escape")
    app.view.open_message_menu(mine.id)
    render(app, 2)
    assert dpg.does_item_exist("oc_ctx_delete") and dpg.get_item_label("oc_ctx_delete") == "Delete Message"
    shooter.shot(app, "menu")
    app.view._menu(app.workspace.delete_message, mine.id)
    assert app.model.toasts[-1].text == "Delete requested."
    pump(app, lambda: all(m.id != mine.id for m in app.model.messages()), timeout=20, what="the row gone")
    assert mine.id not in app.view.timeline.widgets and not app.composer.error
    shooter.shot(app, "deleted")


def _desktop(app: Any, *, notify: bool = True, window: bool = True) -> None:
    """Turn on the desktop hooks the ``ui_factory`` leaves off (as ``run_app`` has them)."""
    import dearpygui.dearpygui as dpg

    from ui.desktop import OsNotifier, X11Window

    if notify:
        app.hooks.notifier = OsNotifier()
    if window:
        app.hooks.window = X11Window.open(lambda: str(dpg.get_viewport_title()))
        assert app.hooks.window is not None and app.hooks.window.find() is not None, (
            "viewport window not found"
        )


def _counts(app: Any, sid: str, ch: str) -> tuple[int, int] | None:
    """The notification service's own counts for one channel (not the UI's copy)."""
    box: dict[str, Any] = {}
    app.adapter.submit(lambda c: c.unread(), lambda v, e: box.update(v=v, e=e))
    pump(app, lambda: "v" in box, timeout=10, what="unread answer")
    for sc in box["v"].servers if box["v"] is not None else []:
        for cc in sc.channels:
            if (sc.server_id, cc.channel_id) == (sid, ch):
                return cc.unread, cc.mentions
    return None


def test_real_os_notification_dunst(
    app: Any, demo: DemoStack, xvfb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shooter: Shooter
) -> None:
    """7.6 through the OS: a private D-Bus session bus and a REAL notification daemon (dunst,
    not a fake) on the test's Xvfb. A message on another server shows an OS notification with
    the service's title/body; a second one on the same channel replaces it (one displayed);
    a left click on the popup (xdotool) invokes its default action and the app opens that
    server/channel with the window focused."""
    from tests.e2e.desktop import DUNST_OFFSET, DUNST_WIDTH, Dunst, screen_shot, session_bus, xdotool

    with session_bus() as address:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        dunst = Dunst(address, xvfb, tmp_path)
        try:
            _desktop(app)
            app.workspace.select_server("srv_family")
            app.workspace.select_channel("ch_general")
            render(app, 3)
            admin_post(demo, "harbor", "ch_general", "uid_seed_1", "first ping from harbor")
            pump(app, lambda: len(dunst.shown()) >= 1, timeout=20, what="an OS notification")
            first = dunst.shown()[0]
            assert first["app_name"] == "OpenChat"
            assert first["summary"].endswith(" in #general"), first
            assert first["body"] == "first ping from harbor"
            admin_post(demo, "harbor", "ch_general", "uid_seed_1", "second ping from harbor")
            pump(app, lambda: len(dunst.shown()) >= 2, timeout=20, what="the second OS notification")
            second = dunst.shown()[1]
            assert second["body"] == "second ping from harbor" and second["summary"] == first["summary"]
            pump(app, lambda: dunst.count("displayed") == 1, timeout=10, what="one notification per channel")
            assert app.hooks.notifier.available is True and not app.model.toasts  # no fallback toast
            shot = screen_shot(shooter_path(shooter, "screen_popup"))
            assert shot.getpixel((shot.width - DUNST_OFFSET[0] - DUNST_WIDTH // 2, DUNST_OFFSET[1] + 8)) != (
                16,
                20,
                28,
            ), "no popup drawn at the top right"
            shooter.shot(app, "before_click")
            xdotool(
                "mousemove",
                "--sync",
                str(shot.width - DUNST_OFFSET[0] - DUNST_WIDTH // 2),
                str(DUNST_OFFSET[1] + 12),
                "click",
                "1",
            )
            pump(
                app,
                lambda: (app.model.active_server, app.model.channel_id) == ("srv_harbor", "ch_general"),
                timeout=15,
                what="the click opening harbor #general",
            )
            pump(app, lambda: app.hooks.window_state == (True, True), timeout=10, what="the window focused")
            pump(app, lambda: dunst.count("displayed") == 0, timeout=10, what="popup closed")
            shooter.shot(app, "opened_from_notification")
        finally:
            dunst.stop()


def shooter_path(shooter: Shooter, name: str) -> Path:
    from tests.e2e.conftest import SHOTS

    return SHOTS / f"{shooter.test}__{name}.png"


def test_real_notification_falls_back_to_toast(
    app: Any,
    demo: DemoStack,
    monkeypatch: pytest.MonkeyPatch,
    shooter: Shooter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No notification daemon on the session bus: the in-app toast shows it, logged once."""
    from tests.e2e.desktop import session_bus

    with session_bus() as address:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        _desktop(app, window=False)
        app.workspace.select_server("srv_family")
        app.workspace.select_channel("ch_general")
        render(app, 3)
        admin_post(demo, "harbor", "ch_general", "uid_seed_1", "nobody listens on dbus")
        pump(
            app,
            lambda: any("nobody listens on dbus" in t.text for t in app.model.toasts),
            timeout=20,
            what="the fallback toast",
        )
        assert app.hooks.notifier.available is False and app.hooks.notifier.reason
        admin_post(demo, "harbor", "ch_general", "uid_seed_1", "still nobody")
        pump(app, lambda: any("still nobody" in t.text for t in app.model.toasts), timeout=20, what="toast 2")
        assert sum("no OS notification service" in r.getMessage() for r in caplog.records) == 1
        shooter.shot(app, "toast")


def test_real_window_focus_d4(app: Any, demo: DemoStack, xvfb: str, shooter: Shooter) -> None:
    """D4 with a real focus signal: another X client (its own process) takes the input focus,
    the app reports ``focused=False`` to the notification service, two messages in the open
    channel count; focus comes back (xdotool) and the channel clears, in the service too."""
    from tests.e2e.desktop import other_x_client, xdotool

    _desktop(app, notify=False)
    assert app.hooks.window is not None
    wid = app.hooks.window.wid
    assert wid is not None
    app.workspace.select_server("srv_family")
    app.workspace.select_channel("ch_general")
    xdotool("windowfocus", "--sync", str(wid))
    pump(app, lambda: app.hooks.window_state == (True, True), timeout=10, what="the window focused")
    pump(
        app,
        lambda: (
            app.controller.focus_sent is not None
            and app.controller.focus_sent.focused
            and app.controller.focus_sent.channel_id == "ch_general"
        ),
        timeout=10,
        what="focus reported",
    )
    assert _counts(app, "srv_family", "ch_general") == (0, 0)
    with other_x_client(xvfb):
        pump(
            app, lambda: app.hooks.window_state == (False, True), timeout=10, what="focus lost to another app"
        )
        pump(
            app,
            lambda: app.controller.focus_sent is not None and not app.controller.focus_sent.focused,
            timeout=10,
            what="blur reported",
        )
        assert not app.model.focused
        admin_post(demo, "family", "ch_general", "uid_mum", "are you there?")
        admin_post(demo, "family", "ch_general", "uid_mum", "hello??")
        sm = app.model.servers["srv_family"]
        pump(app, lambda: sm.unread.get("ch_general", 0) == 2, timeout=15, what="2 unread while blurred")
        assert _counts(app, "srv_family", "ch_general") == (2, 0)
        shooter.shot(app, "blurred_2_unread")
        # the heartbeat: re-sent at least every 30 s while nothing changes
        app.controller.focus_sent = None
        app.controller.focus_at -= 31
        pump(app, lambda: app.controller.focus_sent is not None, timeout=10, what="heartbeat")
        xdotool("windowfocus", "--sync", str(wid))  # the user comes back to the app
        pump(app, lambda: app.hooks.window_state == (True, True), timeout=10, what="focus back")
        pump(app, lambda: sm.unread.get("ch_general", 0) == 0, timeout=15, what="D4: cleared on refocus")
        pump(
            app,
            lambda: _counts(app, "srv_family", "ch_general") == (0, 0),
            timeout=15,
            what="cleared in the notification service",
        )
        shooter.shot(app, "refocused_cleared")


def _items_under(tag: Any) -> list[str]:
    import dearpygui.dearpygui as dpg

    out: list[str] = []
    for slot in (0, 1, 2, 3):
        for child in dpg.get_item_children(tag, slot) or []:
            out.append(dpg.get_item_type(child))
            out.extend(_items_under(child))
    return out


def test_real_uploaded_avatar_of_another_user(app: Any, demo: DemoStack, shooter: Shooter) -> None:
    """Another user uploads an avatar on the backend; the desktop draws it next to their
    message, fetched through the state's media API (ux.md 5.1), not from the backend."""
    import io

    from PIL import Image

    url = demo.endpoints["devservers"]["family"]
    who = {"X-OpenChat-User-UID": "uid_avatar01", "X-OpenChat-Device-ID": "dev_avatar01"}
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (250, 200, 20)).save(buf, "PNG")
    up = httpx.post(
        f"{url}/v1/profile/avatar", headers=who, files={"file": ("a.png", buf.getvalue(), "image/png")}
    )
    assert up.status_code == 201, up.text
    put = httpx.put(
        f"{url}/v1/profile/me",
        headers=who,
        json={
            "display_name": "Ava Tar",
            "avatar_mode": "uploaded",
            "avatar_asset_id": up.json()["avatar_asset_id"],
        },
    )
    assert put.status_code == 200, put.text
    app.workspace.select_server("srv_family")
    app.workspace.select_channel("ch_general")
    mid = admin_post(demo, "family", "ch_general", "uid_avatar01", "look at my new avatar")
    pump(app, lambda: mid in app.view.timeline.widgets, timeout=20, what="the message")
    pump(
        app,
        lambda: any(k.startswith("avatar:srv_family:uid_avatar01:") for k in app.images.textures),
        timeout=20,
        what="the avatar through the state media API",
    )
    pump(
        app,
        lambda: any(t.endswith("mvDrawImage") for t in _items_under(app.view.timeline.widgets[mid].tag)),
        what="the avatar drawn on the row",
    )
    row = app.model.rows()[-1]
    assert row.message.id == mid and row.author == "Ava Tar"
    shooter.shot(app, "avatar")


@pytest.fixture
def page_server() -> Iterator[str]:
    """A real HTTP server with one HTML page carrying OpenGraph tags."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    page = (
        b"<html><head><title>fallback</title>"
        b'<meta property="og:title" content="Family picnic &amp; games">'
        b'<meta property="og:description" content="Sunday at the lake, bring a blanket.">'
        b'<meta property="og:site_name" content="Picnic Planner">'
        b"</head><body>hi</body></html>"
    )

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/picnic"
    finally:
        server.shutdown()


def test_real_link_preview_card(app: Any, demo: DemoStack, page_server: str, shooter: Shooter) -> None:
    """A link posted on a verified server: the home stack fetches the page (never the desktop)
    and the card appears under the message; Settings shows the member's switch."""
    import dearpygui.dearpygui as dpg

    app.workspace.select_server("srv_family")
    app.workspace.select_channel("ch_general")
    mid = admin_post(demo, "family", "ch_general", "uid_mum", f"plans here: {page_server}")
    pump(app, lambda: mid in app.view.timeline.widgets, timeout=20, what="the message")
    pump(
        app,
        lambda: "Family picnic & games" in _texts_under(app.view.timeline.widgets[mid].tag),
        timeout=30,
        what="the preview card",
    )
    texts = _texts_under(app.view.timeline.widgets[mid].tag)
    assert "Picnic Planner" in texts and "Sunday at the lake, bring a blanket." in texts
    shooter.shot(app, "card")
    app.workspace.open_settings()
    pump(app, lambda: bool(dpg.get_item_configuration("oc_set_previews")["enabled"]), what="the switch read")
    assert dpg.get_value("oc_set_previews") is True
    app.workspace.set_previews(False)
    pump(app, lambda: app.workspace.previews_enabled is False, what="the switch off")
    app.workspace.set_previews(True)
    pump(app, lambda: app.workspace.previews_enabled is True, what="the switch on again")
    app.workspace.close_overlays()


def _cli(demo: DemoStack, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=demo_env(demo.home),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def _ask(app: Any, work: Any, what: str) -> Any:
    """One command through the app's own adapter (the same bus connection the UI uses)."""
    box: dict[str, Any] = {}
    app.adapter.submit(work, lambda v, e: box.update(value=v, error=e))
    pump(app, lambda: "value" in box, timeout=20, what=what)
    assert box["error"] is None, box["error"]
    return box["value"]


def test_real_welcome_new_member(demo: DemoStack, ui_factory: Any, shooter: Shooter) -> None:
    """A member just added on the stack: the Welcome dialog offers the new identity or an import,
    then asks for a profile; the profile lands on the stack and in the dock; Add Server follows."""
    import dearpygui.dearpygui as dpg

    _cli(demo, "member", "add", "newbie")
    app = ui_factory(connection=demo.home / "members" / "newbie.json")
    app.start()
    pump(app, lambda: app.account.step == "identity", timeout=60, what="the Welcome dialog")
    assert dpg.is_item_shown("oc_onboard") and dpg.is_item_shown("oc_onb_identity")
    assert label_of("oc_onb_create") == "Continue with my new identity"
    shooter.shot(app, "identity_step")
    app.account.import_identity("identity_NOPE")
    render(app, 2)
    assert text_of("oc_onb_error").startswith("An identity root looks like")
    app.account.import_identity("identity_abc12345")
    pump(app, lambda: app.account.step == "profile", timeout=20, what="the profile step")
    assert dpg.is_item_shown("oc_onb_profile") and not dpg.is_item_shown("oc_onb_identity")
    app.account.save_profile("N")
    render(app, 2)
    assert "Display name must be" in text_of("oc_onb_error")
    dpg.set_value("oc_onb_name", "Newbie Ng")
    app.account.pick_preset("mint")
    shooter.shot(app, "profile_step")
    app.account.save_profile(str(dpg.get_value("oc_onb_name")))
    pump(app, lambda: app.account.step is None, timeout=20, what="the profile saved")
    pump(app, lambda: text_of("oc_dock_name") == "Newbie Ng", timeout=10, what="the dock name")
    pump(app, lambda: dpg.is_item_shown("oc_add"), timeout=10, what="Add Server next (no servers yet)")
    shooter.shot(app, "after_welcome")
    # what the stack now holds for this member
    info = _ask(app, lambda c: c.identity_get(reveal=True), "identity_get")
    assert info.exists and info.root == "identity_abc12345" and info.uid_mode == "server_scoped"
    prof = _ask(app, lambda c: c.profile_get(), "profile_get").profile
    assert prof.display_name == "Newbie Ng" and prof.avatar_mode == "generated"
    assert prof.avatar_preset_id == "mint"
    app.workspace.close_overlays()
    app.stop()


def test_real_uid_mode_switch(app: Any, demo: DemoStack, shooter: Shooter) -> None:
    """Settings, Switch UID mode: every server is re-bound to the global uid (one for all), the
    dock shows it, a message sent now carries it; switching back restores the server-scoped uids."""
    import dearpygui.dearpygui as dpg

    from services.core.identity import project_uid

    app.workspace.select_server("srv_family")
    app.workspace.select_channel("ch_general")
    app.workspace.open_settings()
    render(app, 3)
    pump(app, lambda: label_of("oc_set_uidmode") == "Switch UID mode (server_scoped)", what="the button")
    assert text_of("oc_set_disclosure") == "This server sees only a server-scoped UID and proof."
    before = {sid: app.model.servers[sid].record.user_uid for sid in ("srv_family", "srv_harbor")}
    assert before["srv_family"] != before["srv_harbor"]
    app.account.reveal_root()
    pump(app, lambda: app.account.revealed is not None, what="the identity root")
    root = app.account.revealed
    assert text_of("oc_set_root") == root
    app.account.switch_uid_mode()
    glob = project_uid(root, "srv_family", "global")
    pump(
        app,
        lambda: all(app.model.servers[s].record.user_uid == glob for s in before),
        timeout=30,
        what="both servers re-bound to the global uid",
    )
    pump(app, lambda: label_of("oc_set_uidmode") == "Switch UID mode (global)", what="the button")
    assert text_of("oc_set_disclosure") == "This server sees only a global UID and proof."
    assert text_of("oc_set_uid") == f"current UID: {glob}"
    shooter.shot(app, "settings_global")
    app.workspace.close_overlays()
    pump(app, lambda: text_of("oc_dock_uid") == f"@{glob}", what="the dock uid")
    pump(app, lambda: app.model.servers["srv_family"].connection.state == "live", timeout=30, what="live")
    dpg.set_value("oc_composer", "sent as the global uid")
    assert app.workspace.on_composer_enter(force=True)
    pump(
        app,
        lambda: any(
            m.body == "sent as the global uid" and m.author_uid == glob for m in app.model.messages()
        ),
        timeout=20,
        what="the message under the global uid",
    )
    shooter.shot(app, "sent_global")
    app.workspace.open_settings()
    render(app, 2)
    app.account.switch_uid_mode()
    pump(
        app,
        lambda: {s: app.model.servers[s].record.user_uid for s in before} == before,
        timeout=30,
        what="the server-scoped uids back",
    )
    app.workspace.close_overlays()


def test_real_edit_profile_uploaded_avatar(app: Any, tmp_path: Path, shooter: Shooter) -> None:
    """Settings → Edit profile…: an uploaded avatar is kept on the stack (not published without
    consent) and drawn in the dock and on the member's own rows."""
    import dearpygui.dearpygui as dpg
    from PIL import Image

    app.workspace.select_server("srv_family")
    app.workspace.select_channel("ch_general")
    app.workspace.open_settings()
    render(app, 2)
    app.view._edit_profile()
    render(app, 3)
    assert app.account.step == "profile" and dpg.get_item_label("oc_onboard") == "Edit profile"
    bad = tmp_path / "anim.gif"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(bad, "GIF")
    assert not app.account.choose_avatar_file(bad)
    assert text_of("oc_onb_error") == "Use PNG, JPG, or WEBP for your avatar."
    pic = tmp_path / "me.png"
    Image.new("RGB", (96, 96), (30, 200, 120)).save(pic)
    assert app.account.choose_avatar_file(pic)
    dpg.set_value("oc_onb_name", "Demo Person")
    shooter.shot(app, "edit_profile")
    app.account.save_profile(str(dpg.get_value("oc_onb_name")))
    pump(app, lambda: app.account.step is None, timeout=20, what="the profile saved")
    pump(app, lambda: app.account.avatar_image == pic.read_bytes(), timeout=20, what="the own avatar bytes")
    pump(app, lambda: "mvDrawImage" in " ".join(_items_under("oc_dock")), timeout=10, what="the dock avatar")
    assert text_of("oc_dock_name") == "Demo Person"
    prof = _ask(app, lambda c: c.profile_get(), "profile_get")
    assert prof.profile.avatar_mode == "uploaded" and prof.profile.display_name == "Demo Person"
    assert all(s.state in ("private", "disabled") for s in prof.servers)  # no consent: nothing published
    shooter.shot(app, "own_avatar")


def test_real_offline_banner_when_stack_stops(app: Any, demo: DemoStack, shooter: Shooter) -> None:
    shooter.shot(app, "online")
    demo.stop()
    pump(app, lambda: not app.model.stack_online, timeout=30, what="offline")
    render(app, 5)
    assert label_of("oc_chip") == "Offline"
    assert any("Home stack unreachable" in b.text for b in app.model.visible_banners())
    assert app.model.read_only and app.workspace.send() is False
    assert app.model.order  # still readable from the last view
    shooter.shot(app, "offline")
