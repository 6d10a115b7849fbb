"""UI benchmark (not a test): a channel with 100k messages in the real Dear PyGui view.

Measures, in one run and with a baseline from the same run:
- start to populated: snapshot in hand -> view built -> first frame with the timeline filled;
- p99 frame time while scrolling (the wheel equivalent, through the virtualised window);
- p99 frame time while 100 msg/s arrive (following the bottom);
- channel switch time (100k <-> 50k messages, until the new rows are drawn);
- RSS of the process.
Baselines: frame time with an idle, nearly empty channel; RSS before the 100k messages exist.

Frame time is the CPU time of one ``app.frame()`` + ``render_dearpygui_frame()`` (vsync off,
no frame-cap sleep). Needs a display: starts its own Xvfb when ``DISPLAY`` is not set.

    python bench/bench_ui.py [--messages 100000] [--seconds 5] [--write]

In a voice call (issue 15): ``--voice`` measures the app in a call with 4 speaking peers against
the same app without a call in the same run, with where the time goes (the main thread's own CPU
per frame, the machine's busy share, the app's threads and the run's other processes);
``--probes`` adds the call without the app's audio threads and with a 1 ms GIL slice;
``--voice-panes`` measures only the voice panes' cost of a speaking-ring change (no stack).

    python bench/bench_ui.py --voice [--seconds 10] [--probes] [--full-mesh] [--peers-nice N]
    python bench/bench_ui.py --voice-panes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.core.contracts.chat import ChatMessage, MessageCreated, Snapshot  # noqa: E402
from testkit import fakes  # noqa: E402
from ui.renderer import flat_panes_choice, flat_panes_for, gl_renderer  # noqa: E402


def p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * 0.99))] if s else 0.0


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 1e6


def start_xvfb() -> subprocess.Popen[bytes] | None:
    if os.environ.get("DISPLAY"):
        return None
    if shutil.which("Xvfb") is None:
        raise SystemExit("no DISPLAY and no Xvfb")
    x11 = Path(tempfile.gettempdir()) / ".X11-unix"
    n = next(i for i in range(120, 220) if not (x11 / f"X{i}").exists())
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1480x920x24", "-nolisten", "tcp"])
    for _ in range(200):
        if (x11 / f"X{n}").exists():
            break
        time.sleep(0.05)
    os.environ["DISPLAY"] = f":{n}"
    return proc


def message_event(i: int, channel: str, base: datetime) -> dict[str, Any]:
    """A ``message.created`` envelope as the app receives it from the bus (JSON, not objects)."""
    prefix = "b" if channel == "ch_general" else "q"
    body = f"message {i}: the quick brown fox jumps over the lazy dog" + (
        " **bold** and `code`" if i % 10 == 0 else ""
    )
    return {
        "event_id": f"ev_{prefix}{i}",
        "server_id": "srv_testlab",
        "channel_id": channel,
        "type": "message.created",
        "payload": {
            "message": {
                "id": f"{prefix}{i:07d}",
                "server_id": "srv_testlab",
                "channel_id": channel,
                "author_uid": f"uid_bulk_{i % 13}",
                "body": body,
                "created_at": (base + timedelta(seconds=i)).isoformat(),
            }
        },
    }


def rss_detail() -> tuple[float, float]:
    """(anonymous, file-backed) resident MB: file-backed pages are shared libraries (Mesa, LLVM)."""
    st = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon", "RssFile")):
                k, v = line.split(":", 1)
                st[k] = float(v.split()[0]) / 1024
    return st.get("RssAnon", 0.0), st.get("RssFile", 0.0)


def open_viewport(dpg: Any) -> None:
    """The Dear PyGui context and a shown 1480x920 viewport, vsync off, a few frames drawn."""
    dpg.create_context()
    dpg.create_viewport(title="bench", width=1480, height=920)
    dpg.set_viewport_vsync(False)
    dpg.setup_dearpygui()
    dpg.show_viewport()
    for _ in range(5):
        dpg.render_dearpygui_frame()
    global RENDERER
    RENDERER = gl_renderer()


RENDERER: str | None = None  # the viewport's GL_RENDERER


def use_renderer(app: Any) -> None:
    """As the desktop does once its window is shown (ui/app.py run_app): the look follows the
    renderer — flat panes on a software renderer — unless OPENCHAT_UI_FLAT_PANES chose one."""
    app.view.use_renderer(RENDERER)


def look() -> str:
    flat = flat_panes_for(RENDERER)
    how = (
        "chosen by OPENCHAT_UI_FLAT_PANES"
        if flat_panes_choice() is not None
        else "the default for this renderer"
    )
    return f"panes {'flat' if flat else 'filled'} ({how}; GL_RENDERER {RENDERER!r})"


UI_MS: list[float] = []


def frame(app: Any, dpg: Any) -> float:
    """Total frame time (ms); the app's own share (model + widget updates) goes to ``UI_MS``."""
    t0 = time.perf_counter()
    app.frame()
    t1 = time.perf_counter()
    dpg.render_dearpygui_frame()
    UI_MS.append((t1 - t0) * 1000)
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--write", action="store_true", help="append the figures to bench/RESULTS.md")
    parser.add_argument(
        "--no-stack", action="store_true", help="skip the real-stack start (openchat up --demo, ~30 s)"
    )
    parser.add_argument("--stack-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--voice",
        action="store_true",
        help="only the call figures: p99 frame and CPU in a call with 4 speaking participants vs none",
    )
    parser.add_argument(
        "--peers-nice",
        type=int,
        default=0,
        help="niceness of the 4 remote participants' process (they stand for other members' "
        "machines; 0: they compete with the app for this machine's cores as equals)",
    )
    parser.add_argument(
        "--full-mesh",
        action="store_true",
        help="the 4 peers also connect with each other (by default only with the member: each "
        "stands for another machine, their mutual mesh is not this machine's load)",
    )
    parser.add_argument(
        "--probes",
        action="store_true",
        help="with --voice: two more phases in the call — the app's audio threads stopped (the "
        "bridge still runs), and a 1 ms GIL switch interval",
    )
    parser.add_argument(
        "--flat-panes",
        action="store_true",
        help="with --voice: the app with OPENCHAT_UI_FLAT_PANES=1 (panes without fills of their own, "
        "1 px dividers): an extra, labelled variant; the default look is the headline",
    )
    parser.add_argument(
        "--filled-panes",
        action="store_true",
        help="the app with OPENCHAT_UI_FLAT_PANES=0: the panes' own fills even on a software "
        "renderer (the look before issue 15's flat panes), for comparison",
    )
    parser.add_argument(
        "--voice-panes",
        action="store_true",
        help="only the voice panes' own cost (no stack, no audio): the main thread's CPU for a "
        "frame in which a speaking ring flips vs. a quiet frame, Call Stage shown, 5 in the call",
    )
    args = parser.parse_args()
    if args.flat_panes:
        os.environ["OPENCHAT_UI_FLAT_PANES"] = "1"
    if args.filled_panes:
        os.environ["OPENCHAT_UI_FLAT_PANES"] = "0"
    xvfb = start_xvfb()
    if args.voice_panes:
        try:
            figures = run_voice_panes()
        finally:
            if xvfb is not None:
                xvfb.terminate()
        print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
        return
    if args.voice:
        try:
            lines = voice_report(run_voice(args.seconds, args.peers_nice, args.full_mesh, args.probes), args)
        finally:
            if xvfb is not None:
                xvfb.terminate()
        print("\n".join(lines))
        if args.write:
            with (ROOT / "bench" / "RESULTS.md").open("a") as f:
                f.write("\n" + "\n".join(lines) + "\n")
        return
    try:
        if args.stack_only:  # the child process of the real-stack measurement: figures as JSON
            print("STACK " + json.dumps(run_stack()))
            return
        results = run(args.messages, args.seconds)
        if not args.no_stack:
            results.update(stack_figures())
    finally:
        if xvfb is not None:
            xvfb.terminate()
    lines = report(results, args)
    print("\n".join(lines))
    if args.write:
        path = ROOT / "bench" / "RESULTS.md"
        if not path.exists():
            path.write_text("# Benchmark results\n\nFigures recorded by the benchmarks in `bench/`.\n")
        with path.open("a") as f:
            f.write("\n" + "\n".join(lines) + "\n")


