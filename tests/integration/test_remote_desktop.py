"""Issue 11 acceptance: a desktop on another machine, given only its connection file.

The real stack (``openchat up --demo``: NATS, Redis, every service, two devservers) is bound to
a non-loopback-looking address of its own — ``127.0.0.2``, a second loopback address, standing
in for the home server's LAN address — with ``OPENCHAT_PUBLIC_NATS_URL=tls://127.0.0.2:PORT``.
The desktop side is the desktop's own adapter (``ui.adapter.StackAdapter``, the code the window
uses) built from the connection file alone: no ``OPENCHAT_STATE_URL``, no HTTP. Through it an
upload, the uploaded image's bytes, another user's uploaded avatar and a link-preview image
arrive over the member's TLS connection. The NATS port speaks TLS only: a plain client and a
client trusting another CA are refused; the stack's own CLI keeps working on the home server;
a CLI pointed at a dead address says so within seconds; a revoked member sees why.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from services.cli.home import SECRET_VARS
from services.core.bus import Bus, ConnectOptions
from services.core.connection import classify
from services.core.contracts.chat import ChatMessage, MessagePreviews, SendArgs, UploadedImage
from services.core.contracts.events import TypedEvent
from services.core.members import ConnectionFile
from services.core.tls import ensure_certificates
from ui.adapter import ResultOp, SnapshotOp, StackAdapter, StackOp

PUBLIC_HOST = "127.0.0.2"
READY = "stack is up"


def _png(color: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _second_loopback_usable() -> bool:
    try:
        with socket.socket() as s:
            s.bind((PUBLIC_HOST, 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _second_loopback_usable(), reason="127.0.0.2 cannot be bound here")


def _env(home: Path, public_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCHAT_")}
    for var in SECRET_VARS:
        env.pop(var, None)
    env["OPENCHAT_HOME"] = str(home)
    env["OPENCHAT_SECRET_KEY_FILE"] = str(home.parent / "keys" / "secret.key")
    env["OPENCHAT_PUBLIC_NATS_URL"] = public_url
    env["OPENCHAT_PREVIEW_ALLOW_PRIVATE"] = "true"  # the test's page server is on loopback
    env["PYTHONUNBUFFERED"] = "1"
    return env


class RemoteStack:
    def __init__(
        self, home: Path, *up_args: str, public_host: str = PUBLIC_HOST, listen: str = PUBLIC_HOST
    ) -> None:
        self.home = home
        self.port = _free_port(listen)
        self.public_url = f"tls://{public_host}:{self.port}"
        self.env = _env(home, self.public_url)
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", *(up_args or ("--demo",))],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._cond = threading.Condition()
        self._eof = False
        threading.Thread(target=self._drain, name="remote-stack-output", daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                del self.lines[:-3000]
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, *needles: str, timeout: float = 150) -> None:
        def seen() -> bool:
            return all(any(n in line for line in self.lines) for n in needles)

        with self._cond:
            ok = self._cond.wait_for(lambda: seen() or self._eof, timeout)
            assert ok and seen(), f"no {needles} (exit {self.proc.poll()}):\n" + "".join(self.lines[-60:])

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

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


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteStack]:
    stack = RemoteStack(tmp_path_factory.mktemp("remote") / "home")
    try:
        stack.wait_for(READY, "demo joined srv_family")
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def page_server() -> Iterator[tuple[str, bytes]]:
    """A real HTTP server: one HTML page with an og:image, and that image."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    image = _png((20, 180, 90), (40, 20))
    holder: dict[str, str] = {}

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/og.png"):
                body, ctype = image, "image/png"
            else:
                body = (
                    "<html><head><title>fallback</title>"
                    '<meta property="og:title" content="Lake day">'
                    f'<meta property="og:image" content="{holder["base"]}/og.png">'
                    "</head><body>hi</body></html>"
                ).encode()
                ctype = "text/html; charset=utf-8"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    holder["base"] = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{holder['base']}/lake", image
    finally:
        server.shutdown()


