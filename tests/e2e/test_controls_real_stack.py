"""Issue 18 in the desktop, against the REAL stack (``openchat up --demo``: NATS, Redis, connector,
state, notification, media and two devservers) under Xvfb.

Desktop A is the app with its window; desktop B is a second desktop of the same member without a
window (``tests/unit/test_ui_controller.Desktop``: the controller, the pure state and the real
``StackAdapter`` on its own bus connection; two apps cannot share one Dear PyGui context). Every
setting is made through A's widgets (the status picker, the channel and server context menus,
Settings → Notifications; each widget's own callback is invoked) and must show on B within a
second (``notify.member`` / ``notify.prefs`` events). DND is shown to silence notifications while
badges grow; an old desktop shows the update button after its first check; a desktop up to date
opens the client information dialog once; Settings → My Account exports the identity and imports
it on a fresh stack, where the server sees the same uid.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.core.identity_backup import decrypt_backup
from services.core.version import package_version
from testkit.demo_stack import READY, DemoStack
from tests.e2e.conftest import Shooter, render, text_of
from tests.e2e.test_app_bus import pump
from tests.e2e.test_real_stack import admin_post
from tests.unit.test_ui_controller import Desktop
from ui.state import control_intents as ci
from ui.state.updater import UpdateSchedule

pytestmark = pytest.mark.timeout(
    300
)  # a second stack start, and the module stack's stop in the last teardown
SECOND = 1.0  # "on every desktop of the member at once": within a second
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = DemoStack(tmp_path_factory.mktemp("demo") / "home")
    try:
        stack.wait_for(READY, "demo joined srv_family", "demo joined srv_harbor")
        yield stack
    finally:
        stack.stop()


def attach(ui_factory: Any, path: Path, **kw: Any) -> Any:
    a = ui_factory(connection=path, **kw)
    a.start()
    pump(
        a,
        lambda: a.model.stack_online and {"srv_family", "srv_harbor"} <= set(a.model.servers),
        timeout=60,
        what="the demo member's snapshot",
    )
    pump(a, lambda: a.account.settled, timeout=20, what="the identity and profile read")
    if a.account.step is not None:
        a.account.skip()
        render(a, 3)
    for _ in range(3):  # D18 consent prompts
        if a.view.overlay_open():
            a.workspace.answer_consent(False)
        render(a, 3)
    pump(a, lambda: a.model.notify.known, timeout=20, what="the notification settings")
    return a


@pytest.fixture
def second(demo: DemoStack) -> Iterator[Desktop]:
    d = Desktop(demo.home / "members" / "demo.json")
    try:
        d.online()
        d.controller.set_window_focus(False, visible=False)  # B shows nothing: A's messages count
        d.pump(lambda: d.model.notify.known, what="B's notification settings")
        yield d
    finally:
        d.adapter.stop()


def click(tag: str, app_data: Any = None) -> None:
    """Invoke a widget's own callback, as Dear PyGui does on a click."""
    import dearpygui.dearpygui as dpg

    cb = dpg.get_item_callback(tag)
    assert cb is not None, f"{tag} has no callback"
    user_data = dpg.get_item_user_data(tag)
    args = (tag, app_data, user_data)
    n = cb.__code__.co_argcount
    cb(*args[:n])


def reflected(app: Any, b: Desktop, cond: Callable[[Desktop], bool], what: str) -> float:
    """Frames of A go on (its commands leave) until B shows ``cond``; returns the seconds it took."""
    t0 = time.monotonic()
    deadline = t0 + 10
    while time.monotonic() < deadline:
        render(app, 1)
        b.controller.process_ops()
        if cond(b):
            took = time.monotonic() - t0
            assert took < SECOND, f"{what}: on the second desktop only after {took:.2f} s"
            return took
        time.sleep(0.005)
    raise AssertionError(f"{what}: never reached the second desktop")


