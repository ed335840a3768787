"""The ``cache:`` section of the configuration and a pipeline's ``cache:`` options (``pulse_ai.cache``)."""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from pulse_ai.config_types import Count, NonNegativeSeconds, Seconds

__all__ = ["CacheConfig", "CacheLevelConfig", "PipelineCacheConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineCacheConfig(_Strict):
    """A pipeline's use of the caches. ``share_across_tenants`` (embedding pipelines, for public
    data): one embedding entry serves every tenant. ``cache_generation`` (generation pipelines):
    answers are cached at any temperature, not only at temperature 0."""

    enabled: bool = True
    share_across_tenants: bool = False
    cache_generation: bool = False


def _off(value: object) -> object:
    return "off" if value is False else value  # YAML reads a bare `off` as false


CacheBackendName = Annotated[
    Literal["off", "memory", "sqlite", "redis", "memory+sqlite", "memory+redis"], BeforeValidator(_off)
]


class CacheLevelConfig(_Strict):
    """One cache: its backend (``memory+sqlite``: memory in front of SQLite), how long entries live
    (``ttl`` seconds, none: until evicted or cleared) and the memory tier's bound in bytes."""

    backend: CacheBackendName = "memory+sqlite"
    ttl: Seconds | None = None
    max_bytes: Count = 256 * 1024 * 1024


CACHE_ENV = "PULSE_AI_CACHE"


def _enabled_by_default() -> bool:
    """On, unless ``PULSE_AI_CACHE=off`` (an operator's switch; the test suite uses it too)."""
    return os.environ.get(CACHE_ENV, "on").strip().lower() not in {"off", "false", "0", "no"}


class CacheConfig(_Strict):
    """The caches (``pulse_ai.cache``). ``enabled: false`` turns every one off; ``backend: off`` one.
    ``sqlite_path`` defaults to ``pulse-ai-cache.db`` beside a SQLite database; ``redis_url`` is
    needed by any ``redis`` level (``${VAR}`` allowed; it may hold a password, so it is secret).
    Without an ``enabled`` key, ``PULSE_AI_CACHE=off`` in the environment turns them all off."""

    enabled: bool = Field(default_factory=_enabled_by_default)
    sqlite_path: str | None = None
    redis_url: SecretStr | None = None
    key_prefix: str = Field(default="pulse-ai:", min_length=1, max_length=64)
    timeout: Seconds = 0.25
    retry_after: NonNegativeSeconds = 5.0
    embeddings: CacheLevelConfig = Field(default_factory=CacheLevelConfig)
    generation: CacheLevelConfig = Field(default_factory=lambda: CacheLevelConfig(ttl=3600, max_bytes=32 * 2**20))
    search: CacheLevelConfig = Field(default_factory=lambda: CacheLevelConfig(ttl=600, max_bytes=32 * 2**20))
    schema_: CacheLevelConfig = Field(default_factory=lambda: CacheLevelConfig(max_bytes=4 * 2**20), alias="schema")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _redis_url_when_used(self) -> CacheConfig:
        levels = {"embeddings": self.embeddings, "generation": self.generation, "search": self.search}
        levels["schema"] = self.schema_
        uses = [name for name, level in levels.items() if "redis" in level.backend]
        if self.enabled and uses and self.redis_url is None:
            raise ValueError(f"`redis_url` is needed: {', '.join(uses)} use the redis backend")
        return self
