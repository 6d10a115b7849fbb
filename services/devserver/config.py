"""Configuration of one devserver instance.

``DevserverConfig`` is the single object every devserver module reads (HTTP API, realtime hub,
RTC relay, admin surface).  ``from_env`` reproduces the public backend's environment variables
(wire §14); the command line (``__main__``) layers its flags on top, and flags win.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

Seed = Literal["public", "harbor", "testlab", "family", "empty"]
SEEDS: tuple[Seed, ...] = ("public", "harbor", "testlab", "family", "empty")

# Profile B features (wire §0.2) the devserver can switch on one by one.  ``sfu_events`` is
# implemented by the RTC module; the rest by ``features.py``.
FEATURE_FLAGS: tuple[str, ...] = (
    "legacy_capabilities_path",
    "cursors",
    "event_ids",
    "read_acks",
    "mentions",
    "message_delete",
    "server_unread_counts",
    "server_creation",
    "channel_admin",
    "sfu_events",
)
FEATURES: frozenset[str] = frozenset(FEATURE_FLAGS)

# ``limits`` of the capability document a test may override (``--limit NAME=VALUE``).  Only the
# advertised value changes: like the public backend, the devserver does not enforce message size,
# rate or call size itself (uploads stay enforced at the built-in maximum).
LIMIT_NAMES: tuple[str, ...] = (
    "max_message_bytes",
    "max_upload_bytes",
    "rate_limit_per_minute",
    "max_call_participants",
)

DEFAULT_TICKET_SECRET = "dev-insecure-secret-change-me"  # noqa: S105 - the public backend's documented default
DEFAULT_TICKET_TTL_S = 60
DEFAULT_SIGNALING_PATH = "/v1/rtc/signaling"
DEFAULT_PUBLIC_BASE_URL = "http://localhost:8080"


@dataclass(frozen=True)
class DevserverConfig:
    """Everything that changes what one devserver instance does or says on the wire."""

    port: int = 8080
    host: str = "0.0.0.0"
    seed: Seed = "public"
    server_id: str | None = None  # overrides the single seeded server's id (not with seed=public)
    name: str | None = None  # overrides that server's display name and the capabilities' server_name
    public_base_url: str = DEFAULT_PUBLIC_BASE_URL
    production: bool = False
    features: frozenset[str] = frozenset()
    admin: bool = False
    state_file: Path | None = None
    ticket_secret: str = DEFAULT_TICKET_SECRET
    ticket_ttl_s: int = DEFAULT_TICKET_TTL_S
    signaling_path: str = DEFAULT_SIGNALING_PATH
    # Realtime keep-alive (wire §10/§13); tests shorten them.
    realtime_ping_interval_s: float = 25.0
    realtime_idle_timeout_s: float = 60.0
    realtime_queue_size: int = 64
    # Profile B event log kept for ``resume_from`` replays.
    event_log_size: int = 1000
    # Advertised ``limits`` overrides (``LIMIT_NAMES``); empty: the public backend's values.
    limits: Mapping[str, int] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)
    # New message ids: 0 — ``msg_`` + 8 random hex digits, as the public backend (32 bits, so a busy
    # channel repeats one now and then); N > 0 — ``msg_`` + the message count modulo N in 8 hex
    # digits, so ids repeat every N messages (tests of repeated ids, ADR 0029).
    message_id_cycle: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.features) - FEATURES
        if unknown:
            raise ValueError(f"unknown devserver feature(s): {', '.join(sorted(unknown))}")
        if self.seed not in SEEDS:
            raise ValueError(f"unknown seed {self.seed!r}; choose one of {', '.join(SEEDS)}")
        bad = set(self.limits) - set(LIMIT_NAMES)
        if bad:
            raise ValueError(f"unknown limit(s): {', '.join(sorted(bad))}; known: {', '.join(LIMIT_NAMES)}")
        if self.message_id_cycle < 0:
            raise ValueError("message_id_cycle must be 0 (random ids) or a positive cycle length")
        for name, value in self.limits.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"limit {name} must be a non-negative integer")

    def limit(self, name: str, default: int) -> int:
        """The advertised value of ``limits.<name>``: the override, else the public default."""
        return self.limits.get(name, default)

    def has(self, feature: str) -> bool:
        """True when the Profile B ``feature`` is switched on."""
        return feature in self.features

    @property
    def base_url(self) -> str:
        """Public base URL without a trailing slash (origin of attachment/avatar URLs)."""
        return self.public_base_url.rstrip("/")

    @property
    def signaling_url(self) -> str:
        """Advertised signaling URL: the base URL's host with ``ws``/``wss`` plus the signaling path."""
        base = self.base_url
        if base.startswith("https://"):
            origin = "wss://" + base[len("https://") :]
        elif base.startswith("http://"):
            origin = "ws://" + base[len("http://") :]
        else:
            origin = base
        # Go's url handling keeps only scheme + host of the base URL.
        scheme, sep, rest = origin.partition("://")
        host = rest.split("/", 1)[0]
        return f"{scheme}{sep}{host}{self.signaling_path}"

    def with_features(self, names: Iterable[str]) -> DevserverConfig:
        return replace(self, features=frozenset(self.features | set(names)))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> DevserverConfig:
        """Build a config from the public backend's environment variables (wire §14), then ``overrides``."""
        env = os.environ if env is None else env
        kwargs: dict[str, object] = {}
        addr = env.get("OPENCHAT_HTTP_ADDR", "").strip()
        if addr:
            host, _, port = addr.rpartition(":")
            if port.isdigit():
                kwargs["port"] = int(port)
            kwargs["host"] = host or "0.0.0.0"
        base = env.get("OPENCHAT_PUBLIC_BASE_URL", "").strip()
        if base:
            kwargs["public_base_url"] = base
        if env.get("OPENCHAT_ENV", "").strip():
            kwargs["production"] = env["OPENCHAT_ENV"].strip().lower() == "production"
        ttl = env.get("OPENCHAT_JOIN_TICKET_TTL_SECONDS", "").strip()
        if ttl:
            try:
                ttl_value = int(ttl)
            except ValueError:
                ttl_value = DEFAULT_TICKET_TTL_S
            kwargs["ticket_ttl_s"] = ttl_value if ttl_value > 0 else DEFAULT_TICKET_TTL_S
        secret = env.get("OPENCHAT_JOIN_TICKET_SECRET", "").strip()
        if secret:
            kwargs["ticket_secret"] = secret
        path = env.get("OPENCHAT_SIGNALING_PATH", "").strip()
        if path:
            kwargs["signaling_path"] = path
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]
