"""Fault handling around every backend (``Tier``), and one cache level over its tiers (``CacheLevel``).

A backend that fails or is slow never fails a call: each operation is bounded by a short timeout
(plus a little per entry, for big batches), and a failure turns into a miss (a read) or a skipped
write. The first failure logs ONE warning and counts an error; the tier is then left alone for
``retry_after`` seconds (so an outage costs no timeouts on every call), tried again after that, and
an info line says when it answers again. Warnings name the tier and the error type, never a key or
a text.

A level is one or two tiers, front first (memory in front of SQLite or Redis). A read asks each
tier in turn for what is still missing, and copies what a back tier had into the front ones.

**Values are bound to their keys.** Every value is stored with a digest of its key in front
(``codec.bind``) and checked when read: a value found under a key it was not stored under (a row
copied or tampered with, a mix-up in a backend) is counted as corrupt, deleted and treated as a
miss, never served as that key's answer.

**Clears reach every process.** A front (memory) tier is this process's alone, so a clear made by
another process (a tenant purge, ``pulse-ai cache clear``) could not reach it. Each clear therefore
replaces an *epoch* token in the shared back tier (one per level and tenant, and one per level for
"everything"); before each read a level with a memory tier in front of a shared one reads the two
tokens that concern the caller, and drops its memory entries of that tenant (or all of them) when a
token changed since it last looked. A back tier that is down cannot say: the memory tier is then
not served either (a read is a miss), since another process may have cleared it meanwhile.

**A clear is never silently partial.** Clears (and the epoch tokens they write) are tried on every
tier even when it is marked down, with a longer timeout (``CLEAR_TIMEOUT``), and a tier that cannot
be cleared raises :class:`~pulse_ai.errors.CacheClearIncompleteError` after the others were cleared.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.exceptions import RedisError

from pulse_ai.cache.backend import CacheBackend
from pulse_ai.cache.codec import bind, unbind
from pulse_ai.cache.keys import ALL_SCOPE, epoch_key
from pulse_ai.cache.stats import CacheStats
from pulse_ai.errors import CacheClearIncompleteError

__all__ = ["CacheLevel", "Tier"]

log = logging.getLogger("pulse_ai.cache")
T = TypeVar("T")
PER_ENTRY_SECONDS = 0.0005
# A clear may remove many entries (200,000 Redis keys took ~2 s here): it gets its own bound.
CLEAR_TIMEOUT = 60.0
# What a backend may raise when it is down, slow or damaged; anything else is a bug and is raised.
BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    OSError,
    ConnectionError,
    RedisError,
    sqlite3.Error,
    RuntimeError,  # an executor or client already shut down
)


class Tier:
    """One backend with the fault policy. Shared by every level that uses the backend, so an outage
    warns once, not once per level."""

    def __init__(
        self,
        backend: CacheBackend,
        stats: CacheStats,
        *,
        timeout: float = 0.25,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.name = backend.tier
        self.stats = stats
        self.timeout = timeout
        self.retry_after = retry_after
        self._clock = clock
        self._down_until: float | None = None
        self.degraded = False
        self.warnings = 0

    @property
    def available(self) -> bool:
        return self._down_until is None or self._clock() >= self._down_until

    async def run(
        self, operation: Callable[[], Awaitable[T]], default: T, *, entries: int, cache: str, tenant: str
    ) -> T:
        """The operation's result, or ``default`` when the backend is down, slow or failing."""
        if self.backend.tier == "memory":  # in-process: nothing to time out, nothing to fail
            return await operation()
        if not self.available:
            return default
        try:
            result = await asyncio.wait_for(operation(), self.timeout + PER_ENTRY_SECONDS * entries)
        except BACKEND_ERRORS as error:
            self._failed(error, cache, tenant)
            return default
        if self.degraded:
            self.degraded = False
            log.info("cache tier %s answers again", self.name)
        self._down_until = None
        return result

    async def run_required(self, operation: Callable[[], Awaitable[T]], *, cache: str, tenant: str) -> T:
        """The operation's result, tried even when the tier is marked down (a clear must not be
        skipped); a failure is counted and raised as ``CacheClearIncompleteError``."""
        try:
            result = await asyncio.wait_for(operation(), CLEAR_TIMEOUT)
        except BACKEND_ERRORS as error:
            if self.backend.tier != "memory":
                self._failed(error, cache, tenant)
            reason = "timed out" if isinstance(error, TimeoutError) else type(error).__name__
            raise CacheClearIncompleteError(
                None if tenant == "*" else tenant, [f"{cache} level, {self.name} tier: {reason}"]
            ) from None
        if self.degraded:
            self.degraded = False
            log.info("cache tier %s answers again", self.name)
        self._down_until = None
        return result

    def _failed(self, error: BaseException, cache: str, tenant: str) -> None:
        self.stats.error(cache, self.name, tenant)
        self._down_until = self._clock() + self.retry_after
        if not self.degraded:
            self.degraded = True
            self.warnings += 1
            reason = "timed out" if isinstance(error, TimeoutError) else type(error).__name__
            log.warning(
                "cache tier %s is unavailable (%s); serving misses and skipping writes until it answers again",
                self.name,
                reason,
            )


