"""The controller's part for the member's controls (issue 18): notification settings, status,
identity backup and the update check. No Dear PyGui.

Intents (``ui.state.control_intents``) come through ``Controller.dispatch``; each changes the
pure state (``ui.state.notify_settings``, ``ui.state.backup``, ``ui.state.updater``) and sends one
command of the commands table through the controller's stack port. The answers and the events
(``notify.member``, ``notify.prefs``; applied by the view model) bring every desktop of the member
to what the stack holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from datetime import timedelta
from typing import Any, Protocol

from services.core.contracts import commands as cmd
from services.core.contracts.bus import Empty
from services.core.contracts.chat import IdentityGetArgs, IdentityImportArgs, IdentityInfo, UidModeArgs
from services.core.contracts.notify import (
    NotifyPrefs,
    SetHideMutedArgs,
    SetLevelArgs,
    SetMuteArgs,
    SetQuietHoursArgs,
    SetStatusArgs,
)
from services.core.contracts.version import StackVersion
from services.core.identity_backup import MAX_FILE_BYTES, BackupError, decrypt_backup, encrypt_backup
from ui.adapter import StackClient, error_text
from ui.state import control_intents as ci
from ui.state.backup import BackupFlow, ExportCmd, ImportCmd
from ui.state.model import ViewModel
from ui.state.notify_settings import LEVEL_LABELS, STATUS_LABELS, parse_quiet_hours
from ui.state.updater import UpdateChecker

log = logging.getLogger("openchat.ui.controls")


class ControllerPort(Protocol):
    """What the controls need of ``ui.controller.Controller``."""

    model: ViewModel
    stack: Any

    def _submit(
        self,
        work: Callable[[StackClient], Awaitable[Any]],
        callback: Callable[[Any, BaseException | None], None] | None = None,
    ) -> Future[Any] | None: ...

    def refresh_prefs(self) -> None: ...


class Controls:
    def __init__(self, controller: ControllerPort, updater: UpdateChecker) -> None:
        self.c = controller
        self.model = controller.model
        self.updater = updater
        self.backup = BackupFlow()

    # -- notification settings ----------------------------------------------------------------------
    def _prefs_answer(self, what: str) -> Any:
        def done(value: NotifyPrefs | None, error: BaseException | None) -> None:
            if error is not None or value is None:
                self.model.toast(f"{what} is not saved: {error_text(error) if error else ''}", error=True)
                self.c.refresh_prefs()  # back to what the stack holds
                return
            self.model.apply_notify_prefs(value)

        return done

    def set_status(self, status: ci.MemberStatus) -> None:
        self.model.notify.set_status(status)
        self.model.touch("dock", "rail", "channels")
        self.model.toast(f"Status: {STATUS_LABELS[status]}.")
        args = SetStatusArgs(status=status)
        self.c._submit(lambda c: c.call(cmd.SET_STATUS, args), self._prefs_answer("Status"))

    def set_mute(self, sid: str, ch: str | None, muted: bool, duration_s: int | None) -> None:
        until = self.model.now() + timedelta(seconds=duration_s) if muted and duration_s else None
        self.model.notify.set_mute(sid, ch, muted, until)
        if ch is None:
            sm = self.model.servers.get(sid)
            if sm is not None:
                sm.muted = muted
        self.model.touch("rail", "channels")
        self.model.toast(f"{'Muted' if muted else 'Unmuted'} {self._name(sid, ch)}.")
        args = SetMuteArgs(
            server_id=sid, channel_id=ch, muted=muted, duration_s=duration_s if muted else None
        )
        self.c._submit(lambda c: c.call(cmd.SET_MUTE, args), self._prefs_answer("Mute"))

    def set_level(self, sid: str, ch: str | None, level: ci.NotifyLevel | None) -> None:
        self.model.notify.set_level(sid, ch, level)
        self.model.touch("rail", "channels")
        label = LEVEL_LABELS[level] if level else "the server's default"
        self.model.toast(f"Notifications for {self._name(sid, ch)}: {label}.")
        args = SetLevelArgs(server_id=sid, channel_id=ch, level=level)
        self.c._submit(lambda c: c.call(cmd.SET_LEVEL, args), self._prefs_answer("Notification level"))

    def set_hide_muted(self, hide: bool) -> None:
        self.model.notify.set_hide_muted(hide)
        self.model.touch("channels")
        args = SetHideMutedArgs(hide=hide)
        self.c._submit(lambda c: c.call(cmd.SET_HIDE_MUTED, args), self._prefs_answer("Hide Muted Channels"))

    def set_quiet_hours(self, text: str, timezone: str | None) -> bool:
        """``HH:MM-HH:MM`` or ``off`` (and an IANA time zone, None: keep it); refused with a toast
        before anything changes when either is not valid."""
        try:
            quiet = parse_quiet_hours(text)
        except ValueError as exc:
            self.model.toast(str(exc), error=True)
            return False
        try:
            args = SetQuietHoursArgs(
                enabled=quiet.enabled, start=quiet.start, end=quiet.end, timezone=timezone
            )
        except ValueError:
            self.model.toast(f"Unknown time zone {timezone!r}.", error=True)
            return False
        self.model.notify.set_quiet_hours(quiet)
        self.model.touch("overlay")
        self.model.toast(f"Quiet hours {'off' if not quiet.enabled else f'{quiet.start}-{quiet.end}'}.")
        self.c._submit(lambda c: c.call(cmd.SET_QUIET_HOURS, args), self._prefs_answer("Quiet hours"))
        return True

    def _name(self, sid: str, ch: str | None) -> str:
        sm = self.model.servers.get(sid)
        if sm is None:
            return sid
        if ch is not None:
            info = sm.channel(ch)
            return f"#{info.name}" if info is not None else ch
        return sm.record.display_name

    # -- update check ---------------------------------------------------------------------------------
    def tick(self) -> None:
        """Once per frame: start the scheduled check when it is due."""
        if self.updater.due() and self.model.stack_online:
            self.check_update(manual=False)

    def check_update(self, manual: bool = True) -> None:
        up = self.updater
        if not up.begin(manual):
            return  # merged with the check already running
        self.model.touch("header")

        def done(value: StackVersion | None, error: BaseException | None) -> None:
            up.finished(value, error_text(error) if error is not None else None)
            self.model.touch("header", "banner")

        if (
            self.c._submit(lambda c: c.call(cmd.STACK_VERSION, Empty()), done) is None
            and self.c.stack is None
        ):
            up.finished(None, "The home stack is unreachable.")

    # -- identity backup (Settings → My Account) -----------------------------------------------------
    def export_identity(self, path: str, passphrase: str, repeat: str) -> None:
        job = self.backup.export(path, passphrase, repeat)
        if job is None:
            return
        self.model.touch("overlay")
        self.c._submit(lambda c: _export(c, job), self._backup_done)

    def import_identity(self, path: str, passphrase: str) -> None:
        job = self.backup.import_(path, passphrase)
        if job is None:
            return
        self.model.touch("overlay")
        self.c._submit(lambda c: _import(c, job), self._backup_done)

    def _backup_done(self, value: str | None, error: BaseException | None) -> None:
        if error is not None:
            text = str(error) if isinstance(error, BackupError | OSError) else error_text(error)
            self.backup.finished(None, text)
        else:
            self.backup.finished(value, None)
            self.model.toast(value or "Done.", history=True)
        self.model.touch("overlay", "dock")

    # -- intents --------------------------------------------------------------------------------------
    def dispatch(self, intent: ci.ControlIntent) -> None:
        match intent:
            case ci.SetStatus(status=status):
                self.set_status(status)
            case ci.SetNotifyMute(server_id=sid, channel_id=ch, muted=muted, duration_s=dur):
                self.set_mute(sid, ch, muted, dur)
            case ci.SetNotifyLevel(server_id=sid, channel_id=ch, level=level):
                self.set_level(sid, ch, level)
            case ci.SetHideMuted(hide=hide):
                self.set_hide_muted(hide)
            case ci.SetQuietHours(text=text, timezone=tz):
                self.set_quiet_hours(text, tz)
            case ci.CheckUpdate():
                self.check_update(manual=True)
            case ci.ExportIdentity(path=path, passphrase=pw, repeat=rep):
                self.export_identity(path, pw, rep)
            case ci.ImportIdentity(path=path, passphrase=pw):
                self.import_identity(path, pw)


# -- the backup's I/O (on the bus thread; scrypt in a worker thread) ----------------------------------
class _Failure(Exception):
    """A backup step failed with a text that is safe to show (no root, no passphrase)."""


async def _export(c: StackClient, job: ExportCmd) -> str:
    info: IdentityInfo = await c.call(cmd.IDENTITY_GET, IdentityGetArgs(reveal=True))
    if not info.exists or info.root is None:
        raise BackupError("No identity yet: nothing to back up.")
    data = await asyncio.to_thread(encrypt_backup, info.root, info.uid_mode, job.passphrase)
    del info  # the root goes no further than the file

    def write() -> None:
        fd = os.open(job.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    try:
        await asyncio.to_thread(write)
    except OSError as exc:
        raise BackupError(f"Cannot write {job.path}: {exc.strerror or type(exc).__name__}") from None
    log.info("identity backup written")  # never the path's contents, the root or the passphrase
    return f"Identity backup written to {job.path} (encrypted with your passphrase)."


async def _import(c: StackClient, job: ImportCmd) -> str:
    def read() -> bytes:
        with open(job.path, "rb") as fh:
            return fh.read(MAX_FILE_BYTES + 1)

    try:
        data = await asyncio.to_thread(read)
    except OSError as exc:
        raise BackupError(f"Cannot read {job.path}: {exc.strerror or type(exc).__name__}") from None
    backup = await asyncio.to_thread(decrypt_backup, data, job.passphrase)
    await c.call(cmd.IDENTITY_IMPORT, IdentityImportArgs(root=backup.root))
    info: IdentityInfo = await c.call(cmd.UID_MODE, UidModeArgs(mode=backup.uid_mode))
    log.info("identity backup imported")
    return f"Identity imported from {job.path.name}: {len(info.servers)} server(s) re-bound to it."
