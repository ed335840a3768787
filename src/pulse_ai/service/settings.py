"""The service's own settings: limits, rate limits, deadlines and the admin key.

They are not in the YAML (which describes providers, pipelines and stores, the same for the Python
API, the CLI and the service): ``pulse-ai serve`` options set them, each with an environment
variable (``PULSE_AI_SERVICE_*``) as its default, so a container sets them without a command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from pydantic import SecretStr

from pulse_ai.errors import ConfigError

__all__ = ["ADMIN_KEY_ENV", "ENV_PREFIX", "ServiceSettings"]

ADMIN_KEY_ENV = "PULSE_AI_ADMIN_KEY"
ENV_PREFIX = "PULSE_AI_SERVICE_"
# An admin key shorter than this is refused at start-up (it guards every tenant's keys and budgets).
MIN_ADMIN_KEY_LENGTH = 24


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the HTTP layer needs beyond the YAML configuration.

    Limits: ``max_body_bytes`` for any request body (413), ``max_inputs`` texts per embeddings call,
    records per index call and messages per chat call, ``max_input_chars`` per text or message
    (400). Rate limits are per API key and per replica (in-process token buckets); 0 turns one
    off. ``request_timeout_s`` bounds every call that reaches a provider, the database or the vector
    store (504); ``key_cache_s`` is how long a verified key is trusted before the database is asked
    again (a revocation through this replica's admin API applies at once; elsewhere within it)."""

    config: Path | None = None
    admin_key: SecretStr | None = field(default=None, repr=False)
    max_body_bytes: int = 8 * 2**20
    max_inputs: int = 2048
    max_input_chars: int = 200_000
    requests_per_minute: int = 600
    tokens_per_minute: int = 1_000_000
    request_timeout_s: float = 120.0
    key_cache_s: float = 5.0
    workers: int = 1
    tenant_label_limit: int = 100

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_inputs", "max_input_chars", "workers", "tenant_label_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"service setting {name} must be at least 1")
        for name in ("requests_per_minute", "tokens_per_minute"):
            if getattr(self, name) < 0:
                raise ConfigError(f"service setting {name} must be 0 (off) or more")
        if self.request_timeout_s <= 0 or self.key_cache_s < 0:
            raise ConfigError("service settings request_timeout_s must be > 0 and key_cache_s >= 0")
        if self.admin_key is not None and len(self.admin_key.get_secret_value()) < MIN_ADMIN_KEY_LENGTH:
            raise ConfigError(f"{ADMIN_KEY_ENV} must be at least {MIN_ADMIN_KEY_LENGTH} characters")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ServiceSettings:
        """Defaults, then ``PULSE_AI_SERVICE_<NAME>`` variables, then ``overrides`` (None = not given)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in fields(cls):
            if spec.name in ("admin_key", "config"):
                continue
            raw = env.get(f"{ENV_PREFIX}{spec.name.upper()}")
            if raw is None:
                continue
            kind = float if spec.name.endswith("_s") else int
            try:
                values[spec.name] = kind(raw)
            except ValueError:
                raise ConfigError(f"{ENV_PREFIX}{spec.name.upper()} must be a number") from None
        config = env.get(f"{ENV_PREFIX}CONFIG")
        if config:
            values["config"] = Path(config)
        admin = env.get(ADMIN_KEY_ENV)
        if admin:
            values["admin_key"] = SecretStr(admin)
        values.update({name: value for name, value in overrides.items() if value is not None})
        return replace(cls(), **values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables (for uvicorn worker processes)."""
        env = {f"{ENV_PREFIX}{spec.name.upper()}": str(getattr(self, spec.name)) for spec in fields(self)}
        env.pop(f"{ENV_PREFIX}ADMIN_KEY")
        if self.config is None:
            env.pop(f"{ENV_PREFIX}CONFIG")
        if self.admin_key is not None:
            env[ADMIN_KEY_ENV] = self.admin_key.get_secret_value()
        return env
