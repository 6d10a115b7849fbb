"""``openchat voice``: the headless voice client (features 8, issue 12).

It joins exactly the way the desktop will: one WebRTC connection to the media service, negotiated
over NATS with the member's own credentials (``oc.<member>.cmd.media.bridge_offer``); it never
talks to a backend.  ``--play FILE`` is the microphone (any format PyAV reads, looped),
``--record FILE`` writes what the member hears (48 kHz mono WAV).  While in the call it prints
participant and speaking changes, keeps the bridge alive and rebuilds it when the media service
restarts (the call resumes by itself: the new bridge carries the call to resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from aiortc import RTCPeerConnection
from aiortc.contrib.media import MediaPlayer, MediaRelay
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack
from nats.aio.msg import Msg

from services.cli.chat import MemberClient, connection_option, json_option, member_option, resolve_connection
from services.cli.home import Home
from services.core.audio import mono_frames
from services.core.bus import CommandError
from services.core.contracts import commands as cmd
from services.core.contracts import subjects
from services.core.contracts.bus import Empty
from services.core.contracts.media import (
    SERVICE,
    BridgeTarget,
    VoiceJoinArgs,
    VoicePrefsArgs,
    VoiceStatus,
)
from services.core.voice_bridge import COMMAND_TIMEOUT_S, BridgeClient


class VoiceExit(Exception):
    """The call ended with a reason: exit non-zero with one line."""

    def __init__(self, reason: str, code: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class WavSink:
    """What the member hears, appended to a 48 kHz mono s16 WAV file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wav: wave.Wave_write | None = wave.open(str(path), "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(48_000)
        self.frames = 0

    async def consume(self, track: MediaStreamTrack) -> None:
        async for samples in mono_frames(track):
            if self._wav is not None:
                self._wav.writeframes(samples.astype("<i2").tobytes())
                self.frames += len(samples)

    def close(self) -> None:
        if self._wav is not None:
            self._wav.close()
            self._wav = None


class VoiceSession:
    """One headless client in one call: the bridge, the events, keepalive and re-bridging."""

    def __init__(
        self,
        client: MemberClient,
        server_id: str,
        channel_id: str,
        play: Path | None,
        record: Path | None,
        out: Callable[[str], None],
    ) -> None:
        self.client = client
        self.server_id = server_id
        self.channel_id = channel_id
        self.client_id = f"cli_{uuid.uuid4().hex[:12]}"
        self.out = out
        self.player = MediaPlayer(str(play), loop=True) if play is not None else None
        self.relay = MediaRelay()
        self.silence = AudioStreamTrack()
        self.sink = WavSink(record) if record is not None else None
        self.link = BridgeClient(self._call, self.client_id, self._source, self._on_track, out=out)
        self.failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tasks: list[asyncio.Task[Any]] = []
        self._participants: dict[str, str] = {}
        self._state = ""
        self._sub: Any = None
        self.joined = False

    # -- commands --------------------------------------------------------------------------
    async def call(self, verb: str, args: Any, result: type[Any], timeout: float = COMMAND_TIMEOUT_S) -> Any:
        return await self._call(verb, args, result, timeout)

    async def _call(self, verb: str, args: Any, result: type[Any], timeout: float) -> Any:
        return result.model_validate(
            await self.client.call(cmd.COMMANDS[(SERVICE, verb)], args, timeout=timeout)
        )

    # -- the bridge (services.core.voice_bridge, shared with the desktop) --------------------------
    def _source(self) -> MediaStreamTrack:
        source = (
            self.player.audio if self.player is not None and self.player.audio is not None else self.silence
        )
        return self.relay.subscribe(source)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if self.sink is not None:
            self._tasks.append(asyncio.create_task(self.sink.consume(track)))

    async def bridge(self, resume: bool) -> None:
        """Offer a new bridge (closing the old one) and apply the media service's answer."""
        self.link.target = (
            BridgeTarget(server_id=self.server_id, channel_id=self.channel_id) if resume else None
        )
        await self.link.offer(resume=resume)
        self.link.target = BridgeTarget(server_id=self.server_id, channel_id=self.channel_id)

    @property
    def pc(self) -> RTCPeerConnection | None:
        return self.link.pc

    async def keepalive(self) -> None:
        """Keep the bridge; rebuild it when the media service restarted or the connection died."""
        await self.link.keepalive(lambda: self._fail("another client of this member took over the call"))

    # -- events ------------------------------------------------------------------------------
    async def subscribe(self) -> None:
        subject = f"oc.{subjects.check_member(self.client.member)}.evt.*.voice.>"
        self._sub = await self.client.bus.nc.subscribe(subject, cb=self._on_event)
        await self.client.bus.nc.flush()

    async def _on_event(self, msg: Msg) -> None:
        try:
            doc = json.loads(msg.data)
            payload = doc["payload"]
        except (ValueError, KeyError, TypeError):
            return
        if doc.get("type") == "voice.speaking":
            who = "you" if payload.get("participant_id") == "self" else self._name(payload)
            self.out(f"speaking: {who} {'on' if payload.get('speaking') else 'off'}")
            return
        if doc.get("type") != "voice.state":
            return
        try:
            status = VoiceStatus.model_validate(payload)
        except ValueError:
            return
        if status.channel_id != self.channel_id or status.server_id != self.server_id:
            return
        self.show(status)
        if status.state == "error" and self.joined:
            self._fail(status.reason or "voice error")
        elif status.state == "idle" and self.joined:
            self._fail("the call was left by the media service")

    def _name(self, payload: dict[str, Any]) -> str:
        pid = str(payload.get("participant_id", ""))
        return self._participants.get(pid) or str(payload.get("user_uid") or pid[:8])

    def show(self, status: VoiceStatus) -> None:
        if status.state != self._state:
            self._state = status.state
            extra = f" ({status.reason})" if status.reason else ""
            self.out(f"voice: {status.state}{extra}")
        now = {
            p.participant_id: (p.display_name or p.user_uid or p.participant_id[:8])
            for p in status.participants
        }
        for pid, name in now.items():
            if pid not in self._participants:
                self.out(f"participant joined: {name}")
            elif self._participants[pid] != name:
                self.out(f"participant: {self._participants[pid]} is {name}")
        for pid, name in self._participants.items():
            if pid not in now:
                self.out(f"participant left: {name}")
        self._participants = now

    def _fail(self, reason: str) -> None:
        if not self.failed.done():
            self.failed.set_result(reason)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        await self.link.close()
        if self.player is not None and self.player.audio is not None:
            self.player.audio.stop()
        if self.sink is not None:
            self.sink.close()


async def run_join(
    client: MemberClient,
    server_id: str,
    channel_id: str,
    *,
    play: Path | None,
    record: Path | None,
    seconds: float | None,
    mute: bool,
    out: Callable[[str], None],
) -> None:
    """The whole ``voice join``; raises ``VoiceExit`` with the reason when it does not end cleanly."""
    session = VoiceSession(client, server_id, channel_id, play, record, out)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    keepalive: asyncio.Task[None] | None = None
    try:
        await session.subscribe()
        try:
            await session.call("status", Empty(), VoiceStatus, timeout=5)
        except CommandError as exc:
            if exc.code in ("service_unavailable", "timeout"):
                raise VoiceExit("no media service answers (is the stack running?)", 3) from exc
            raise
        if mute:
            await session.call("prefs", VoicePrefsArgs(server_id=server_id, mic_muted=True), VoiceStatus)
        await session.bridge(resume=False)
        try:
            status: VoiceStatus = await session.call(
                "join", VoiceJoinArgs(server_id=server_id, channel_id=channel_id), VoiceStatus
            )
        except CommandError as exc:
            raise VoiceExit(f"voice join failed: {exc.body.message}", 2) from exc
        session.joined = True
        session.show(status)
        keepalive = asyncio.create_task(session.keepalive())
        deadline = time.monotonic() + seconds if seconds is not None else None
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait()), session.failed}
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        _done, pending = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for fut in pending:
            if fut is not session.failed:
                fut.cancel()
        if session.failed.done():
            raise VoiceExit(session.failed.result(), 1)
        session.joined = False
        await session.call("leave", Empty(), VoiceStatus, timeout=10)
        out("voice: left")
    finally:
        if keepalive is not None:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
        await session.close()