def test_settings_through_the_desktop_reach_the_second_desktop(
    demo: DemoStack, ui_factory: Any, second: Desktop, shooter: Shooter
) -> None:
    import dearpygui.dearpygui as dpg

    app = attach(ui_factory, demo.home / "members" / "demo.json")
    b = second
    app.workspace.select_server("srv_family")
    app.workspace.select_channel("ch_general")
    render(app, 3)
    shooter.shot(app, "before")
    took: dict[str, float] = {}

    # -- status in the dock: the profile card's picker
    click("oc_dock_status")
    render(app, 2)
    assert dpg.is_item_shown("oc_status_menu")
    assert text_of("oc_status_active") == "Active on Family."
    shooter.shot(app, "status_card")
    click("oc_status_dnd")
    took["status dnd"] = reflected(app, b, lambda d: d.model.notify.status == "dnd", "status dnd")
    assert b.model.notify.dnd
    render(app, 3)
    assert dpg.get_item_label("oc_dock_status") == "Do Not Disturb"
    shooter.shot(app, "dnd")

    # -- DND silences notifications while the count grows (harbor is not on screen)
    before = app.model.servers["srv_harbor"].unread.get("ch_general", 0)
    admin_post(demo, "harbor", "ch_general", "uid_seed_1", "quiet please, dnd is on")
    pump(
        app,
        lambda: app.model.servers["srv_harbor"].unread.get("ch_general", 0) > before,
        timeout=20,
        what="the unread count growing under DND",
    )
    # DND off from the OTHER desktop: A follows, and the next message notifies (a toast here:
    # the test app has no OS notifications). Notifications come in stream order, so the one of
    # the message sent under DND, had there been one, would have come first.
    b.controller.dispatch(ci.SetStatus("online"))
    pump(app, lambda: app.model.notify.status == "online", timeout=SECOND * 5, what="A back to online")
    admin_post(demo, "harbor", "ch_general", "uid_seed_1", "now you may hear me")
    pump(
        app,
        lambda: any("now you may hear me" in t.text for t in app.model.toasts),
        timeout=20,
        what="the notification after DND",
    )
    assert not any("quiet please" in t.text for t in app.model.toasts)

    # -- the channel context menu: mute for 1 hour, level, Hide Muted Channels
    app.view.open_channel_menu("srv_family", "ch_general")
    render(app, 2)
    assert [dpg.get_item_label(f"oc_chctx_mute_{i}") for i in range(5)] == [
        "For 15 Minutes",
        "For 1 Hour",
        "For 8 Hours",
        "For 24 Hours",
        "Until I turn it back on",
    ]
    shooter.shot(app, "channel_menu")
    click("oc_chctx_mute_1")
    took["channel mute 1 h"] = reflected(
        app, b, lambda d: d.model.notify.channel_muted("srv_family", "ch_general", d.model.now()), "mute"
    )
    cp = b.model.notify.channel("srv_family", "ch_general")
    assert cp is not None and cp.muted_until is not None
    left = (cp.muted_until - b.model.now()).total_seconds()
    assert 3500 < left <= 3600
    app.view.open_channel_menu("srv_family", "ch_general")
    render(app, 2)
    assert dpg.does_item_exist("oc_chctx_unmute")
    click("oc_chctx_level_mentions")
    took["channel level"] = reflected(
        app, b, lambda d: d.model.notify.channel_level("srv_family", "ch_general") == "mentions", "level"
    )
    app.view.open_channel_menu("srv_family", "ch_general")
    render(app, 2)
    click("oc_chctx_hide", True)
    took["hide muted"] = reflected(app, b, lambda d: d.model.notify.hide_muted, "Hide Muted Channels")
    render(app, 3)
    assert not dpg.does_item_exist("oc_chan_ch_general")  # gone from the list on A ...

    def shown_b(d: Desktop) -> set[str]:
        return {c.id for _, chans in d.model.visible_channels("srv_family") for c in chans}

    # ... and on B: its list without the muted channel but with the others (B applies its ops on
    # its own; polled, not read once, so a resync of B's view in between is waited out)
    b.pump(lambda: bool(shown_b(b)) and "ch_general" not in shown_b(b), what="B's list without ch_general")
    assert "ch_general" not in shown_b(b) and shown_b(b)
    shooter.shot(app, "hidden_muted")

    # -- the server menu: level, Mute Server
    app.view.open_server_menu("srv_harbor")
    render(app, 2)
    shooter.shot(app, "server_menu")
    click("oc_srvn_level_nothing")
    took["server level"] = reflected(
        app, b, lambda d: d.model.notify.server_level("srv_harbor") == "nothing", "server level"
    )
    app.view.open_server_menu("srv_harbor")
    render(app, 2)
    click("oc_ctx_mute", True)
    took["server mute"] = reflected(
        app, b, lambda d: d.model.notify.server_muted("srv_harbor", d.model.now()), "server mute"
    )

    # -- Settings → Notifications: quiet hours
    app.workspace.open_settings()
    render(app, 3)
    tab = "oc_set_tab_notify"
    dpg.set_value(dpg.get_item_parent(tab), tab)
    dpg.set_value("oc_setn_quiet_on", True)
    dpg.set_value("oc_setn_quiet_start", "21:30")
    dpg.set_value("oc_setn_quiet_end", "06:15")
    dpg.set_value("oc_setn_tz", "Europe/Berlin")
    click("oc_setn_quiet_save")
    took["quiet hours"] = reflected(
        app, b, lambda d: d.model.notify.quiet_text() == "21:30-06:15", "quiet hours"
    )
    assert b.model.notify.member.timezone == "Europe/Berlin"
    render(app, 4)
    assert dpg.get_value("oc_setn_hide") is True and dpg.get_value("oc_setn_level_srv_harbor") == "Nothing"
    shooter.shot(app, "settings_notifications")
    print("latency to the second desktop:", json.dumps({k: round(v, 3) for k, v in took.items()}))

    # back to defaults through the same paths (the module's stack serves the next tests)
    app.workspace.close_overlays()
    for intent in (
        ("SetQuietHours", ("off",)),
        ("SetHideMuted", (False,)),
        ("SetNotifyMute", ("srv_family", "ch_general", False)),
        ("SetNotifyLevel", ("srv_family", "ch_general", None)),
        ("SetNotifyLevel", ("srv_harbor", None, "all")),
        ("SetNotifyMute", ("srv_harbor", None, False)),
    ):
        app.workspace.dispatch(getattr(ci, intent[0])(*intent[1]))
    reflected(
        app,
        b,
        lambda d: (
            not d.model.notify.hide_muted
            and not d.model.notify.server_muted("srv_harbor", d.model.now())
            and d.model.notify.server_level("srv_harbor") == "all"
        ),
        "reset",
    )


