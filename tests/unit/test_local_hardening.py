"""Issue 10, defect 4 in the small: private modes whatever the umask, the Redis config, the
restart backoff. The whole stack is checked by tests/faults/test_stack_faults.py."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli.supervisor import HEALTHY_RESET_S, RESTART_BACKOFF_S, _backoff
from services.core import natsconf
from services.core.paths import HomeLayout, tighten_tree, write_atomic
from services.core.procs import render_redis_conf


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_home_layout_and_written_files_are_private_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    layout = HomeLayout(tmp_path / "home").ensure()
    for d in (layout.root, layout.data, layout.nats_dir, layout.redis_dir, layout.run_dir, layout.logs_dir):
        assert _mode(d) == 0o700, d
    write_atomic(layout.endpoints, "{}")
    natsconf.write_accounts_conf(layout.accounts_conf, [])
    assert _mode(layout.endpoints) == 0o600
    assert _mode(layout.accounts_conf) == 0o600


def test_tighten_tree_removes_group_and_other_bits(tmp_path: Path, umask_022: None) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    (tmp_path / "a" / "g").write_text("y")
    os.chmod(tmp_path / "a" / "g", 0o755)  # noqa: S103 - the loose mode under test
    (tmp_path / "a" / "link").symlink_to(tmp_path / "a" / "g")
    assert tighten_tree(tmp_path / "a") == 4
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700
    assert _mode(tmp_path / "a" / "b" / "f") == 0o600 and _mode(tmp_path / "a" / "g") == 0o700
    assert tighten_tree(tmp_path / "a") == 0


def test_redis_conf_requires_the_password_with_protected_mode(tmp_path: Path) -> None:
    conf = render_redis_conf(tmp_path, "127.0.0.1", 6390, "a" * 48)
    lines = conf.splitlines()
    assert f'requirepass "{"a" * 48}"' in lines
    assert "protected-mode yes" in lines and "bind 127.0.0.1" in lines
    assert "protected-mode no" not in conf
    assert "requirepass" not in render_redis_conf(tmp_path, "127.0.0.1", 6390)
    with pytest.raises(ValueError, match="quotes"):
        render_redis_conf(tmp_path, "127.0.0.1", 6390, 'x"\nrequirepass ""')


def test_local_nats_conf_without_monitoring_port(tmp_path: Path) -> None:
    conf = natsconf.render_local_conf("127.0.0.1", 4300, None, tmp_path / "js", tmp_path / "accounts.conf")
    assert "http" not in conf
    assert 'http: "127.0.0.1:8300"' in natsconf.render_local_conf(
        "127.0.0.1", 4300, 8300, tmp_path / "js", tmp_path / "accounts.conf"
    )


def test_backoff_grows_and_starts_over_after_a_healthy_run() -> None:
    now = time.monotonic()
    delays = []
    consecutive = 0
    for _ in range(len(RESTART_BACKOFF_S) + 2):
        delay, consecutive = _backoff(consecutive, now)
        delays.append(delay)
    assert delays == [*RESTART_BACKOFF_S, RESTART_BACKOFF_S[-1], RESTART_BACKOFF_S[-1]]
    assert _backoff(consecutive, now - HEALTHY_RESET_S - 1) == (RESTART_BACKOFF_S[0], 1)
