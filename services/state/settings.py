"""Settings of the state service (``OPENCHAT_STATE_*``), on top of the shared ``Settings``."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from services.core.settings import MIN_SECRET_LENGTH, Settings, is_placeholder_secret


class StateSettings(Settings):
    # HMAC key of the HTTP bearer tokens; unset: a random key per process (tokens then die with it,
    # and replicas do not share them — set it when running several replicas)
    state_http_secret: SecretStr | None = None
    state_token_ttl_s: float = Field(default=900.0, ge=10.0, le=86400.0)
    state_media_cache_bytes: int = Field(default=512 * 1024**2, ge=1024 * 1024)  # LRU bound on disk
    state_media_max_bytes: int = Field(default=25 * 1024**2, ge=1024)  # largest file fetched
    state_media_timeout_s: float = Field(default=10.0, gt=0, le=120.0)
    # message search (issue 17, ADR 0014): the FTS5 index in $OPENCHAT_HOME/data/search
    state_search_enabled: bool = True
    # the indexer in a child process (the default), fed by the materializer's pass over a socket:
    # its inserts share no interpreter (GIL) with the view's (False: in the service's process, fed
    # by the materializer's pass; ADR 0014, bench/RESULTS.md)
    state_search_worker: bool = True
    # the worker is fed by the view's pass over a socket (False: it reads the stream itself)
    state_search_worker_fed: bool = True
    state_search_worker_nice: int = Field(default=10, ge=0, le=19)  # CPU priority below the view's
    # the worker only gets CPU nothing else of the stack wants (Linux SCHED_IDLE): the index lags
    # during a burst and catches up after it
    state_search_worker_idle: bool = False
    state_search_reconcile_s: float = Field(default=30.0, ge=0.05, le=3600.0)  # registry → index
    state_search_budget_s: float = Field(default=2.0, gt=0, le=30.0)  # one query's time bound

    @field_validator("state_http_secret")
    @classmethod
    def _refuse_placeholder_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and is_placeholder_secret(value.get_secret_value()):
            raise ValueError(
                f"refusing a placeholder or short secret (at least {MIN_SECRET_LENGTH} characters)"
            )
        return value
