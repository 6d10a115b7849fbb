"""Fault suite: the member access matrix (issue 10).

One real family instance — ``openchat up --demo`` in a subprocess (NATS with the generated
accounts, Redis, connector, state, notification, media, two demo devservers) — and three
members: ``demo`` (joined to both demo servers, so it has data), ``alice`` and ``bob``, each with
the real connection file ``openchat member add`` writes. Every member, with its own
credentials, tries against every other member and the stack's internals:

- subscriptions to other members' events, commands and inboxes, ``oc.sys.>``, ``$JS.API.>``,
  ``$KV.>``, ``$SYS.>`` and ``>``;
- publishes and requests to the same;
- **reply subjects**: every command of every service (discovered from the running server, so a
  new command is covered without editing this file), with the reply aimed at another member's
  events, inbox and commands, the ``oc.sys.ev`` ingest subjects, internal subjects,
  ``$JS.API`` (stream purge and delete) and ``$KV``: nothing may arrive, nothing may be stored,
  and each refusal is logged by the service;
- the state HTTP API with other members' tokens and forged tokens.

An unrestricted observer (the tools' ``svc`` user) subscribes to every target subject, so a
delivery that slipped through is seen even when no member could receive it. Ordering, not
sleeping, tells that nothing more can come: NATS delivers one publisher's messages in order,
and a service handles one subscription's messages one at a time, so once the marker sent after
the forged messages is through, so is everything before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.cli.home import read_secrets_env
from services.core import natsconf
from services.core.contracts import subjects
from services.core.members import ConnectionFile
from services.state import tokens
from tests.integration.test_openchat_up import READY_LINE, Stack, _cli, _processes_of

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

STREAM = "OC_EVENTS"
ATTACKERS = ("alice", "bob", "demo")
REFUSAL_LOG = "refused a command with a foreign reply subject"


@dataclass
class Family:
    stack: Stack
    home: Path
    nats_url: str
    state_url: str
    secrets: dict[str, str]
    lines: list[str] = field(default_factory=list)  # the stack's output, read continuously
    service_urls: dict[str, str] = field(default_factory=dict)  # health/metrics app per service

    def connection(self, member: str) -> ConnectionFile:
        """The member's real connection file, as written by ``openchat``."""
        cf = ConnectionFile.read(self.home / "members" / f"{member}.json")
        assert cf.nats_url == self.nats_url, (cf.nats_url, self.nats_url)
        return cf

    def log_count(self, needle: str) -> int:
        return sum(needle in line for line in list(self.lines))


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Family]:
    home = tmp_path_factory.mktemp("matrix") / "home"
    stack = Stack(home, "--demo")
    try:
        stack.wait_for_line(READY_LINE, timeout=180)
        fam = Family(stack, home, "", "", {}, stack.lines)

        def drain() -> None:  # keep the supervisor's pipe empty; keep every line for the asserts
            assert stack.proc.stdout is not None
            for line in stack.proc.stdout:
                fam.lines.append(line)

        threading.Thread(target=drain, name="stack-output", daemon=True).start()
        for member in ("alice", "bob"):
            added = _cli(home, "member", "add", member)
            assert added.returncode == 0, added.stderr
        assert (home / "members" / "demo.json").exists()
        endpoints = stack.endpoints()
        services = endpoints["services"]
        assert isinstance(services, dict)
        fam.nats_url = str(endpoints["nats_url"])
        fam.state_url = str(services["state"])
        fam.service_urls = {str(k): str(v) for k, v in services.items()}
        fam.secrets = read_secrets_env(home / "secrets.env")
        yield fam
    finally:
        if stack.proc.poll() is None:
            stack.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                stack.proc.wait(60)
        for leftover in _processes_of(home):
            leftover.kill()


