"""Voice through the home stack: mouth-to-ear latency through the bridge, and media-service CPU.

    python -m bench.bench_voice                 # latency (10 chirps per path) + CPU with 1, 4, 8 peers
    python -m bench.bench_voice --quick         # 4 chirps, CPU with 0, 1 and 4 peers

Real processes on 127.0.0.1: a private nats-server (JetStream, no auth), the devserver (public
seed, in this process's thread), the media service (``python -m services.media``).  The member's
client is an aiortc peer connection in this process negotiated with the media service over NATS
exactly as ``openchat voice`` does (``bridge_offer`` / ``join`` commands); the remote participants
are aiortc peers of the p2p mesh in this process.  The member's joined-server record is written to
the registry as the connector would write it (the connector itself is not needed for voice).

Latency: a sender emits a 60 ms chirp (500 → 4,000 Hz) every 0.6 s, starting on a frame boundary;
the time the frame leaves the sender's track is the "mouth"; the receiver records each decoded
frame with its arrival time; cross-correlation finds the chirp and "ear" = arrival of its frame
+ its offset in the frame.  Baseline: two aiortc peers talking directly through the same backend.
Bridge added = path - baseline (medians).  CPU: the media process's user+system time over
``--cpu-seconds`` (6 s) with N remote peers each sending a tone (each peer connected to the member
only, its own full-rate track) and the member sending a tone, as % of one core; the bridge alone
(N = 0) is measured in the same run, and the 20 ms frames per second that actually flowed during
each window are printed beside it (a loaded machine delivers fewer).

    python -m bench.bench_voice --chirps 0 --peers 1,4 --cpu-seconds 60   # e.g. under py-spy
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from services.core.audio import mono_frames
from services.core.bus import Bus, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.bus import Empty
from services.core.contracts.chat import ServerRecord
from services.core.contracts.media import (
    SERVICE,
    BridgeAnswer,
    BridgeOfferArgs,
    VoiceJoinArgs,
    VoiceStatus,
)
from services.core.paths import HomeLayout
from services.core.procs import ManagedProcess, free_port, nats_server_binary
from services.core.servers import ServerStore
from services.devserver.runner import arunning_devserver
from testkit.voice_peers import MeshPeer, ToneTrack

RATE = 48_000
FRAME = 960
MEMBER = "alice"
UID = "uid_bench_alice"
CHANNEL = "vc_general"


def chirp() -> np.ndarray[Any, np.dtype[np.float64]]:
    n = int(RATE * 0.06)
    t = np.arange(n) / RATE
    f0, f1 = 500.0, 4000.0
    out: np.ndarray[Any, np.dtype[np.float64]] = np.sin(
        2 * np.pi * (f0 * t + (f1 - f0) / (2 * t[-1]) * t**2)
    ) * np.hanning(n)
    return out


CHIRP = chirp()


class ChirpTrack(MediaStreamTrack):
    """Low noise, and a chirp every ``period`` s starting on a frame boundary; logs mouth times."""

    kind = "audio"

    def __init__(self, period: float = 0.6) -> None:
        super().__init__()
        self.period_frames = int(period * RATE / FRAME)
        self.mouth: list[float] = []
        self._n = 0
        self._t0: float | None = None
        self._rng = np.random.default_rng(1)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        delay = self._t0 + self._n * FRAME / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        data = self._rng.normal(0, 30, FRAME)  # a low noise floor (int16 units)
        k = self._n % self.period_frames
        if self._n >= self.period_frames and k * FRAME < len(CHIRP):
            if k == 0:
                self.mouth.append(time.monotonic())  # the chirp starts on this frame's first sample
            segment = CHIRP[k * FRAME : (k + 1) * FRAME] * 12000
            data[: len(segment)] += segment
        samples = np.clip(data, -32768, 32767)
        frame = AudioFrame.from_ndarray(samples.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._n * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self._n += 1
        return frame


class Ear:
    """Decoded frames with their arrival times."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, np.ndarray[Any, np.dtype[np.int16]]]] = []

    async def consume(self, track: MediaStreamTrack) -> None:
        async for samples in mono_frames(track):
            now = time.monotonic()
            self.frames.append((now, samples))

    def ear_times(self, since: float) -> list[float]:
        frames = [(t, s) for t, s in self.frames if t >= since]
        if not frames:
            return []
        data = np.concatenate([s for _, s in frames]).astype(np.float64)
        arrival = np.repeat([t for t, _ in frames], [len(s) for _, s in frames])
        offsets = np.concatenate([np.arange(len(s)) for _, s in frames]) / RATE
        corr = np.abs(np.correlate(data, CHIRP, mode="valid"))
        threshold = corr.max() * 0.5 if len(corr) else 0
        out: list[float] = []
        i = 0
        while i < len(corr):
            if corr[i] >= threshold:
                j = i + int(np.argmax(corr[i : i + len(CHIRP)]))
                out.append(float(arrival[j] + offsets[j]))
                i = j + len(CHIRP) * 4
            else:
                i += 1
        return out


