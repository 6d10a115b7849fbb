"""Acceptance of issue #14 with real processes: two independent backends (devserver processes,
public seed) that both call their server ``srv_harbor``, the real stack (``openchat up --demo`` in
a private home), members joined from the CLI (``openchat join`` without flags, and with ``--as``)
and from the desktop (the controller on the real stack; the Add Server dialog under Xvfb).

For each way of joining: both servers listed and live; a message sent to each lands only on its
backend; a message posted on each appears only under its own local id; the two backends saw
different uids. Then the stack restarts (both back, live, with their history), and leaving one
leaves the other intact. The devservers keep running across the restart (they are the backends).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.core.identity import project_uid
from services.core.local_ids import host_slug
from testkit.demo_stack import READY, DemoStack, demo_env
from tests.e2e.conftest import Shooter, render, text_of
from tests.e2e.test_app_bus import pump
from tests.e2e.test_real_stack import _devserver
from tests.unit.test_ui_controller import Desktop
from ui.state import intents as it

HARBOR = "srv_harbor"
REFERENCE_ROOT = "identity_abc12345"  # features 1.4's vectors


class Stack:
    """The module's stack, restartable in the same home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.proc = self._start()

    def _start(self) -> DemoStack:
        stack = DemoStack(self.home)
        stack.wait_for(READY)
        return stack

    def restart(self) -> None:
        self.proc.stop()
        self.proc = self._start()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=demo_env(self.home),
            capture_output=True,
            text=True,
            timeout=90,
        )
        if check:
            assert out.returncode == 0, f"openchat {' '.join(args)}: {out.stdout}\n{out.stderr}"
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[str, str]]:
    """Two devserver processes, both ``srv_harbor`` (the public seed's capabilities' id)."""
    one: Generator[str, None, None] = _devserver("public", "--admin")  # type: ignore[assignment]
    two: Generator[str, None, None] = _devserver("public", "--admin")  # type: ignore[assignment]
    try:
        yield next(one), next(two)
    finally:
        for gen in (one, two):
            gen.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("same-id") / "home")
    try:
        yield s
    finally:
        s.proc.stop()


