"""``openchat up``: the embedded stack.

Starts nats-server (JetStream) and redis-server unless ``OPENCHAT_NATS_URL`` /
``OPENCHAT_REDIS_URL`` point elsewhere, then every service as a supervised child process
(restarted with backoff when it dies; output prefixed with its name), waits until everything
is healthy while printing progress, and records the endpoints in ``OPENCHAT_HOME/run``.
nats-server and redis-server are supervised the same way: reaped when they exit and restarted
with backoff on the same port, data directory and configuration. Restart counts and pids are in
the endpoints file (``openchat status`` shows them).
SIGINT/SIGTERM stops everything; children also get SIGTERM if the supervisor itself dies
(``PR_SET_PDEATHSIG``), so no process is left behind. The supervisor runs with umask 0o077, so
everything the stack writes under ``OPENCHAT_HOME`` is private (0600/0700).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from services.cli import cluster, listen
from services.cli.home import REDIS_PASSWORD_VAR, Endpoints, Home
from services.cli.members import refresh_local_connection_files
from services.core import natsconf
from services.core.contracts.subjects import SERVICES
from services.core.paths import private_umask, tighten_tree, write_atomic
from services.core.procs import (
    ManagedProcess,
    nats_process,
    nats_server_binary,
    pick_port,
    redis_process,
    wait_for_port,
)
from services.core.tls import render_nats_tls_block

DEFAULT_NATS_PORT = 4222
DEFAULT_REDIS_PORT = 6379
DEFAULT_SERVICE_PORTS = {"connector": 8301, "state": 8302, "notification": 8303, "media": 8304}
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
HEALTHY_RESET_S = 60.0
STOP_GRACE_S = 10.0
DEMO_MEMBER = "demo"


def _die_with_parent() -> None:
    """In the child before exec: receive SIGTERM when the supervisor dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def service_of(component: str) -> str | None:
    """The service a component runs (``connector-2`` → ``connector``); None for anything else."""
    base, _, index = component.rpartition("-")
    if component in SERVICES:
        return component
    return base if base in SERVICES and index.isdigit() else None


