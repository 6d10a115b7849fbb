"""``openchat status`` without ``openchat up`` (docker compose): components named by the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from services.core.procs import free_port


def test_status_checks_components_named_by_the_environment(
    tmp_path: Path, nats_url: str, redis_url: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCHAT_")}
    env.update(
        OPENCHAT_HOME=str(tmp_path / "home"),
        OPENCHAT_SECRET_KEY_FILE=str(tmp_path / "secret.key"),
        OPENCHAT_NATS_URL=nats_url,
        OPENCHAT_REDIS_URL=redis_url,
        OPENCHAT_STATUS_SERVICE_URLS=json.dumps({"connector": dead}),
    )
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = {r["component"]: r for r in json.loads(out.stdout)}
    assert rows["nats"]["healthy"] and rows["redis"]["healthy"]
    assert rows["connector"]["healthy"] is False
    assert rows["state"]["detail"] == "not started"
    assert out.returncode == 1
