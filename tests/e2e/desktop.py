"""The desktop around the app under test: a private D-Bus session bus, a real notification
daemon (``dunst``, Debian) on the test's Xvfb, a second X client that takes the focus, and a
screenshot of the whole X screen (the daemon's popup is not in Dear PyGui's frame buffer).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

DUNST_WIDTH = 420
DUNST_OFFSET = (10, 10)  # top-right corner of the screen


BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@contextmanager
def session_bus() -> Iterator[str]:
    """A private session bus (``dbus-daemon``) WITHOUT service activation: the installed
    ``dunst`` package ships an activation file, which would start a daemon behind the test's
    back; yields its address."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (Debian package dbus)")
    import tempfile

    conf = Path(tempfile.mkdtemp(prefix="oc-dbus-")) / "session.conf"
    conf.write_text(BUS_CONFIG)
    proc = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--nopidfile", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address, "dbus-daemon printed no address"
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def name_has_owner(address: str, name: str) -> bool:
    out = subprocess.run(
        [
            "dbus-send",
            f"--bus={address}",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NameHasOwner",
            f"string:{name}",
        ],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    return "boolean true" in out.stdout


class Dunst:
    """``dunst`` (a real org.freedesktop.Notifications daemon) on the private bus and Xvfb; a
    rule script records every notification it shows into ``log`` (one JSON line each)."""

    def __init__(self, address: str, display: str, work: Path) -> None:
        if shutil.which("dunst") is None:
            pytest.skip("dunst is not installed (Debian package dunst)")
        self.address = address
        self.log = work / "shown.jsonl"
        script = work / "observe.py"
        script.write_text(
            f"#!{sys.executable}\n"
            + textwrap.dedent(
                f"""
                import json, os
                keys = ("ID", "APP_NAME", "SUMMARY", "BODY", "URGENCY", "TIMEOUT")
                with open({str(self.log)!r}, "a") as f:
                    f.write(json.dumps({{k.lower(): os.environ.get("DUNST_" + k, "") for k in keys}}) + "\\n")
                """
            )
        )
        script.chmod(0o755)
        conf = work / "dunstrc"
        conf.write_text(
            textwrap.dedent(
                f"""
                [global]
                    origin = top-right
                    offset = {DUNST_OFFSET[0]}x{DUNST_OFFSET[1]}
                    width = {DUNST_WIDTH}
                    notification_limit = 0
                    font = DejaVu Sans 11
                    format = "<b>%s</b>\\n%b"
                    mouse_left_click = do_action, close_current
                    show_indicators = no
                [urgency_normal]
                    timeout = 0
                [observe]
                    appname = OpenChat
                    script = {script}
                """
            )
        )
        env = dict(os.environ, DISPLAY=display, DBUS_SESSION_BUS_ADDRESS=address)
        self.proc = subprocess.Popen(
            ["dunst", "-config", str(conf)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.env = env
        deadline = time.monotonic() + 15
        while not name_has_owner(address, "org.freedesktop.Notifications"):
            assert self.proc.poll() is None, "dunst exited"
            assert time.monotonic() < deadline, "dunst did not take org.freedesktop.Notifications"
            time.sleep(0.05)

    def shown(self) -> list[dict[str, str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def count(self, which: str = "displayed") -> int:
        out = subprocess.run(
            ["dunstctl", "count", which], env=self.env, capture_output=True, text=True, timeout=5, check=True
        )
        return int(out.stdout.strip())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


FOCUS_THIEF = """
import sys, time
from Xlib import X, display
d = display.Display()
s = d.screen()
w = s.root.create_window(40, 40, 300, 200, 0, s.root_depth, X.InputOutput, X.CopyFromParent,
                         background_pixel=s.white_pixel, event_mask=X.FocusChangeMask)
w.set_wm_name("another app")
w.map()
d.sync()
time.sleep(0.1)
w.set_input_focus(X.RevertToParent, X.CurrentTime)
d.sync()
print(w.id, flush=True)
sys.stdin.read()
"""


@contextmanager
def other_x_client(display: str) -> Iterator[int]:
    """A second X client (its own process and connection) that maps a window and takes the
    input focus; yields that window's id; the client quits on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", FOCUS_THIEF],
        env=dict(os.environ, DISPLAY=display),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.isdigit(), "the second X client did not start"
        yield int(line)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def xdotool(*args: str) -> str:
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (Debian package xdotool)")
    out = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.strip()


def screen_shot(path: Path) -> Any:
    """The whole X screen (root window) as a PNG: shows other clients' windows too."""
    from PIL import Image
    from Xlib import X, display

    d = display.Display()
    try:
        root = d.screen().root
        geo = root.get_geometry()
        raw = root.get_image(0, 0, geo.width, geo.height, X.ZPixmap, 0xFFFFFFFF)
        img = Image.frombytes("RGB", (geo.width, geo.height), raw.data, "raw", "BGRX")
    finally:
        d.close()
    img.save(path)
    return img
