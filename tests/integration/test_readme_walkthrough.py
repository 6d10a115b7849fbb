"""The README's CLI walk-through, run line by line against ``openchat up --demo``."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_openchat_up import READY_LINE, Stack, _env, _processes_of

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough_lines() -> list[str]:
    text = README.read_text()
    block = re.search(r"<!-- walkthrough.*?-->\s*```sh\n(.*?)```", text, re.S)
    assert block, "README has no walk-through block"
    lines = []
    for raw in block.group(1).splitlines():
        line = raw.strip()
        if line.startswith("openchat "):
            lines.append(line)
    return lines


@pytest.fixture
def demo_stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "home", "--demo")
    try:
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGINT)
            s.proc.wait(60)
        for leftover in _processes_of(s.home):
            leftover.kill()


def test_readme_walkthrough_works_as_written(demo_stack: Stack) -> None:
    demo_stack.wait_for_line("[demo] demo joined srv_harbor")
    demo_stack.wait_for_line(READY_LINE)
    devservers = demo_stack.endpoints()["devservers"]
    assert isinstance(devservers, dict)
    outputs: dict[str, str] = {}
    for line in walkthrough_lines():
        # The README names the demo's preferred port; use the one this run got.
        line = line.replace("http://127.0.0.1:18082", str(devservers["harbor"]))
        argv = shlex.split(line, comments=True)
        if argv[1] == "tail":
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", *argv[1:]],
                env=_env(demo_stack.home),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert proc.stderr is not None
            assert "tailing the events of demo" in proc.stderr.readline()
            # Something happens while tail runs: it must print it as one JSON line.
            send = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "services.cli",
                    "send",
                    "srv_harbor",
                    "ch_general",
                    "tail me",
                    "--member",
                    "demo",
                ],
                env=_env(demo_stack.home),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert send.returncode == 0, send.stderr
            assert proc.stdout is not None
            seen = ""
            while '"message.created"' not in seen:
                seen = proc.stdout.readline()
                assert seen, "tail ended without printing the event"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
            outputs["tail"] = seen
            continue
        for _attempt in range(20):
            done = subprocess.run(
                [sys.executable, "-m", "services.cli", *argv[1:]],
                env=_env(demo_stack.home),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
            # The view is eventually consistent (the state applies the stream within milliseconds;
            # a loaded CI machine may need longer): `history` right after `send` may run again.
            if argv[1] != "history" or "hello from the CLI" in done.stdout:
                break
        outputs[argv[1]] = done.stdout
    assert "srv_family" in outputs["servers"] and "srv_harbor" in outputs["servers"]
    assert outputs["servers"].count(" live ") == 2
    assert "ch_general" in outputs["channels"]
    assert (
        outputs["history"]
        .rstrip()
        .splitlines()[-1]
        .endswith(f"hello from the CLI  ({outputs['send'].split()[-1]})")
    )
    assert "srv_family" in outputs["unread"]
    assert "srv_harbor" in outputs["discover"]
    assert "disclosure:" in outputs["probe"]
    assert "tail me" in outputs["tail"]