def match(mouth: list[float], ears: list[float]) -> list[float]:
    """Latency of every chirp heard: the first ear time after each mouth time (within 1 s)."""
    out: list[float] = []
    for m in mouth:
        later = [e - m for e in ears if 0 <= e - m < 1.0]
        if later:
            out.append(min(later))
    return out


@contextlib.contextmanager
def processes(tmp: Path) -> Iterator[tuple[str, ManagedProcess]]:
    port = free_port()
    conf = tmp / "nats.conf"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\nmax_payload: 8MB\njetstream {{ store_dir: "{tmp / "js"}" }}\n'
    )
    nats_proc = ManagedProcess(
        "nats", [nats_server_binary(), "-c", str(conf)], "127.0.0.1", port, None, tmp / "nats.log"
    )
    nats_proc.start()
    url = f"nats://127.0.0.1:{port}"
    http = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "OPENCHAT_HOME": str(tmp / "home"),
        "OPENCHAT_NATS_URL": url,
        "OPENCHAT_HTTP_PORT": str(http),
        "OPENCHAT_LOG_LEVEL": "WARNING",
        "OPENCHAT_MEDIA_CLIENT_GRACE_S": "600",
        "OPENCHAT_MEDIA_JITTER_PREFETCH_FRAMES": os.environ.get("OPENCHAT_MEDIA_JITTER_PREFETCH_FRAMES", "0"),
    }
    media = ManagedProcess(
        "media", [sys.executable, "-m", "services.media"], "127.0.0.1", http, env, tmp / "media.log"
    )
    try:
        media.start(30)
        yield url, media
    finally:
        media.stop()
        nats_proc.stop()


async def wait_for(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


class Member:
    """The member's client: one peer connection to the media service, negotiated over NATS."""

    def __init__(self, bus: Bus, track: MediaStreamTrack) -> None:
        self.bus = bus
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(track)
        self.ear = Ear()
        self._tasks: list[asyncio.Task[None]] = []

        @self.pc.on("track")
        def on_track(t: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self.ear.consume(t)))

    async def join(self, channel: str = CHANNEL) -> VoiceStatus:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await self.bus.request(
            subjects.command(MEMBER, SERVICE, "bridge_offer"),
            BridgeOfferArgs(client_id="bench", sdp=self.pc.localDescription.sdp),
            BridgeAnswer,
            timeout=30,
        )
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
        return await self.bus.request(
            subjects.command(MEMBER, SERVICE, "join"),
            VoiceJoinArgs(server_id="srv_harbor", channel_id=channel),
            VoiceStatus,
            timeout=60,
        )

    async def leave(self) -> None:
        await self.bus.request(subjects.command(MEMBER, SERVICE, "leave"), Empty(), VoiceStatus, timeout=30)
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


