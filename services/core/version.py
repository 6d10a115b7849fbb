"""Versions: this installation's, a semantic-version comparison, and the ``version`` commands.

* ``package_version()`` — the installed ``openchat-stack`` distribution (``importlib.metadata``),
  else the ``version`` line of ``pyproject.toml`` beside the sources (a plain checkout);
* ``parse_version`` / ``compare_versions`` / ``is_newer`` — pure, for the desktop's update check
  (features 13.1: a leading ``v`` and a pre-release or build suffix are ignored, missing parts
  count as 0, so ``v1.2`` == ``1.2.0`` == ``1.2.0-rc.1``);
* ``serve_versions(bus, service)`` — every service answers ``oc.<member>.cmd.<service>.version``
  (``ServiceVersion``) and, in the shared queue group ``stack``, ``oc.<member>.cmd.stack.version``
  (``StackVersion``): whichever service is up tells a desktop the home stack's version and where
  to get it (``OPENCHAT_RELEASE_URL``), without any download (P4).
"""

from __future__ import annotations

import os
import platform
import re
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path

from services.core.bus import Bus
from services.core.contracts.bus import Empty
from services.core.contracts.version import STACK, VERB, ServiceVersion, StackVersion

DISTRIBUTION = "openchat-stack"
# major[.minor[.patch]], then a SemVer pre-release/build suffix or a PEP 440 one (rc1, .dev0…)
_VERSION_RE = re.compile(
    r"^\s*[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?"
    r"(?:[-+][0-9A-Za-z.+-]*|(?:a|b|rc|\.?dev|\.?post)\d*(?:\+[0-9A-Za-z.]+)?)?\s*$"
)


class VersionError(ValueError):
    pass


@cache
def package_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        for line in pyproject.read_text(encoding="utf-8").splitlines():
            m = re.match(r'^version\s*=\s*"([^"]+)"', line)
            if m:
                return m.group(1)
    except OSError:
        pass
    return "0.0.0+unknown"


def parse_version(text: str) -> tuple[int, int, int]:
    """``(major, minor, patch)``; ``VersionError`` for anything that is not a version."""
    m = _VERSION_RE.match(text or "")
    if m is None or len(text) > 64:
        raise VersionError(f"not a version: {text[:64]!r}")
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as, or newer than ``b``."""
    pa, pb = parse_version(a), parse_version(b)
    return (pa > pb) - (pa < pb)


def is_newer(candidate: str, current: str) -> bool:
    """Whether ``candidate`` is a newer version than ``current`` (unparsable: never newer)."""
    try:
        return compare_versions(candidate, current) > 0
    except VersionError:
        return False


def release_url() -> str | None:
    """Where members get a new version (``OPENCHAT_RELEASE_URL``; unset: the stack names none)."""
    return os.environ.get("OPENCHAT_RELEASE_URL", "").strip()[:512] or None


def service_version(service: str, started_at: datetime) -> ServiceVersion:
    return ServiceVersion(
        service=service,
        version=package_version(),
        python=platform.python_version(),
        started_at=started_at,
    )


def serve_versions(bus: Bus, service: str) -> None:
    """Register the ``version`` commands of ``service`` (served by ``bus.serve_commands``)."""
    started_at = datetime.now(UTC)

    async def own(member: str, args: Empty) -> ServiceVersion:
        return service_version(service, started_at)

    async def stack(member: str, args: Empty) -> StackVersion:
        return StackVersion(version=package_version(), release_url=release_url(), answered_by=service)

    bus.command(service, VERB, Empty)(own)
    bus.command(STACK, VERB, Empty, queue=STACK)(stack)