# -- connections ---------------------------------------------------------------------------------
class Errors(list[str]):
    """Asynchronous errors the server sent a client (lower-cased)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    async def violation(self, kind: str, subject: str) -> None:
        needle = f'permissions violation for {kind} to "{subject.lower()}"'
        while not any(needle in text for text in self):
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)


@dataclass
class Member:
    name: str
    nc: Client
    errors: Errors


class Connections:
    """Members' connections (their connection files) and the observer; all closed at the end."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.clients: list[Client] = []

    async def member(self, name: str) -> Member:
        cf = self.family.connection(name)
        errors = Errors()

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc).lower())
            errors.arrived.set()

        nc = await nats.connect(
            cf.nats_url,
            nkeys_seed_str=cf.nkey_seed,
            inbox_prefix=cf.inbox_prefix.encode(),
            error_cb=on_error,
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
        self.clients.append(nc)
        return Member(name, nc, errors)

    async def observer(self) -> Client:
        nc = await nats.connect(
            self.family.nats_url, user="svc", password=self.family.secrets[natsconf.SERVICE_PASSWORD_VAR]
        )
        self.clients.append(nc)
        return nc


@pytest.fixture
async def conns(family: Family) -> AsyncIterator[Connections]:
    c = Connections(family)
    yield c
    for nc in c.clients:
        if not nc.is_closed:
            await nc.close()


class Seen:
    """Messages one connection received, by subject pattern it subscribed."""

    def __init__(self) -> None:
        self.by_sub: Counter[str] = Counter()
        self.msgs: list[Msg] = []
        self.arrived = asyncio.Event()

    async def watch(self, nc: Client, subject: str) -> None:
        async def cb(msg: Msg) -> None:
            self.by_sub[subject] += 1
            self.msgs.append(msg)
            self.arrived.set()

        await nc.subscribe(subject, cb=cb)

    async def until(self, subject: str, count: int, timeout: float = 60) -> None:
        async def wait() -> None:
            while self.by_sub[subject] < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(wait(), timeout)


async def command_subjects(family: Family) -> dict[str, list[str]]:
    """Every command the running services serve, from the server's own subscription list."""
    nc = await nats.connect(family.nats_url, user="sys", password=family.secrets[natsconf.SYS_PASSWORD_VAR])
    try:
        query = {"subscriptions": True, "account": "APP", "limit": 100_000}
        reply = await nc.request("$SYS.REQ.SERVER.PING.SUBSZ", json.dumps(query).encode(), timeout=5)
    finally:
        await nc.close()
    found: dict[str, set[str]] = {}
    for sub in json.loads(reply.data)["data"].get("subscriptions_list") or []:
        m = re.fullmatch(r"oc\.\*\.cmd\.([a-z_]+)\.([a-z_]+)", sub["subject"])
        if m:
            found.setdefault(m.group(1), set()).add(m.group(2))
    return {service: sorted(verbs) for service, verbs in found.items()}


def envelope(args: dict[str, object]) -> bytes:
    return json.dumps({"command_id": "cmd_matrix", "args": args}).encode()


def reply_targets(victim: str) -> dict[str, str]:
    return {
        "victim_events": f"oc.{victim}.evt.srv_injected.message.created",
        "victim_ingest": f"oc.sys.ev.{victim}.srv_injected.message.created",
        "victim_inbox": f"_INBOX_{victim}.injected.x",
        "victim_command": f"oc.{victim}.cmd.matrix.injected",  # served by none: observed only
        "internal": "oc.sys.connector.rehydrate",
        "js_purge": f"$JS.API.STREAM.PURGE.{STREAM}",
        "js_delete": f"$JS.API.STREAM.DELETE.{STREAM}",
        "kv": "$KV.injected.key",
    }


# -- reply subjects: every command of every service ----------------------------------------------
EXPECTED_SERVICES = {"connector": 20, "state": 5, "notification": 8}  # at least this many commands


@pytest.mark.parametrize("service", sorted(EXPECTED_SERVICES))
async def test_reply_subjects_outside_the_callers_inbox_reach_nothing(
    family: Family, conns: Connections, service: str
) -> None:
    commands = await command_subjects(family)
    verbs = commands.get(service, [])
    assert len(verbs) >= EXPECTED_SERVICES[service], commands
    observer = await conns.observer()
    seen = Seen()
    targets_of = {v: reply_targets(v) for v in ATTACKERS}
    every_target = sorted({t for targets in targets_of.values() for t in targets.values()})
    for subject in every_target:
        await seen.watch(observer, subject)
    for attacker in ATTACKERS:
        await seen.watch(observer, f"{subjects.inbox_prefix(attacker)}.>")
    await observer.flush()
    members = {name: await conns.member(name) for name in ATTACKERS}
    victims_seen = Seen()  # what the victims themselves receive on their events and inboxes
    for name, m in members.items():
        await victims_seen.watch(m.nc, f"oc.{name}.evt.srv_injected.>")
        await victims_seen.watch(m.nc, f"_INBOX_{name}.injected.>")
        await m.nc.flush()
    js = observer.jetstream()
    before = await js.stream_info(STREAM)

    refusals_before = family.log_count(REFUSAL_LOG)
    forged = 0
    for attacker, m in members.items():
        for victim in ATTACKERS:
            if victim == attacker:
                continue
            for verb in verbs:
                for target in targets_of[victim].values():
                    await m.nc.publish(subjects.command(attacker, service, verb), envelope({}), reply=target)
                    forged += 1
        # Markers: each verb once with the attacker's own inbox; its answer comes after any
        # answer to the forged commands of that verb (same service subscription, in order).
        inbox = f"{subjects.inbox_prefix(attacker)}.>"
        expected = seen.by_sub[inbox] + len(verbs)
        for verb in verbs:
            await m.nc.publish(
                subjects.command(attacker, service, verb),
                envelope({"__marker__": True}),  # refused by every args model: no side effect
                reply=f"{subjects.inbox_prefix(attacker)}.marker.{verb}",
            )
        await m.nc.flush()
        await seen.until(inbox, expected)

    leaked = {t: n for t, n in seen.by_sub.items() if not t.startswith("_INBOX_") or ".injected." in t}
    assert sum(leaked.values()) == 0, f"replies published to foreign subjects: {leaked}"
    assert sum(victims_seen.by_sub.values()) == 0, dict(victims_seen.by_sub)
    after = await js.stream_info(STREAM)
    assert after.state.first_seq == before.state.first_seq, "the events stream was purged"
    assert after.state.messages >= before.state.messages
    injected = await js.stream_info(STREAM, subjects_filter="oc.sys.ev.*.srv_injected.>")
    assert not injected.state.subjects, f"stored: {injected.state.subjects}"
    # Each refusal is logged by the service (never the body), once per forged command.
    deadline = asyncio.get_running_loop().time() + 30
    while family.log_count(REFUSAL_LOG) - refusals_before < forged:
        assert asyncio.get_running_loop().time() < deadline, (
            f"{family.log_count(REFUSAL_LOG) - refusals_before} refusals logged of {forged}"
        )
        await asyncio.sleep(0.1)
    # …and counted in the service's metrics.
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(f"{family.service_urls[service]}/metrics")).text
    refused = re.search(r"^openchat_bus_refused_replies (\S+)$", metrics, re.MULTILINE)
    assert refused is not None and float(refused.group(1)) >= forged, metrics[-500:]
    print(f"\n{service}: {len(verbs)} commands, {forged} forged reply subjects, 0 delivered, 0 stored")


