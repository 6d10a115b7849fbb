"""Settings refuse placeholder secrets; logs never carry bodies or secrets; accounts config."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from services.core.log import HumanFormatter, JsonFormatter
from services.core.members import new_user_nkey
from services.core.natsconf import member_permissions, render_accounts_conf
from services.core.settings import Settings, is_placeholder_secret


@pytest.mark.parametrize(
    "value",
    [
        "",
        "secret",
        "changeme",
        "change-me-to-a-long-random-string",
        "dev-insecure-secret-change-me",
        "short",
        "EXAMPLE-0123456789abcdef",
    ],
)
def test_placeholder_secrets_are_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_placeholder_secret(value)
    monkeypatch.setenv("OPENCHAT_SERVICE_PASSWORD", value)
    with pytest.raises(ValidationError, match="placeholder"):
        Settings()


def test_real_secret_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCHAT_SERVICE_PASSWORD", "9f2c1e7a5b3d4c6e8f0a1b2c3d4e5f60")
    settings = Settings()
    assert settings.service_password is not None
    assert "9f2c" not in repr(settings)  # SecretStr hides it


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("openchat.test", logging.INFO, __file__, 1, "sent message", (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_logs_redact_bodies_and_secrets() -> None:
    line = JsonFormatter().format(_record(body="hello grandma", password="hunter2", channel_id="ch_general"))
    doc = json.loads(line)
    assert doc["msg"] == "sent message"
    assert doc["channel_id"] == "ch_general"
    assert doc["body"] == "[redacted]" and doc["password"] == "[redacted]"
    assert "hello grandma" not in line and "hunter2" not in line


def test_human_logs_redact_too() -> None:
    line = HumanFormatter().format(_record(token="abc123", server_id="srv_a"))
    assert "server_id=srv_a" in line
    assert "abc123" not in line


def test_accounts_conf_scopes_each_member() -> None:
    _, alice_key = new_user_nkey()
    _, bob_key = new_user_nkey()
    conf = render_accounts_conf([("bob", bob_key), ("alice", alice_key)])
    assert conf.index("member alice") < conf.index("member bob")
    assert "$OPENCHAT_SERVICE_PASSWORD" in conf and "$OPENCHAT_SYS_PASSWORD" in conf
    assert member_permissions("alice") == {
        "publish": {"allow": ["oc.alice.cmd.>"]},
        "subscribe": {"allow": ["oc.alice.evt.>", "_INBOX_alice.>"]},
    }
    with pytest.raises(ValueError, match="nkey"):
        render_accounts_conf([("eve", "not-a-key")])
