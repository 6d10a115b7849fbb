"""Issue 18 acceptance, from the CLI, on real processes: ``openchat up`` (NATS, Redis, the four
services; ``--demo`` adds two devservers), a Harbor devserver process that outlives a stack
restart, ``openchat notify …`` / ``presence`` / ``version`` / ``identity export|import`` as
subprocesses, and ``openchat tail --json`` as the member's event witness.

Messages "from someone else" are posted to the devserver over its HTTP API with another uid's
headers, as any other client of that server would.

Proving that an event did *not* happen: the notification service applies the events stream in
order and publishes a batch's events before it fetches the next, and the tail receives the stream
in order; so once the notification of a later message has arrived on the tail, a notification
for an earlier message that is not there before it will never come.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.integration.test_openchat_up import READY_LINE, Stack, _env, _processes_of

T = TypeVar("T")
MEMBER = "demo"
SERVER = "srv_harbor"
BOB = {"X-OpenChat-User-UID": "uid_b0b0b0b0", "X-OpenChat-Device-ID": "desktop_bob00001"}
PASSPHRASE = "a long family passphrase"


def cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(home: Path, *args: str) -> str:
    done = cli(home, *args)
    assert done.returncode == 0, f"openchat {' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def js(home: Path, *args: str) -> Any:
    return json.loads(ok(home, *args, "--json", "--member", MEMBER))


def poll(what: str, fn: Callable[[], T | None], timeout: float = 30) -> T:
    """Poll state that has no event of its own (a CLI command's answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value is not None:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


class Tail:
    """``openchat tail --json`` in a subprocess; its events, in stream order."""

    def __init__(self, home: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "tail", "--json", "--member", MEMBER],
            env=_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        assert "tailing the events of demo" in self.proc.stderr.readline()  # subscribed
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.events.append(json.loads(line)["event"])
                self._cond.notify_all()

    def wait(
        self, what: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 30, after: int = -1
    ) -> int:
        """Index of the first event after index ``after`` matching ``pred`` (waits for it)."""
        with self._cond:
            found: list[int] = []

            def match() -> bool:
                found[:] = [i for i, e in enumerate(self.events) if i > after and pred(e)][:1]
                return bool(found)

            assert self._cond.wait_for(match, timeout), f"no {what} on the tail within {timeout} s"
            return found[0]

    def notifications(self) -> list[dict[str, Any]]:
        with self._cond:
            return [e["payload"] for e in self.events if e["type"] == "notification"]

    def notified(self, message_id: str) -> int:
        return self.wait(
            f"notification of {message_id}",
            lambda e: e["type"] == "notification" and e["payload"]["message_id"] == message_id,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)


def post(base: str, channel_id: str, body: str) -> str:
    resp = httpx.post(
        f"{base}/v1/channels/{channel_id}/messages", json={"body": body}, headers=BOB, timeout=10
    )
    assert resp.status_code == 201, resp.text
    message_id: str = resp.json()["message"]["id"]
    return message_id


def counts(home: Path, channel_id: str) -> tuple[int, int]:
    for server in js(home, "unread"):
        if server["server_id"] == SERVER:
            for ch in server["channels"]:
                if ch["channel_id"] == channel_id:
                    return ch["unread"], ch["mentions"]
    return 0, 0


def counted(home: Path, channel_id: str, expected: tuple[int, int]) -> None:
    poll(f"{channel_id} counts {expected}", lambda: True if counts(home, channel_id) == expected else None)


def live(home: Path) -> None:
    def harbor_live() -> bool | None:
        done = cli(home, "servers", "--member", MEMBER)
        return True if any(SERVER in ln and " live " in ln for ln in done.stdout.splitlines()) else None

    poll(f"{SERVER} live", harbor_live, timeout=90)


def settings(prefs: dict[str, Any]) -> dict[str, Any]:
    """``notify show --json`` without ordering (servers and channels come in storage order)."""
    servers = {
        s["server_id"]: {**s, "channels": sorted(s["channels"], key=lambda c: c["channel_id"])}
        for s in prefs["servers"]
    }
    return {**prefs, "servers": servers}


def quiet_window_away_from_now() -> str:
    """A quiet-hours window (Europe/Berlin) that starts 6 h from now: the test's notifications
    must not fall into it, whenever the test runs."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    local = datetime.now(UTC).astimezone(ZoneInfo("Europe/Berlin"))
    return f"{local + timedelta(hours=6):%H:%M}-{local + timedelta(hours=9):%H:%M}"


class Devserver:
    """The Harbor devserver as its own process: a chat server is not part of the home stack, so
    it keeps running (same URL, same data) while the stack restarts."""

    def __init__(self, logs: Path) -> None:
        from services.core.procs import free_port

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = logs.open("wb")
        argv = [sys.executable, "-m", "services.devserver", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--seed", "harbor", "--public-base-url", self.url, "--admin"]
        self.proc = subprocess.Popen(
            argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

        def healthy() -> bool | None:
            try:
                return True if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200 else None
            except httpx.HTTPError:
                return None

        poll("devserver /healthz", healthy)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start(home: Path, *args: str) -> Stack:
    stack = Stack(home, *args)
    stack.wait_for_line(READY_LINE)
    return stack


def follow_nats(stack: Stack, member: str = MEMBER) -> None:
    """Point the member's connection file at the NATS this run of ``openchat up`` started.

    ``openchat up`` starts NATS on its preferred port 4222 when free, else on any free port, and
    writes a member's connection file once (``member add``). On this machine other worktrees' tests
    hold 4222 now and then, so a restart may get another port than the first start did; the
    connection file would then name the old one (a supervisor limitation, reported, not what this
    test is about). Same credentials, current URL."""
    from services.core.members import ConnectionFile

    path = stack.home / "members" / f"{member}.json"
    current = ConnectionFile.read(path)
    nats_url = str(stack.endpoints()["nats_url"])
    if current.nats_url != nats_url:
        current.model_copy(update={"nats_url": nats_url}).write(path)


def stop(stack: Stack) -> None:
    if stack.proc.poll() is None:
        assert stack.interrupt() == 0, "".join(stack.lines)[-3000:]


@pytest.fixture
def cleanup() -> Iterator[list[Stack | Tail | Devserver]]:
    started: list[Stack | Tail | Devserver] = []
    yield started
    for thing in reversed(started):
        if isinstance(thing, Tail | Devserver):
            thing.stop()
        elif thing.proc.poll() is None:
            thing.proc.send_signal(signal.SIGINT)
            try:
                thing.proc.wait(60)
            except subprocess.TimeoutExpired:
                thing.proc.kill()
    for thing in started:
        if isinstance(thing, Stack):
            for leftover in _processes_of(thing.home):
                leftover.kill()


@pytest.mark.timeout(300)  # two stack starts, ~25 CLI processes: about a minute on a loaded 2-core box
def test_notification_settings_from_the_cli_survive_a_restart(tmp_path: Path, cleanup: list[Any]) -> None:
    home = tmp_path / "home"
    devserver = Devserver(tmp_path / "devserver.log")
    cleanup.append(devserver)
    harbor = devserver.url
    stack = start(home)
    cleanup.append(stack)
    ok(home, "member", "add", MEMBER)
    js(home, "join", harbor, "--server", SERVER, "--yes")
    live(home)
    me = {s["server_id"]: s["user_uid"] for s in js(home, "identity", "mode")["servers"]}[SERVER]
    ok(home, "read", SERVER, "--member", MEMBER)  # the seeds' history: start from zero
    for ch in ("ch_general", "ch_design", "ch_release"):
        counted(home, ch, (0, 0))
    tail = Tail(home)
    cleanup.append(tail)

    # DND on: no notification, the count grows; DND off: it notifies again.
    prefs = js(home, "notify", "dnd", "on")
    assert (prefs["dnd"], prefs["status"]) == (True, "dnd")
    tail.wait("notify.member dnd", lambda e: e["type"] == "notify.member" and e["payload"]["dnd"] is True)
    quiet_one = post(harbor, "ch_general", "during dnd")
    counted(home, "ch_general", (1, 0))
    assert js(home, "notify", "dnd", "off")["dnd"] is False
    loud_one = post(harbor, "ch_general", "after dnd")
    at = tail.notified(loud_one)
    counted(home, "ch_general", (2, 0))
    assert quiet_one not in [n["message_id"] for n in tail.notifications()[: at + 1]]

    # A muted channel neither notifies nor counts.
    prefs = js(home, "notify", "mute", SERVER, "ch_design")
    (design,) = [c for s in prefs["servers"] if s["server_id"] == SERVER for c in s["channels"]]
    assert (design["channel_id"], design["muted"], design["muted_until"]) == ("ch_design", True, None)
    muted_one = post(harbor, "ch_design", f"@{me} muted")
    barrier = post(harbor, "ch_general", "barrier after the muted one")
    tail.notified(barrier)
    assert muted_one not in [n["message_id"] for n in tail.notifications()]
    assert counts(home, "ch_design") == (0, 0)

    # Mentions only: a plain message does not notify, a mention notifies once.
    ok(home, "notify", "level", SERVER, "ch_release", "mentions", "--member", MEMBER)
    plain = post(harbor, "ch_release", "plain release note")
    mention = post(harbor, "ch_release", f"@{me} please review")
    tail.notified(mention)
    release = [n for n in tail.notifications() if n["channel_id"] == "ch_release"]
    assert [(n["message_id"], n["mention"]) for n in release] == [(mention, True)]
    assert plain not in [n["message_id"] for n in tail.notifications()]
    counted(home, "ch_release", (2, 1))

    # Quiet hours, hide muted channels, a status: every desktop hears of each change at once.
    window = quiet_window_away_from_now()
    ok(home, "notify", "quiet", window, "--tz", "Europe/Berlin", "--member", MEMBER)
    ok(home, "notify", "hide-muted", "on", "--member", MEMBER)
    assert js(home, "presence", "idle")["status"] == "idle"
    tail.wait(
        "notify.member idle", lambda e: e["type"] == "notify.member" and e["payload"]["status"] == "idle"
    )
    assert js(home, "notify", "dnd", "on")["status"] == "dnd"
    before = js(home, "notify", "show")
    assert before["quiet_hours"] == {"enabled": True, "start": window[:5], "end": window[6:]}
    assert before["timezone"] == "Europe/Berlin" and before["hide_muted_channels"] is True
    human = ok(home, "notify", "show", "--member", MEMBER)
    assert "Do Not Disturb" in human and "ch_design" in human and window in human

    # A timed mute ends by itself, and says so on the tail.
    prefs = js(home, "notify", "mute", SERVER, "ch_outage", "--for", "3s")
    outage = [c for s in prefs["servers"] for c in s["channels"] if c["channel_id"] == "ch_outage"]
    assert outage and outage[0]["muted_until"] is not None

    def outage_muted(e: dict[str, Any]) -> bool:
        return e["type"] == "notify.prefs" and "ch_outage" in [
            c["channel_id"] for c in e["payload"]["channels"]
        ]

    muted_at = tail.wait("notify.prefs with ch_outage", outage_muted)
    tail.wait(
        "notify.prefs without ch_outage",
        lambda e: (
            e["type"] == "notify.prefs"
            and e["server_id"] == SERVER
            and "ch_outage" not in [c["channel_id"] for c in e["payload"]["channels"]]
        ),
        timeout=30,
        after=muted_at,
    )
    assert all(
        c["channel_id"] != "ch_outage" for s in js(home, "notify", "show")["servers"] for c in s["channels"]
    )
    tail.stop()

    # Restart the whole stack: the settings are the same and still apply.
    stop(stack)
    stack = start(home)
    cleanup.append(stack)
    follow_nats(stack)
    live(home)
    assert settings(js(home, "notify", "show")) == settings(before)
    ok(home, "read", SERVER, "--member", MEMBER)
    for ch in ("ch_general", "ch_design", "ch_release"):
        counted(home, ch, (0, 0))
    tail = Tail(home)
    cleanup.append(tail)
    quiet_one = post(harbor, "ch_general", "dnd after the restart")
    counted(home, "ch_general", (1, 0))
    muted_one = post(harbor, "ch_design", "muted after the restart")
    plain = post(harbor, "ch_release", "plain after the restart")
    ok(home, "notify", "dnd", "off", "--member", MEMBER)
    mention = post(harbor, "ch_release", f"@{me} after the restart")
    tail.notified(mention)
    seen = [n["message_id"] for n in tail.notifications()]
    assert quiet_one not in seen and muted_one not in seen and plain not in seen
    assert counts(home, "ch_design") == (0, 0)
    counted(home, "ch_release", (2, 1))


@pytest.mark.timeout(240)
def test_identity_export_import_on_a_fresh_stack_same_uids(tmp_path: Path, cleanup: list[Any]) -> None:
    old_home = tmp_path / "old" / "home"
    old = start(old_home, "--demo")
    cleanup.append(old)
    live(old_home)
    harbor = str(old.endpoints()["devservers"]["harbor"])  # type: ignore[index]
    old_uids = {s["server_id"]: s["user_uid"] for s in js(old_home, "identity", "mode")["servers"]}
    passfile = tmp_path / "pass.txt"
    passfile.write_text(PASSPHRASE + "\n")
    backup = tmp_path / "demo-identity.json"
    out = ok(
        old_home,
        "identity",
        "export",
        "--member",
        MEMBER,
        "--out",
        str(backup),
        "--passphrase-file",
        str(passfile),
    )
    assert "written to" in out
    info = js(old_home, "identity", "mode")
    assert info["root"] is None  # the root is never printed ...
    secret = info["device_id"].removeprefix("desktop_")  # the root's random part (reference format)
    assert len(secret) == 8 and secret not in backup.read_text() and secret not in out  # ... nor in the file
    assert backup.stat().st_mode & 0o077 == 0
    again = cli(
        old_home,
        "identity",
        "export",
        "--member",
        MEMBER,
        "--out",
        str(backup),
        "--passphrase-file",
        str(passfile),
    )
    assert again.returncode != 0 and "exists" in again.stderr  # never overwritten

    # A fresh stack (its own home, key and NATS): the same member name, no identity yet.
    new_home = tmp_path / "new" / "home"
    new = start(new_home)
    cleanup.append(new)
    ok(new_home, "member", "add", MEMBER)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the passphrase\n")
    refused = cli(
        new_home, "identity", "import", "--member", MEMBER, str(backup), "--passphrase-file", str(wrong)
    )
    assert refused.returncode != 0 and "wrong passphrase" in refused.stderr
    info = json.loads(
        ok(
            new_home,
            "identity",
            "import",
            "--member",
            MEMBER,
            str(backup),
            "--passphrase-file",
            str(passfile),
            "--json",
        )
    )
    assert info["exists"] is True and info["root"] is None
    joined = js(new_home, "join", harbor, "--server", SERVER, "--yes")
    assert joined["server"]["user_uid"] == old_uids[SERVER]
    # The server itself sees that uid: it stamps the author of what the new stack sends.
    sent = js(new_home, "send", SERVER, "ch_general", "back from the backup")
    resp = httpx.get(f"{harbor}/v1/channels/ch_general/messages", headers=BOB, timeout=10)
    authors = {m["id"]: m["author_uid"] for m in resp.json()["messages"]}
    assert authors[sent["message"]["id"]] == old_uids[SERVER]


def test_version_of_the_cli_the_stack_and_each_service(tmp_path: Path, cleanup: list[Any]) -> None:
    home = tmp_path / "home"
    stack = start(home)
    cleanup.append(stack)
    ok(home, "member", "add", MEMBER)
    doc = js(home, "version")
    from services.core.version import package_version

    mine = package_version()
    assert doc["cli"] == mine and doc["stack"]["version"] == mine and doc["update_available"] is False
    assert set(doc["services"]) == {"connector", "state", "notification", "media"}
    assert {v["service"] for v in doc["services"].values()} == set(doc["services"])
    assert all(v["version"] == mine for v in doc["services"].values())
    human = ok(home, "version", "--member", MEMBER)
    assert human.splitlines()[0] == f"cli           {mine}" and "not answering" not in human
    health = httpx.get(f"{stack.endpoints()['services']['notification']}/healthz", timeout=5)  # type: ignore[index]
    assert health.json()["version"] == mine