def test_an_old_desktop_shows_the_update_button_after_its_first_check(
    demo: DemoStack, ui_factory: Any, shooter: Shooter
) -> None:
    import dearpygui.dearpygui as dpg

    fast = UpdateSchedule(first_min_s=0.5, first_max_s=1.0)
    app = attach(
        ui_factory, demo.home / "members" / "demo.json", client_version="0.0.9", update_schedule=fast
    )
    assert app.workspace.updater.enabled and app.workspace.updater.current == "0.0.9"
    pump(app, lambda: app.workspace.updater.checks >= 1, timeout=20, what="the first update check")
    render(app, 3)
    stack_version = package_version()
    assert app.workspace.updater.status == "available" and app.workspace.updater.latest == stack_version
    assert dpg.is_item_shown("oc_update_btn")
    assert dpg.get_item_label("oc_update_btn") == f"Update {stack_version}"
    assert text_of("oc_update_tip") == f"Update {stack_version} is available"
    assert not dpg.is_item_shown("oc_info")  # an update was found: no automatic dialog
    shooter.shot(app, "update_button")
    click("oc_update_btn")
    render(app, 4)
    assert dpg.is_item_shown("oc_update")
    assert text_of("oc_update_title") == f"Update {stack_version} is available"
    assert "0.0.9" in text_of("oc_update_where") and "home stack" in text_of("oc_update_where")
    shooter.shot(app, "update_notice")


def test_an_up_to_date_desktop_opens_client_information_once(
    demo: DemoStack, ui_factory: Any, shooter: Shooter
) -> None:
    import dearpygui.dearpygui as dpg

    fast = UpdateSchedule(first_min_s=0.5, first_max_s=1.0)
    app = attach(ui_factory, demo.home / "members" / "demo.json", update_schedule=fast)
    pump(app, lambda: app.workspace.updater.checks >= 1, timeout=20, what="the first update check")
    render(app, 4)
    assert app.workspace.updater.status == "idle" and not dpg.is_item_shown("oc_update_btn")
    assert dpg.is_item_shown("oc_info")  # opened by itself
    assert text_of("oc_info_key_3") == "Latest available" and text_of("oc_info_val_3") == "None detected"
    assert text_of("oc_info_val_0") == package_version() and text_of("oc_info_val_2") == "Up to date"
    assert text_of("oc_info_val_4") != "Not checked yet"
    shooter.shot(app, "client_information")
    app.view.hide("oc_info")
    click("oc_info_check")  # "Check again": no second automatic opening
    pump(app, lambda: app.workspace.updater.checks >= 2, timeout=20, what="the second check")
    render(app, 4)
    assert not dpg.is_item_shown("oc_info")


