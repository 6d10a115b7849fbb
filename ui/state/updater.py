"""The desktop's update check (features 13.1-13.4, P4; ux.md 3.16). Pure: no Dear PyGui, no I/O.

* Schedule (13.1): the first check a random 30-60 s after start, then every 4 h plus a random
  0-2 h. Checks are disabled in development builds (a version with a ``.dev``/pre-release/local
  suffix, or ``OPENCHAT_DEV_BUILD=1``) unless ``OPENCHAT_UPDATER_ALLOW_DEV=1``; the banner of 13.3
  says so. A check already running absorbs another one ("Check again" while checking).
* The check asks the **home stack** (``stack.version``) and compares semantically
  (``services.core.version.is_newer``: leading ``v`` and suffixes ignored).
* Status model (13.2, Stack subset): ``idle | checking | available | error``. The taskbar button
  shows for ``available`` and ``error`` (tooltip "Update X is available" or the error); it is
  disabled while checking. Clicking it shows where to get the new version (the stack's
  ``release_url``) — nothing is downloaded or installed.
* The client information dialog (13.4) opens by itself once, after the first check that finds
  no update.
"""

from __future__ import annotations

import os
import platform
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.core.contracts.version import StackVersion
from services.core.version import is_newer

UpdateStatus = Literal["idle", "checking", "available", "error"]

DEV_BANNER = (
    "Automatic updates are disabled in development builds. Set OPENCHAT_UPDATER_ALLOW_DEV=1 to override."
)
NO_URL = "Ask whoever runs your home stack for the new version (it names no download page)."


@dataclass(frozen=True)
class UpdateSchedule:
    first_min_s: float = 30.0
    first_max_s: float = 60.0
    every_s: float = 4 * 3600.0
    jitter_s: float = 2 * 3600.0


def is_dev_build(version: str, env: dict[str, str] | None = None) -> bool:
    e = os.environ if env is None else env
    if e.get("OPENCHAT_DEV_BUILD", "") in ("1", "true", "yes"):
        return True
    return re.fullmatch(r"[vV]?\d+(?:\.\d+){0,2}", version.strip()) is None  # any suffix: not a release


class UpdateChecker:
    """The update status of one desktop; the controller runs the checks it asks for."""

    def __init__(
        self,
        current: str,
        *,
        clock: Callable[[], float],
        now: Callable[[], datetime],
        schedule: UpdateSchedule | None = None,
        rng: random.Random | None = None,
        enabled: bool | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        e = dict(os.environ) if env is None else env
        self.current = current
        self.clock = clock
        self.now = now
        self.schedule = schedule or UpdateSchedule()
        self.rng = rng or random.Random()
        self.dev_build = is_dev_build(current, e)
        allow_dev = e.get("OPENCHAT_UPDATER_ALLOW_DEV", "") in ("1", "true", "yes")
        self.enabled = (not self.dev_build or allow_dev) if enabled is None else enabled
        self.status: UpdateStatus = "idle"
        self.latest: str | None = None
        self.release_url: str | None = None
        self.error = ""
        self.last_checked: datetime | None = None
        self.in_flight = False
        self.checks = 0  # finished checks
        self.auto_info_done = False
        self._auto_info_due = False
        self.version = 0  # bumped by every change (the taskbar redraws)
        s = self.schedule
        self.next_at: float | None = (
            clock() + self.rng.uniform(s.first_min_s, s.first_max_s) if self.enabled else None
        )

    # -- schedule -----------------------------------------------------------------------------------
    def due(self) -> bool:
        return self.next_at is not None and not self.in_flight and self.clock() >= self.next_at

    def begin(self, manual: bool = False) -> bool:
        """Start a check (scheduled, or "Check again"); False when one is running already (the
        two are merged) or checks are disabled and this one is not manual."""
        if self.in_flight or (not self.enabled and not manual):
            return False
        self.in_flight = True
        self.status = "checking"
        self.version += 1
        return True

    def finished(self, answer: StackVersion | None, error: str | None) -> None:
        self.in_flight = False
        self.checks += 1
        self.last_checked = self.now()
        if self.enabled:
            s = self.schedule
            self.next_at = self.clock() + s.every_s + self.rng.uniform(0, s.jitter_s)
        if answer is None:
            self.status = "error"
            self.error = error or "The home stack did not answer the version check."
        else:
            self.error = ""
            self.release_url = answer.release_url
            if is_newer(answer.version, self.current):
                self.status = "available"
                self.latest = answer.version
            else:
                self.status = "idle"
                self.latest = None
                if not self.auto_info_done:
                    self._auto_info_due = True  # 13.4: opens by itself once
        self.version += 1

    def take_auto_info(self) -> bool:
        if self._auto_info_due and not self.auto_info_done:
            self._auto_info_due = False
            self.auto_info_done = True
            return True
        return False

    # -- what the taskbar and the dialogs show ------------------------------------------------------
    @property
    def button_visible(self) -> bool:
        return self.status in ("available", "error")

    @property
    def button_enabled(self) -> bool:
        return self.status != "checking"

    @property
    def button_label(self) -> str:
        if self.status == "available" and self.latest:
            return f"Update {self.latest}"
        return "Update failed"

    def tooltip(self) -> str:
        if self.status == "available" and self.latest:
            return f"Update {self.latest} is available"
        if self.status == "error":
            return self.error
        if self.status == "checking":
            return "Checking for updates..."
        return ""

    def where(self) -> str:
        return self.release_url or NO_URL

    def notice(self) -> tuple[str, str]:
        """(title, where to get it) of the "Update X is available" notice (P4)."""
        if self.status == "available" and self.latest:
            return (
                f"Update {self.latest} is available",
                f"This desktop is {self.current}; your home stack runs {self.latest}. "
                f"Get the new version from: {self.where()}",
            )
        if self.status == "error":
            return ("Update failed", self.error)
        return ("No update", "This desktop is up to date with your home stack.")

    @property
    def banner(self) -> str | None:
        return DEV_BANNER if not self.enabled else None

    def status_text(self) -> str:
        return {
            "idle": "Up to date" if self.checks else "Not checked yet",
            "checking": "Checking...",
            "available": "Update available",
            "error": f"Error: {self.error}",
        }[self.status]

    def info_rows(self) -> list[tuple[str, str]]:
        """13.4: the client information dialog's rows."""
        checked = (
            self.last_checked.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            if self.last_checked
            else "Not checked yet"
        )
        return [
            ("Current version", self.current),
            ("Runtime", f"{platform.system().lower()} / {platform.machine().lower()}"),
            ("Update status", self.status_text()),
            ("Latest available", self.latest or "None detected"),
            ("Last checked", checked),
        ]
