"""The app over a REAL NATS bus: snapshot + live events exactly once, sync after a dropped
connection, offline read-only start from the local cache, send / reply / typing, add server,
leave, unread badges on another server.

The state and connector services are played by ``FakeStack`` (contract models on the real
bus, real JetStream sequences) because ``services/state`` and ``services/connector`` are still
being written; ``test_real_stack.py`` runs the same flows against the real services.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.core.members import ConnectionFile, new_user_nkey
from testkit import fakes
from tests.e2e.conftest import Shooter, label_of, render, text_of
from tests.e2e.fakestack import FakeStack
from tests.e2e.tcpproxy import TcpProxy
from ui.storage import Storage


def connection(tmp_path: Path, url: str) -> tuple[Path, str]:
    member = f"m{uuid.uuid4().hex[:8]}"
    seed, _ = new_user_nkey()
    cf = ConnectionFile(
        member=member, nats_url=url, nkey_seed=seed, inbox_prefix=f"_INBOX_{member}", created_at="2026-01-01"
    )
    path = tmp_path / f"{member}.json"
    cf.write(path)
    return path, member


def pump(app: Any, cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        render(app, 1)
        if cond():
            render(app, 2)
            return
        time.sleep(0.01)
    m = app.model
    raise AssertionError(
        f"timed out waiting for {what or cond} (stack online {m.stack_online} {m.stack_detail!r}, "
        f"seq {m.last_seq}, servers {m.order}, adapter {app.adapter.online if app.adapter else None})"
    )


@pytest.fixture
def proxy_stack(nats_url: str, tmp_path: Path) -> Iterator[tuple[TcpProxy, FakeStack, Path]]:
    host, port = nats_url.split("://")[1].split(":")
    proxy = TcpProxy(host, int(port)).start()
    path, member = connection(tmp_path, proxy.url)
    stack = FakeStack(nats_url, member, fakes.snapshot(seq=0))
    stack.start()
    try:
        yield proxy, stack, path
    finally:
        stack.stop()
        proxy.stop()


def ids(app: Any, sid: str = "srv_testlab", ch: str = "ch_general") -> list[str]:
    return [m.id for m in app.model.messages(sid, ch)]


def test_snapshot_then_live_events_exactly_once(ui_factory: Any, proxy_stack: Any, shooter: Shooter) -> None:
    _proxy, stack, path = proxy_stack
    stack.post("srv_testlab", "ch_general", "uid_tl_2", "before start 1", "pre1")
    stack.post("srv_testlab", "ch_general", "uid_tl_2", "before start 2", "pre2")
    app = ui_factory(connection=path)
    app.start()
    pump(app, lambda: app.model.stack_online and "pre2" in ids(app), what="snapshot")
    shooter.shot(app, "connected")
    for i in range(5):
        stack.post("srv_testlab", "ch_general", "uid_tl_1", f"live {i}", f"live{i}")
    pump(app, lambda: "live4" in ids(app), what="live events")
    got = ids(app)
    assert len(got) == len(set(got))
    assert got[-7:] == ["pre1", "pre2", "live0", "live1", "live2", "live3", "live4"]
    assert app.model.last_seq == stack.seq
    assert label_of("oc_chip") == "Live"
    shooter.shot(app, "live_events")


def test_dropped_connection_syncs_exactly_once(ui_factory: Any, proxy_stack: Any, shooter: Shooter) -> None:
    proxy, stack, path = proxy_stack
    app = ui_factory(connection=path)
    app.start()
    pump(app, lambda: app.model.stack_online and app.model.snapshot_loaded, what="connect")
    stack.post("srv_testlab", "ch_general", "uid_tl_1", "before the drop", "d0")
    pump(app, lambda: "d0" in ids(app), what="first live event")
    proxy.cut()
    pump(app, lambda: not app.model.stack_online, what="offline")
    assert label_of("oc_chip") == "Offline"
    assert "Home stack unreachable" in " ".join(b.text for b in app.model.visible_banners())
    shooter.shot(app, "offline_banner")
    for i in range(3):  # the stack keeps going while the desktop is away
        stack.post("srv_testlab", "ch_general", "uid_tl_1", f"while away {i}", f"away{i}")
    stack.post("srv_harbor", "ch_ops", "uid_h_1", "harbor news", "hb1")
    proxy.restore()
    pump(app, lambda: app.model.stack_online and "away2" in ids(app), timeout=15, what="sync")
    stack.post("srv_testlab", "ch_general", "uid_tl_1", "after", "after")
    pump(app, lambda: "after" in ids(app), what="live after sync")
    got = ids(app)
    assert len(got) == len(set(got))
    assert got[-5:] == ["d0", "away0", "away1", "away2", "after"]
    assert stack.sync_calls >= 1 and stack.snapshot_calls == 1
    assert app.model.rail_badge("srv_harbor") == ("1", False)
    assert label_of("oc_chip") == "Live"
    shooter.shot(app, "back_live")


def test_offline_start_from_cache_then_catch_up(
    ui_factory: Any, proxy_stack: Any, tmp_path: Path, shooter: Shooter
) -> None:
    proxy, stack, path = proxy_stack
    storage = Storage(tmp_path / "cfg")
    app = ui_factory(connection=path, storage=storage)
    app.start()
    pump(app, lambda: app.model.stack_online and app.model.snapshot_loaded, what="connect")
    stack.post("srv_testlab", "ch_general", "uid_tl_1", "cached", "c1")
    pump(app, lambda: "c1" in ids(app))
    app.stop()  # writes the cache
    app.view.destroy()
    proxy.cut()
    stack.post("srv_testlab", "ch_general", "uid_tl_1", "missed while closed", "c2")
    app2 = ui_factory(connection=path, storage=storage)
    app2.start()
    render(app2, 5)
    assert app2.model.from_cache and "c1" in ids(app2) and not app2.model.stack_online
    assert app2.model.read_only
    shooter.shot(app2, "offline_from_cache")
    assert app2.workspace.send() is False
    proxy.restore()
    pump(app2, lambda: app2.model.stack_online and "c2" in ids(app2), timeout=15, what="catch up")
    assert stack.snapshot_calls == 1  # the second start synced from the cached sequence
    assert ids(app2).count("c1") == 1
    shooter.shot(app2, "caught_up")


def test_send_reply_typing(ui_factory: Any, proxy_stack: Any, shooter: Shooter) -> None:
    _proxy, stack, path = proxy_stack
    app = ui_factory(connection=path)
    app.start()
    pump(app, lambda: app.model.stack_online and app.model.snapshot_loaded, what="connect")
    app.workspace.on_draft("hel")
    pump(app, lambda: bool(stack.typing), what="typing true")
    assert stack.typing[0].is_typing is True
    app.workspace.set_composer("hello from the desktop")
    app.workspace.on_composer_enter(shift=True)  # Shift+Enter: new line, no send
    assert not stack.sent and app.composer.draft.endswith("\n")
    app.workspace.set_composer("hello from the desktop")
    app.workspace.on_composer_enter(shift=False)
    pump(app, lambda: bool(stack.sent) and not app.composer.sending, what="send")
    assert stack.sent[0].body == "hello from the desktop"
    mine = [m for m in app.model.messages() if m.body == "hello from the desktop"]
    pump(app, lambda: app.model.last_seq == stack.seq, what="echo")
    assert len([m for m in app.model.messages() if m.body == "hello from the desktop"]) == 1 == len(mine)
    assert text_of("oc_composer") == ""
    shooter.shot(app, "sent")
    # another user answers; then we reply to it
    stack.post("srv_testlab", "ch_general", "uid_tl_2", "answer from another user", "ans1")
    pump(app, lambda: "ans1" in ids(app))
    app.workspace.reply_to("ans1")
    render(app, 2)
    assert text_of("oc_reply_name") == "User tl_2"
    shooter.shot(app, "reply_banner")
    app.workspace.set_composer("a reply")
    app.workspace.on_composer_enter(shift=False)
    pump(app, lambda: len(stack.sent) == 2 and not app.composer.sending, what="reply")
    assert stack.sent[1].reply_to == "ans1"
    pump(app, lambda: app.model.last_seq == stack.seq)
    shooter.shot(app, "replied")


def test_unread_badge_on_other_server_clears_when_read(
    ui_factory: Any, proxy_stack: Any, shooter: Shooter
) -> None:
    _proxy, stack, path = proxy_stack
    app = ui_factory(connection=path)
    app.start()
    pump(app, lambda: app.model.stack_online and app.model.snapshot_loaded, what="connect")
    shooter.shot(app, "no_badge")
    stack.post("srv_harbor", "ch_general", "uid_h_1", "ping from harbor", "hp1")
    stack.post("srv_harbor", "ch_general", "uid_h_1", "@uid_77aa0d11 mention", "hp2")
    pump(app, lambda: app.model.rail_badge("srv_harbor")[0] == "1", what="badge")
    assert label_of("oc_tile_badge_srv_harbor") == "1"  # mention badge wins (red)
    shooter.shot(app, "badge")
    app.workspace.select_server("srv_harbor")
    render(app, 3)
    assert app.model.rail_badge("srv_harbor") == ("", False)
    assert text_of("oc_channel_title") == "# harbor-general"
    shooter.shot(app, "badge_cleared")


def test_add_server_and_leave(ui_factory: Any, proxy_stack: Any, shooter: Shooter) -> None:
    _proxy, _stack, path = proxy_stack
    app = ui_factory(connection=path)
    app.start()
    pump(app, lambda: app.model.stack_online and app.model.snapshot_loaded, what="connect")
    app.workspace.open_add_server()
    app.workspace.set_add_url("not a url")
    app.workspace.discover()
    render(app, 2)
    assert text_of("oc_add_error") == "Backend URL is invalid."
    app.workspace.set_add_url("http://192.168.1.5:8080")
    app.workspace.discover()
    pump(app, lambda: app.workspace.add_flow.probe is not None, what="discover + probe")
    assert "Dev Lab" in text_of("oc_add_summary") and "Unverified" in text_of("oc_add_summary")
    assert text_of("oc_add_warning").startswith("Connection is not HTTPS.")
    assert "server-scoped UID" in text_of("oc_add_disclosure")
    shooter.shot(app, "add_dialog")
    app.workspace.add_server()
    pump(
        app,
        lambda: "srv_devlab" in app.model.servers and app.model.active_server == "srv_devlab",
        what="join",
    )
    render(app, 3)
    banners = " ".join(b.text for b in app.model.visible_banners())
    assert "Connection is not HTTPS" in banners  # D15: stays as a banner after joining
    shooter.shot(app, "joined")
    # duplicate refused
    app.workspace.open_add_server()
    app.workspace.set_add_url("http://192.168.1.5:8080")
    app.workspace.discover()
    pump(app, lambda: app.workspace.add_flow.probe is not None)
    app.workspace.add_server()
    render(app, 2)
    assert text_of("oc_add_error") == "Server already added: srv_devlab"
    app.workspace.close_overlays()
    # leave with confirmation
    app.workspace.ask_leave("srv_devlab")
    render(app, 2)
    assert text_of("oc_leave_text") == "Leave Dev Lab?"
    shooter.shot(app, "leave_confirm")
    app.workspace.confirm_leave()
    pump(app, lambda: "srv_devlab" not in app.model.servers, what="leave")
    assert any(t.text == "Left server." for t in app.model.toasts)
    shooter.shot(app, "left")


def test_older_history_on_scroll_to_top(ui_factory: Any, proxy_stack: Any, shooter: Shooter) -> None:
    _proxy, stack, path = proxy_stack
    app = ui_factory(connection=path)
    app.start()
    pump(app, lambda: app.model.stack_online and app.model.snapshot_loaded, what="connect")
    tl = app.view.timeline
    shooter.shot(app, "newest")
    before = len(ids(app))

    def scrolled() -> bool:
        tl.scroll_by(-5000)
        return len(ids(app)) >= before + 30

    pump(app, scrolled, timeout=15, what="older page")
    assert stack.older_calls[0].before == "m1" and ids(app)[0] == "old000"
    for _ in range(20):
        tl.scroll_by(-5000)
        render(app, 2)
    assert tl.start == 0 and "old000" in tl.order
    shooter.shot(app, "older_loaded")
