"""Issue 11, the window itself (Xvfb): the desktop app given only a connection file of a stack
listening beyond loopback with TLS (``tls://127.0.0.2``; no ``OPENCHAT_STATE_URL``) draws an
image attachment and a link preview's image, both brought over the member's bus connection."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Shooter, render
from tests.e2e.test_app_bus import pump
from tests.e2e.test_real_stack import _items_under
from tests.integration.test_remote_desktop import READY, RemoteStack, _png, _second_loopback_usable
from tests.integration.test_remote_desktop import page_server as page_server  # fixture

pytestmark = pytest.mark.skipif(not _second_loopback_usable(), reason="127.0.0.2 cannot be bound here")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteStack]:
    stack = RemoteStack(tmp_path_factory.mktemp("remote-ui") / "home")
    try:
        stack.wait_for(READY, "demo joined srv_family")
        yield stack
    finally:
        stack.stop()


def test_window_shows_images_and_preview_images_over_tls(
    remote: RemoteStack, page_server: tuple[str, bytes], ui_factory: Any, tmp_path: Path, shooter: Shooter
) -> None:
    assert "OPENCHAT_STATE_URL" not in os.environ
    app = ui_factory(connection=remote.home / "members" / "demo.json")
    app.start()
    assert app.cf is not None and app.cf.nats_url.startswith("tls://127.0.0.2:")
    pump(
        app, lambda: app.model.stack_online and "srv_family" in app.model.servers, timeout=60, what="snapshot"
    )
    pump(app, lambda: app.account.settled, timeout=20, what="the identity and profile read")
    if app.account.step is not None:
        app.account.skip()
        render(app, 3)
    for _ in range(3):
        if app.view.overlay_open():
            app.workspace.answer_consent(False)
        render(app, 3)
    app.workspace.select_server("srv_family")
    app.workspace.select_channel("ch_general")
    render(app, 3)

    pic = tmp_path / "pic.png"
    pic.write_bytes(_png((200, 60, 60), (96, 64)))
    assert app.workspace.attach_files([pic]) == ""
    app.workspace.send()
    pump(app, lambda: not app.composer.sending, timeout=30, what="image send")
    assert not app.composer.error, app.composer.error
    pump(app, lambda: any(m.attachments for m in app.model.messages()), timeout=15, what="image message")
    msg = [m for m in app.model.messages() if m.attachments][-1]
    key = app.images.key(msg, msg.attachments[0])
    pump(app, lambda: key in app.images.textures or key in app.images.failed, timeout=20, what="image bytes")
    assert key in app.images.textures, app.images.errors.get(key)

    page_url, _ = page_server
    family = remote.endpoints["devservers"]["family"]
    r = httpx.post(
        f"{family}/_admin/messages",
        json={"channel_id": "ch_general", "user_uid": "uid_mum", "body": f"look {page_url}"},
        timeout=10,
    )
    r.raise_for_status()
    mid = r.json()["message"]["id"]
    pkey = f"preview:srv_family:ch_general:{mid}:0"
    pump(
        app,
        lambda: pkey in app.images.textures or pkey in app.images.failed,
        timeout=40,
        what="preview image",
    )
    assert pkey in app.images.textures
    pump(app, lambda: mid in app.view.timeline.widgets, timeout=20, what="the previewed row")
    pump(
        app,
        lambda: any(t.endswith("mvImage") for t in _items_under(app.view.timeline.widgets[mid].tag)),
        timeout=20,
        what="the preview image drawn in the card",
    )
    shooter.shot(app, "remote_preview_image")