async def measure_latency(base: str, bus: Bus, chirps: int) -> dict[str, list[float]]:
    seconds = 1.2 + chirps * 0.6
    results: dict[str, list[float]] = {}

    # baseline: two aiortc peers directly through the backend
    p1, p2 = MeshPeer("uid_base_1", 0), MeshPeer("uid_base_2", 0)
    p1_chirp = ChirpTrack()
    p1.tone = p1_chirp  # type: ignore[assignment]
    await p1.join(base, "vc_party")
    await p2.join(base, "vc_party")  # the newcomer offers
    await wait_for(
        lambda: (
            p1.sig is not None
            and p1.sig.participant_id in p2.heard
            and p2.heard[p1.sig.participant_id].chunks
        ),
        20,
        "baseline audio",
    )
    start = time.monotonic()
    await asyncio.sleep(seconds)
    assert p1.sig is not None
    ear = Ear()
    ear.frames = p2.heard[p1.sig.participant_id].chunks
    results["baseline: peer → peer (direct, aiortc)"] = match(
        [m for m in p1_chirp.mouth if m >= start], ear.ear_times(start)
    )
    await p1.close()
    await p2.close()

    # member → peer and peer → member through the bridge
    mouth = ChirpTrack()
    member = Member(bus, mouth)
    peer = MeshPeer("uid_bench_peer", 0)
    peer_chirp = ChirpTrack()
    peer.tone = peer_chirp  # type: ignore[assignment]
    await peer.join(base, CHANNEL)
    await member.join()
    await wait_for(
        lambda: (
            peer.pid_of(UID) is not None
            and peer.heard.get(peer.pid_of(UID) or "") is not None
            and len(peer.heard[peer.pid_of(UID) or ""].chunks) > 10
        ),
        30,
        "bridge audio",
    )
    await wait_for(lambda: len(member.ear.frames) > 10, 30, "mix audio")
    start = time.monotonic()
    await asyncio.sleep(seconds)
    pid = peer.pid_of(UID) or ""
    ear = Ear()
    ear.frames = peer.heard[pid].chunks
    results["member → peer (client → bridge → mesh)"] = match(
        [m for m in mouth.mouth if m >= start], ear.ear_times(start)
    )
    results["peer → member (mesh → mixer → bridge → client)"] = match(
        [m for m in peer_chirp.mouth if m >= start], member.ear.ear_times(start)
    )
    await member.leave()
    await peer.close()
    return results


async def measure_cpu(
    base: str,
    bus: Bus,
    media: ManagedProcess,
    counts: list[int],
    window: float,
    rates: list[tuple[float, float, float]],
) -> list[tuple[int, float]]:
    proc = psutil.Process(media.pid)
    out: list[tuple[int, float]] = []
    idle0 = proc.cpu_times()
    await asyncio.sleep(3)
    idle1 = proc.cpu_times()
    out.append((-1, (idle1.user + idle1.system - idle0.user - idle0.system) / 3 * 100))
    for n in counts:
        # each peer talks to the member only (the peers' own mesh would load this process, not the
        # media service), with a full-rate stream of its own
        peers = [MeshPeer(f"uid_cpu_{i}", 300 + 40 * i, only_uids={UID}) for i in range(n)]
        for peer in peers:
            await peer.join(base, "vc_party")
        member = Member(bus, ToneTrack(660))
        await member.join("vc_party")

        def all_hear(peers: list[MeshPeer] = peers, member: Member = member) -> bool:
            return all(len(p.heard.get(p.pid_of(UID) or "", _Empty()).chunks) > 25 for p in peers) and (
                len(member.ear.frames) > 25
            )

        await wait_for(
            all_hear,
            60,
            f"{n} peers hearing the member",
        )

        def received(peers: list[MeshPeer] = peers, member: Member = member) -> tuple[int, int, int]:
            heard = sum(len(p.heard.get(p.pid_of(UID) or "", _Empty()).chunks) for p in peers)
            sent = sum(p.tone.sent_frames for p in peers)
            return heard, sent, len(member.ear.frames)

        heard0, sent0, ear0 = received()
        t0 = proc.cpu_times()
        w0 = time.monotonic()
        await asyncio.sleep(window)
        t1 = proc.cpu_times()
        elapsed = time.monotonic() - w0
        heard1, sent1, ear1 = received()
        out.append((n, (t1.user + t1.system - t0.user - t0.system) / elapsed * 100))
        # audio really flowed during the window: 20 ms frames per second, per peer and at the member
        rates.append(
            (
                (heard1 - heard0) / elapsed / max(n, 1),
                (sent1 - sent0) / elapsed / max(n, 1),
                (ear1 - ear0) / elapsed,
            )
        )
        await member.leave()
        for peer in peers:
            await peer.close()
    return out