def _status_lines(status: VoiceStatus) -> list[str]:
    lines = [f"state: {status.state}" + (f" ({status.reason})" if status.reason else "")]
    if status.server_id:
        lines.append(f"call: {status.server_id} / {status.channel_id}")
    prefs = status.prefs
    lines.append(
        f"mic: {'muted' if prefs.mic_muted else 'on'}, {'deafened' if prefs.deafened else 'hearing'}, "
        f"input volume {prefs.input_volume} %, bridge {'connected' if status.bridge_connected else 'not connected'}"
    )
    for p in status.participants:
        flags = [
            f for f, on in (("muted", p.mic_muted), ("deafened", p.deafened), ("speaking", p.speaking)) if on
        ]
        lines.append(
            f"  {p.display_name or p.user_uid} [{p.transport}]" + (f" ({', '.join(flags)})" if flags else "")
        )
    return lines


def register(main: click.Group) -> None:
    @main.group()
    def voice() -> None:
        """Voice calls through the home stack's media service (headless client)."""

    @voice.command("join")
    @click.argument("server_id")
    @click.argument("channel_id")
    @click.option(
        "--play",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Microphone input (looped).",
    )
    @click.option(
        "--record", type=click.Path(dir_okay=False, path_type=Path), help="Write what you hear (WAV)."
    )
    @click.option("--seconds", type=float, help="Leave after this many seconds (default: on Ctrl-C).")
    @click.option("--mute", is_flag=True, help="Join with the microphone muted.")
    @member_option
    @connection_option
    def voice_join(
        server_id: str,
        channel_id: str,
        play: Path | None,
        record: Path | None,
        seconds: float | None,
        mute: bool,
        member: str | None,
        connection: Path | None,
    ) -> None:
        """Join CHANNEL_ID of SERVER_ID; leave after --seconds or on Ctrl-C."""
        cf = resolve_connection(Home.load(), member, connection)

        def out(line: str) -> None:
            click.echo(line)
            sys.stdout.flush()

        async def main() -> None:
            try:
                async with MemberClient.connect(cf) as client:
                    await run_join(
                        client,
                        server_id,
                        channel_id,
                        play=play,
                        record=record,
                        seconds=seconds,
                        mute=mute,
                        out=out,
                    )
            except OSError as exc:
                raise VoiceExit(f"cannot reach the stack: {exc}", 3) from exc

        try:
            asyncio.run(main())
        except VoiceExit as exc:
            click.echo(f"error: {exc.reason}", err=True)
            sys.exit(exc.code)
        except CommandError as exc:
            click.echo(f"error: {exc.code}: {exc.body.message}", err=True)
            sys.exit(1)

    def _simple(
        member: str | None, connection: Path | None, verb: str, args: Any, as_json: bool = False
    ) -> VoiceStatus:
        cf = resolve_connection(Home.load(), member, connection)

        async def main() -> VoiceStatus:
            async with MemberClient.connect(cf) as client:
                result: VoiceStatus = await client.call(cmd.COMMANDS[(SERVICE, verb)], args, timeout=15)
                return result

        try:
            return asyncio.run(main())
        except CommandError as exc:
            if exc.code in ("service_unavailable", "timeout"):
                raise click.ClickException("no media service answers (is the stack running?)") from exc
            raise click.ClickException(f"{exc.code}: {exc.body.message}") from exc

    @voice.command("status")
    @member_option
    @connection_option
    @json_option
    def voice_status(member: str | None, connection: Path | None, as_json: bool) -> None:
        """The member's call: state, participants, mute/deafen."""
        status = _simple(member, connection, "status", Empty())
        if as_json:
            click.echo(status.model_dump_json(indent=2))
        else:
            for line in _status_lines(status):
                click.echo(line)

    @voice.command("leave")
    @member_option
    @connection_option
    def voice_leave(member: str | None, connection: Path | None) -> None:
        """Leave the member's call (no-op when not in one)."""
        _simple(member, connection, "leave", Empty())
        click.echo("voice: left")

    def _prefs_command(name: str, doc: str, change: dict[str, bool]) -> None:
        @voice.command(name, help=doc)
        @click.option("--server", "server_id", help="The server (default: the current call's).")
        @member_option
        @connection_option
        def command(server_id: str | None, member: str | None, connection: Path | None) -> None:
            if server_id is None:
                current = _simple(member, connection, "status", Empty())
                if current.server_id is None:
                    raise click.ClickException("not in a call: say which server with --server")
                server_id = current.server_id
            status = _simple(member, connection, "prefs", VoicePrefsArgs(server_id=server_id, **change))
            prefs = status.prefs
            click.echo(
                f"{server_id}: mic {'muted' if prefs.mic_muted else 'on'}, {'deafened' if prefs.deafened else 'hearing'}"
            )

    @voice.command("volume")
    @click.argument("percent", type=click.IntRange(0, 200))
    @click.option("--server", "server_id", help="The server (default: the current call's).")
    @member_option
    @connection_option
    def voice_volume(
        percent: int, server_id: str | None, member: str | None, connection: Path | None
    ) -> None:
        """Input volume 0-200 %: a gain on the transmitted microphone, not only the mic test (D11)."""
        if server_id is None:
            current = _simple(member, connection, "status", Empty())
            if current.server_id is None:
                raise click.ClickException("not in a call: say which server with --server")
            server_id = current.server_id
        status = _simple(
            member, connection, "prefs", VoicePrefsArgs(server_id=server_id, input_volume=percent)
        )
        click.echo(f"{server_id}: input volume {status.prefs.input_volume} %")

    _prefs_command(
        "mute", "Mute the microphone (a per-server preference; works before joining).", {"mic_muted": True}
    )
    _prefs_command("unmute", "Unmute the microphone (also undeafens).", {"mic_muted": False})
    _prefs_command("deafen", "Silence everyone (and mute the microphone).", {"deafened": True})
    _prefs_command("undeafen", "Hear again (the microphone is unmuted too).", {"deafened": False})
