"""Layout of ``OPENCHAT_HOME``: configuration, durable data and the running stack's endpoints.

Everything under ``OPENCHAT_HOME`` is private to the user running the stack: directories 0700,
files 0600, whatever the umask (every process of the stack also sets ``PRIVATE_UMASK``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_umask() -> int:
    """Make every file and directory this process creates private (0600/0700); returns the old umask."""
    return os.umask(PRIVATE_UMASK)


def tighten_tree(root: Path) -> int:
    """Remove group/other permissions below ``root`` (homes created before modes were private);
    returns how many entries changed. Symlinks are left alone."""
    changed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            try:
                st = os.lstat(name)
            except FileNotFoundError:
                continue
            if (st.st_mode & 0o170000) == 0o120000 or not st.st_mode & 0o077:
                continue
            os.chmod(name, st.st_mode & 0o7700)
            changed += 1
    return changed


@dataclass(frozen=True)
class HomeLayout:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def registry_db(self) -> Path:
        return self.data / "registry.sqlite3"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"

    @property
    def accounts_conf(self) -> Path:
        return self.nats_dir / "accounts.conf"

    @property
    def nats_conf(self) -> Path:
        return self.nats_dir / "nats.conf"

    @property
    def jetstream_dir(self) -> Path:
        return self.nats_dir / "jetstream"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def members_dir(self) -> Path:
        return self.root / "members"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def endpoints(self) -> Path:
        return self.run_dir / "endpoints.json"

    @property
    def secrets_env(self) -> Path:
        return self.root / "secrets.env"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def connection_file(self, member: str) -> Path:
        return self.members_dir / f"{member}.json"

    def ensure(self) -> HomeLayout:
        for d in (
            self.root,
            self.data,
            self.nats_dir,
            self.redis_dir,
            self.members_dir,
            self.run_dir,
            self.logs_dir,
        ):
            d.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # not ours (a read-only mount): leave it
                os.chmod(d, PRIVATE_DIR_MODE)
        return self


def write_atomic(path: Path, content: str | bytes, mode: int = PRIVATE_FILE_MODE) -> None:
    """Write via a temp file and rename, so readers never see a half-written file."""
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, doc: Any, mode: int = PRIVATE_FILE_MODE) -> None:
    write_atomic(path, json.dumps(doc, indent=2, sort_keys=True) + "\n", mode)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
