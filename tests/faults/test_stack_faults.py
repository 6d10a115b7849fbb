"""Fault suite on the whole stack (issue 10): ``openchat up --demo`` as real processes.

One stack per module (it takes ~15 s to start on this machine); each test leaves it healthy for
the next. Figures (seconds to recover, RSS) come from ``bench/bench_faults.py``; these tests
assert the outcomes: nothing lost, nothing duplicated, every process back, files private.
"""

from __future__ import annotations

import asyncio
import signal
import stat
import time
from collections.abc import Iterator

import psutil
import pytest
import redis.asyncio as aioredis

from services.cli.home import REDIS_PASSWORD_VAR
from testkit.livestack import (
    LiveStack,
    Poster,
    Tail,
    history_ids,
    judge,
    kill,
    member,
    settled_history,
    wait_exact,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    s = LiveStack(tmp_path_factory.mktemp("faults"), umask=0o022)
    try:
        yield s.up()
    finally:
        s.stop()


def _old_process_reaped(pid: int) -> bool:
    """The killed process is gone for good: no zombie left behind by the supervisor."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)  # else: the pid was reused
    except psutil.NoSuchProcess:
        return True


# -- defect 3: supervision -------------------------------------------------------------------------
@pytest.mark.parametrize("component", ["nats", "redis", "state", "connector"])
async def test_a_killed_component_is_restarted_reaped_and_counted(stack: LiveStack, component: str) -> None:
    before = stack.endpoints()
    old = before.managed[component]
    kill(old)
    await stack.wait_healthy(timeout=60, changed={component: old})
    after = stack.endpoints()
    assert after.restarts[component] == before.restarts.get(component, 0) + 1
    assert _old_process_reaped(old)
    rows = {r.component: r for r in await stack.status()}
    row = rows[component]
    assert row.healthy and row.pid == after.managed[component] and row.restarts == after.restarts[component]
    assert f"pid {row.pid}" in row.detail


# -- defect 4: secrets and file modes --------------------------------------------------------------
async def test_redis_requires_the_generated_password(stack: LiveStack) -> None:
    url = stack.endpoints().redis_url
    anonymous = aioredis.Redis.from_url(url)
    with pytest.raises(Exception, match=r"(?i)auth"):
        await anonymous.get("x")
    await anonymous.aclose()
    password = stack.home.secret_env[REDIS_PASSWORD_VAR]
    authed = aioredis.Redis.from_url(url, password=password)
    assert await authed.ping()
    await authed.aclose()
    # The password is on no command line.
    for pid in stack.endpoints().managed.values():
        assert password not in " ".join(psutil.Process(pid).cmdline())
    assert password not in (stack.home.layout.run_dir / "endpoints.json").read_text()


def test_nats_has_no_monitoring_port(stack: LiveStack) -> None:
    ep = stack.endpoints()
    assert ep.nats_monitor_url is None
    nats = psutil.Process(ep.managed["nats"])
    listening = {c.laddr.port for c in nats.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert listening == {int(ep.nats_url.rsplit(":", 1)[1])}, listening
    assert all(c.laddr.ip == "127.0.0.1" for c in nats.net_connections(kind="inet") if c.status == "LISTEN")


async def test_every_file_under_home_is_private_despite_umask_022(stack: LiveStack) -> None:
    # Something in every store first: messages (Redis AOF, JetStream), a restart (logs).
    async with member(stack) as client:
        baseline = await settled_history(client)
        poster = Poster(stack.family_url)
        await poster.run(5, 20.0, "modes")
        await wait_exact(client, baseline, poster.ids, 60)
    root = stack.home.layout.root
    assert (root / "redis" / "appendonly.aof").exists()
    loose: list[str] = []
    seen_files = 0
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            if mode != 0o700:
                loose.append(f"{oct(mode)} {path}")
        else:
            seen_files += 1
            if mode & 0o077:
                loose.append(f"{oct(mode)} {path}")
    assert seen_files > 10
    assert loose == []


# -- fault suite: NATS and Redis mid-stream ----------------------------------------------------------
async def _stream_with_fault(stack: LiveStack, fault: str, count: int = 120, rate: float = 12.0) -> None:
    async with member(stack) as client:
        tail = Tail(client)
        await tail.start()
        baseline = await settled_history(client)
        since = (await client.snapshot(messages_per_channel=0)).seq
        poster = Poster(stack.family_url, milestone=count // 3)
        posting = asyncio.create_task(poster.run(count, rate, fault))
        await asyncio.wait_for(poster.reached.wait(), 60)
        if fault == "nats-10s":
            # nats-server dies and stays down for 10 s: the supervisor is frozen meanwhile (as
            # if the restart took that long), then restarts it on the same port and store.
            supervisor = stack.proc.pid
            kill(supervisor, signal.SIGSTOP)
            try:
                kill(stack.pid("nats"))
                await asyncio.sleep(10)  # the outage itself
            finally:
                kill(supervisor, signal.SIGCONT)
        elif fault == "redis-kill":
            kill(stack.pid("redis"))
        elif fault == "redis-flushall":
            r = aioredis.Redis.from_url(
                stack.endpoints().redis_url, password=stack.home.secret_env[REDIS_PASSWORD_VAR]
            )
            assert await r.flushall()
            await r.aclose()
        await posting
        await stack.wait_healthy(timeout=60)
        await wait_exact(client, baseline, poster.ids, timeout=90)
        history = await history_ids(client)
        assert history is not None and judge(poster.ids, history).exact
        # The member's event stream: every posted message exactly once and in order, live or by
        # sync after the gap (the stream itself holds no duplicate).
        synced = await tail.synced(since)
        assert judge(poster.keys, [m for _, m in synced]).exact, judge(poster.keys, [m for _, m in synced])
        assert tail.duplicate_deliveries == 0
        live = [m for _, m in sorted(tail.live)]
        verdict = judge(poster.keys, live)
        assert verdict.duplicated == 0 and verdict.out_of_order == 0
        assert {e for e in tail.live if e[0] > since} <= set(synced)  # live = stored, same seq


async def test_nats_down_10s_mid_stream_loses_and_doubles_nothing(stack: LiveStack) -> None:
    await _stream_with_fault(stack, "nats-10s")
    assert stack.endpoints().restarts["nats"] >= 1


async def test_redis_killed_mid_stream_view_exact_again(stack: LiveStack) -> None:
    await _stream_with_fault(stack, "redis-kill")


async def test_redis_flushall_mid_stream_view_exact_again(stack: LiveStack) -> None:
    await _stream_with_fault(stack, "redis-flushall")


# -- soak (short in CI; bench/bench_faults.py --soak 3600 for the hour) -----------------------------
async def test_short_soak_at_50_msgs_per_second(stack: LiveStack) -> None:
    async with member(stack) as client:
        tail = Tail(client)
        await tail.start()
        baseline = await settled_history(client)
        restarts = dict(stack.endpoints().restarts)
        poster = Poster(stack.family_url)
        await poster.run(500, 50.0, "soak")
        await wait_exact(client, baseline, poster.ids, timeout=90)
        deadline = time.monotonic() + 30
        while len({m for _, m in tail.live} & set(poster.keys)) < len(set(poster.keys)):
            assert time.monotonic() < deadline, judge(poster.keys, [m for _, m in sorted(tail.live)])
            await asyncio.sleep(0.1)
        assert judge(poster.keys, [m for _, m in sorted(tail.live)]).exact
        assert tail.duplicate_deliveries == 0
    assert stack.endpoints().restarts == restarts  # no crash under load
    assert all(psutil.pid_exists(pid) for pid in stack.endpoints().managed.values())
