"""Settings shared by every process of the stack (environment prefix ``OPENCHAT_``).

Secrets are refused when they look like placeholders (``change-me`` and friends): a home
server must never run on a secret copied from an example file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "placeholder", "example", "insecure", "xxx")
PLACEHOLDER_EXACT = {"", "secret", "password", "passwd", "admin", "test", "default", "none", "null"}
MIN_SECRET_LENGTH = 16


def is_placeholder_secret(value: str) -> bool:
    """True when ``value`` is empty, short, or reads like a value copied from an example file."""
    lowered = value.strip().lower()
    if lowered in PLACEHOLDER_EXACT or len(lowered) < MIN_SECRET_LENGTH:
        return True
    return any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def default_home() -> Path:
    """``$XDG_DATA_HOME/openchat`` (``~/.local/share/openchat``)."""
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "openchat"


class Settings(BaseSettings):
    """Process settings. Every field can be set as ``OPENCHAT_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="OPENCHAT_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    nats_url: str | None = None
    redis_url: str | None = None
    # Redis AUTH: the password itself, or a file holding it (a compose secret). ``openchat up``
    # generates one for its embedded Redis (OPENCHAT_HOME/secrets.env, mode 0600).
    redis_password: SecretStr | None = None
    redis_password_file: Path | None = None
    service_user: str | None = None  # None: each service its own NATS user (natsconf.user_of_service)
    service_password: SecretStr | None = None
    sys_user: str = "sys"
    sys_password: SecretStr | None = None
    public_nats_url: str | None = None
    # TLS on NATS (ADR 0010). The CA (PEM file) the stack's processes trust when they dial a
    # tls:// URL; openchat up and the compose file set it.
    nats_ca_file: Path | None = None
    # Where `openchat up` listens for desktops: an address, or 0.0.0.0 for all interfaces.
    # Unset: the public URL's host (resolved), else 127.0.0.1 (this machine only).
    nats_listen: str | None = None
    # More names/addresses (comma-separated) the NATS server certificate must cover.
    tls_hosts: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 0
    log_json: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The asyncio event loop of a service process: ``uvloop`` (libuv, C transports; the default
    # where it is installed) or the standard library's. Issue 16: a connector holding 1,000
    # sessions spends much of its CPU in the loop and socket transports.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    events_stream: str = "OC_EVENTS"
    events_max_age_days: float = 30.0
    events_max_bytes: int = 2 * 1024**3
    events_duplicate_window_s: float = 600.0
    # per <member>.<server_id>.<kind> subject; a subject over it drops its own oldest (ADR 0009)
    events_max_msgs_per_subject: int = 250_000
    events_replicas: int = Field(default=1, ge=1, le=5)  # also the KV buckets' (issue 16)
    # active/standby behind a lease for the services that cannot share work (notification,
    # media; issue 16, ADR 0021); ``openchat up --replicas N`` sets it
    standby: bool = False
    replica_name: str = ""  # shown in logs and `openchat status` (connector-2, ...)
    secret_key_file: Path | None = None  # default: $XDG_CONFIG_HOME/openchat/secret.key (ADR 0004)
    # Where `openchat status` looks when no `openchat up` runs here (docker compose): service -> base URL.
    status_service_urls: dict[str, str] = Field(default_factory=dict)
    nats_monitor_url: str | None = None
    message_window: int = Field(default=500, ge=10, le=100_000)
    # Link previews (features 5.9, 14.5): allow fetching pages whose host resolves to loopback,
    # private, link-local or reserved addresses (tests, demo devservers on 127.0.0.1). Off: a
    # message can never make the home server request something on the household network.
    preview_allow_private: bool = False

    def nats_ca_pem(self) -> str | None:
        """The CA to pin when the NATS URL is tls:// (None: plain)."""
        if self.nats_url and self.nats_url.strip().startswith("tls://"):
            if self.nats_ca_file is None:
                raise SystemExit("OPENCHAT_NATS_URL is tls:// but OPENCHAT_NATS_CA_FILE is not set")
            return self.nats_ca_file.read_text()
        return None

    def redis_auth(self) -> str | None:
        """The Redis password: from ``redis_password_file`` when set, else ``redis_password``."""
        if self.redis_password_file is not None:
            return self.redis_password_file.read_text().strip() or None
        return self.redis_password.get_secret_value() if self.redis_password else None

    @field_validator("service_password", "sys_password", "redis_password")
    @classmethod
    def _refuse_placeholders(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and is_placeholder_secret(value.get_secret_value()):
            raise ValueError(
                f"refusing a placeholder or short secret (at least {MIN_SECRET_LENGTH} characters, "
                "not an example value); generate one with: openssl rand -hex 24"
            )
        return value
