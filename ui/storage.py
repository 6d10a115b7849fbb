"""Local files of the desktop app in the per-user config directory (P5).

- ``prefs.json``: window preferences only (scale, font size, members pane, remembered channel
  and filter per server, collapsed categories per ``(server_id, group_id)`` (rule D16), the chosen
  connection file);
- ``snapshot-<member>.json``: the last view (a ``Snapshot``, bounded per channel) so the app
  opens read-only when the home stack is unreachable.

Nothing secret is written here: the connection file stays where the member keeps it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.core.contracts.chat import Snapshot


def config_dir() -> Path:
    base = os.environ.get("OPENCHAT_UI_CONFIG_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "openchat-ui"


class Prefs(BaseModel):
    model_config = ConfigDict(extra="ignore")

    connection_file: str | None = None
    ui_scale: float = 1.0
    font_size: int = 16
    members_open: bool = True
    window: tuple[int, int] = (1480, 920)
    active_server: str | None = None
    channels: dict[str, str] = Field(default_factory=dict)
    filters: dict[str, str] = Field(default_factory=dict)
    collapsed: list[tuple[str, str]] = Field(default_factory=list)
    dismissed: list[str] = Field(default_factory=list)
    onboarding_skipped: list[str] = Field(default_factory=list)  # members who skipped the Welcome dialog


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Storage:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or config_dir()

    @property
    def prefs_path(self) -> Path:
        return self.root / "prefs.json"

    def load_prefs(self) -> Prefs:
        try:
            return Prefs.model_validate_json(self.prefs_path.read_text())
        except (OSError, ValueError):
            return Prefs()

    def save_prefs(self, prefs: Prefs) -> None:
        _write_atomic(self.prefs_path, prefs.model_dump_json(indent=2))

    def snapshot_path(self, member: str) -> Path:
        return self.root / f"snapshot-{member}.json"

    def load_snapshot(self, member: str) -> Snapshot | None:
        try:
            return Snapshot.model_validate_json(self.snapshot_path(member).read_text())
        except (OSError, ValueError):
            return None

    def save_snapshot_json(self, member: str, data: str) -> None:
        _write_atomic(self.snapshot_path(member), data)


def default_connection(home_env: dict[str, str] | None = None) -> Path | None:
    """The only connection file under ``$OPENCHAT_HOME/members`` (or the one of
    ``OPENCHAT_MEMBER``), when it exists."""
    env: dict[str, Any] = dict(home_env if home_env is not None else os.environ)
    home = env.get("OPENCHAT_HOME")
    if not home:
        return None
    members = Path(home) / "members"
    member = env.get("OPENCHAT_MEMBER")
    if member and (members / f"{member}.json").exists():
        return members / f"{member}.json"
    files = sorted(members.glob("*.json")) if members.is_dir() else []
    return files[0] if len(files) == 1 else None


def candidate_connections(home_env: dict[str, str] | None = None) -> list[Path]:
    env = dict(home_env if home_env is not None else os.environ)
    home = env.get("OPENCHAT_HOME")
    if not home or not (Path(home) / "members").is_dir():
        return []
    return sorted((Path(home) / "members").glob("*.json"))


def dump_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