class CacheLevel:
    """One cache (embeddings, generation, search or schema) over one or two tiers, front first."""

    def __init__(self, name: str, tiers: Sequence[Tier], ttl: float | None, stats: CacheStats) -> None:
        if not tiers:
            raise ValueError("a cache level needs at least one tier")
        self.name = name
        self.tiers = list(tiers)
        self.ttl = ttl
        self.stats = stats
        self._epochs: dict[str, bytes | None] = {}  # scope -> the epoch token last read

    def __repr__(self) -> str:
        return f"CacheLevel({self.name!r}, tiers={[t.name for t in self.tiers]}, ttl={self.ttl})"

    @property
    def back(self) -> Tier:
        """The authoritative tier: shared with other processes when the level has a persistent one."""
        return self.tiers[-1]

    @property
    def shares_front(self) -> bool:
        """A memory tier in front of a tier that other processes share (and may clear)."""
        return len(self.tiers) > 1 and self.back.backend.persistent

    async def _check_epochs(self, tenant: str) -> bool:
        """Drop this process's front entries of ``tenant`` (or all of them) when another process
        cleared them since we last looked (see the module's docstring). False when the back tier
        cannot tell: the front tiers must not be served then."""
        if not self.shares_front:
            return True
        scopes = (ALL_SCOPE, tenant)
        tier = self.back
        unknown: list[bytes | None] | None = None
        values = await tier.run(
            lambda: _some_values(tier.backend.get_many([epoch_key(self.name, scope) for scope in scopes])),
            unknown,
            entries=2,
            cache=self.name,
            tenant=tenant,
        )
        if values is None:  # the back tier is down: it cannot tell whether another process cleared
            return False
        for scope, value in zip(scopes, values, strict=True):
            if scope in self._epochs and self._epochs[scope] == value:
                continue
            # changed, or never looked at: nothing older than this token may be served
            await self._clear_front(None if scope == ALL_SCOPE else scope)
            self._epochs[scope] = value
        return True

    async def _clear_front(self, scope: str | None) -> None:
        for tier in self.tiers[:-1]:
            await tier.run(
                lambda t=tier: t.backend.clear(None, scope),  # type: ignore[misc]
                0,
                entries=0,
                cache=self.name,
                tenant=scope or "*",
            )

    async def invalidate(self, scope: str | None) -> None:
        """After a clear of ``scope`` (a tenant; None: everything): a new epoch token in the shared
        tier, so every other process drops its front entries of that scope before its next read.
        Raises ``CacheClearIncompleteError`` when the token cannot be written."""
        if not self.shares_front:
            return
        key_scope = scope or ALL_SCOPE
        token = secrets.token_bytes(16)
        tier = self.back
        await tier.run_required(
            lambda: tier.backend.set_many([(epoch_key(self.name, key_scope), token)], None),
            cache=self.name,
            tenant=scope or "*",
        )
        self._epochs[key_scope] = token

    async def get_many(self, keys: Sequence[str], tenant: str) -> list[tuple[bytes, str] | None]:
        """Each key's (value, tier that had it), or None; counts hits and misses per tier."""
        fresh = await self._check_epochs(tenant)
        found: list[tuple[bytes, str] | None] = [None] * len(keys)
        todo = list(range(len(keys)))
        for position, tier in enumerate(self.tiers):
            if not todo:
                break
            if not fresh and tier is not self.back:  # maybe cleared by another process meanwhile
                self.stats.miss(self.name, tier.name, tenant, len(todo))
                continue
            wanted = [keys[i] for i in todo]
            values = await tier.run(
                lambda t=tier, w=wanted: t.backend.get_many(w),  # type: ignore[misc]
                [None] * len(wanted),
                entries=len(wanted),
                cache=self.name,
                tenant=tenant,
            )
            promote: list[tuple[str, bytes]] = []
            left: list[int] = []
            foreign: list[str] = []
            for index, value in zip(todo, values, strict=True):
                unbound = None if value is None else unbind(keys[index], value)
                if unbound is None:
                    left.append(index)
                    if value is not None:
                        foreign.append(keys[index])
                    continue
                assert value is not None
                found[index] = (unbound, tier.name)
                if position:
                    promote.append((keys[index], value))
            self.stats.hit(self.name, tier.name, tenant, len(todo) - len(left))
            self.stats.miss(self.name, tier.name, tenant, len(left))
            if foreign:
                await self._drop_foreign(tier, foreign, tenant)
            if promote:
                await self._write(self.tiers[:position], promote, tenant)
            todo = left
        return found

    async def _drop_foreign(self, tier: Tier, keys: Sequence[str], tenant: str) -> None:
        """Entries whose value was not stored under their key: counted as corrupt and removed."""
        self.stats.corrupt(self.name, tier.name, tenant, len(keys))
        await tier.run(lambda: tier.backend.delete_many(keys), None, entries=len(keys), cache=self.name, tenant=tenant)

    async def set_many(self, items: Sequence[tuple[str, bytes]], tenant: str) -> None:
        await self._write(self.tiers, [(key, bind(key, value)) for key, value in items], tenant)

    async def _write(self, tiers: Sequence[Tier], items: Sequence[tuple[str, bytes]], tenant: str) -> None:
        if not items:
            return
        size = sum(len(key) + len(value) for key, value in items)
        for tier in tiers:
            written = await tier.run(
                lambda t=tier: _true(t.backend.set_many(items, self.ttl)),  # type: ignore[misc]
                False,
                entries=len(items),
                cache=self.name,
                tenant=tenant,
            )
            if written:
                self.stats.written(self.name, tier.name, tenant, size)

    async def delete_many(self, keys: Sequence[str], tenant: str) -> None:
        for tier in self.tiers:
            await tier.run(
                lambda t=tier: t.backend.delete_many(keys),  # type: ignore[misc]
                None,
                entries=len(keys),
                cache=self.name,
                tenant=tenant,
            )

    async def get_back(self, key: str, tenant: str) -> bytes | None:
        """Read from the authoritative tier only (versions and schema must not be served stale by a
        front tier that another process cannot update)."""
        tier = self.back
        missing: list[bytes | None] = [None]
        values = await tier.run(
            lambda: tier.backend.get_many([key]), missing, entries=1, cache=self.name, tenant=tenant
        )
        if values[0] is None:
            return None
        unbound = unbind(key, values[0])
        if unbound is None:
            await self._drop_foreign(tier, [key], tenant)
        return unbound

    async def set_back(self, items: Sequence[tuple[str, bytes]], tenant: str, ttl: float | None) -> bool:
        tier = self.back
        bound = [(key, bind(key, value)) for key, value in items]
        return await tier.run(
            lambda: _true(tier.backend.set_many(bound, ttl)), False, entries=len(items), cache=self.name, tenant=tenant
        )

    async def scan_back(self, namespace: str, scope: str) -> list[tuple[str, bytes]] | None:
        """Every entry of a namespace and scope in the authoritative tier; None when it is down."""
        tier = self.back
        entries = await tier.run(
            lambda: _some(tier.backend.scan(namespace, scope)), None, entries=0, cache=self.name, tenant=scope
        )
        if entries is None:
            return None
        kept: list[tuple[str, bytes]] = []
        foreign: list[str] = []
        for key, value in entries:
            unbound = unbind(key, value)
            if unbound is None:
                foreign.append(key)
            else:
                kept.append((key, unbound))
        if foreign:
            await self._drop_foreign(tier, foreign, scope)
        return kept

    async def clear(self, namespace: str | None, scope: str | None) -> int:
        """Remove the entries of ``namespace`` (None: all) and ``scope`` (a tenant; None: all) from
        every tier; ``CacheClearIncompleteError`` (after trying every tier) when one could not be."""
        removed = 0
        failures: list[str] = []
        for tier in self.tiers:
            try:
                removed += await tier.run_required(
                    lambda t=tier: t.backend.clear(namespace, scope),  # type: ignore[misc]
                    cache=self.name,
                    tenant=scope or "*",
                )
            except CacheClearIncompleteError as error:
                failures.extend(error.failures)
        try:
            await self.invalidate(scope)
        except CacheClearIncompleteError as error:
            failures.extend(error.failures)
        if failures:
            raise CacheClearIncompleteError(scope, failures, removed=removed)
        return removed


async def _some_values(work: Awaitable[list[bytes | None]]) -> list[bytes | None] | None:
    return await work


async def _true(work: Awaitable[None]) -> bool:
    await work
    return True


async def _some(work: Awaitable[list[tuple[str, bytes]]]) -> list[tuple[str, bytes]] | None:
    return await work