def test_identity_export_in_settings_then_import_on_a_fresh_stack_same_uid(
    demo: DemoStack,
    ui_factory: Any,
    tmp_path: Path,
    shooter: Shooter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import dearpygui.dearpygui as dpg

    from tests.integration.test_notify_controls_cli import js, ok, start

    caplog.set_level(logging.DEBUG)
    app = attach(ui_factory, demo.home / "members" / "demo.json")
    old_uid = app.model.servers["srv_harbor"].record.user_uid
    harbor = str(demo.endpoints["devservers"]["harbor"])
    backup = tmp_path / "demo-identity.json"
    app.workspace.open_settings()
    render(app, 3)
    dpg.set_value("oc_bak_path", str(backup))
    dpg.set_value("oc_bak_pass", PASSPHRASE)
    dpg.set_value("oc_bak_pass2", "not the same")
    click("oc_bak_export")
    render(app, 2)
    assert text_of("oc_bak_status") == "The passphrases differ." and not backup.exists()
    assert text_of("oc_bak_pass") == ""  # the passphrase leaves the widgets
    dpg.set_value("oc_bak_pass", PASSPHRASE)
    dpg.set_value("oc_bak_pass2", PASSPHRASE)
    click("oc_bak_export")
    pump(app, lambda: not app.workspace.backup.busy, timeout=30, what="the export")
    render(app, 3)
    assert app.workspace.backup.error == "", app.workspace.backup.error
    assert backup.exists() and backup.stat().st_mode & 0o077 == 0
    assert text_of("oc_bak_status").startswith("Identity backup written to")
    shooter.shot(app, "exported")
    doc = json.loads(backup.read_text())
    assert doc["format"] == "openchat-identity-backup" and "root" not in backup.read_text()
    root = decrypt_backup(backup.read_bytes(), PASSPHRASE).root
    app.workspace.close_overlays()
    app.adapter.stop()
    app.model.set_stack_online(False)
    app.view.destroy()  # one window at a time in the session's Dear PyGui context

    # A fresh stack (own home, key, NATS): the same member name, no identity, no servers.
    new_home = tmp_path / "new" / "home"
    new = start(new_home)
    try:
        ok(new_home, "member", "add", "demo")
        app2 = ui_factory(connection=new_home / "members" / "demo.json")
        app2.start()
        pump(app2, lambda: app2.model.stack_online, timeout=60, what="the fresh stack")
        pump(app2, lambda: app2.account.settled, timeout=20, what="the account read")
        if app2.account.step is not None:
            app2.account.skip()
        app2.workspace.close_overlays()
        render(app2, 3)
        app2.workspace.open_settings()
        render(app2, 3)
        dpg.set_value("oc_bak_path", str(backup))
        dpg.set_value("oc_bak_pass", "wrong passphrase!")
        click("oc_bak_import")
        pump(app2, lambda: not app2.workspace.backup.busy, timeout=30, what="the refused import")
        render(app2, 2)
        assert "wrong passphrase" in text_of("oc_bak_status")
        dpg.set_value("oc_bak_pass", PASSPHRASE)
        click("oc_bak_import")
        pump(app2, lambda: not app2.workspace.backup.busy, timeout=30, what="the import")
        render(app2, 3)
        assert app2.workspace.backup.error == "", app2.workspace.backup.error
        assert text_of("oc_bak_status").startswith("Identity imported from demo-identity.json")
        shooter.shot(app2, "imported")
        joined = js(new_home, "join", harbor, "--server", "srv_harbor", "--yes")
        assert joined["server"]["user_uid"] == old_uid  # the server sees the same uid again
        pump(
            app2,
            lambda: (
                "srv_harbor" in app2.model.servers
                and app2.model.servers["srv_harbor"].record.user_uid == old_uid
            ),
            timeout=30,
            what="the fresh desktop on harbor with the old uid",
        )
    finally:
        new.proc.send_signal(2)
        new.proc.wait(60)
    logged = "\n".join(
        r.getMessage() + json.dumps(getattr(r, "__dict__", {}), default=str) for r in caplog.records
    )
    assert PASSPHRASE not in logged and root not in logged


def test_a_development_build_says_it_does_not_check(ui_factory: Any, shooter: Shooter) -> None:
    """13.3: no scheduled check in a development build; a dismissible banner says so (no stack
    needed: the view with a fake snapshot)."""
    import dearpygui.dearpygui as dpg

    from tests.e2e.test_view import workspace
    from ui.state.updater import DEV_BANNER

    app = workspace(ui_factory, client_version="0.2.0.dev1", update_schedule=UpdateSchedule(0.0, 0.0))
    render(app, 3)
    assert not app.workspace.updater.enabled and app.workspace.updater.next_at is None
    assert text_of("oc_banner_updater") == DEV_BANNER
    assert not dpg.is_item_shown("oc_update_btn")
    shooter.shot(app, "dev_banner")
    app.workspace.dismiss_banner("updater")
    render(app, 3)
    assert not dpg.does_item_exist("oc_banner_updater") and app.workspace.updater.checks == 0
