"""Running devservers from tests, benchmarks and ``openchat up --demo``.

* ``running_devserver(cfg)`` / ``DevserverHandle`` — an in-process devserver on a free
  ``127.0.0.1`` port: uvicorn in a background thread with its own event loop, served by the
  devserver's WebSocket protocol.  Usable as a sync or async context manager.
* ``start_devserver_process(args)`` + ``wait_healthy(url, timeout)`` — a devserver in its own
  process (``python -m services.devserver …``), as ``openchat up --demo`` starts them.
* ``demo_devserver_args(...)`` — the argument lists of the two demo instances (a "Family" server
  and a "Harbor"-like one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from services.devserver.config import DevserverConfig
from services.devserver.transport import uvicorn_ws_settings

START_TIMEOUT_S = 15.0


def bind_free_socket(host: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket on a free port (handed to uvicorn, so no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class _ThreadServer(uvicorn.Server):
    """``uvicorn.Server`` that signals (thread-safely) once it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        self.ready.set()


@dataclass
class DevserverHandle:
    """An in-process devserver; ``start()``/``stop()`` or use it as a context manager."""

    cfg: DevserverConfig
    app: Any = None
    _server: _ThreadServer | None = None
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.cfg.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The server's event loop (to run code next to the app, e.g. ``call_soon_threadsafe``)."""
        return self._server.loop if self._server is not None else None

    def start(self) -> DevserverHandle:
        from services.devserver.app import create_app

        sock = bind_free_socket(self.cfg.host if self.cfg.host not in ("", "0.0.0.0") else "127.0.0.1")
        port = sock.getsockname()[1]
        base = self.cfg.public_base_url
        if base.startswith("http://localhost:8080") or not base:
            base = f"http://127.0.0.1:{port}"
        self.cfg = replace(self.cfg, port=port, host="127.0.0.1", public_base_url=base)
        self.app = create_app(self.cfg)
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            loop="asyncio",
            server_header=False,
            **uvicorn_ws_settings(),
        )
        server = _ThreadServer(config)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:
                failure.append(exc)
            finally:
                server.ready.set()

        self._server, self._sock = server, sock
        self._thread = threading.Thread(target=run, name=f"devserver-{port}", daemon=True)
        self._thread.start()
        if not server.ready.wait(START_TIMEOUT_S) or failure or not server.started:
            self.stop()
            raise RuntimeError(f"devserver did not start: {failure[0] if failure else 'timeout'}")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> DevserverHandle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> DevserverHandle:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


@contextlib.contextmanager
def running_devserver(cfg: DevserverConfig | None = None, **overrides: Any) -> Iterator[DevserverHandle]:
    """``with running_devserver(seed="family") as srv: …`` — an in-process devserver."""
    base = cfg or DevserverConfig()
    handle = DevserverHandle(replace(base, **overrides) if overrides else base)
    with handle:
        yield handle


@contextlib.asynccontextmanager
async def arunning_devserver(
    cfg: DevserverConfig | None = None, **overrides: Any
) -> AsyncIterator[DevserverHandle]:
    base = cfg or DevserverConfig()
    async with DevserverHandle(replace(base, **overrides) if overrides else base) as handle:
        yield handle


def start_devserver_process(
    args: Sequence[str], *, env: dict[str, str] | None = None, log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``python -m services.devserver *args`` (stdout/stderr to ``log_path`` or discarded)."""
    out: Any = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = log_path.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "services.devserver", *args],
            stdout=out,
            stderr=subprocess.STDOUT if log_path is not None else subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=str(Path(__file__).resolve().parents[2]),
        )
    finally:
        if log_path is not None:
            out.close()


def wait_healthy(
    url: str, timeout: float = START_TIMEOUT_S, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``GET {url}/healthz`` until it answers 200; raise ``TimeoutError`` (or when ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    last: str = "no answer"
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"devserver exited with {proc.returncode} before it was healthy")
            try:
                response = client.get(url.rstrip("/") + "/healthz")
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.05)
    raise TimeoutError(f"devserver at {url} not healthy after {timeout:.1f}s ({last})")


def demo_devserver_args(
    family_port: int, harbor_port: int, *, host: str = "127.0.0.1", state_dir: Path | None = None
) -> tuple[list[str], list[str]]:
    """Arguments of the two ``openchat up --demo`` devservers: "Family" and a Harbor-like server.

    Both reuse the channel id ``ch_general`` on purpose (per-server keying downstream).
    """

    def args(port: int, seed: str, name: str) -> list[str]:
        out = ["--host", host, "--port", str(port), "--seed", seed, "--name", name]
        out += ["--public-base-url", f"http://{host}:{port}"]
        if state_dir is not None:
            out += ["--state-file", str(state_dir / f"devserver-{seed}.json")]
        return out

    return args(family_port, "family", "Family"), args(harbor_port, "harbor", "Harbor Guild")


__all__ = [
    "DevserverHandle",
    "arunning_devserver",
    "bind_free_socket",
    "demo_devserver_args",
    "running_devserver",
    "start_devserver_process",
    "wait_healthy",
]