def wait(cond: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def backend_history(url: str) -> dict[str, str]:
    """body -> author uid of ``ch_general`` on a backend (what the backend itself holds)."""
    r = httpx.get(f"{url}/v1/channels/ch_general/messages", params={"limit": 500}, timeout=10)
    r.raise_for_status()
    return {m["body"]: m["author_uid"] for m in r.json()["messages"]}


def admin_post(url: str, body: str) -> None:
    r = httpx.post(
        f"{url}/_admin/messages",
        json={"channel_id": "ch_general", "user_uid": "uid_neighbour", "body": body},
        timeout=10,
    )
    r.raise_for_status()


def servers(stack: Stack, member: str) -> dict[str, dict[str, Any]]:
    return {r["local_id"]: r for r in stack.json("servers", "-m", member)}


def all_live(stack: Stack, member: str, locals_: set[str]) -> bool:
    rows = servers(stack, member)
    return set(rows) == locals_ and all(r["connection"] == "live" for r in rows.values())


def bodies(stack: Stack, member: str, local: str) -> set[str]:
    out = stack.cli("history", local, "ch_general", "--limit", "500", "-m", member, "--json", check=False)
    if out.returncode != 0:
        return set()
    return {m["body"] for m in json.loads(out.stdout)["messages"]}


def import_identity(stack: Stack, member: str, root: str, tmp: Path) -> None:
    """``openchat identity import`` of a backup of ``root`` (the reference client's identity)."""
    from services.core.identity_backup import encrypt_backup

    backup, secret = tmp / f"{member}-identity.json", tmp / f"{member}-passphrase"
    secret.write_text("correct horse battery staple\n")
    backup.write_bytes(encrypt_backup(root, "server_scoped", "correct horse battery staple", n=2**14))
    stack.cli("identity", "import", "-m", member, str(backup), "--passphrase-file", str(secret))


def check_apart(stack: Stack, member: str, pairs: list[tuple[str, str]], tag: str) -> dict[str, str]:
    """Both live; a message sent to each lands only on its backend; one posted on each shows only
    under its local id; the backends saw different uids. Returns local id -> uid."""
    locals_ = {local for local, _ in pairs}
    wait(lambda: all_live(stack, member, locals_), f"{member}'s servers live")
    rows = servers(stack, member)
    for local, url in pairs:
        assert rows[local]["backend_id"] == HARBOR and rows[local]["backend_url"] == url
        assert rows[local]["server_id"] == local and rows[local]["url"] == url
    uids = {local: rows[local]["uid"] for local, _ in pairs}
    assert len(set(uids.values())) == 2, uids  # no correlation across the two backends
    for local, url in pairs:
        other = next(u for lo, u in pairs if lo != local)
        body = f"{tag}: sent to {local}"
        stack.cli("send", local, "ch_general", body, "-m", member)
        assert backend_history(url).get(body) == uids[local]  # landed there, under that uid
        assert body not in backend_history(other)
    for _local, url in pairs:
        admin_post(url, f"{tag}: posted at {url}")
    for local, url in pairs:
        other = next(u for lo, u in pairs if lo != local)
        wait(
            lambda lo=local, u=url: f"{tag}: posted at {u}" in bodies(stack, member, lo),  # type: ignore[misc]
            f"the post under {local}",
        )
        assert f"{tag}: posted at {other}" not in bodies(stack, member, local)
    return uids


@pytest.mark.timeout(900)  # a dozen CLI processes per step on a shared 2-core machine, a restart
def test_cli_join_both_restart_and_leave_one(stack: Stack, backends: tuple[str, str], tmp_path: Path) -> None:
    one, two = backends
    derived = f"{HARBOR}-{host_slug(two)}"
    stack.cli("member", "add", "carol")
    import_identity(stack, "carol", REFERENCE_ROOT, tmp_path)
    # without flags: no --server (the capabilities' id) and no --as
    first = stack.json("join", one, "--yes", "-m", "carol")["server"]
    second = stack.json("join", two, "--yes", "-m", "carol")["server"]
    assert (first["server_id"], first["backend_server_id"], first["uid_scope"]) == (HARBOR, HARBOR, None)
    assert (second["server_id"], second["backend_server_id"]) == (derived, HARBOR)
    assert second["uid_scope"] == f"{HARBOR}@{two}"
    # the first keeps the reference projection (an imported identity stays the same user there)
    # (features 1.4's vector for this root and srv_harbor)
    assert first["user_uid"] == "uid_09de3cdc" != second["user_uid"]
    assert second["user_uid"] == project_uid(REFERENCE_ROOT, f"{HARBOR}@{two}")
    shown = stack.cli("identity", "show", "-m", "carol", "--server", derived).stdout
    assert f"uid on {derived}: {second['user_uid']}" in shown
    # the same backend server again: refused
    again = stack.cli("join", one, "--yes", "-m", "carol", check=False)
    assert again.returncode != 0 and "Server already added: srv_harbor" in again.stderr
    carol = check_apart(stack, "carol", [(HARBOR, one), (derived, two)], "carol")
    # the human listing says which backend id a derived local id stands for
    listing = stack.cli("servers", "-m", "carol").stdout
    assert f"{derived}" in listing and "(backend id srv_harbor)" in listing

    # with --as
    stack.cli("member", "add", "dave")
    a = stack.json("join", one, "--as", "harbor-a", "--yes", "-m", "dave")["server"]
    b = stack.json("join", two, "--as", "harbor-b", "--yes", "-m", "dave")["server"]
    assert (a["server_id"], b["server_id"]) == ("harbor-a", "harbor-b")
    assert a["uid_scope"] is None and b["uid_scope"] == f"{HARBOR}@{two}"
    dave = check_apart(stack, "dave", [("harbor-a", one), ("harbor-b", two)], "dave")
    assert set(dave.values()).isdisjoint(carol.values())  # members never share a uid either

    # both are back after a stack restart (live, same ids and uids, history kept)
    stack.restart()
    for member, pairs, uids in (
        ("carol", [(HARBOR, one), (derived, two)], carol),
        ("dave", [("harbor-a", one), ("harbor-b", two)], dave),
    ):
        locals_ = {lo for lo, _ in pairs}
        wait(lambda m=member, ls=locals_: all_live(stack, m, ls), f"{member} live after the restart")  # type: ignore[misc]
        rows = servers(stack, member)
        assert {lo: r["uid"] for lo, r in rows.items()} == uids
        for local, url in pairs:
            assert f"{member}: posted at {url}" in bodies(stack, member, local)

    # leaving one leaves the other intact (and it stays live and receives)
    left = stack.json("leave", derived, "--yes", "-m", "carol")
    assert left["server_id"] == derived and left["backend_left"] is True
    assert set(servers(stack, "carol")) == {HARBOR}
    admin_post(one, "after the leave")
    wait(lambda: "after the leave" in bodies(stack, "carol", HARBOR), "a post after the leave")
    assert servers(stack, "carol")[HARBOR]["connection"] == "live"
    # the backend saw the leave under its own id, for that uid only
    r = httpx.get(f"{two}/v1/servers", headers={"X-OpenChat-User-UID": carol[derived]}, timeout=10)
    assert HARBOR not in [s["server_id"] for s in r.json()["servers"]]
    r = httpx.get(f"{one}/v1/servers", headers={"X-OpenChat-User-UID": carol[HARBOR]}, timeout=10)
    assert HARBOR in [s["server_id"] for s in r.json()["servers"]]


@pytest.mark.timeout(600)
def test_desktop_controller_probe_only_joins_both(stack: Stack, backends: tuple[str, str]) -> None:
    """The desktop's Add Server flow (controller + real adapter, no window) on the real stack:
    "Probe Backend" without "Discover" joins the capabilities' id; the second backend's local id
    is proposed (derived), then edited before joining."""
    one, two = backends
    stack.cli("member", "add", "erin")
    d = Desktop(stack.home / "members" / "erin.json")
    try:
        d.pump(lambda: d.model.stack_online, timeout=30, what="online")
        c, flow = d.controller, d.controller.add
        c.dispatch(it.OpenAddServer(one))
        c.dispatch(it.Probe(one))
        d.pump(lambda: flow.probe is not None or bool(flow.error), timeout=30, what="probe one")
        assert not flow.error, flow.error
        assert flow.picked is None and flow.backend_id == HARBOR and flow.local_id == HARBOR
        c.dispatch(it.Join(one))
        d.pump(lambda: HARBOR in d.model.servers, timeout=30, what="join one")
        c.dispatch(it.OpenAddServer(two))
        c.dispatch(it.Probe(two))
        d.pump(lambda: flow.probe is not None or bool(flow.error), timeout=30, what="probe two")
        assert flow.local_id == f"{HARBOR}-{host_slug(two)}"  # proposed: the backend's id is taken
        assert "scoped to this backend's address" in flow.summary()[2]
        c.dispatch(it.SetAddLocalId("harbor-erin"))
        c.dispatch(it.Join(two))
        d.pump(lambda: "harbor-erin" in d.model.servers, timeout=30, what="join two")
        rec_one, rec_two = d.model.servers[HARBOR].record, d.model.servers["harbor-erin"].record
        assert rec_one.backend_id == rec_two.backend_id == HARBOR
        assert rec_one.user_uid != rec_two.user_uid and rec_two.uid_scope == f"{HARBOR}@{two}"
        check_apart(stack, "erin", [(HARBOR, one), ("harbor-erin", two)], "erin")
        # what the desktop shows: each post under its own server
        for sid, url in ((HARBOR, one), ("harbor-erin", two)):
            d.pump(
                lambda s=sid, u=url: any(  # type: ignore[misc]
                    m.body == f"erin: posted at {u}" for m in d.model.messages(s, "ch_general")
                ),
                timeout=30,
                what=f"the post in the desktop under {sid}",
            )
        c.dispatch(it.Leave("harbor-erin"))
        d.pump(lambda: "harbor-erin" not in d.model.servers, timeout=30, what="leave")
        assert HARBOR in d.model.servers
    finally:
        d.adapter.stop()


@pytest.mark.timeout(600)
def test_desktop_add_server_dialog_xvfb(
    stack: Stack, backends: tuple[str, str], ui_factory: Any, shooter: Shooter
) -> None:
    """The real dialog under Xvfb: probe only, the local id field shown and editable."""
    import dearpygui.dearpygui as dpg

    one, two = backends
    stack.cli("member", "add", "finn")
    stack.cli("join", one, "--yes", "-m", "finn")  # the first one from the CLI
    app = ui_factory(connection=stack.home / "members" / "finn.json")
    app.start()
    pump(app, lambda: app.model.stack_online and HARBOR in app.model.servers, timeout=60, what="snapshot")
    pump(app, lambda: app.account.settled, timeout=20, what="the identity read")
    if app.account.step is not None:
        app.account.skip()
        render(app, 3)
    for _ in range(3):
        if app.view.overlay_open():
            app.workspace.answer_consent(False)
        render(app, 3)
    app.workspace.open_add_server()
    app.workspace.set_add_url(two)
    app.workspace.probe()
    pump(
        app,
        lambda: app.workspace.add_flow.probe is not None or bool(app.workspace.add_flow.error),
        timeout=30,
        what="probe",
    )
    render(app, 3)
    assert not app.workspace.add_flow.error, app.workspace.add_flow.error
    assert dpg.is_item_shown("oc_add_local_row")
    assert dpg.get_value("oc_add_local") == f"{HARBOR}-{host_slug(two)}"
    assert "server id srv_harbor" in text_of("oc_add_summary")
    assert "scoped to this backend's address" in text_of("oc_add_disclosure")
    dpg.set_value("oc_add_local", "harbor-finn")
    app.workspace.add_local_id_changed("harbor-finn")
    shooter.shot(app, "dialog_local_id")
    app.workspace.add_server()
    pump(app, lambda: app.model.active_server == "harbor-finn", timeout=30, what="join")
    for _ in range(3):
        if app.view.overlay_open():
            app.workspace.answer_consent(False)
        render(app, 3)
    pump(app, lambda: app.model.channel_id is not None, timeout=30, what="channels")
    render(app, 3)
    shooter.shot(app, "joined_second")
    assert set(app.model.servers) >= {HARBOR, "harbor-finn"}
    assert app.model.servers["harbor-finn"].record.backend_id == HARBOR
    app.stop()