class Desktop:
    """The desktop's adapter without the window: ops are drained here like the render loop."""

    def __init__(self, cf: ConnectionFile) -> None:
        self.adapter = StackAdapter(cf)
        self.snapshot = False
        self.stack_ops: list[StackOp] = []
        self.events: list[TypedEvent] = []

    def __enter__(self) -> Desktop:
        self.adapter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.adapter.stop()

    def pump(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for op in self.adapter.drain():
                if isinstance(op, SnapshotOp):
                    self.snapshot = True
                elif isinstance(op, StackOp):
                    self.stack_ops.append(op)
                elif isinstance(op, ResultOp):
                    op.callback(op.value, op.error)
                else:
                    self.events.append(op.event)
            if cond():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; stack ops {self.stack_ops[-3:]}")

    def ask(self, work: Any, what: str, timeout: float = 30) -> Any:
        box: dict[str, Any] = {}
        self.adapter.submit(work, lambda v, e: box.update(value=v, error=e))
        self.pump(lambda: "value" in box, timeout, what)
        if box["error"] is not None:
            raise box["error"]
        return box["value"]

    def ask_until(self, work: Any, what: str, timeout: float = 30) -> Any:
        """Retry ``work`` until it succeeds (the stack materializes asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ask(work, what)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _demo_file(remote: RemoteStack) -> ConnectionFile:
    return ConnectionFile.read(remote.home / "members" / "demo.json")


def test_connection_file_is_all_a_desktop_needs(remote: RemoteStack) -> None:
    doc = json.loads((remote.home / "members" / "demo.json").read_text())
    assert doc["nats_url"] == remote.public_url
    assert doc["ca_pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert "state_url" not in doc and "OPENCHAT_STATE_URL" not in os.environ
    # the stack listens where desktops are told to connect, and only there
    with socket.create_connection((PUBLIC_HOST, remote.port), timeout=2):
        pass
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", remote.port), timeout=2):
        pass
    # the stack's own processes dial the listener's local address (not a name from the URL)
    assert remote.endpoints["nats_url"] == f"tls://{PUBLIC_HOST}:{remote.port}"


def test_images_avatars_upload_and_preview_over_the_members_connection(
    remote: RemoteStack, page_server: tuple[str, bytes]
) -> None:
    page_url, og_image = page_server
    family = remote.endpoints["devservers"]["family"]
    with Desktop(_demo_file(remote)) as desk:
        desk.pump(lambda: desk.snapshot and desk.adapter.online, 60, "the snapshot over TLS")

        # an upload: an image sent from the desktop, then its bytes back as the window fetches them
        png = _png((88, 101, 242))
        args = SendArgs(
            server_id="srv_family",
            channel_id="ch_general",
            body="from another computer",
            images=[
                UploadedImage(
                    file_name="blue.png", content_type="image/png", data_b64=base64.b64encode(png).decode()
                )
            ],
        )
        sent = desk.ask(lambda c: c.send(args), "the upload")
        msg: ChatMessage = sent.message
        assert len(msg.attachments) == 1
        got = desk.ask_until(lambda c: c.attachment_bytes(msg, msg.attachments[0]), "the attachment bytes")
        assert got == png

        # another user's uploaded avatar
        who = {"X-OpenChat-User-UID": "uid_avatar11", "X-OpenChat-Device-ID": "dev_avatar11"}
        avatar = _png((250, 200, 20), (64, 64))
        up = httpx.post(
            f"{family}/v1/profile/avatar",
            headers=who,
            files={"file": ("a.png", avatar, "image/png")},
            timeout=10,
        )
        assert up.status_code == 201, up.text
        put = httpx.put(
            f"{family}/v1/profile/me",
            headers=who,
            json={
                "display_name": "Ava",
                "avatar_mode": "uploaded",
                "avatar_asset_id": up.json()["avatar_asset_id"],
            },
            timeout=10,
        )
        assert put.status_code == 200, put.text
        httpx.post(
            f"{family}/_admin/messages",
            json={"channel_id": "ch_general", "user_uid": "uid_avatar11", "body": "new avatar"},
            timeout=10,
        ).raise_for_status()
        got = desk.ask_until(lambda c: c.avatar_bytes("srv_family", "uid_avatar11"), "the avatar", timeout=40)
        assert got == avatar

        # a link-preview image: the stack fetched the page; the desktop gets the image bytes
        r = httpx.post(
            f"{family}/_admin/messages",
            json={"channel_id": "ch_general", "user_uid": "uid_mum", "body": f"see {page_url}"},
            timeout=10,
        )
        r.raise_for_status()
        mid = r.json()["message"]["id"]

        def previewed() -> bool:
            return any(
                isinstance(e.payload, MessagePreviews) and e.payload.message_id == mid and e.payload.previews
                for e in desk.events
            )

        desk.pump(previewed, 40, "the link preview event")
        ev = next(
            e.payload
            for e in desk.events
            if isinstance(e.payload, MessagePreviews) and e.payload.message_id == mid
        )
        assert (ev.previews[0].image_url or "").endswith("/og.png")
        pmsg = ChatMessage(
            id=mid,
            server_id="srv_family",
            channel_id="ch_general",
            author_uid="uid_mum",
            body="",
            created_at=msg.created_at,
        )
        assert desk.ask(lambda c: c.preview_image_bytes(pmsg, 0), "the preview image") == og_image

        # a big image: larger than one bus message can carry (4 MiB), so it is staged on the
        # stack in chunks (connector.upload) and sent by reference, then streams back in chunks
        big = _png((1, 2, 3), (1200, 900)) + os.urandom(5 * 1024 * 1024)  # trailing bytes: still a PNG
        args = SendArgs(
            server_id="srv_family",
            channel_id="ch_general",
            images=[
                UploadedImage(
                    file_name="big.png", content_type="image/png", data_b64=base64.b64encode(big).decode()
                )
            ],
        )
        big_msg: ChatMessage = desk.ask(lambda c: c.send(args), "the big upload", timeout=60).message
        assert big_msg.attachments[0].bytes == len(big)
        got = desk.ask_until(
            lambda c: c.attachment_bytes(big_msg, big_msg.attachments[0]), "the big attachment"
        )
        assert got == big
        staged = remote.home / "cache" / "uploads" / "demo"
        assert staged.is_dir() and list(staged.glob("*.part")) == []  # removed after the send


def test_nats_port_is_tls_only(remote: RemoteStack, tmp_path: Path) -> None:
    cf = _demo_file(remote)

    async def attempt(opts: ConnectOptions) -> BaseException | None:
        errors: list[BaseException] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        opts.extra.update({"error_cb": on_error, "connect_timeout": 2})
        try:
            bus = await asyncio.wait_for(Bus.connect(opts, first_attempts=1), 5)
        except Exception as exc:
            return errors[-1] if errors else exc
        await bus.close()
        return None

    # the member's own settings work
    assert asyncio.run(attempt(cf.bus_options("t-ok"))) is None
    # a plain client (valid credentials, no TLS) is refused
    plain = cf.bus_options("t-plain", url=f"nats://{PUBLIC_HOST}:{remote.port}")
    plain = ConnectOptions(**{**plain.__dict__, "ca_pem": None, "extra": {}})
    assert asyncio.run(attempt(plain)) is not None
    # a client trusting another CA is refused: the certificate does not match
    other, _ = ensure_certificates(tmp_path / "other-ca", [PUBLIC_HOST])
    foreign = ConnectOptions(**{**cf.bus_options("t-ca").__dict__, "ca_pem": other.ca_pem(), "extra": {}})
    err = asyncio.run(attempt(foreign))
    assert err is not None and classify(err) == "certificate", repr(err)
    # the raw port: the server never says anything in clear (no plaintext INFO; handshake first)
    with socket.create_connection((PUBLIC_HOST, remote.port), timeout=5) as s:
        s.settimeout(1.5)
        try:
            first = s.recv(64)
        except TimeoutError:
            first = b""
        assert not first.startswith(b"INFO"), first
        s.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        s.settimeout(5)
        try:
            answer = s.recv(64)
        except (TimeoutError, ConnectionResetError):
            answer = b""
        assert b"PONG" not in answer and not answer.startswith(b"INFO")


def test_cli_on_the_home_server_and_fast_failure(remote: RemoteStack, tmp_path: Path) -> None:
    # the local CLI reloads NATS through the local TLS URL and prints the handover
    added = remote.cli("member", "add", "bob")
    assert added.returncode == 0, added.stderr
    assert "config reloaded" in added.stdout
    assert "openchat ui --connection bob.json" in added.stdout
    assert "openchat ui --member bob" in added.stdout
    assert remote.public_url in added.stdout
    listed = remote.cli("servers", "--member", "demo")
    assert listed.returncode == 0 and "srv_family" in listed.stdout, listed.stdout + listed.stderr
    # a CLI that cannot reach the stack says so within seconds
    dead = json.loads((remote.home / "members" / "demo.json").read_text())
    dead["nats_url"] = f"tls://{PUBLIC_HOST}:{_free_port(PUBLIC_HOST)}"
    (tmp_path / "dead.json").write_text(json.dumps(dead))
    t0 = time.monotonic()
    failed = remote.cli("servers", "--connection", str(tmp_path / "dead.json"), timeout=30)
    took = time.monotonic() - t0
    assert failed.returncode != 0
    assert "cannot reach the home stack" in failed.stderr and "cannot be reached" in failed.stderr
    assert took < 15, took


def test_revoked_member_sees_why(remote: RemoteStack) -> None:
    added = remote.cli("member", "add", "carol")
    assert added.returncode == 0, added.stderr
    cf = ConnectionFile.read(remote.home / "members" / "carol.json")
    with Desktop(cf) as desk:
        desk.pump(lambda: desk.snapshot and desk.adapter.online, 60, "carol online")
        removed = remote.cli("member", "remove", "carol")
        assert removed.returncode == 0, removed.stderr
        desk.pump(
            lambda: any(not op.online and "revoked" in op.detail for op in desk.stack_ops),
            30,
            "the revoked banner",
        )


def test_banner_reasons_and_ui_member(remote: RemoteStack, tmp_path: Path) -> None:
    """The desktop's banner says why: another CA (certificate does not match), nothing there."""
    cf = _demo_file(remote)
    other, _ = ensure_certificates(tmp_path / "other-ca", [PUBLIC_HOST])
    with Desktop(cf.model_copy(update={"ca_pem": other.ca_pem()})) as desk:
        desk.pump(
            lambda: any("certificate does not match" in op.detail for op in desk.stack_ops),
            20,
            "certificate banner",
        )
        assert not desk.adapter.online
    dead = cf.model_copy(update={"nats_url": f"tls://{PUBLIC_HOST}:{_free_port(PUBLIC_HOST)}"})
    with Desktop(dead) as desk:
        desk.pump(
            lambda: any("cannot be reached" in op.detail for op in desk.stack_ops), 20, "unreachable banner"
        )

    # `openchat ui --member NAME` opens that member's file of this home
    env_no_display = {k: v for k, v in remote.env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    ghost = subprocess.run(
        [sys.executable, "-m", "services.cli", "ui", "--member", "ghost"],
        env=env_no_display, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ghost.returncode != 0 and "no connection file for ghost" in ghost.stderr
    demo = subprocess.run(
        [sys.executable, "-m", "services.cli", "ui", "--member", "demo"],
        env=env_no_display, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert demo.returncode != 0 and "needs a display" in demo.stderr  # got past the member lookup


def test_local_cli_works_whatever_the_public_url(tmp_path: Path) -> None:
    """The public URL names a host this machine cannot even resolve; ``openchat up --listen``
    binds an address of its own, and the stack's processes and the local CLI dial that."""
    stack = RemoteStack(
        tmp_path / "home", "--listen", "127.0.0.3", public_host="homeserver.invalid", listen="127.0.0.3"
    )
    try:
        stack.wait_for(READY, timeout=120)
        assert stack.endpoints["nats_url"] == f"tls://127.0.0.3:{stack.port}"
        t0 = time.monotonic()
        added = stack.cli("member", "add", "dora")
        assert added.returncode == 0 and "config reloaded" in added.stdout, added.stdout + added.stderr
        doc = json.loads((stack.home / "members" / "dora.json").read_text())
        assert doc["nats_url"] == f"tls://homeserver.invalid:{stack.port}" and doc["ca_pem"]
        listed = stack.cli("servers", "--member", "dora")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert time.monotonic() - t0 < 30  # nothing hung on the public name
        # the certificate covers the public name (for desktops) and the listen address (for us)
        from cryptography import x509

        from services.core.tls import cert_hosts

        cert = x509.load_pem_x509_certificate((stack.home / "tls" / "server.pem").read_bytes())
        assert {"homeserver.invalid", "127.0.0.3", "127.0.0.1"} <= cert_hosts(cert)
    finally:
        stack.stop()