def run(n: int, seconds: float) -> dict[str, float]:
    import dearpygui.dearpygui as dpg

    from ui.app import App
    from ui.storage import Storage

    r: dict[str, float] = {}
    open_viewport(dpg)
    r["rss_dpg"] = rss_mb()
    tmp = Path(tempfile.mkdtemp())

    # baseline: a nearly empty workspace
    app0 = App(storage=Storage(tmp / "a"))
    app0.build_view()
    use_renderer(app0)
    app0.screen = "workspace"
    app0.model.apply_snapshot(fakes.snapshot())
    app0.model.set_stack_online(True)
    app0.view.layout(1480, 920)
    for _ in range(20):
        frame(app0, dpg)
    UI_MS.clear()
    r["idle_p99"] = p99([frame(app0, dpg) for _ in range(300)])
    r["idle_ui_p99"] = p99(UI_MS)
    app0.view.destroy()

    # start to populated: the snapshot as the app asks the state for it (ui.adapter.SNAPSHOT_MESSAGES
    # newest messages per channel), view built, first frame with the timeline filled
    from ui.adapter import SNAPSHOT_MESSAGES

    base = datetime.now(UTC) - timedelta(days=2)
    view = fakes.testlab_view()
    newest = {
        ch: [
            ChatMessage.model_validate(message_event(i, ch, base)["payload"]["message"])
            for i in range(total - SNAPSHOT_MESSAGES, total)
        ]
        for ch, total in (("ch_general", n), ("ch_qa", n // 2))
    }
    snap = Snapshot(seq=1, servers=[view.model_copy(update={"messages": newest}), fakes.harbor_view()])
    t0 = time.perf_counter()
    app = App(storage=Storage(tmp / "b"))
    app.build_view()
    use_renderer(app)
    app.screen = "workspace"
    app.model.apply_snapshot(snap)
    app.model.set_stack_online(True)
    app.view.layout(1480, 920)
    frames = 0
    while app.view.timeline.rendered_count == 0 or frames < 2:
        frame(app, dpg)
        frames += 1
    r["start_ms"] = (time.perf_counter() - t0) * 1000
    del snap, newest
    for _ in range(10):
        frame(app, dpg)
    r["rss_app_idle"] = rss_mb()

    # the rest of the two channels arrives as events (a catch-up burst: 1,000 per frame)
    t0 = time.perf_counter()
    seq = 10
    for ch, total in (("ch_qa", n // 2), ("ch_general", n)):
        for lo in range(0, total - SNAPSHOT_MESSAGES, 1000):
            for i in range(lo, min(lo + 1000, total - SNAPSHOT_MESSAGES)):
                seq += 1
                app.model.apply_event(seq, message_event(i, ch, base))
            frame(app, dpg)
    r["fill_s"] = time.perf_counter() - t0
    for _ in range(5):
        frame(app, dpg)
    tl = app.view.timeline
    sm = app.model.server
    assert sm is not None
    r["held"] = float(sum(len(log) for log in sm.logs.values()))
    r["spilled"] = float(sum(log.spilled for log in sm.logs.values()))
    r["packed_mb"] = sum(len(p) for log in sm.logs.values() for p in log.older + log.newer) / 1e6
    r["rss_filled"] = rss_mb()

    # scrolling up through the channel (240 px per frame: pages come back from the compact store)
    times = []
    UI_MS.clear()
    top = tl.order[-1]
    for _ in range(600):
        tl.scroll_by(-240)
        times.append(frame(app, dpg))
    r["scroll_p99"] = p99(times)
    r["scroll_mean"] = statistics.fmean(times)
    r["scroll_ui_p99"] = p99(UI_MS)
    msgs = app.model.messages()
    r["scroll_rows"] = float(int(top[1:]) - int(tl.order[0][1:]))
    del msgs

    # back to the present, then 100 msg/s arrive while following
    app.workspace.jump_to_present()
    for _ in range(5):
        frame(app, dpg)
    times = []
    UI_MS.clear()
    start = time.perf_counter()
    sent = 0
    live_base = datetime.now(UTC)
    while time.perf_counter() - start < seconds:
        due = int((time.perf_counter() - start) * 100)
        while sent < due:
            m = fakes.msg(
                "srv_testlab",
                "ch_general",
                f"live{sent}",
                "uid_live",
                f"live message {sent}",
                live_base + timedelta(milliseconds=sent),
            )
            seq += 1
            app.model.apply_event(
                seq, fakes.event("message.created", "srv_testlab", MessageCreated(message=m))
            )
            sent += 1
        times.append(frame(app, dpg))
        time.sleep(max(0.0, 1 / 60 - times[-1] / 1000))
    r["arrive_p99"] = p99(times)
    r["arrive_mean"] = statistics.fmean(times)
    r["arrive_ui_p99"] = p99(UI_MS)
    r["arrived"] = float(sent)
    r["arrive_rendered"] = float(tl.rendered_count)

    # channel switch (100k <-> 50k), until the new channel's rows are drawn
    sw: list[float] = []
    sw_app: list[float] = []
    for i in range(20):
        target = "ch_qa" if i % 2 == 0 else "ch_general"
        t0 = time.perf_counter()
        app.workspace.select_channel(target)
        app.frame()  # the new rows are built here
        t1 = time.perf_counter()
        dpg.render_dearpygui_frame()
        sw_app.append((t1 - t0) * 1000)
        sw.append((time.perf_counter() - t0) * 1000)
        frame(app, dpg)
    r["switch_p50"] = statistics.median(sw)
    r["switch_max"] = max(sw)
    r["switch_app_p50"] = statistics.median(sw_app)
    r["rss_end"] = rss_mb()
    r["rss_anon"], r["rss_file"] = rss_detail()
    app.view.destroy()
    dpg.destroy_context()
    return r


def ui_process_memory(home: Path) -> dict[str, float]:
    """The memory of ``python -m ui`` itself (exactly what a member runs) attached to the stack:
    sampled three times, 4 s apart, once the app is populated (it is within 0.1 s)."""
    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCHAT_")}
    env["OPENCHAT_UI_CONFIG_DIR"] = str(home.parent / "ui-process")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ui",
            "--connection",
            str(home / "members" / "demo.json"),
            "--max-seconds",
            "14",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ps = psutil.Process(proc.pid)
    samples = []
    try:
        for _ in range(3):
            time.sleep(4)  # a separate process: nothing to await but its steady state
            info = ps.memory_full_info()
            with open(f"/proc/{proc.pid}/status") as f:
                st = {
                    k: float(v.split()[0]) / 1024
                    for k, v in (x.split(":", 1) for x in f if x.startswith("Rss"))
                }
            samples.append((info.rss / 1e6, info.uss / 1e6, info.pss / 1e6, st["RssAnon"], st["RssFile"]))
    finally:
        proc.wait(30)
    rss, uss, pss, anon, file = samples[-1]
    return {
        "stack_rss": rss,
        "stack_uss": uss,
        "stack_pss": pss,
        "stack_rss_anon": anon,
        "stack_rss_file": file,
        "stack_rss_drift": samples[-1][0] - samples[0][0],
    }


def stack_figures() -> dict[str, float]:
    """The real app against a real warm stack, in a fresh process (its RSS is the app's own)."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__)), "--stack-only"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("STACK "))
    figures: dict[str, float] = json.loads(line[6:])
    return figures


def run_stack() -> dict[str, float]:
    """``openchat up --demo`` in a temp home (NATS, Redis, connector, state, notification, two
    devservers, the demo member joined), warmed by one snapshot; then the app as ``openchat ui``
    runs it: connection file → bus → snapshot → first populated frame; then 300 idle frames."""
    import dearpygui.dearpygui as dpg

    from testkit.demo_stack import READY, DemoStack
    from ui.app import App
    from ui.storage import Storage

    home = Path(tempfile.mkdtemp()) / "home"
    os.environ["OPENCHAT_SECRET_KEY_FILE"] = str(home.parent / "keys" / "secret.key")
    stack = DemoStack(home)
    r: dict[str, float] = {}
    try:
        stack.wait_for(READY, "demo joined srv_family", "demo joined srv_harbor")
        open_viewport(dpg)
        r["stack_rss_dpg"] = rss_mb()

        def populated(app: Any) -> bool:
            tl = app.view.timeline
            return bool(app.model.stack_online and app.model.snapshot_loaded and tl and tl.rendered_count)

        for attempt in ("warm", "measured"):  # the first start warms the stack's caches
            app = App(
                storage=Storage(home.parent / f"ui-{attempt}"),
                connection=home / "members" / "demo.json",
                os_notifications=False,
                watch_window=False,
            )
            app.build_view()
            use_renderer(app)
            t0 = time.perf_counter()
            app.start()
            deadline = t0 + 60
            while not populated(app):
                app.frame()
                dpg.render_dearpygui_frame()
                assert time.perf_counter() < deadline, "the app never populated"
            r[f"stack_start_{attempt}_ms"] = (time.perf_counter() - t0) * 1000
            if attempt == "warm":
                app.stop()
                app.view.destroy()
        times = [frame(app, dpg) for _ in range(300)]
        r["stack_idle_p99"] = p99(times)
        app.stop()
        r.update(ui_process_memory(home))
    finally:
        stack.stop()
    return r


def run_voice_panes(flips: int = 400) -> dict[str, float]:
    """The voice panes' own cost, without a stack or audio (robust to a busy machine: the main
    thread's CPU time, not wall time): srv_testlab's voice channel with the member and 4 others,
    its Call Stage shown; a frame after one participant's speaking flipped vs. a frame after
    nothing happened."""
    import dearpygui.dearpygui as dpg

    from services.core.contracts.media import VoiceParticipant, VoiceSpeaking, VoiceStatus
    from ui.app import App
    from ui.storage import Storage

    open_viewport(dpg)
    app = App(storage=Storage(Path(tempfile.mkdtemp())))
    app.build_view()
    use_renderer(app)
    app.screen = "workspace"
    app.model.apply_snapshot(fakes.snapshot())
    app.model.set_stack_online(True)
    app.view.layout(1480, 920)
    sid, ch = "srv_testlab", "ch_huddle"
    app.workspace.select_server(sid)
    others = [
        VoiceParticipant(participant_id=f"p{i}", user_uid=f"uid_p{i}", display_name=f"Peer {i}")
        for i in range(4)
    ]
    v = app.voice
    v.state.click(sid, ch)
    v.on_status(
        sid,
        VoiceStatus(state="active", server_id=sid, channel_id=ch, participant_id="me", participants=others),
    )
    for _ in range(30):
        frame(app, dpg)
    assert dpg.is_item_shown("oc_stage"), "the Call Stage is not shown"

    def cpu_of_frame() -> float:
        c0 = time.thread_time()
        app.frame()
        spent = (time.thread_time() - c0) * 1000
        dpg.render_dearpygui_frame()
        return spent

    quiet, flip = [], []
    for i in range(flips):
        quiet.append(cpu_of_frame())
        sp = VoiceSpeaking(channel_id=ch, participant_id=f"p{i % 4}", speaking=(i // 4) % 2 == 0)
        v.state.apply_speaking(sid, sp)
        flip.append(cpu_of_frame())
    app.view.destroy()
    dpg.destroy_context()
    return {
        "quiet_mean_ms": statistics.fmean(quiet),
        "quiet_p99_ms": p99(quiet),
        "flip_mean_ms": statistics.fmean(flip),
        "flip_p99_ms": p99(flip),
        "flip_median_ms": statistics.median(flip),
        "quiet_median_ms": statistics.median(quiet),
    }


THREADS: dict[str, dict[str, float]] = {}  # per measured phase: thread group → % of one core


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of every thread of this process, by native id, with a group name (Python
    threads by their ``threading`` name without the counter, native ones by their OS name)."""
    import re
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for tid_s in os.listdir("/proc/self/task"):
        tid = int(tid_s)
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = names.get(tid, comm)
        name = "main" if tid == os.getpid() else re.sub(r"[-_ ]?\d+( \(.*\))?$", "", name)
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


PROCS: dict[str, dict[str, float]] = {}  # per measured phase: the bench's child processes → % of a core


def tree_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of each process the bench started (the stack's services, the peers, Xvfb,
    PulseAudio), by pid, named by what runs in it."""
    import psutil

    out: dict[int, tuple[str, float]] = {}
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = child.cmdline()
            t = child.cpu_times()
        except psutil.Error:
            continue
        mod = next((cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "-m"), "")
        name = mod.split(".")[-1] if mod else Path(cmd[0]).name if cmd else child.name()
        if mod == "services.devserver" or "devserver" in " ".join(cmd[:4]):
            name = "devserver"
        out[child.pid] = (name, t.user + t.system)
    return out


def run_voice(
    seconds: float, peers_nice: int = 0, full_mesh: bool = False, probes: bool = False
) -> dict[str, float]:
    """The desktop in a call (issue 15): ``openchat up --demo``, a private PulseAudio (null sinks,
    a tone played into the microphone), 4 mesh peers speaking in another process; the same app
    measured for ``seconds`` on a text channel without a call, then on the Call Stage in the call.
    Frames paced at the app's 60 fps cap, as ``openchat ui`` runs; CPU = the whole app process
    (render, bus thread, WebRTC bridge, capture/processing/playback threads) per wall second."""
    import dearpygui.dearpygui as dpg
    import psutil

    from testkit.demo_stack import READY, DemoStack
    from tests.e2e.pulse import Pulse
    from ui.app import App
    from ui.storage import Storage

    tmp = Path(tempfile.mkdtemp())
    pulse = Pulse(tmp / "pulse")
    os.environ["PULSE_SERVER"] = pulse.env["PULSE_SERVER"]
    home = tmp / "home"
    os.environ["OPENCHAT_SECRET_KEY_FILE"] = str(tmp / "keys" / "secret.key")
    stack = DemoStack(home)
    proc = psutil.Process()
    r: dict[str, float] = {}
    peers: subprocess.Popen[str] | None = None
    tone = pulse.play_tone(660, seconds=seconds * 3 + 60)

    def measure(app: Any, tag: str) -> None:
        times: list[float] = []
        main_cpu: list[float] = []
        UI_MS.clear()
        threads0, sys0, procs0 = thread_cpu(), psutil.cpu_times(), tree_cpu()
        cpu0, t0 = proc.cpu_times(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            f0, c0 = time.perf_counter(), time.thread_time()
            times.append(frame(app, dpg))
            main_cpu.append((time.thread_time() - c0) * 1000)
            spent = time.perf_counter() - f0
            if spent < 1 / 60:
                time.sleep(1 / 60 - spent)
        cpu1, wall = proc.cpu_times(), time.monotonic() - t0
        threads1, sys1, procs1 = thread_cpu(), psutil.cpu_times(), tree_cpu()
        grouped: dict[str, float] = {}
        for pid, (name, secs) in procs1.items():
            grouped[name] = grouped.get(name, 0.0) + secs - procs0.get(pid, (name, secs))[1]
        PROCS[tag] = {k: 100 * v / wall for k, v in sorted(grouped.items(), key=lambda kv: -kv[1])}
        r[f"{tag}_main_cpu_p99"] = p99(main_cpu)
        r[f"{tag}_main_cpu_mean"] = statistics.fmean(main_cpu)
        busy = (sum(sys1) - sys1.idle - sys1.iowait) - (sum(sys0) - sys0.idle - sys0.iowait)
        r[f"{tag}_machine_busy"] = 100 * busy / wall  # % of one core, all processes
        per: dict[str, float] = {}
        for tid, (name, ticks) in threads1.items():
            per[name] = per.get(name, 0.0) + ticks - threads0.get(tid, (name, 0.0))[1]
        THREADS[tag] = {k: 100 * v / wall for k, v in sorted(per.items(), key=lambda kv: -kv[1])}
        r[f"{tag}_p99"] = p99(times)
        r[f"{tag}_mean"] = statistics.fmean(times)
        r[f"{tag}_cpu"] = 100 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / wall
        r[f"{tag}_frames"] = len(times)
        r[f"{tag}_ui_p99"] = p99(UI_MS)
        # the software renderer's threads (Mesa llvmpipe) and the whole app, CPU ms per drawn frame:
        # robust to the machine's load, unlike the frame times
        lp = sum(v for k, v in THREADS[tag].items() if k.startswith("llvmpipe"))
        r[f"{tag}_llvmpipe_ms"] = lp / 100 * wall * 1000 / max(1, len(times))
        r[f"{tag}_cpu_ms"] = r[f"{tag}_cpu"] / 100 * wall * 1000 / max(1, len(times))

    try:
        stack.wait_for(READY, "demo joined srv_family", "demo joined srv_harbor")
        open_viewport(dpg)
        app = App(
            storage=Storage(tmp / "ui"),
            connection=home / "members" / "demo.json",
            os_notifications=False,
            watch_window=False,
        )
        app.build_view()
        use_renderer(app)
        app.start()
        deadline = time.monotonic() + 90
        while not (app.model.stack_online and "srv_harbor" in app.model.servers and app.account.settled):
            frame(app, dpg)
            assert time.monotonic() < deadline, "the app never attached"
        if app.account.step is not None:
            app.account.skip()
        for _ in range(30):
            if app.view.overlay_open():
                app.workspace.answer_consent(False)
            frame(app, dpg)
        app.workspace.select_server("srv_harbor")
        sm = app.model.servers["srv_harbor"]
        ch = next(c.id for g in sm.groups for c in g.channels if c.type == "voice")
        for _ in range(30):
            frame(app, dpg)
        measure(app, "idle")
        base = json.loads((home / "run" / "endpoints.json").read_text())["devservers"]["harbor"]
        peers = subprocess.Popen(
            [sys.executable, "-m", "bench.voice_peers_proc", base, ch, "4"]
            + ([] if full_mesh else [sm.record.user_uid]),
            cwd=ROOT,
            preexec_fn=(lambda: os.nice(peers_nice)) if peers_nice else None,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert peers.stdout is not None and peers.stdout.readline().strip() == "JOINED"
        for _ in range(60):
            frame(app, dpg)
        measure(app, "peers")  # the machine's load of the call without the app in it
        app.voice.click("srv_harbor", ch)
        deadline = time.monotonic() + 90
        v = app.voice.state
        while not (
            v.state == "active"
            and len(v.status.participants) == 4
            and sum(p.speaking for p in v.participants("srv_harbor", ch, "", "me")) >= 5
        ):
            frame(app, dpg)
            assert time.monotonic() < deadline, "the call never had 4 speaking participants"
        for _ in range(60):
            frame(app, dpg)
        captured0, played0 = app.voice.engine.captured, app.voice.engine.played
        version0, rings0 = v.version, v.rings
        measure(app, "call")
        r["call_speaking_end"] = float(sum(p.speaking for p in v.participants("srv_harbor", ch, "", "me")))
        r["call_played"] = float(app.voice.engine.played - played0)
        r["call_versions"] = float(v.version - version0)
        r["call_rings"] = float(v.rings - rings0)
        r["call_captured"] = float(app.voice.engine.captured - captured0)
        if probes:  # what would help: the same call without the app's audio threads; a 1 ms GIL slice
            v0 = app.voice
            bridge = v0.bridge
            v0.engine.stop_call()
            measure(app, "probe_noaudio")
            if bridge is not None:
                v0.engine.start_call(bridge.mic_sink)
            for _ in range(30):
                frame(app, dpg)
            old_si = sys.getswitchinterval()
            sys.setswitchinterval(0.001)
            try:
                measure(app, "probe_si1ms")
            finally:
                sys.setswitchinterval(old_si)
        app.stop()
    finally:
        if peers is not None and peers.stdin is not None:
            peers.stdin.close()
            peers.wait(15)
        stack.stop()
        tone.terminate()
        pulse.stop()
    return r


def voice_report(r: dict[str, float], args: argparse.Namespace) -> list[str]:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cores = 100 * (os.cpu_count() or 1)

    def row(label: str, cell: Any, target: str = "—") -> str:
        return f"| {label} | {cell('call')} | {target} | {cell('peers')} | {cell('idle')} |"

    def threads(tag: str) -> str:
        return ", ".join(f"{k} {v:.0f}" for k, v in THREADS.get(tag, {}).items() if v >= 0.5)

    def procs(tag: str) -> str:
        return ", ".join(f"{k} {v:.0f}" for k, v in PROCS.get(tag, {}).items() if v >= 0.5) or "—"

    return [
        f"## UI in a voice call (Dear PyGui) — {when}",
        "",
        f"`python bench/bench_ui.py --voice --seconds {args.seconds:g} --peers-nice {args.peers_nice}"
        f"{' --full-mesh' if args.full_mesh else ''}{' --flat-panes' if args.flat_panes else ''}{' --filled-panes' if args.filled_panes else ''}` on "
        f"{platform.machine()} / {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the end; "
        "the machine is shared), Xvfb 1480x920 with Mesa's software renderer (llvmpipe), vsync off, frames "
        "paced at the app's 60 fps cap; `openchat up --demo`, a private PulseAudio (null sinks, a tone "
        "played into the microphone), 4 aiortc mesh peers speaking in another process (at nice "
        f"{args.peers_nice}, {'in a full mesh' if args.full_mesh else 'connected only with the member'}: "
        "they stand for other members' machines). "
        f"Three phases of {args.seconds:g} s, "
        "in one run: no call (a text channel); the 4 peers in the room, the app not in the call; "
        "the app in the call (Call Stage). App CPU = the whole app process, % of one core."
        + f" Look: {look()}.",
        "",
        "| figure | in the call (Call Stage, 4 speaking + the member) | target | no call, the 4 peers in the room (just before the call) | no call, no peers (first phase) |",
        "|---|---|---|---|---|",
        row(
            "p99 frame (mean, frames)",
            lambda t: f"{r[t + '_p99']:.1f} ms ({r[t + '_mean']:.1f}, {r[t + '_frames']:.0f})",
            "≤ 16 ms",
        ),
        row("app share (app.frame()) p99", lambda t: f"{r[t + '_ui_p99']:.1f} ms"),
        row(
            "main thread's own CPU per frame p99 / mean (not counting waits for the GIL or a core)",
            lambda t: f"{r[t + '_main_cpu_p99']:.1f} / {r[t + '_main_cpu_mean']:.1f} ms",
        ),
        row("app CPU", lambda t: f"{r[t + '_cpu']:.0f} %"),
        row(
            "CPU per drawn frame: software renderer (llvmpipe threads) / whole app process",
            lambda t: f"{r.get(t + '_llvmpipe_ms', 0.0):.1f} / {r.get(t + '_cpu_ms', 0.0):.1f} ms",
        ),
        row(
            f"whole machine busy (of {cores} %: this run's processes and others' jobs)",
            lambda t: f"{r[t + '_machine_busy']:.0f} %",
        ),
        row("app threads, % of a core", threads),
        row("the run's other processes, % of a core", procs),
        "",
        f"In the call's {args.seconds:g} s: {r['call_captured']:.0f} frames (20 ms) captured, "
        f"{r['call_played']:.0f} played, "
        f"{r['call_speaking_end']:.0f} participants speaking at the end; the voice panes re-rendered "
        f"{r['call_versions']:.0f} times (the call's state changed), rings alone toggled "
        f"{r['call_rings']:.0f} times (who speaks changed).",
        "",
    ] + [
        f"- Probe, in the same call: {label}: p99 frame {r[t + '_p99']:.1f} ms (mean {r[t + '_mean']:.1f}, "
        f"{r[t + '_frames']:.0f} frames), app share p99 {r[t + '_ui_p99']:.1f} ms, main thread's CPU per "
        f"frame p99 {r[t + '_main_cpu_p99']:.1f} ms, app CPU {r[t + '_cpu']:.0f} %, machine "
        f"{r[t + '_machine_busy']:.0f} % busy."
        for t, label in (
            ("probe_noaudio", "the app's capture and playback threads stopped (the bridge still runs)"),
            ("probe_si1ms", "sys.setswitchinterval(0.001) (default 0.005)"),
        )
        if t + "_p99" in r
    ]


def report(r: dict[str, float], args: argparse.Namespace) -> list[str]:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## UI (Dear PyGui) — {when}",
        "",
        f"`python bench/bench_ui.py --messages {args.messages} --seconds {args.seconds:g}` on "
        f"{platform.machine()} / {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the end), "
        "Xvfb 1480x920 with Mesa's software renderer (no GPU), vsync off; frame = app.frame() + render; "
        "'app share' = the app's own work per frame (model, reconcile, widget updates). "
        f"Look: {look()}.",
        "",
        "| figure | value | target | baseline (same run) |",
        "|---|---|---|---|",
        f"| start to populated (snapshot in hand: the newest 50 per channel, as the app asks the state) | {r['start_ms']:.0f} ms | ≤ 1000 ms | — |",
        f"| filling the channels: {args.messages:,} + {args.messages // 2:,} messages arrive as bus events, 1,000 per frame | {r['fill_s']:.1f} s ({(args.messages * 1.5) / r['fill_s']:,.0f} events/s); then {r['held']:.0f} message objects held, {r['spilled']:,.0f} in compact pages ({r['packed_mb']:.1f} MB, {r['packed_mb'] * 1e6 / max(1.0, r['spilled']):.0f} B/message) | — | — |",
        f"| p99 frame while scrolling ({r['scroll_rows']:.0f} rows up) | {r['scroll_p99']:.1f} ms (mean {r['scroll_mean']:.1f}); app share p99 {r['scroll_ui_p99']:.1f} ms | ≤ 16 ms | idle frame p99 {r['idle_p99']:.1f} ms (app share {r['idle_ui_p99']:.1f}) |",
        f"| p99 frame while 100 msg/s arrive ({r['arrived']:.0f} msgs, {r['arrive_rendered']:.0f} rows drawn) | {r['arrive_p99']:.1f} ms (mean {r['arrive_mean']:.1f}); app share p99 {r['arrive_ui_p99']:.1f} ms | ≤ 16 ms | idle frame p99 {r['idle_p99']:.1f} ms (app share {r['idle_ui_p99']:.1f}) |",
        f"| channel switch 100k <-> 50k, to the first drawn frame (median / max) | {r['switch_p50']:.1f} / {r['switch_max']:.1f} ms; app share median {r['switch_app_p50']:.1f} ms | ≤ 50 ms | idle frame p99 {r['idle_p99']:.1f} ms |",
        f"| RSS at the end | {r['rss_end']:.0f} MB (anonymous {r['rss_anon']:.0f} MB, file-backed {r['rss_file']:.0f} MB: shared libraries incl. Mesa/LLVM) | ≤ 150 MB | {r['rss_dpg']:.0f} MB: Python + imports + Dear PyGui viewport; {r['rss_app_idle']:.0f} MB: app started with 50 messages per channel; {r['rss_filled']:.0f} MB: after the {args.messages * 1.5:,.0f} messages arrived |",
    ]
    if "stack_rss" in r:
        lines += [
            f"| against the real stack (`openchat up --demo`, a fresh process): start to populated (connection file → bus → snapshot → first filled frame) | {r['stack_start_measured_ms']:.0f} ms (the first start, caches cold: {r['stack_start_warm_ms']:.0f} ms) | ≤ 1000 ms | — |",
            f"| RSS of `python -m ui` itself attached to that stack (two servers; after 12 s, drift {r['stack_rss_drift']:+.1f} MB over the last 8 s) | {r['stack_rss']:.0f} MB (anonymous {r['stack_rss_anon']:.0f}, file-backed {r['stack_rss_file']:.0f}: shared libraries incl. Mesa/LLVM; USS {r['stack_uss']:.0f}, PSS {r['stack_pss']:.0f}) | ≤ 150 MB | idle frame p99 in the bench process {r['stack_idle_p99']:.1f} ms |",
        ]
    return lines


if __name__ == "__main__":
    main()
