"""The environment and the processes of a private ``openchat up`` home (tests and benchmarks that
start the real stack in a subprocess)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from services.cli.home import SECRET_VARS


def stack_env(home: Path) -> dict[str, str]:
    """This process's environment without any ``OPENCHAT_*`` setting (test ones aside) or secret,
    pointed at ``home`` and its key file."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("OPENCHAT_") or k.startswith("OPENCHAT_TEST")
    }
    env.pop("OPENCHAT_TEST_NATS_URL", None)
    env.pop("OPENCHAT_TEST_REDIS_URL", None)
    for var in SECRET_VARS:
        env.pop(var, None)
    env["OPENCHAT_HOME"] = str(home)
    env["OPENCHAT_SECRET_KEY_FILE"] = str(home.parent / "keys" / "secret.key")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def processes_of(home: Path) -> list[psutil.Process]:
    """Every live process started for this home (its path is in their command line or env)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            env = proc.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if proc.pid != os.getpid() and (str(home) in cmd or env.get("OPENCHAT_HOME") == str(home)):
            found.append(proc)
    return found