# -- subscriptions --------------------------------------------------------------------------------
def refused_subscriptions(victim: str) -> dict[str, tuple[str, str]]:
    """name -> (subscription, a concrete subject it would match)."""
    return {
        "victim_events": (f"oc.{victim}.evt.>", f"oc.{victim}.evt.srv_probe.message.created"),
        "victim_commands": (f"oc.{victim}.cmd.>", f"oc.{victim}.cmd.state.snapshot"),
        "victim_inbox": (f"_INBOX_{victim}.>", f"_INBOX_{victim}.probe.1"),
        "every_member_events": ("oc.*.evt.>", f"oc.{victim}.evt.srv_probe.message.created"),
        "ingest": ("oc.sys.>", f"oc.sys.ev.{victim}.srv_probe.message.created"),
        "jetstream_api": ("$JS.API.>", f"$JS.API.STREAM.INFO.{STREAM}"),
        "jetstream_acks": ("$JS.ACK.>", f"$JS.ACK.{STREAM}.probe.1.1.1.1.0"),
        "key_value": ("$KV.>", "$KV.bucket.key"),
        "system": ("$SYS.>", "$SYS.REQ.SERVER.PING"),
        "everything": (">", f"oc.{victim}.evt.srv_probe.x"),
    }


@pytest.mark.parametrize("attacker", ATTACKERS)
async def test_subscriptions_to_others_and_internals_are_refused(
    family: Family, conns: Connections, attacker: str
) -> None:
    observer = await conns.observer()
    me = await conns.member(attacker)
    stolen = Seen()
    own = Seen()
    own_subject = f"oc.{attacker}.evt.srv_probe.marker"
    await own.watch(me.nc, f"oc.{attacker}.evt.>")
    probes: list[str] = []
    for victim in ATTACKERS:
        if victim == attacker:
            continue
        for subscription, probe in refused_subscriptions(victim).values():
            await stolen.watch(me.nc, subscription)
            await me.errors.violation("subscription", subscription)
            probes.append(probe)
    for probe in probes:
        await observer.publish(probe, b"secret")
    await observer.publish(own_subject, b"marker")  # after every probe, from the same publisher
    await observer.flush()
    await own.until(f"oc.{attacker}.evt.>", 1, timeout=10)
    assert own.msgs[-1].subject == own_subject
    assert sum(stolen.by_sub.values()) == 0, dict(stolen.by_sub)