class _Empty:
    chunks: list[Any] = []


async def main_async(args: argparse.Namespace) -> None:
    rates: list[tuple[float, float, float]] = []
    load_before = psutil.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-voice-") as tmpdir:
        tmp = Path(tmpdir)
        async with arunning_devserver(seed="public", admin=True) as devserver:
            base = devserver.base_url
            ServerStore(HomeLayout(tmp / "home").registry_db).add(
                MEMBER,
                ServerRecord(
                    server_id="srv_harbor",
                    base_url=base,
                    display_name="Harbor Guild",
                    icon_text="HG",
                    user_uid=UID,
                    device_id="desktop_bench",
                    joined_at=datetime.now(UTC),
                ),
            )
            with processes(tmp) as (url, media):
                bus = await Bus.connect(ConnectOptions(url=url, name="bench-voice"), first_attempts=3)
                try:
                    latency = await measure_latency(base, bus, args.chirps) if args.chirps else {}
                    cpu = await measure_cpu(base, bus, media, args.peers, args.cpu_seconds, rates)
                finally:
                    await bus.close()
    print(
        f"load average at the start: {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"at the end: {', '.join(f'{x:.2f}' for x in psutil.getloadavg())} ({os.cpu_count()} shared cores)"
    )
    print("\nmouth-to-ear latency (median, p90, n):")
    med: dict[str, float] = {}
    for name, values in latency.items():
        if not values:
            print(f"  {name}: no chirp matched")
            continue
        med[name] = statistics.median(values)
        p90 = sorted(values)[max(0, int(len(values) * 0.9) - 1)]
        print(f"  {name}: {med[name] * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms, n={len(values)}")
    base_name = next(iter(latency), "")
    if base_name in med:
        for name in list(latency)[1:]:
            if name in med:
                print(
                    f"  bridge adds ({name.split(' (')[0]}): {(med[name] - med[base_name]) * 1000:+.1f} ms (target ≤ 30 ms)"
                )
    print(f"\nmedia service CPU (% of one core, user+system over {args.cpu_seconds:g} s):")
    alone = next((pct for n, pct in cpu if n == 0), None)
    rows = [(n, pct) for n, pct in cpu if n >= 0]
    for (n, pct), (per_peer, sent, at_member) in zip(rows, rates, strict=False):
        flow = (
            f" [20 ms frames/s: each peer heard {per_peer:.1f} from the member and sent {sent:.1f}; "
            f"the member heard {at_member:.1f}]"
        )
        per = ""
        if n > 0 and alone is not None:
            # on a loaded machine the peers (in this process) may send fewer than 50 frames/s: the
            # cost scaled to 50 frames/s per participant is printed beside the raw figure (an upper
            # estimate: it scales the fixed per-connection costs too)
            scaled = (pct - alone) / n * (50.0 / sent) if sent > 1 else float("nan")
            per = (
                f"; per remote participant above the bridge alone: {(pct - alone) / n:.2f} % "
                f"(scaled to 50 frames/s sent: {scaled:.2f} %; target ≤ 5 %)"
            )
        print(f"  member's bridge + {n} remote participants: {pct:.1f} %{per}{flow}")
    idle = next((pct for n, pct in cpu if n < 0), None)
    if idle is not None:
        print(f"  idle, no call: {idle:.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--chirps", type=int, default=10)
    parser.add_argument("--peers", default="0,1,4,8")
    parser.add_argument("--cpu-seconds", type=float, default=6.0, help="CPU window per room size")
    args = parser.parse_args()
    if args.quick:
        args.chirps, args.peers = 4, "0,1,4"
    args.peers = [int(x) for x in str(args.peers).split(",") if x]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
