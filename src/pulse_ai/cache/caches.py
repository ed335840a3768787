"""``Caches``: the four cache levels built from the ``cache:`` configuration, and their upkeep.

Levels: ``embeddings`` (a vector per text), ``generation`` (answers), ``search`` (search results and
the per tenant+table versions that invalidate them), ``schema`` (what each tenant has indexed). Each
is ``off`` or one or two tiers; tiers of one kind share one backend (one SQLite file, one Redis
client) and one fault policy, while each level's memory tier has its own byte bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pulse_ai.cache.backend import CacheBackend, MemoryBackend, StoredUsage
from pulse_ai.cache.keys import Namespace
from pulse_ai.cache.level import CacheLevel, Tier
from pulse_ai.cache.stats import CacheStats, Counts, StatKey, merge_counters, parse_counter_name
from pulse_ai.config import CacheConfig, CacheLevelConfig
from pulse_ai.errors import CacheClearIncompleteError, InputError

if TYPE_CHECKING:
    from pulse_ai.cache.vectors import VectorCache

__all__ = ["LEVELS", "TIERS", "Caches", "default_sqlite_path"]

LEVELS = ("embeddings", "generation", "search", "schema")
TIERS = ("memory", "sqlite", "redis")
NAMESPACES = {
    "embeddings": (Namespace.EMBEDDINGS,),
    "generation": (Namespace.GENERATION,),
    "search": (Namespace.SEARCH, Namespace.VERSION),
    "schema": (Namespace.SCHEMA,),
}
FLUSH_EVERY = 30.0  # seconds between two writes of the counters to the persistent tiers
CACHE_FILE = "pulse-ai-cache.db"


def default_sqlite_path(database_url: str | None) -> Path:
    """``pulse-ai-cache.db`` beside a SQLite database file; ``./data/`` otherwise."""
    if database_url:
        try:
            url = make_url(database_url)
        except ArgumentError:
            url = None
        if url is not None and url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(str(url.database)).parent / CACHE_FILE
    return Path("data") / CACHE_FILE


@dataclass(frozen=True)
class UsageRow:
    level: str
    tier: str
    tenant: str
    entries: int
    bytes: int


class Caches:
    """The cache levels of one process (None where a level is off) and their shared tiers."""

    def __init__(
        self,
        *,
        embeddings: CacheLevel | None = None,
        generation: CacheLevel | None = None,
        search: CacheLevel | None = None,
        schema: CacheLevel | None = None,
        stats: CacheStats | None = None,
        tiers: list[Tier] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.embeddings = embeddings
        self.generation = generation
        self.search = search
        self.schema = schema
        self.stats = stats or CacheStats()
        levels = [level for level in (embeddings, generation, search, schema) if level is not None]
        self.tiers = tiers or list({id(t): t for level in levels for t in level.tiers}.values())
        self._clock = clock
        self._flushed_at = clock()

    @classmethod
    def from_config(
        cls,
        config: CacheConfig,
        *,
        database_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Caches:
        """Levels as configured. Nothing connects yet: SQLite opens on first use, Redis connects
        on first use (and a Redis that is down then is a miss, not an error)."""
        stats = CacheStats()
        if not config.enabled:
            return cls(stats=stats)
        shared: dict[str, Tier] = {}

        def tier(kind: str, level: CacheLevelConfig) -> Tier:
            if kind == "memory":
                return Tier(MemoryBackend(level.max_bytes), stats, timeout=config.timeout)
            if kind not in shared:
                backend: CacheBackend
                if kind == "sqlite":
                    from pulse_ai.cache.sqlite import SqliteBackend

                    backend = SqliteBackend(config.sqlite_path or default_sqlite_path(database_url))
                else:
                    from pulse_ai.cache.redis_backend import RedisBackend

                    assert config.redis_url is not None  # checked by the configuration
                    url = config.redis_url.get_secret_value()
                    backend = RedisBackend(url, prefix=config.key_prefix, timeout=config.timeout)
                shared[kind] = Tier(backend, stats, timeout=config.timeout, retry_after=config.retry_after, clock=clock)
            return shared[kind]

        def level(name: str, level_config: CacheLevelConfig) -> CacheLevel | None:
            if level_config.backend == "off":
                return None
            tiers = [tier(kind, level_config) for kind in level_config.backend.split("+")]
            return CacheLevel(name, tiers, level_config.ttl, stats)

        return cls(
            embeddings=level("embeddings", config.embeddings),
            generation=level("generation", config.generation),
            search=level("search", config.search),
            schema=level("schema", config.schema_),
            stats=stats,
            clock=clock,
        )

    @classmethod
    def in_memory(cls, max_bytes: int = 64 * 2**20, ttl: float | None = None) -> Caches:
        """Every level in this process only (tests, one-process tools)."""
        stats = CacheStats()

        def level(name: str) -> CacheLevel:
            return CacheLevel(name, [Tier(MemoryBackend(max_bytes), stats)], ttl, stats)

        return cls(
            embeddings=level("embeddings"),
            generation=level("generation"),
            search=level("search"),
            schema=level("schema"),
            stats=stats,
        )

    def __repr__(self) -> str:
        return f"Caches({', '.join(repr(level) for level in self.levels.values())})"

    @property
    def levels(self) -> dict[str, CacheLevel]:
        found = {"embeddings": self.embeddings, "generation": self.generation, "search": self.search}
        found["schema"] = self.schema
        return {name: level for name, level in found.items() if level is not None}

    def vector_cache(self) -> VectorCache | None:
        """The search and schema hooks for a vector store and indexer (None when both are off)."""
        if self.search is None and self.schema is None:
            return None
        from pulse_ai.cache.vectors import VectorCache

        return VectorCache(self.search, self.schema, self.stats)

    # ---- upkeep --------------------------------------------------------------------------
    async def purge_tenant(self, tenant: str) -> int:
        """Remove every entry of ``tenant`` from every level and tier (entries in the shared scope of
        pipelines that opted in to sharing are not the tenant's and stay)."""
        return await self.clear(tenant=tenant)

    async def clear(self, *, tenant: str | None = None, level: str | None = None) -> int:
        """Remove entries: of one tenant, of one level (embeddings, generation, search, schema) or
        one tier (memory, sqlite, redis), or everything. Counters go with them."""
        if level is not None and level not in LEVELS and level not in TIERS:
            raise InputError(f"unknown cache level {level!r}; one of: {', '.join(LEVELS + TIERS)}")
        removed = 0
        failures: list[str] = []
        for name, cache_level in self.levels.items():
            if level in LEVELS and level != name:
                continue
            for tier in cache_level.tiers:
                if level in TIERS and tier.name != level:
                    continue
                for namespace in NAMESPACES[name]:
                    try:  # tried even on a tier marked down: a clear is never skipped in silence
                        removed += await tier.run_required(
                            lambda t=tier, ns=namespace: t.backend.clear(ns, tenant),  # type: ignore[misc]
                            cache=name,
                            tenant=tenant or "*",
                        )
                    except CacheClearIncompleteError as error:
                        failures.extend(error.failures)
            # other processes' memory tiers of this level drop the cleared entries before their next read
            try:
                await cache_level.invalidate(tenant)
            except CacheClearIncompleteError as error:
                failures.extend(error.failures)

        def doomed(counter: str) -> bool:
            parsed = parse_counter_name(counter)
            if parsed is None:
                return False
            key = parsed[0]
            return (tenant is None or key.tenant == tenant) and level in (None, key.cache, key.tier)

        for tier in self.tiers:
            await tier.run(
                lambda t=tier: t.backend.clear_counters(doomed),  # type: ignore[misc]
                None,
                entries=0,
                cache="all",
                tenant=tenant or "*",
            )
        for key in [k for k in self.stats.totals if doomed(f"{k.cache}|{k.tier}|{k.tenant}|hits")]:
            del self.stats.totals[key]
        if failures:
            raise CacheClearIncompleteError(tenant, failures, removed=removed)
        return removed

    async def usage(self) -> list[UsageRow]:
        """Entries and bytes held per level, tier and tenant (the memory tiers: this process only)."""
        rows: list[UsageRow] = []
        seen: dict[int, list[StoredUsage]] = {}
        for name, cache_level in self.levels.items():
            for tier in cache_level.tiers:
                if id(tier) not in seen:
                    seen[id(tier)] = await tier.run(tier.backend.usage, [], entries=0, cache=name, tenant="*")
                rows.extend(
                    UsageRow(name, tier.name, stored.scope, stored.entries, stored.bytes)
                    for stored in seen[id(tier)]
                    if stored.namespace in NAMESPACES[name]
                )
        return rows

    async def counters(self) -> dict[StatKey, Counts]:
        """Counters of every process: the persistent tiers' (after a flush of this process's) plus
        this process's memory-only levels."""
        await self.flush_stats()
        merged: dict[StatKey, Counts] = {}
        for tier in self.tiers:
            if tier.backend.persistent:
                nothing: dict[str, float] = {}
                raw = await tier.run(tier.backend.read_counters, nothing, entries=0, cache="all", tenant="*")
                for key, counts in merge_counters(raw).items():
                    merged.setdefault(key, Counts()).add(counts)
        persistent_levels = {name for name, level in self.levels.items() if level.back.backend.persistent}
        for key, counts in self.stats.totals.items():
            if key.cache not in persistent_levels:
                merged.setdefault(key, Counts()).add(counts)
        return merged

    async def flush_stats(self) -> None:
        """Add this process's new counts to each level's persistent tier (kept for later on failure)."""
        self._flushed_at = self._clock()
        by_tier: dict[int, tuple[Tier, list[str]]] = {}
        for name, level in self.levels.items():
            if level.back.backend.persistent:
                by_tier.setdefault(id(level.back), (level.back, []))[1].append(name)
        for tier, names in by_tier.values():
            increments = self.stats.take_pending(names)
            if not increments:
                continue
            written = await tier.run(
                lambda t=tier, inc=increments: _written(t.backend.add_counters(inc)),  # type: ignore[misc]
                False,
                entries=len(increments),
                cache="all",
                tenant="*",
            )
            if not written:
                self.stats.restore_pending(increments)

    async def maybe_flush_stats(self) -> None:
        if self._clock() - self._flushed_at >= FLUSH_EVERY:
            await self.flush_stats()

    async def aclose(self) -> None:
        """Write the counters and release every backend (safe to repeat)."""
        await self.flush_stats()
        for tier in self.tiers:
            await tier.backend.aclose()

    async def __aenter__(self) -> Caches:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _written(work: object) -> bool:
    await work  # type: ignore[misc]
    return True