# -- publishes and requests -----------------------------------------------------------------------
def refused_publishes(victim: str) -> list[str]:
    return [
        f"oc.{victim}.cmd.state.snapshot",
        f"oc.{victim}.cmd.connector.send",
        f"oc.{victim}.evt.srv_probe.message.created",
        f"_INBOX_{victim}.probe.1",
        f"oc.sys.ev.{victim}.srv_probe.message.created",
        "oc.sys.connector.rehydrate",
        f"$JS.API.STREAM.INFO.{STREAM}",
        f"$JS.API.STREAM.PURGE.{STREAM}",
        f"$JS.API.STREAM.MSG.GET.{STREAM}",
        f"$JS.API.CONSUMER.CREATE.{STREAM}",
        "$KV.bucket.key",
        "$SYS.REQ.SERVER.PING",
    ]


@pytest.mark.parametrize("attacker", ATTACKERS)
async def test_publishes_and_requests_to_others_and_internals_are_refused(
    family: Family, conns: Connections, attacker: str
) -> None:
    observer = await conns.observer()
    me = await conns.member(attacker)
    seen = Seen()
    targets = sorted({s for v in ATTACKERS if v != attacker for s in refused_publishes(v)})
    for subject in targets:
        await seen.watch(observer, subject)
    marker = f"oc.{attacker}.cmd.matrix.marker"
    await seen.watch(observer, marker)
    await observer.flush()
    answered: list[str] = []
    # The attacker's own bytes: the services themselves publish on some of these subjects (the
    # state service asks $JS.API.STREAM.INFO of the events stream), which is not a leak.
    probe = json.dumps({"seq": 1, "matrix_probe": attacker}).encode()
    for subject in targets:
        await me.nc.publish(subject, probe)
        await me.errors.violation("publish", subject)
        try:  # a request is a publish with a reply inbox: refused the same way, never answered
            reply = await me.nc.request(subject, probe, timeout=0.3)
            answered.append(f"{subject}: {reply.data[:80]!r}")
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            pass
    await me.nc.publish(marker, b"marker")
    await me.nc.flush()
    await seen.until(marker, 1, timeout=10)
    assert answered == []
    arrived = Counter(m.subject for m in seen.msgs if m.data == probe)
    assert dict(arrived) == {}, arrived


# -- the state HTTP API ---------------------------------------------------------------------------
async def _http_token(family: Family, member: str) -> str:
    cf = family.connection(member)
    nc = await nats.connect(cf.nats_url, nkeys_seed_str=cf.nkey_seed, inbox_prefix=cf.inbox_prefix.encode())
    try:
        reply = await nc.request(subjects.command(member, "state", "http_token"), envelope({}), timeout=10)
    finally:
        await nc.close()
    doc = json.loads(reply.data)
    assert doc["ok"], doc
    return str(doc["result"]["token"])


async def _demo_paths(http: httpx.AsyncClient, token: str) -> list[str]:
    """Every path of the demo member's own view: servers, channels, messages, media."""
    auth = {"Authorization": f"Bearer {token}"}
    servers = (await http.get("/api/v1/servers", headers=auth)).json()["servers"]
    assert len(servers) >= 2, servers
    paths = ["/api/v1/servers"]
    for status in servers:
        sid = status["server_id"] if "server_id" in status else status["server"]["server_id"]
        paths.append(f"/api/v1/servers/{sid}/channels")
        groups = (await http.get(f"/api/v1/servers/{sid}/channels", headers=auth)).json()
        for group in groups:
            for channel in group["channels"][:3]:
                path = f"/api/v1/servers/{sid}/channels/{channel['id']}/messages"
                paths.append(path)
                page = (await http.get(path, headers=auth)).json()
                for message in page["messages"][:5]:
                    paths.append(f"/media/v1/avatars/{sid}/{message['author_uid']}")
                    for att in message.get("attachments") or []:
                        paths.append(
                            f"/media/v1/attachments/{sid}/{channel['id']}/{message['id']}/{att['attachment_id']}"
                        )
    return paths


