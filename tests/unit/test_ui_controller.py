"""Whole desktop flows without a display: the controller (``ui/controller.py``) and the pure state
(``ui/state/``) driven by intents, against a REAL NATS server through the real ``StackAdapter``.

No Dear PyGui is created here (the import-graph test checks these modules import without it). The
state and connector services are played by ``FakeStack`` (contract models on the real bus, real
JetStream sequences), as in ``tests/e2e/test_app_bus.py``; ``tests/e2e/test_real_stack.py`` runs the
same flows against the real services under Xvfb.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.core.contracts import events as ev
from services.core.contracts.notify import ChannelCounts, Notification, UnreadUpdated
from services.core.members import ConnectionFile
from testkit import fakes
from tests.e2e.fakestack import FakeStack
from tests.e2e.tcpproxy import TcpProxy
from tests.e2e.test_app_bus import connection
from ui.adapter import StackAdapter
from ui.controller import Controller
from ui.state import intents as it
from ui.state.composer import Composer
from ui.state.model import ViewModel
from ui.state.voice import UNREACHABLE
from ui.storage import Storage

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db00000000049454e44ae426082"
)


class Desktop:
    """A controller attached to the member's stack (the app without its window)."""

    def __init__(self, path: Path) -> None:
        self.model = ViewModel()
        self.composer = Composer()
        self.controller = Controller(self.model, self.composer, client_id="desktop-test")
        self.adapter = StackAdapter(ConnectionFile.read(path), last_seq=self.model.last_seq)
        self.adapter.retry_s = 0.2
        self.controller.stack = self.adapter
        self.adapter.start()

    def pump(self, cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        """Process what the stack sent until ``cond`` holds (polled with a deadline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.controller.process_ops()
            if cond():
                return
            time.sleep(0.01)
        m = self.model
        raise AssertionError(f"timed out: {what} (online {m.stack_online}, seq {m.last_seq}, {m.order})")

    def ids(self, sid: str = "srv_testlab", ch: str = "ch_general") -> list[str]:
        return [m.id for m in self.model.messages(sid, ch)]

    def online(self) -> None:
        self.pump(lambda: self.model.stack_online and self.model.snapshot_loaded, what="snapshot")


@pytest.fixture
def proxied(nats_url: str, tmp_path: Path) -> Iterator[tuple[TcpProxy, FakeStack, Path]]:
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


@pytest.fixture
def desktops() -> Iterator[Callable[[Path], Desktop]]:
    made: list[Desktop] = []

    def make(path: Path) -> Desktop:
        d = Desktop(path)
        made.append(d)
        return d

    yield make
    for d in made:
        d.adapter.stop()


def test_add_server_discover_probe_trust_join(proxied: Any, desktops: Any) -> None:
    _proxy, stack, path = proxied
    d = desktops(path)
    d.online()
    c, flow = d.controller, d.controller.add
    c.dispatch(it.OpenAddServer("https://chat.example.test"))
    assert flow.url == "https://chat.example.test" and flow.probe is None
    c.dispatch(it.Discover("http://lab.example.test:8080"))
    assert flow.busy == "Discovering..."
    # the directory answers; the first server is picked and probed at once
    d.pump(lambda: flow.probe is not None, what="discover + probe")
    assert [s.server_id for s in flow.servers] == ["srv_devlab", "srv_other"]
    assert flow.picked == "srv_devlab" and not flow.busy and not flow.error
    summary, warnings, disclosure = flow.summary()
    assert summary.startswith("Dev Lab  [Unverified]") and "A lab" in summary
    assert "not HTTPS" in warnings  # trust: what the member is told before joining
    assert disclosure == "Disclosure: This server sees only a server-scoped UID and proof."
    # picking another entry probes again
    c.dispatch(it.PickServer("Other (srv_other)"))
    assert flow.picked == "srv_other" and flow.probe is None
    d.pump(lambda: flow.probe is not None, what="probe of the other entry")
    c.dispatch(it.PickServer("Dev Lab (srv_devlab)"))
    d.pump(lambda: flow.probe is not None, what="probe again")
    c.dispatch(it.Join("http://lab.example.test:8080"))
    d.pump(lambda: "srv_devlab" in d.model.servers and d.model.active_server == "srv_devlab", what="join")
    effects = c.take_effects()
    assert it.CloseOverlays() in effects and it.AskConsent() in effects
    assert "Joined Dev Lab." in [t.text for t in d.model.toasts]
    assert any("not HTTPS" in line for line in d.model.status_history)
    # the server.joined event arrives too and changes nothing more
    d.pump(lambda: d.model.last_seq >= stack.seq, what="the joined event")
    assert d.model.order.count("srv_devlab") == 1


def test_add_server_refuses_a_bad_url_an_unprobed_join_and_a_joined_server(
    proxied: Any, desktops: Any
) -> None:
    _proxy, _stack, path = proxied
    d = desktops(path)
    d.online()
    c, flow = d.controller, d.controller.add
    c.dispatch(it.Discover("not a url"))
    assert flow.error == "Backend URL is invalid." and not flow.busy
    c.dispatch(it.SetAddUrl("https://chat.example.test"))
    assert flow.error == "" and flow.version > 0
    c.dispatch(it.Join("https://chat.example.test"))
    assert flow.error == "Probe the backend first."
    c.dispatch(it.Discover("https://chat.example.test"))
    d.pump(lambda: flow.probe is not None, what="probe")
    flow.picked = "srv_harbor"  # the directory lists a server the member has joined already
    c.dispatch(it.Join("https://chat.example.test"))
    assert flow.error == "Server already added: srv_harbor"
    # the same id on ANOTHER backend is not that server (issue #14): only its local id is taken
    c.dispatch(it.Discover("https://harbor.example.test"))
    d.pump(lambda: flow.probe is not None, what="probe of another backend")
    flow.picked = "srv_harbor"
    c.dispatch(it.SetAddLocalId("srv_testlab"))
    c.dispatch(it.Join("https://harbor.example.test"))
    assert flow.error == "Local server id already in use: srv_testlab"
    c.dispatch(it.SetAddLocalId("not a token"))
    c.dispatch(it.Join("https://harbor.example.test"))
    assert flow.error.startswith("Local server id: use 1-128 letters")


def test_send_reply_and_attach(proxied: Any, desktops: Any, tmp_path: Path) -> None:
    _proxy, stack, path = proxied
    d = desktops(path)
    d.online()
    c = d.controller
    c.dispatch(it.SelectServer("srv_testlab"))
    c.dispatch(it.SelectChannel("ch_general"))
    d.composer.draft = "hello from the controller"
    c.dispatch(it.Send())
    assert d.composer.sending
    d.pump(lambda: not d.composer.sending and len(stack.sent) == 1, what="send")
    assert stack.sent[0].body == "hello from the controller" and stack.sent[0].channel_id == "ch_general"
    assert d.composer.draft == "" and it.ComposerText("") in c.effects and it.FollowTimeline() in c.effects
    sent_id = d.ids()[-1]
    d.pump(lambda: d.model.last_seq >= stack.seq, what="the echo")
    assert d.ids().count(sent_id) == 1  # the answer and the echo are one message
    # reply: the quoted message's author is named; the reply goes with the message
    c.dispatch(it.ReplyTo("m1"))
    assert d.composer.reply_to == "m1"
    d.composer.draft += "replying"
    c.dispatch(it.Send())
    d.pump(lambda: len(stack.sent) == 2 and not d.composer.sending, what="reply")
    assert stack.sent[1].reply_to == "m1" and d.composer.reply_to is None
    # attach an image: it goes as an upload with the text
    image = tmp_path / "dot.png"
    image.write_bytes(PNG)
    _, max_up = d.model.limits()
    assert d.composer.add_files([image], max_up) == ""
    d.composer.draft = "with a picture"
    c.dispatch(it.Send())
    d.pump(lambda: len(stack.sent) == 3 and not d.composer.sending, what="send with an image")
    assert [i.file_name for i in stack.sent[2].images] == ["dot.png"] and d.composer.attachments == []


def test_switch_servers_and_channels(proxied: Any, desktops: Any) -> None:
    _proxy, stack, path = proxied
    d = desktops(path)
    d.online()
    c = d.controller
    c.dispatch(it.SelectServer("srv_harbor"))
    assert d.model.active_server == "srv_harbor" and d.model.channel_id == "ch_general"
    assert it.TimelineReset() in c.take_effects()
    c.dispatch(it.SelectChannel("ch_ops"))
    assert d.model.channel_id == "ch_ops"
    c.dispatch(it.SelectServer("srv_testlab"))
    assert d.model.active_server == "srv_testlab"
    assert d.model.channel_id == "ch_general"  # remembered per server
    c.dispatch(it.SelectServer("srv_harbor"))
    assert d.model.channel_id == "ch_ops"
    # a channel opened with fewer than 150 messages asks the state service for its window
    stack.post("srv_harbor", "ch_general", "uid_h_1", "later", "h2")
    c.dispatch(it.SelectChannel("ch_general"))
    d.pump(lambda: "h2" in d.ids("srv_harbor"), what="window")
    # a voice channel goes to the voice controller (Call Stage + join); the text channel stays
    c.dispatch(it.SelectServer("srv_testlab"))
    c.dispatch(it.SelectChannel("ch_huddle"))
    assert d.model.channel_id == "ch_general"
    assert c.voice.state.stage == ("srv_testlab", "ch_huddle") and c.voice.joins == 1
    # no media service on this bus: the join fails visibly (card and toast), never silently
    d.pump(lambda: c.voice.state.state == "error", what="the voice error")
    assert c.voice.state.card_title() == "Voice Error" and c.voice.state.error == UNREACHABLE
    assert any(t.text == UNREACHABLE and t.error for t in d.model.toasts)


def test_unread_and_mentions(proxied: Any, desktops: Any) -> None:
    _proxy, stack, path = proxied
    d = desktops(path)
    d.online()
    c = d.controller
    c.dispatch(it.SelectServer("srv_testlab"))
    c.dispatch(it.SelectChannel("ch_general"))
    # no notification service here: the desktop counts locally
    stack.post("srv_harbor", "ch_ops", "uid_h_1", "news", "hb1")
    stack.post("srv_harbor", "ch_ops", "uid_h_1", f"@{fakes.ME_OP} look", "hb2")
    stack.post("srv_testlab", "ch_general", "uid_tl_1", "on screen", "t1")
    d.pump(lambda: "t1" in d.ids(), what="messages")
    assert d.model.rail_badge("srv_harbor") == ("1", True)  # one mention
    assert d.model.servers["srv_harbor"].unread["ch_ops"] == 2
    assert d.model.servers["srv_testlab"].unread.get("ch_general", 0) == 0  # the channel on screen
    c.dispatch(it.MarkServerRead("srv_harbor"))
    assert d.model.rail_badge("srv_harbor") == ("", False)
    # the notification service's counts win from then on (highest revision per channel)
    counts = UnreadUpdated(
        server_id="srv_harbor",
        unread=5,
        mentions=0,
        channels=[
            ChannelCounts(server_id="srv_harbor", channel_id="ch_ops", unread=5, mentions=0, revision=3)
        ],
    )
    stack.publish(ev.UNREAD_UPDATED.kind, "srv_harbor", counts)
    d.pump(lambda: d.model.servers["srv_harbor"].unread.get("ch_ops") == 5, what="unread.updated")
    assert d.model.counts_from_service
    older = counts.model_copy(
        update={"channels": [counts.channels[0].model_copy(update={"unread": 1, "revision": 2})]}
    )
    stack.publish(ev.UNREAD_UPDATED.kind, "srv_harbor", older)
    d.pump(lambda: d.model.last_seq >= stack.seq, what="an older revision")
    assert d.model.servers["srv_harbor"].unread["ch_ops"] == 5

    # a notification: shown (an effect for the OS), unless it is about the channel on screen
    def note(ch: str, mention: bool) -> Notification:
        return Notification(
            server_id="srv_testlab" if ch == "ch_general" else "srv_harbor",
            channel_id=ch,
            message_id=f"n_{ch}_{mention}",
            author_uid="uid_x",
            title="t",
            body="b",
            tag="x",
            mention=mention,
            created_at=datetime.now(UTC),
        )

    c.take_effects()
    stack.publish(ev.NOTIFICATION.kind, "srv_testlab", note("ch_general", False))
    stack.publish(ev.NOTIFICATION.kind, "srv_harbor", note("ch_ops", False))
    stack.publish(ev.NOTIFICATION.kind, "srv_testlab", note("ch_general", True))
    d.pump(lambda: d.model.last_seq >= stack.seq, what="notifications")
    shown = [e.notification.channel_id for e in c.take_effects() if isinstance(e, it.Notify)]
    assert shown == ["ch_ops", "ch_general"]  # the non-mention on screen stays quiet


def test_offline_and_catch_up(proxied: Any, desktops: Any, tmp_path: Path) -> None:
    proxy, stack, path = proxied
    d = desktops(path)
    d.online()
    c = d.controller
    c.dispatch(it.SelectServer("srv_testlab"))
    c.dispatch(it.SelectChannel("ch_general"))
    stack.post("srv_testlab", "ch_general", "uid_tl_1", "before", "b0")
    d.pump(lambda: "b0" in d.ids(), what="live")
    proxy.cut()
    d.pump(lambda: not d.model.stack_online, what="offline")
    assert d.model.read_only
    d.composer.draft = "while offline"
    c.dispatch(it.Send())
    assert d.composer.error == "The home stack is unreachable; sending is paused." and not stack.sent
    for i in range(3):
        stack.post("srv_testlab", "ch_general", "uid_tl_1", f"away {i}", f"away{i}")
    proxy.restore()
    d.pump(lambda: d.model.stack_online and "away2" in d.ids(), timeout=15, what="catch-up")
    stack.post("srv_testlab", "ch_general", "uid_tl_1", "after", "after")
    d.pump(lambda: "after" in d.ids(), what="live again")
    got = d.ids()
    assert len(got) == len(set(got)) and got[-5:] == ["b0", "away0", "away1", "away2", "after"]
    assert stack.sync_calls >= 1 and stack.snapshot_calls == 1
    assert it.StackBack() in c.take_effects()
    # a restart from the local cache: read-only until the stack answers, then synced, not re-snapshotted
    storage = Storage(tmp_path / "cfg")
    storage.save_snapshot_json("m", d.model.to_snapshot().model_dump_json())
    cached = storage.load_snapshot("m")
    assert cached is not None
    d.adapter.stop()
    proxy.cut()
    stack.post("srv_testlab", "ch_general", "uid_tl_1", "missed while closed", "c2")
    model = ViewModel()
    model.apply_snapshot(cached, from_cache=True)
    model.set_stack_online(False, "connecting")
    assert model.read_only and "after" in [m.id for m in model.messages("srv_testlab", "ch_general")]
    ctl = Controller(model, Composer(), client_id="desktop-test-2")
    adapter = StackAdapter(ConnectionFile.read(path), last_seq=model.last_seq)
    adapter.retry_s = 0.2
    ctl.stack = adapter
    adapter.start()
    try:
        proxy.restore()
        deadline = time.monotonic() + 15
        while not (
            model.stack_online and "c2" in [m.id for m in model.messages("srv_testlab", "ch_general")]
        ):
            assert time.monotonic() < deadline, "no catch-up after a start from the cache"
            ctl.process_ops()
            time.sleep(0.01)
        assert stack.snapshot_calls == 1  # synced from the cached sequence
    finally:
        adapter.stop()


def test_first_run_and_welcome(proxied: Any, tmp_path: Path) -> None:
    """The app without a window: no connection file -> the first-run screen; a connection file ->
    the workspace; no identity yet -> Welcome (identity, then profile) -> Add Server."""
    from ui.app import App

    _proxy, stack, path = proxied
    stack.identity = fakes_identity_missing()
    stack.views.clear()  # a new member: no servers yet
    app = App(storage=Storage(tmp_path / "cfg"), os_notifications=False, watch_window=False)
    try:
        app.start()
        assert app.screen == "firstrun" and app.controller.stack is None
        assert app.choose_connection(str(tmp_path / "missing.json")) is False
        assert app.choose_connection(str(path)) is True
        assert app.screen == "workspace"
        adapter = app.adapter
        assert adapter is not None
        adapter.retry_s = 0.2

        def pump(cond: Callable[[], bool], what: str) -> None:
            deadline = time.monotonic() + 10
            while not cond():
                assert time.monotonic() < deadline, what
                app.controller.process_ops()
                time.sleep(0.01)

        pump(lambda: app.account.step == "identity", "the Welcome dialog (identity step)")
        app.account.create_identity()
        pump(lambda: app.account.step == "profile", "the profile step")
        app.account.save_profile("Vinnie")
        pump(lambda: app.account.step is None and stack.profile is not None, "profile saved")
        assert stack.profile is not None and stack.profile.display_name == "Vinnie"
        assert app.model.display_name == "Vinnie" and app.account.settled
        # a new member: the view is in, without servers (with a window, Add Server opens next)
        assert app.model.snapshot_loaded and app.model.order == []
    finally:
        app.stop()


def fakes_identity_missing() -> Any:
    from services.core.contracts.chat import IdentityInfo

    return IdentityInfo(exists=False)
