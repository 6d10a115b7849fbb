"""``--limit NAME=VALUE``: a test knob that changes only the advertised capability ``limits``;
without it the capability document is the public backend's (the conformance suite checks the
bytes)."""

from __future__ import annotations

import httpx
import pytest

from services.devserver.__main__ import build_parser, config_from_args
from services.devserver.config import DevserverConfig
from services.devserver.runner import arunning_devserver

PUBLIC_LIMITS = {
    "max_message_bytes": 65536,
    "max_upload_bytes": 50 * 1024 * 1024,
    "rate_limit_per_minute": 180,
    "max_call_participants": 200,
}


async def capabilities(cfg: DevserverConfig) -> tuple[dict[str, int], bytes]:
    async with arunning_devserver(cfg) as srv, httpx.AsyncClient(base_url=srv.base_url) as http:
        response = await http.get("/v1/client/capabilities")
        response.raise_for_status()
        return response.json()["limits"], response.content


async def test_limit_overrides_are_advertised_and_the_default_is_the_public_document() -> None:
    default_cfg = config_from_args(build_parser().parse_args(["--port", "0", "--host", "127.0.0.1"]), env={})
    assert default_cfg.limits == {}
    limits, _ = await capabilities(default_cfg)
    assert limits == PUBLIC_LIMITS

    args = ["--port", "0", "--host", "127.0.0.1", "--limit", "max_message_bytes=10"]
    args += ["--limit", "rate_limit_per_minute=3"]
    cfg = config_from_args(build_parser().parse_args(args), env={})
    limits, raw = await capabilities(cfg)
    assert limits == {**PUBLIC_LIMITS, "max_message_bytes": 10, "rate_limit_per_minute": 3}
    assert b'"max_message_bytes":10,' in raw  # same key order and Go encoding as the default


@pytest.mark.parametrize(
    "bad", ["max_message_bytes", "nope=1", "max_message_bytes=-1", "rate_limit_per_minute=x"]
)
def test_bad_limit_flags_are_refused(bad: str) -> None:
    with pytest.raises(SystemExit):
        config_from_args(build_parser().parse_args(["--limit", bad]), env={})


def test_config_refuses_unknown_limits() -> None:
    with pytest.raises(ValueError, match="unknown limit"):
        DevserverConfig(limits={"max_users": 1})
