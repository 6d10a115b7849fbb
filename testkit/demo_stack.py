"""``openchat up --demo`` in a temp home, as a subprocess (the tests' and the UI bench's real stack)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil

from services.cli.home import SECRET_VARS

READY = "stack is up"


def demo_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCHAT_")}
    for var in SECRET_VARS:
        env.pop(var, None)
    env["OPENCHAT_HOME"] = str(home)
    env["OPENCHAT_SECRET_KEY_FILE"] = str(home.parent / "keys" / "secret.key")
    env["PYTHONUNBUFFERED"] = "1"
    env["OPENCHAT_PREVIEW_ALLOW_PRIVATE"] = "true"  # the test's page server is on loopback
    return env


class DemoStack:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--demo"],
            env=demo_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._cond = threading.Condition()
        self._needles: set[str] = set()
        self._seen: set[str] = set()
        self._eof = False
        threading.Thread(target=self._drain, name="demo-stack-output", daemon=True).start()

    def _drain(self) -> None:
        """Read the stack's output for its whole life: an unread pipe would fill up and block
        the supervisor (and with it every service writing logs)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                del self.lines[:-2000]
                self._seen.update(n for n in self._needles if n in line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, *needles: str, timeout: float = 120) -> None:
        with self._cond:
            self._needles.update(needles)
            self._seen.update(n for n in needles if any(n in line for line in self.lines))
            ok = self._cond.wait_for(lambda: set(needles) <= self._seen or self._eof, timeout)
            missing = set(needles) - self._seen
        assert ok and not missing, f"no {missing} (exit {self.proc.poll()}):\n" + "".join(self.lines[-40:])

    @property
    def endpoints(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.home / "run" / "endpoints.json").read_text())
        return doc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for proc in psutil.process_iter(["pid", "environ"]):
            try:
                if (proc.info["environ"] or {}).get("OPENCHAT_HOME") == str(
                    self.home
                ) and proc.pid != os.getpid():
                    proc.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