async def test_state_http_api_with_other_members_and_forged_tokens(family: Family) -> None:
    tokens_of = {m: await _http_token(family, m) for m in ATTACKERS}
    async with httpx.AsyncClient(base_url=family.state_url, timeout=15) as http:
        demo_paths = await _demo_paths(http, tokens_of["demo"])
        messages_paths = [p for p in demo_paths if p.endswith("/messages")]
        assert messages_paths, demo_paths
        own = await http.get(messages_paths[0], headers={"Authorization": f"Bearer {tokens_of['demo']}"})
        assert own.status_code == 200 and own.json()["messages"], "the victim must have data to steal"

        leaks: list[str] = []
        # Other members' genuine tokens: the demo member's servers do not exist for them.
        for attacker in ("alice", "bob"):
            auth = {"Authorization": f"Bearer {tokens_of[attacker]}"}
            listing = await http.get("/api/v1/servers", headers=auth)
            assert listing.status_code == 200
            if listing.json()["servers"]:
                leaks.append(f"{attacker} lists {listing.json()['servers']}")
            for path in demo_paths[1:]:
                r = await http.get(path, headers=auth)
                if r.status_code != 404:
                    leaks.append(f"{attacker} {path}: {r.status_code}")

        # Forged tokens naming the victim: every one is refused with 401.
        _, _, demo_exp, demo_sig = tokens_of["demo"].split(".")
        _, _, alice_exp, alice_sig = tokens_of["alice"].split(".")
        other_key, _ = tokens.issue(b"another-key-" * 3, "demo", 0, 10**10)
        forged = {
            "alice_signature_on_demo": f"v1.demo.{alice_exp}.{alice_sig}",
            "demo_signature_on_alice": f"v1.alice.{demo_exp}.{demo_sig}",
            "another_key": other_key,
            "expiry_leading_zero": f"v1.demo.0{demo_exp}.{demo_sig}",
            "expiry_plus": f"v1.demo.+{demo_exp}.{demo_sig}",
            "expiry_underscore": f"v1.demo.{demo_exp[0]}_{demo_exp[1:]}.{demo_sig}",
            "expiry_later": f"v1.demo.{int(demo_exp) + 86400}.{demo_sig}",
            "member_case": f"v1.Demo.{demo_exp}.{demo_sig}",
            "other_version": f"v2.demo.{demo_exp}.{demo_sig}",
            "no_signature": f"v1.demo.{demo_exp}.",
            "signature_padded": f"v1.demo.{demo_exp}.{demo_sig}=",
            "extra_part": f"v1.demo.{demo_exp}.{demo_sig}.x",
            "empty": "",
            "huge": "v1.demo." + "9" * 4000 + "." + demo_sig,
        }
        for name, token in forged.items():
            for path in demo_paths:
                r = await http.get(path, headers={"Authorization": f"Bearer {token}".strip()})
                if r.status_code != 401:
                    leaks.append(f"forged {name} {path}: {r.status_code}")
        for path in demo_paths:
            r = await http.get(path)
            if r.status_code != 401:
                leaks.append(f"no token {path}: {r.status_code}")
    assert leaks == []
    print(
        f"\nstate HTTP API: {len(demo_paths)} victim paths x (2 members + {len(forged) + 1} forged): 0 served"
    )


# -- the services' own users ----------------------------------------------------------------------
async def test_services_connect_as_their_own_restricted_users(family: Family) -> None:
    nc = await nats.connect(family.nats_url, user="sys", password=family.secrets[natsconf.SYS_PASSWORD_VAR])
    try:
        query = {"auth": True, "account": "APP", "limit": 1000}
        reply = await nc.request("$SYS.REQ.SERVER.PING.CONNZ", json.dumps(query).encode(), timeout=5)
    finally:
        await nc.close()
    users = {c.get("name"): c.get("authorized_user") for c in json.loads(reply.data)["data"]["connections"]}
    for service in subjects.SERVICES:
        assert users.get(f"openchat-{service}") == f"svc-{service}", users
    # Their allow-lists cover what they do: no service was refused a publish all along.
    refused = [line for line in list(family.lines) if "permissions violation" in line.lower()]
    assert refused == [], refused[:5]
