"""``openchat up`` end to end: the real CLI in a subprocess, a private OPENCHAT_HOME."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from testkit.stack_env import processes_of, stack_env

READY_LINE = "stack is up"
# the other stack tests import these from here
_env = stack_env
_processes_of = processes_of


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )


class Stack:
    def __init__(self, home: Path, *args: str) -> None:
        self.home = home
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", *args],
            env=_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_for_line(self, needle: str, timeout: float = 90) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(
                    f"openchat up exited ({self.proc.poll()}) before {needle!r}:\n" + "".join(self.lines)
                )
            self.lines.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no {needle!r} within {timeout} s:\n" + "".join(self.lines))

    def endpoints(self) -> dict[str, object]:
        doc: dict[str, object] = json.loads((self.home / "run" / "endpoints.json").read_text())
        return doc

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        self.lines.append(out)
        return self.proc.returncode


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "home")
    try:
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        for leftover in _processes_of(s.home):
            leftover.kill()


def test_up_status_member_and_clean_stop(stack: Stack) -> None:
    stack.wait_for_line(READY_LINE)
    status = _cli(stack.home, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    for component in ("nats", "redis", "connector", "state", "notification", "media"):
        assert any(line.startswith(component) and " up " in line for line in status.stdout.splitlines()), (
            status.stdout
        )

    added = _cli(stack.home, "member", "add", "alice")
    assert added.returncode == 0, added.stderr
    assert "config reloaded" in added.stdout
    conn = json.loads((stack.home / "members" / "alice.json").read_text())
    assert conn["member"] == "alice" and conn["nats_url"] == stack.endpoints()["nats_url"]
    assert (stack.home / "members" / "alice.json").stat().st_mode & 0o077 == 0

    managed = stack.endpoints()["managed"]
    assert isinstance(managed, dict) and {
        "nats",
        "redis",
        "connector",
        "state",
        "notification",
        "media",
    } <= set(managed)
    assert stack.interrupt() == 0
    for name, pid in managed.items():
        assert not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE, (
            name
        )
    assert _processes_of(stack.home) == []
    assert not (stack.home / "run" / "endpoints.json").exists()
    down = _cli(stack.home, "status")
    assert down.returncode == 1
    assert "not running" in down.stdout


def test_supervisor_restarts_a_dead_service(stack: Stack) -> None:
    stack.wait_for_line(READY_LINE)
    managed = stack.endpoints()["managed"]
    assert isinstance(managed, dict)
    os.kill(int(managed["state"]), signal.SIGKILL)
    stack.wait_for_line("[supervisor] state exited")
    stack.wait_for_line("[state]")  # output of the new process
    deadline = time.monotonic() + 60
    while _cli(stack.home, "status").returncode != 0:  # polling a CLI: there is no event to await
        assert time.monotonic() < deadline, "state did not come back"
        time.sleep(0.5)
    assert stack.interrupt() == 0
    assert _processes_of(stack.home) == []


def test_children_die_with_a_killed_supervisor(stack: Stack) -> None:
    stack.wait_for_line(READY_LINE)
    managed = stack.endpoints()["managed"]
    assert isinstance(managed, dict)
    procs = [psutil.Process(int(pid)) for pid in managed.values()]
    stack.proc.kill()  # no chance to clean up: the kernel's parent-death signal must do it
    stack.proc.wait()
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert alive == []
