"""The desktop's controls as pure state (issue 18): the notification settings copy, the update
checker's schedule and status model (features 13.1-13.4), and the identity backup flow. No
display, no bus."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.core.contracts.notify import (
    ChannelPrefs,
    MemberNotifyPrefs,
    Notification,
    NotifyPrefs,
    QuietHours,
    ServerPrefs,
)
from services.core.contracts.version import StackVersion
from testkit import fakes
from ui.controller import Controller
from ui.state import control_intents as ci
from ui.state import intents as it
from ui.state.backup import BackupFlow
from ui.state.composer import Composer
from ui.state.model import ViewModel
from ui.state.notify_settings import MUTE_CHOICES, NotifySettings, in_quiet_hours, parse_quiet_hours
from ui.state.updater import DEV_BANNER, UpdateChecker, UpdateSchedule, is_dev_build

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def note(sid: str = "srv_a", ch: str = "ch_1", mention: bool = False) -> Notification:
    return Notification(
        server_id=sid,
        channel_id=ch,
        message_id="m1",
        author_uid="uid_x",
        title="x in #general",
        body="hi",
        tag="t",
        mention=mention,
        created_at=NOW,
    )


def test_mute_menu_choices_are_the_four_durations_and_until_turned_back_on() -> None:
    assert [d for _, d in MUTE_CHOICES] == [900, 3600, 8 * 3600, 86400, None]
    assert MUTE_CHOICES[-1][0] == "Until I turn it back on"


def test_settings_copy_mutes_levels_and_hide_muted() -> None:
    n = NotifySettings()
    assert n.allows(note(), NOW)
    n.set_mute("srv_a", "ch_1", True, NOW + timedelta(hours=1))
    assert n.channel_muted("srv_a", "ch_1", NOW)
    assert not n.channel_muted("srv_a", "ch_1", NOW + timedelta(hours=2))  # a timed mute ends
    assert n.channel_mute_text("srv_a", "ch_1", NOW).startswith("Muted until ")
    assert not n.hidden("srv_a", "ch_1", NOW)
    n.set_hide_muted(True)
    assert n.hidden("srv_a", "ch_1", NOW) and not n.hidden("srv_a", "ch_2", NOW)
    assert not n.allows(note(), NOW)  # muted channel
    n.set_mute("srv_a", "ch_1", False, None)
    assert n.channel("srv_a", "ch_1") is None  # no override left
    n.set_level("srv_a", None, "mentions")
    assert not n.allows(note(), NOW) and n.allows(note(mention=True), NOW)
    n.set_level("srv_a", "ch_1", "all")  # the channel's own level wins
    assert n.effective_level("srv_a", "ch_1") == "all" and n.allows(note(), NOW)
    n.set_level("srv_a", "ch_1", "nothing")
    assert not n.allows(note(mention=True), NOW)
    n.set_mute("srv_a", None, True, None)
    assert n.server_muted("srv_a", NOW) and n.server_mute_text("srv_a", NOW) == "Muted"


def test_dnd_and_quiet_hours_silence_and_the_stack_answer_wins() -> None:
    n = NotifySettings()
    v = n.version
    n.set_status("dnd")
    assert n.dnd and not n.allows(note(mention=True), NOW) and n.version > v
    n.apply_member(MemberNotifyPrefs(status="idle"))  # an event from another desktop
    assert (n.status, n.dnd) == ("idle", False) and n.allows(note(), NOW)
    n.apply_all(
        NotifyPrefs(
            status="online",
            quiet_hours=QuietHours(enabled=True, start="11:30", end="12:30"),
            timezone="UTC",
            hide_muted_channels=True,
            servers=[ServerPrefs(server_id="srv_b", channels=[ChannelPrefs(channel_id="c", muted=True)])],
        )
    )
    assert n.known and n.hide_muted and n.channel_muted("srv_b", "c", NOW)
    assert n.quiet_now(NOW) and not n.allows(note(), NOW)
    assert not n.quiet_now(NOW + timedelta(hours=1))


def test_quiet_hours_wrap_midnight_in_the_members_zone_and_parse() -> None:
    q = QuietHours(enabled=True, start="22:00", end="07:00")
    assert in_quiet_hours(datetime(2026, 1, 1, 23, 0, tzinfo=UTC), q, "UTC")
    assert in_quiet_hours(datetime(2026, 1, 1, 6, 59, tzinfo=UTC), q, "UTC")
    assert not in_quiet_hours(datetime(2026, 1, 1, 7, 0, tzinfo=UTC), q, "UTC")
    # 21:30 UTC is 22:30 in Berlin (winter)
    assert in_quiet_hours(datetime(2026, 1, 1, 21, 30, tzinfo=UTC), q, "Europe/Berlin")
    assert parse_quiet_hours("off") == QuietHours(enabled=False)
    assert parse_quiet_hours(" 21:15-06:45 ") == QuietHours(enabled=True, start="21:15", end="06:45")
    for bad in ("25:00-07:00", "2200", "22:00-7"):
        with pytest.raises(ValueError):
            parse_quiet_hours(bad)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def status(up: UpdateChecker) -> str:
    return up.status  # read again after a change (mypy keeps a narrowed attribute otherwise)


def checker(current: str, env: dict[str, str] | None = None, seed: int = 7) -> tuple[UpdateChecker, Clock]:
    clock = Clock()
    up = UpdateChecker(current, clock=clock, now=lambda: NOW, rng=random.Random(seed), env=env or {})
    return up, clock


def test_schedule_first_check_30_to_60_s_then_4_h_plus_up_to_2_h() -> None:
    firsts = []
    for seed in range(40):
        up, clock = checker("0.1.0", seed=seed)
        assert up.next_at is not None
        firsts.append(up.next_at - clock.t)
    assert min(firsts) >= 30 and max(firsts) <= 60 and max(firsts) - min(firsts) > 10  # random
    up, clock = checker("0.1.0")
    assert not up.due()
    clock.t = up.next_at or 0
    assert up.due() and up.begin()
    assert not up.begin(manual=True)  # merged with the running check
    assert up.status == "checking" and not up.button_enabled
    up.finished(StackVersion(version="0.1.0", answered_by="state"), None)
    assert up.next_at is not None and 4 * 3600 <= up.next_at - clock.t <= 6 * 3600


def test_status_model_available_error_and_info_dialog_once() -> None:
    up, _ = checker("0.0.7")
    assert up.info_rows()[3] == ("Latest available", "None detected")
    assert up.info_rows()[4] == ("Last checked", "Not checked yet")
    assert up.begin()
    up.finished(
        StackVersion(version="v0.0.9-rc.1", release_url="https://example.org/r", answered_by="s"), None
    )
    assert up.status == "available" and up.button_visible and up.latest == "v0.0.9-rc.1"
    assert up.tooltip() == "Update v0.0.9-rc.1 is available"
    title, where = up.notice()
    assert title == "Update v0.0.9-rc.1 is available" and "https://example.org/r" in where
    assert not up.take_auto_info()  # an update was found: no automatic dialog
    up.begin()
    up.finished(None, "The home stack is unreachable.")
    assert status(up) == "error" and up.button_visible and up.tooltip() == "The home stack is unreachable."
    same, _ = checker("0.1.0")
    same.begin()
    same.finished(StackVersion(version="0.1", answered_by="s"), None)  # semantically equal
    assert same.status == "idle" and not same.button_visible
    assert same.take_auto_info() and not same.take_auto_info()  # opens by itself once
    same.begin()
    same.finished(StackVersion(version="0.1.0", answered_by="s"), None)
    assert not same.take_auto_info()
    assert same.info_rows()[2] == ("Update status", "Up to date")


def test_development_builds_do_not_check_unless_allowed() -> None:
    assert is_dev_build("0.1.0.dev3", {}) and is_dev_build("1.2.0+local", {}) and not is_dev_build("v1.2", {})
    assert is_dev_build("1.0.0", {"OPENCHAT_DEV_BUILD": "1"})
    dev, clock = checker("0.2.0.dev1")
    assert dev.banner == DEV_BANNER and dev.next_at is None
    clock.t += 10_000
    assert not dev.due() and not dev.begin() and dev.begin(manual=True)  # "Check again" still works
    allowed, _ = checker("0.2.0.dev1", env={"OPENCHAT_UPDATER_ALLOW_DEV": "1"})
    assert allowed.banner is None and allowed.next_at is not None
    assert UpdateSchedule().every_s == 4 * 3600


def test_backup_flow_validates_before_any_work(tmp_path: Path) -> None:
    flow = BackupFlow()
    assert flow.export("", "a passphrase", "a passphrase") is None and "Choose a file" in flow.error
    target = tmp_path / "b.json"
    assert (
        flow.export(str(target), "a passphrase", "another one") is None
        and flow.error == "The passphrases differ."
    )
    assert flow.export(str(target), "short", "short") is None and "8 to 1024" in flow.error
    job = flow.export(str(target), "a passphrase", "a passphrase")
    assert job is not None and flow.busy == "Exporting..." and "a passphrase" not in repr(job)
    assert flow.export(str(target), "a passphrase", "a passphrase") is None  # one at a time
    flow.finished("written", None)
    assert flow.status() == ("written", False)
    target.write_text("{}")
    assert (
        flow.export(str(target), "a passphrase", "a passphrase") is None and "never overwritten" in flow.error
    )
    assert flow.import_(str(tmp_path / "none.json"), "x" * 8) is None and "No backup file" in flow.error
    assert flow.import_(str(target), "") is None
    job2 = flow.import_(str(target), "a passphrase")
    assert job2 is not None and "a passphrase" not in repr(job2)
    flow.finished(None, "wrong passphrase, or the backup was changed")
    assert flow.status() == ("wrong passphrase, or the backup was changed", True)


# -- the controller's part (ui/controls.py) without a bus: what it sends and how it applies answers --
class Recorder:
    """A stack port that runs each command against a recording client at once (no bus: the
    real-bus flows are tests/e2e/test_controls_real_stack.py)."""

    online = True

    def __init__(self, answer: Any) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.answer = answer

    async def call(self, spec: Any, args: Any, timeout: float | None = None) -> Any:
        self.sent.append((spec.name, args))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer(spec.name, args) if callable(self.answer) else self.answer

    async def prefs(self) -> Any:  # StackCommands.prefs (the controller's refresh)
        from services.core.contracts import commands as cmd
        from services.core.contracts.bus import Empty

        return await self.call(cmd.PREFS, Empty())

    def submit(self, work: Any, callback: Any = None) -> Any:
        try:
            value, error = asyncio.run(work(self)), None
        except BaseException as exc:
            value, error = None, exc
        if callback is not None:
            callback(value, error)
        return object()

    def drain(self, max_ops: int = 2000) -> list[Any]:
        return []


def controller_with(answer: Any) -> tuple[Controller, Recorder]:
    model = ViewModel(now=lambda: NOW)
    model.apply_snapshot(fakes.snapshot())
    model.set_stack_online(True)
    c = Controller(model, Composer(), client_id="t")
    port = Recorder(answer)
    c.stack = port
    return c, port


def test_controls_send_the_commands_and_take_the_stacks_answer() -> None:
    stack_prefs = NotifyPrefs(status="dnd", dnd=True, hide_muted_channels=True)
    c, port = controller_with(lambda name, args: stack_prefs)
    sid = c.model.order[0]
    ch = c.model.servers[sid].text_channels()[0].id
    c.dispatch(ci.SetNotifyMute(sid, ch, True, 3600))
    name, args = port.sent[-1]
    assert name == "notification.set_mute" and (args.channel_id, args.muted, args.duration_s) == (
        ch,
        True,
        3600,
    )
    # the answer (the whole NotifyPrefs) replaced the optimistic copy
    assert c.model.notify.status == "dnd" and c.model.notify.hide_muted
    c.dispatch(ci.SetNotifyLevel(sid, None, "mentions"))
    assert port.sent[-1][0] == "notification.set_level" and port.sent[-1][1].level == "mentions"
    c.dispatch(ci.SetQuietHours("22:00-07:00", "Europe/Berlin"))
    assert port.sent[-1][0] == "notification.set_quiet_hours" and port.sent[-1][1].timezone == "Europe/Berlin"
    n = len(port.sent)
    c.dispatch(ci.SetQuietHours("7 till late"))
    assert len(port.sent) == n and c.model.toasts[-1].error  # refused before anything is sent
    c.dispatch(ci.SetQuietHours("21:00-06:00", "Mars/Olympus_Mons"))
    assert len(port.sent) == n and "Unknown time zone" in c.model.toasts[-1].text
    assert c.model.notify.quiet_text() != "21:00-06:00"  # nor changed locally
    c.dispatch(ci.SetStatus("idle"))
    assert (
        port.sent[-1] == ("notification.set_status", port.sent[-1][1]) and port.sent[-1][1].status == "idle"
    )
    c.dispatch(ci.SetHideMuted(False))
    assert port.sent[-1][0] == "notification.set_hide_muted"


def test_a_refused_setting_reads_the_stacks_settings_again() -> None:
    from services.core.bus import CommandError

    c, port = controller_with(CommandError("service_unavailable", "notification is down", retryable=True))
    c.dispatch(ci.SetStatus("dnd"))
    assert [name for name, _ in port.sent] == ["notification.set_status", "notification.prefs"]
    assert c.model.toasts[-1].error and "Status is not saved" in c.model.toasts[-1].text


def test_a_notification_the_copy_does_not_allow_is_not_shown() -> None:
    from services.core.contracts import events as ev
    from services.core.contracts.events import decode_event

    c, _ = controller_with(NotifyPrefs())
    sid = c.model.order[0]
    c.model.notify.set_status("dnd")  # switched on while this notification was on its way
    envelope = ev.NOTIFICATION.envelope(sid, note(sid)).model_dump(mode="json")
    c.apply_event(decode_event(c.model.last_seq + 1, envelope))
    assert not [e for e in c.take_effects() if isinstance(e, it.Notify)]
    c.model.notify.set_status("online")
    c.apply_event(decode_event(c.model.last_seq + 1, envelope))
    assert [e for e in c.take_effects() if isinstance(e, it.Notify)]


def test_the_update_check_asks_the_stack_and_merges() -> None:
    c, port = controller_with(StackVersion(version="9.0.0", answered_by="state"))
    up = c.controls.updater
    up.current = "1.0.0"
    c.dispatch(ci.CheckUpdate())
    assert port.sent == [("stack.version", port.sent[0][1])]
    assert up.status == "available" and up.latest == "9.0.0"
