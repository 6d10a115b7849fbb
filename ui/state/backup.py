"""Settings → My Account → identity backup (issue 18; features 1.8, P5; ADR 0015). Pure.

Export writes the identity root, encrypted with a passphrase the member types
(``services.core.identity_backup``: scrypt + AES-256-GCM), to a file that is never overwritten;
import reads such a file back into the member's stack, which re-binds every joined server (the
servers see the same uids again). The passphrase lives only in the dialog's widgets and in the
command objects below for the length of one operation: never logged, never stored, and every
text shown here is free of it and of the root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.core.identity_backup import BackupError, check_passphrase


@dataclass(frozen=True)
class ExportCmd:
    path: Path
    passphrase: str

    def __repr__(self) -> str:  # never the passphrase
        return f"ExportCmd(path={self.path!s})"


@dataclass(frozen=True)
class ImportCmd:
    path: Path
    passphrase: str

    def __repr__(self) -> str:
        return f"ImportCmd(path={self.path!s})"


class BackupFlow:
    """The backup section's state: what runs, the last result or error."""

    def __init__(self) -> None:
        self.busy = ""
        self.error = ""
        self.result = ""
        self.version = 0

    def _fail(self, text: str) -> None:
        self.error, self.result = text, ""
        self.version += 1

    def _path(self, text: str) -> Path | None:
        value = text.strip()
        if not value:
            self._fail("Choose a file for the backup.")
            return None
        return Path(value).expanduser()

    def export(self, path_text: str, passphrase: str, repeat: str) -> ExportCmd | None:
        if self.busy:
            return None
        path = self._path(path_text)
        if path is None:
            return None
        if path.exists():
            self._fail(f"{path} exists: choose another file (a backup is never overwritten).")
            return None
        if passphrase != repeat:
            self._fail("The passphrases differ.")
            return None
        try:
            check_passphrase(passphrase)
        except BackupError as exc:
            self._fail(f"Choose a passphrase: {exc}.")
            return None
        self.busy, self.error, self.result = "Exporting...", "", ""
        self.version += 1
        return ExportCmd(path, passphrase)

    def import_(self, path_text: str, passphrase: str) -> ImportCmd | None:
        if self.busy:
            return None
        path = self._path(path_text)
        if path is None:
            return None
        if not path.is_file():
            self._fail(f"No backup file at {path}.")
            return None
        if not passphrase:
            self._fail("Type the backup's passphrase.")
            return None
        self.busy, self.error, self.result = "Importing...", "", ""
        self.version += 1
        return ImportCmd(path, passphrase)

    def finished(self, result: str | None, error: str | None) -> None:
        self.busy = ""
        if error is not None:
            self._fail(error)
            return
        self.result, self.error = result or "", ""
        self.version += 1

    def status(self) -> tuple[str, bool]:
        """(text, is_error) for the section's status line."""
        if self.busy:
            return self.busy, False
        if self.error:
            return self.error, True
        return self.result, False
