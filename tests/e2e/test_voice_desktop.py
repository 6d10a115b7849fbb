"""Voice in the desktop app against the REAL stack (issue 15 acceptance).

``openchat up --demo`` (NATS, connector, state, media service, devservers) in a private home, a
real PulseAudio server started here (null sinks ``spk`` and ``mic``; a tone is played into ``mic``
with ``paplay``, what the app plays is recorded from ``spk.monitor`` with ``parec``), an aiortc
mesh peer in the devserver's room (tests/integration/voice_peers.py) on its own event loop
thread, and the app under Xvfb driven by real clicks (xdotool) and through its controller.
Screenshots in artifacts/screenshots/test_voice_*.

The member's tone goes through the audio engine with echo cancellation OFF in the call test:
WebRTC's AEC3 treats a pure tone under a continuous far-end tone as echo and suppresses it (a
sine is not speech); the processing switches are tested on their own in
tests/unit/test_ui_audio_processing.py. Noise suppression and automatic gain stay on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dearpygui.dearpygui as dpg
import httpx
import pytest

from testkit.demo_stack import READY, DemoStack
from tests.e2e.conftest import Shooter, render, text_of
from tests.e2e.desktop import xdotool
from tests.e2e.pulse import Pulse, pulse  # noqa: F401 - the fixture
from tests.e2e.test_app_bus import pump
from tests.integration.voice_peers import MeshPeer, band_share, mean_abs
from ui.audio import prefs as media_prefs
from ui.audio.prefs import MediaPrefs
from ui.storage import Storage

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True)
def _host_address() -> None:
    """aioice gathers no 127.0.0.1 candidate: WebRTC between local processes needs another address
    (inside a bare network namespace: ``ip addr add 10.77.0.1/32 dev lo``)."""
    from aioice.ice import get_host_addresses

    if not get_host_addresses(use_ipv4=True, use_ipv6=False):
        pytest.skip("no non-loopback IPv4 address: WebRTC (aioice) cannot gather a host candidate")


T = TypeVar("T")
SERVER = "srv_harbor"


class PeerLoop:
    """An asyncio loop on its own thread for the remote peers (the test's main thread renders)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="peer-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = DemoStack(tmp_path_factory.mktemp("demo") / "home")
    try:
        stack.wait_for(READY, "demo joined srv_family", "demo joined srv_harbor")
        yield stack
    finally:
        stack.stop()


def open_app(ui_factory: Any, demo: DemoStack, config: Path) -> Any:
    dpg.set_viewport_pos([0, 0])  # the whole window on the Xvfb screen: the dock is clickable
    a = ui_factory(connection=demo.home / "members" / "demo.json", storage=Storage(config))
    a.start()
    pump(a, lambda: a.model.stack_online and SERVER in a.model.servers, timeout=60, what="the snapshot")
    pump(a, lambda: a.account.settled, timeout=20, what="the identity and profile read")
    if a.account.step is not None:
        a.account.skip()
        render(a, 3)
    for _ in range(3):  # D18 consent prompts
        if a.view.overlay_open():
            a.workspace.answer_consent(False)
        render(a, 3)
    return a


def click(app: Any, tag: str) -> None:
    """A real mouse click (xdotool) in the middle of a widget."""
    render(app, 2)
    x0, y0 = dpg.get_item_rect_min(tag)
    w, h = dpg.get_item_rect_size(tag)
    vx, vy = dpg.get_viewport_pos()
    x, y = int(vx + x0 + min(w / 2, 60)), int(vy + y0 + h / 2)
    here = dict(line.split("=", 1) for line in xdotool("getmouselocation", "--shell").splitlines())
    if (here.get("X"), here.get("Y")) != (str(x), str(y)):  # --sync waits for a motion event
        xdotool("mousemove", "--sync", str(x), str(y))
    pump(app, lambda: dpg.is_item_hovered(tag), timeout=5, what=f"the pointer over {tag} at {x},{y}")
    xdotool("click", "1")
    render(app, 3)


def voice_channel(app: Any, name: str) -> str:
    sm = app.model.servers[SERVER]
    return str(next(c.id for g in sm.groups for c in g.channels if c.type == "voice" and c.name == name))


def test_voice_call_end_to_end(
    demo: DemoStack,
    pulse: Pulse,  # noqa: F811 - the imported fixture
    ui_factory: Any,
    shooter: Shooter,
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    media_prefs.save(config, MediaPrefs(echo_cancellation=False))  # see the module docstring
    app = open_app(ui_factory, demo, config)
    base = demo.endpoints["devservers"]["harbor"]
    peers = PeerLoop()
    peer = MeshPeer("uid_peer_a", 440)
    tone = pulse.play_tone(660)
    speaker = pulse.record_speaker()
    try:
        app.workspace.select_server(SERVER)
        render(app, 3)
        ch = voice_channel(app, "General Voice")
        peers.run(peer.join(base, ch))
        uid = app.model.servers[SERVER].record.user_uid
        shooter.shot(app, "before_join")

        # a click on "General Voice" joins and shows the Call Stage
        click(app, f"oc_chan_{ch}")
        assert app.voice.state.pending == (SERVER, ch) or app.voice.state.in_call()
        pump(app, lambda: app.voice.state.state == "active", timeout=60, what="Voice Connected")
        assert text_of("oc_voice_title") == "Voice Connected"
        assert text_of("oc_voice_sub").startswith("General Voice / ")
        assert dpg.is_item_shown("oc_stage") and not dpg.is_item_shown("oc_chat")
        assert text_of("oc_stage_channel").endswith("General Voice")
        assert dpg.get_item_label("oc_stage_chip") == "Connected"

        # the peer hears the member's tone; the app's speaker carries the peer's tone
        def peer_hears(hz: float) -> bool:
            pid = peer.pid_of(uid)
            return pid is not None and pid in peer.heard and band_share(peer.heard[pid].last(1.0), hz) > 0.5

        try:
            pump(app, lambda: peer_hears(660), timeout=40, what="the peer hearing the member's 660 Hz")
        except AssertionError as exc:
            e = app.voice.engine
            pid = peer.pid_of(uid)
            heard = peer.heard[pid].last(1.0) if pid in peer.heard else None
            raise AssertionError(
                f"{exc}; engine captured {e.captured} played {e.played} input {e.input_open!r} "
                f"error {e.capture_error!r} in_call {e.in_call}; peer pids {list(peer.heard)} {pid}; "
                f"heard {None if heard is None else (len(heard), mean_abs(heard), band_share(heard, 660))}"
            ) from None
        pump(
            app,
            lambda: band_share(speaker.last(1.0), 440) > 0.5,
            timeout=30,
            what="the app's speaker playing the peer's 440 Hz",
        )
        # both participants listed, each with a speaking ring while they speak
        pump(
            app,
            lambda: [p.speaking for p in app.voice.state.participants(SERVER, ch, uid, "me")] == [True, True],
            timeout=20,
            what="both rings on",
        )
        rows = dpg.get_item_children(f"oc_vrows_{ch}", 1) or []
        assert len(rows) == 2
        assert text_of("oc_stage_count") == "2 participants"
        assert dpg.is_item_shown("oc_dock_ring")
        shooter.shot(app, "connected_speaking")

        # browsing a text channel and another server keeps the call
        app.workspace.select_server("srv_family")
        render(app, 5)
        assert app.voice.state.state == "active" and text_of("oc_voice_title") == "Voice Connected"
        assert not dpg.is_item_shown("oc_stage")
        shooter.shot(app, "other_server_call_kept")
        app.workspace.select_server(SERVER)
        render(app, 3)

        # mute → the peer hears silence
        muted_pid = peer.pid_of(uid)
        assert muted_pid is not None
        click(app, "oc_voice_mic")
        pump(app, lambda: app.voice.state.prefs_of(SERVER).mic_muted, timeout=5, what="muted")
        pump(
            app,
            lambda: mean_abs(peer.heard[muted_pid].last(0.5)) < 0.002,
            timeout=15,
            what="silence at the peer",
        )
        pump(
            app, lambda: any(s.get("mic_muted") is True for s in peer.media_states), timeout=10, what="state"
        )
        shooter.shot(app, "muted")
        # deafen → the app's speaker is silent (and the mic stays muted)
        click(app, "oc_voice_deafen")
        pump(app, lambda: app.voice.state.prefs_of(SERVER).deafened, timeout=5, what="deafened")
        pump(app, lambda: mean_abs(speaker.last(0.5)) < 0.001, timeout=15, what="a silent speaker")
        assert app.voice.state.prefs_of(SERVER).mic_muted
        shooter.shot(app, "deafened")
        # mic while deafened clears both
        click(app, "oc_voice_mic")
        pump(
            app,
            lambda: (
                not app.voice.state.prefs_of(SERVER).deafened
                and not app.voice.state.prefs_of(SERVER).mic_muted
            ),
            timeout=5,
            what="both cleared",
        )
        pump(app, lambda: peer_hears(660), timeout=20, what="the member audible again")
        pump(app, lambda: band_share(speaker.last(1.0), 440) > 0.5, timeout=20, what="the speaker back")

        # the signaling socket dropped by the devserver → Reconnecting... then Voice Connected
        titles: list[str] = []

        def watch() -> bool:
            titles.append(text_of("oc_voice_title"))
            return "Reconnecting..." in titles and titles[-1] == "Voice Connected"

        r = httpx.post(f"{base}/_admin/rtc/drop", json={"user_uid": uid}, timeout=10)
        assert r.json()["dropped"] >= 1
        pump(app, watch, timeout=60, what="Reconnecting... then Voice Connected")
        shooter.shot(app, "reconnected")

        # clicking the connected channel again does nothing but show its stage (no new join)
        assert not dpg.is_item_shown("oc_stage")  # back on the server: its text channel
        joins = app.voice.joins
        click(app, f"oc_chan_{ch}")
        assert dpg.is_item_shown("oc_stage") and app.voice.joins == joins
        assert app.voice.state.state == "active" and app.voice.state.pending is None
        # hang up → the peer sees the member leave
        pid = peer.pid_of(uid)
        click(app, "oc_voice_hangup")
        pump(app, lambda: pid in peer.left, timeout=20, what="the peer seeing the member leave")
        pump(app, lambda: not dpg.is_item_shown("oc_voice_card"), timeout=5, what="the card gone")
        assert app.voice.state.state == "idle" and not app.voice.engine.in_call
        assert not (dpg.get_item_children(f"oc_vrows_{ch}", 1) or [])
        assert "Join General Voice" in text_of("oc_stage_hint")
        shooter.shot(app, "left")
    finally:
        speaker.stop()
        tone.terminate()
        peers.run(peer.close())
        peers.stop()
        if app.voice.state.in_call():
            app.voice.hang_up()


def test_voice_mic_test_and_settings_persist(
    demo: DemoStack,
    pulse: Pulse,  # noqa: F811 - the imported fixture
    ui_factory: Any,
    shooter: Shooter,
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    app = open_app(ui_factory, demo, config)
    tone = pulse.play_tone(660)
    speaker = pulse.record_speaker()
    try:
        # Voice Settings from the mic caret's menu
        click(app, "oc_voice_mic_caret")
        pump(app, lambda: dpg.is_item_shown("oc_voice_in_menu"), timeout=5, what="Input Options")
        labels = dpg.get_item_configuration("oc_voice_in_devices")["items"]
        assert labels[0] == "System Default (Microphone)" and any("mic.monitor" in x for x in labels)
        shooter.shot(app, "input_menu")
        app.view.open_voice_settings()
        render(app, 4)
        assert dpg.is_item_shown("oc_settings") and dpg.get_value("oc_set_tabs") in (
            "oc_set_voice_tab",
            dpg.get_alias_id("oc_set_voice_tab"),
        )
        click(app, "oc_set_vtest")
        assert app.voice.engine.testing
        levels: list[float] = []

        def meter_moved() -> bool:
            levels.append(float(dpg.get_value("oc_set_vlevel")))
            return max(levels) > 0.2

        pump(app, meter_moved, timeout=20, what="the meter moving")
        pump(app, lambda: band_share(speaker.last(1.0), 660) > 0.5, timeout=20, what="the loopback heard")
        shooter.shot(app, "mic_test")
        app.workspace.close_overlays()
        pump(app, lambda: not app.voice.engine.testing, timeout=5, what="the test stopped with settings")

        # choices persist across a restart
        app.voice.update_prefs(output_volume=20, input_volume=150, input_device="mic.monitor")
        app.voice.update_prefs(noise_suppression=False)
        app.stop()  # the app closes (a restart: a new App reads the same config directory)
        app.view.destroy()
        again = ui_factory(connection=demo.home / "members" / "demo.json", storage=Storage(config))
        p = again.voice.prefs
        assert (p.output_volume, p.input_volume, p.input_device, p.noise_suppression) == (
            20,
            150,
            "mic.monitor",
            False,
        )
        again.view.open_voice_menu("out")
        render(again, 3)
        assert dpg.get_value("oc_voice_out_volume") == 20  # the slider shows it after the restart
        shooter.shot(again, "output_menu_after_restart")
    finally:
        speaker.stop()
        tone.terminate()


def test_vanished_input_device_falls_back(
    demo: DemoStack,
    pulse: Pulse,  # noqa: F811 - the imported fixture
    ui_factory: Any,
    tmp_path: Path,
    shooter: Shooter,
) -> None:
    config = tmp_path / "config"
    media_prefs.save(config, MediaPrefs(input_device="gone.monitor"))
    app = open_app(ui_factory, demo, config)
    tone = pulse.play_tone(660)
    try:
        app.view.open_voice_settings()  # the mic test runs while the settings are open
        pump(app, lambda: dpg.is_item_shown("oc_settings"), timeout=5, what="settings")
        click(app, "oc_set_vtest")
        pump(
            app,
            lambda: any(
                t.text == "Selected input device was unavailable; using system default microphone."
                for t in app.model.toasts
            ),
            timeout=10,
            what="the fallback notice",
        )
        pump(app, lambda: app.voice.engine.level > 0.2, timeout=15, what="audio still flowing")
        shooter.shot(app, "fallback_notice")
        app.workspace.close_overlays()
    finally:
        tone.terminate()


def test_voice_kicked_shows_the_error(
    demo: DemoStack,
    pulse: Pulse,  # noqa: F811 - the imported fixture
    ui_factory: Any,
    tmp_path: Path,
    shooter: Shooter,
) -> None:
    app = open_app(ui_factory, demo, tmp_path / "config")
    app.workspace.select_server(SERVER)
    render(app, 3)
    ch = voice_channel(app, "Party Chat")
    app.voice.click(SERVER, ch)  # through the controller this time
    pump(app, lambda: app.voice.state.state == "active", timeout=60, what="Voice Connected")
    uid = app.model.servers[SERVER].record.user_uid
    base = demo.endpoints["devservers"]["harbor"]
    r = httpx.post(f"{base}/_admin/rtc/inject", json={"type": "rtc.kicked", "user_uid": uid}, timeout=10)
    assert r.json()["participants"] >= 1
    kicked = "Removed from voice channel by moderation action."
    pump(app, lambda: text_of("oc_voice_title") == "Voice Error", timeout=20, what="Voice Error")
    assert text_of("oc_voice_error") == kicked
    assert any(t.text == kicked and t.error for t in app.model.toasts)
    assert text_of("oc_stage_toast") == kicked  # the toast line shows on the Call Stage too
    assert not app.voice.engine.in_call  # microphone and speaker stopped
    shooter.shot(app, "kicked")
    app.voice.hang_up()
    pump(app, lambda: not dpg.is_item_shown("oc_voice_card"), timeout=5, what="the card gone")