def replica_env(base_env: dict[str, str]) -> dict[str, str]:
    """``--replicas`` > 1: connector sessions follow leases; state replicas share one key for
    their HTTP bearer tokens; notification and media replicas are active/standby (ADR 0021)."""
    import secrets

    return {
        "OPENCHAT_CONNECTOR_LEASES": "true",
        "OPENCHAT_STATE_HTTP_SECRET": base_env.get("OPENCHAT_STATE_HTTP_SECRET") or secrets.token_hex(24),
        "OPENCHAT_STANDBY": "true",
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Child:
    """One supervised child: a service, or a devserver of the demo."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0  # consecutive quick exits: picks the backoff delay
    total_restarts: int = 0  # shown by `openchat status`
    started_at: float = 0.0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _backoff(consecutive: int, started_at: float) -> tuple[float, int]:
    """Delay before the next start, and the new count of consecutive quick exits (a process that
    ran ``HEALTHY_RESET_S`` starts the backoff over)."""
    if time.monotonic() - started_at > HEALTHY_RESET_S:
        consecutive = 0
    return RESTART_BACKOFF_S[min(consecutive, len(RESTART_BACKOFF_S) - 1)], consecutive + 1


@dataclass
class Server:
    """nats-server or redis-server under supervision."""

    proc: ManagedProcess
    restarts: int = 0
    total_restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(
        self,
        home: Home,
        demo: bool,
        out: Callable[[str], None] = print,
        with_ui: bool = False,
        *,
        nats_cluster: int = 1,
        replicas: int = 1,
    ) -> None:
        self.home = home
        self.nats_cluster = nats_cluster  # nats-server nodes forming one cluster (issue 16)
        self.replicas = replicas  # replicas of every service
        self.nats_nodes: dict[str, str] = {}  # node name -> its own local URL (cluster only)
        self.demo = demo
        self.with_ui = with_ui
        self.ui_proc: asyncio.subprocess.Process | None = None
        self._ui_task: asyncio.Task[None] | None = None
        self.out = out
        self.children: list[Child] = []
        self.servers: list[Server] = []
        self.changed = asyncio.Event()  # a pid changed: rewrite the endpoints file now
        self.stopping = asyncio.Event()
        self.nats_url = ""
        self.nats_ca_file: str | None = None  # set when NATS requires TLS (ADR 0010)
        self.nats_monitor_url: str | None = None
        self.redis_url = ""

    # -- infrastructure ------------------------------------------------------------------------
    def start_infrastructure(self) -> None:
        layout = self.home.layout
        settings = self.home.settings
        tighten_tree(layout.root)  # a home created before modes were private
        self.home.write_accounts()
        if settings.nats_url:
            self.nats_url = settings.nats_url
            self.out(f"using NATS at {self.nats_url}")
        else:
            # Where desktops are told to connect (ADR 0010); our own processes dial a local URL.
            where = listen.plan(settings)
            port = where.port or pick_port(DEFAULT_NATS_PORT, where.local_host)
            tls_block = None
            if where.tls:
                files, _ = self.home.ensure_tls([where.host])
                tls_block = render_nats_tls_block(files)
                self.nats_ca_file = str(files.ca_cert)
            # No HTTP monitoring port: its /connz would list every connection to any local user;
            # `openchat status` asks over the system account.
            if self.nats_cluster > 1:
                self._start_nats_cluster(where, tls_block)
                return self._start_redis()
            conf = natsconf.render_local_conf(
                where.host, port, None, layout.jetstream_dir, layout.accounts_conf, tls_block
            )
            write_atomic(layout.nats_conf, conf)
            nats = nats_process(
                layout.nats_conf,
                where.local_host,
                port,
                {
                    **{k: v for k, v in os.environ.items() if k != REDIS_PASSWORD_VAR},
                    **{k: v for k, v in self.home.secret_env.items() if k != REDIS_PASSWORD_VAR},
                },
                layout.logs_dir / "nats.log",
            )
            nats.preexec = _die_with_parent
            nats.start()
            self.servers.append(Server(nats))
            self.nats_url = where.local_url(port)
            self.nats_monitor_url = None
            self.out(f"started nats-server (JetStream) on {self.nats_url}")
            if where.host != "127.0.0.1":
                self.out(
                    f"desktops connect to {self.home.member_nats_url()} "
                    f"(listening on {where.host}:{port}{', TLS required' if where.tls else ''})"
                )
        self._start_redis()

    def _nats_env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if k != REDIS_PASSWORD_VAR},
            **{k: v for k, v in self.home.secret_env.items() if k != REDIS_PASSWORD_VAR},
        }

    def _start_nats_cluster(self, where: listen.NatsListen, tls_block: str | None) -> None:
        """``--nats-cluster N``: N nats-server nodes on this machine forming one cluster."""
        layout = self.home.layout
        nodes = cluster.plan_nodes(
            self.nats_cluster, layout.accounts_conf.parent, layout.jetstream_dir, where.local_host
        )
        procs: list[ManagedProcess] = []
        for node in nodes:
            conf = cluster.render_node_conf(node, nodes, where.host, layout.accounts_conf, tls_block)
            write_atomic(node.conf, conf)
            proc = ManagedProcess(
                node.name,
                [nats_server_binary(), "-c", str(node.conf)],
                where.local_host,
                node.port,
                self._nats_env(),
                layout.logs_dir / f"{node.name}.log",
            )
            proc.preexec = _die_with_parent
            proc.spawn()  # all at once: each waits for the others' routes
            procs.append(proc)
            self.nats_nodes[node.name] = where.local_url(node.port)
        for proc in procs:
            assert proc.proc is not None
            wait_for_port(proc.host, proc.port, 15.0, proc.proc)
            self.servers.append(Server(proc))
        self.nats_url = ",".join(self.nats_nodes.values())
        self.out(
            f"started a NATS cluster of {len(nodes)} nodes (JetStream): "
            + ", ".join(f"{n} {u}" for n, u in self.nats_nodes.items())
        )

    def _start_redis(self) -> None:
        layout = self.home.layout
        settings = self.home.settings
        if settings.redis_url:
            self.redis_url = settings.redis_url
            self.out(f"using Redis at {self.redis_url}")
        else:
            port = pick_port(DEFAULT_REDIS_PORT)
            redis = redis_process(
                layout.redis_dir,
                "127.0.0.1",
                port,
                layout.logs_dir / "redis.log",
                password=self.home.secret_env[REDIS_PASSWORD_VAR],
            )
            redis.preexec = _die_with_parent
            redis.start()
            self.servers.append(Server(redis))
            self.redis_url = f"redis://127.0.0.1:{port}/0"
            self.out(f"started redis-server on {self.redis_url} (password in {layout.secrets_env})")

    async def _watch_server(self, server: Server) -> None:
        """Reap nats-server/redis-server when it exits and start it again (same port, data and
        configuration), with the services' backoff."""
        proc = server.proc
        while not self.stopping.is_set():
            code = await proc.wait_exit(self.stopping)
            if code is None:
                return
            delay, server.restarts = _backoff(server.restarts, server.started_at)
            self.out(f"[supervisor] {proc.name} exited with code {code}; restarting in {delay:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                return
            # On the event loop's thread, as at the first start (PR_SET_PDEATHSIG is per thread).
            proc.spawn()
            server.started_at = time.monotonic()
            server.total_restarts += 1
            self.changed.set()
            try:
                await proc.wait_ready(15.0)
            except (RuntimeError, TimeoutError) as exc:
                self.out(f"[supervisor] {proc.name} did not come back: {exc}")
                if proc.running() and not isinstance(exc, RuntimeError):
                    proc.kill()  # hung: the loop reaps it and tries again
                continue
            self.out(f"[supervisor] {proc.name} is back (pid {proc.pid})")

    # -- children ------------------------------------------------------------------------------
    def plan_children(self) -> None:
        base_env = {
            **{k: v for k, v in os.environ.items() if k != REDIS_PASSWORD_VAR},
            **self.home.service_env(),
            "OPENCHAT_HOME": str(self.home.layout.root),
            "OPENCHAT_NATS_URL": self.nats_url,
            "OPENCHAT_REDIS_URL": self.redis_url,
            "OPENCHAT_HTTP_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            **({"OPENCHAT_NATS_CA_FILE": self.nats_ca_file} if self.nats_ca_file else {}),
        }
        if self.nats_cluster > 1:
            base_env["OPENCHAT_EVENTS_REPLICAS"] = str(min(3, self.nats_cluster))
        if self.replicas > 1:
            base_env.update(replica_env(base_env))
        for name in SERVICES:
            for i in range(1, self.replicas + 1):
                child = name if self.replicas == 1 else f"{name}-{i}"
                port = pick_port(DEFAULT_SERVICE_PORTS[name] + (i - 1) * 10)
                env = {**base_env, "OPENCHAT_HTTP_PORT": str(port)}
                if self.replicas > 1:
                    env["OPENCHAT_CONNECTOR_REPLICA_NAME"] = child
                    env["OPENCHAT_REPLICA_NAME"] = child
                url = f"http://127.0.0.1:{port}"
                self.children.append(
                    Child(child, [sys.executable, "-m", f"services.{name}"], env, f"{url}/healthz")
                )
        if self.demo:
            self.plan_demo(base_env)

    def plan_demo(self, base_env: dict[str, str]) -> None:
        """``--demo``: two devservers (a "Family" server and a "Harbor"-like one) and a demo member.
        Joining the member to both servers arrives with the chat-loop issue (#4)."""
        for name, seed, preferred in (("family", "family", 18081), ("harbor", "harbor", 18082)):
            port = pick_port(preferred)
            url = f"http://127.0.0.1:{port}"
            argv = [
                sys.executable, "-m", "services.devserver", "--host", "127.0.0.1", "--port", str(port),
                "--seed", seed, "--public-base-url", url, "--admin",
            ]  # fmt: skip
            if name == "family":
                argv += ["--name", "Family"]
            self.children.append(Child(f"devserver-{name}", argv, dict(base_env), f"{url}/healthz"))

    async def demo_join(self) -> None:
        """Join the demo member to both demo devservers (idempotent across restarts)."""
        from services.cli.chat import MemberClient
        from services.core.bus import CommandError
        from services.core.members import ConnectionFile

        cf = ConnectionFile.read(self.home.layout.connection_file(DEMO_MEMBER))
        cf = cf.model_copy(
            update={"nats_url": self.nats_url, "ca_pem": self.home.local_ca_pem(self.nats_url)}
        )
        targets = {"family": "srv_family", "harbor": "srv_harbor"}
        devservers = self.endpoints().devservers
        async with MemberClient.connect(cf) as client:
            for name, server_id in targets.items():
                try:
                    result = await client.join(devservers[name], server_id, local_id=server_id)
                    self.out(
                        f"[demo] {DEMO_MEMBER} joined {server_id} at {devservers[name]} as {result.server.user_uid}"
                    )
                except CommandError as exc:
                    if "already" in exc.body.message:
                        self.out(f"[demo] {DEMO_MEMBER} is already in {server_id}")
                    else:
                        self.out(f"[demo] could not join {server_id}: {exc.code}: {exc.body.message}")

    async def open_ui(self) -> None:
        """The desktop app as a child (not restarted); closing it stops the stack."""
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            self.out("[ui] no display: the desktop app is not opened (the stack keeps running)")
            return
        argv = [sys.executable, "-m", "ui"]
        members = sorted(self.home.layout.members_dir.glob("*.json"))
        chosen = (
            self.home.layout.connection_file(DEMO_MEMBER) if self.demo else (members[0] if members else None)
        )
        if chosen is not None and chosen.exists():
            argv += ["--connection", str(chosen)]
        # The desktop needs only its connection file (every byte comes over the bus, ADR 0010).
        self.ui_proc = await asyncio.create_subprocess_exec(*argv, preexec_fn=_die_with_parent)
        self.out(f"[ui] desktop app opened (pid {self.ui_proc.pid}); closing it stops the stack")

        async def stop_when_closed(proc: asyncio.subprocess.Process) -> None:
            await proc.wait()
            if not self.stopping.is_set():
                self.out("[ui] desktop app closed; stopping the stack")
                self.stopping.set()

        self._ui_task = asyncio.create_task(stop_when_closed(self.ui_proc))

    async def _pump(self, child: Child, stream: asyncio.StreamReader) -> None:
        prefix = f"[{child.name}] "
        while line := await stream.readline():
            self.out(prefix + line.decode(errors="replace").rstrip())

    async def _spawn(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # Ctrl-C reaches only the supervisor, which stops children in order
        )
        child.started_at = time.monotonic()
        assert child.proc.stdout is not None
        child.tasks.append(asyncio.create_task(self._pump(child, child.proc.stdout)))

    async def _watch(self, child: Child) -> None:
        """Keep the child running: restart with backoff when it exits on its own."""
        while not self.stopping.is_set():
            await self._spawn(child)
            self.changed.set()
            assert child.proc is not None
            code = await child.proc.wait()
            if self.stopping.is_set():
                return
            delay, child.restarts = _backoff(child.restarts, child.started_at)
            child.total_restarts += 1
            self.out(f"[supervisor] {child.name} exited with code {code}; restarting in {delay:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    # -- health --------------------------------------------------------------------------------
    async def child_health(self, client: httpx.AsyncClient) -> dict[str, bool]:
        async def one(child: Child) -> bool:
            try:
                resp = await client.get(child.health_url, timeout=1.0)
            except httpx.HTTPError:
                return False
            return resp.status_code == 200

        results = await asyncio.gather(*(one(c) for c in self.children))
        return {c.name: ok for c, ok in zip(self.children, results, strict=True)}

    async def wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        last = ""
        async with httpx.AsyncClient() as client:
            while not self.stopping.is_set():
                health = await self.child_health(client)
                ready = [n for n, ok in health.items() if ok]
                line = f"waiting for services: {len(ready)}/{len(health)} healthy ({', '.join(n for n, ok in health.items() if not ok) or 'none left'})"
                if line != last:
                    self.out(line)
                    last = line
                if all(health.values()):
                    return True
                if time.monotonic() > deadline:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 0.25)
        return False

    def endpoints(self) -> Endpoints:
        managed = {m.proc.name: m.proc.pid for m in self.servers if m.proc.pid is not None}
        managed.update({c.name: c.proc.pid for c in self.children if c.proc is not None})
        restarts = {m.proc.name: m.total_restarts for m in self.servers}
        restarts.update({c.name: c.total_restarts for c in self.children})
        return Endpoints(
            supervisor_pid=os.getpid(),
            started_at=_now(),
            nats_url=self.nats_url,
            nats_monitor_url=self.nats_monitor_url,
            redis_url=self.redis_url,
            services={
                c.name: c.health_url.removesuffix("/healthz")
                for c in self.children
                if service_of(c.name) is not None
            },
            nats_nodes=dict(self.nats_nodes),
            devservers={
                c.name.removeprefix("devserver-"): c.health_url.removesuffix("/healthz")
                for c in self.children
                if c.name.startswith("devserver-")
            },
            managed=managed,
            restarts=restarts,
        )

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self, ready_timeout: float = 60.0) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        watchers: list[asyncio.Task[None]] = []
        try:
            # On this thread: PR_SET_PDEATHSIG fires when the *thread* that forked a child exits.
            self.start_infrastructure()
            if self.nats_nodes:
                await cluster.wait_jetstream(
                    self.nats_url,
                    "svc",
                    self.home.secret_env[natsconf.SERVICE_PASSWORD_VAR],
                    ca_pem=self.home.local_ca_pem(self.nats_url),
                )
                self.out(f"NATS cluster ready: JetStream has a leader ({len(self.nats_nodes)} nodes)")
            refresh_local_connection_files(self.home, self.nats_url, self.out)
            self.plan_children()
            watchers += [
                asyncio.create_task(self._watch_server(m), name=f"watch-{m.proc.name}") for m in self.servers
            ]
            watchers += [asyncio.create_task(self._watch(c), name=f"watch-{c.name}") for c in self.children]
            healthy = await self.wait_healthy(ready_timeout)
            self.home.write_endpoints(self.endpoints())
            if self.stopping.is_set():
                return 0
            if healthy:
                from services.cli.status import render_table, stack_status

                rows = await stack_status(self.home)
                self.out(render_table(rows))
                if self.demo:
                    await self.demo_join()
                self.out("stack is up — Ctrl-C stops it")
                if self.with_ui:
                    await self.open_ui()
            else:
                self.out(
                    f"[supervisor] not every service became healthy within {ready_timeout:g} s; still trying"
                )
            while not self.stopping.is_set():
                # Children are restarted by their watchers; keep the endpoints' pids current.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 2.0)
                self.changed.clear()
                if not self.stopping.is_set():
                    self.home.write_endpoints(self.endpoints())
            return 0
        finally:
            await self.shutdown()
            # Watchers return once their child has exited (shutdown stopped them all).
            await asyncio.gather(*watchers, return_exceptions=True)

    async def shutdown(self) -> None:
        self.stopping.set()
        self.changed.set()
        self.out("[supervisor] stopping")
        procs = [c.proc for c in self.children if c.proc is not None and c.proc.returncode is None]
        if self.ui_proc is not None and self.ui_proc.returncode is None:
            procs.append(self.ui_proc)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for child in self.children:
            for task in child.tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 2)
        for server in reversed(self.servers):
            server.proc.stop()
        with contextlib.suppress(FileNotFoundError):
            self.home.layout.endpoints.unlink()
        self.out("[supervisor] stopped; no process left")


def run_up(demo: bool, with_ui: bool = False, *, nats_cluster: int = 1, replicas: int = 1) -> int:
    private_umask()  # inherited by every child: the stack's files are 0600, its directories 0700
    home = Home.load()
    if demo:
        from services.core.members import MemberExists

        with contextlib.suppress(MemberExists):
            from services.cli.members import add_member

            add_member(home, DEMO_MEMBER, apply=False, out=print)
    supervisor = Supervisor(
        home,
        demo,
        out=lambda line: print(line, flush=True),
        with_ui=with_ui,
        nats_cluster=nats_cluster,
        replicas=replicas,
    )
    return asyncio.run(supervisor.run())
