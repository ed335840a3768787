"""A cache in Redis (the ``redis`` package's asyncio client), shared by every service replica.

Keys are ``<prefix><namespace>:<scope>:<digest>`` with a configurable prefix, so that several
deployments (or test runs) can share one Redis. The client makes no retries of its own and has short
socket timeouts: a Redis that is down or slow must turn into a quick miss (``level.Tier``), not a
wait. A client belongs to one event loop; used from a new loop it is made afresh.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pulse_ai.cache.backend import CacheBackend, StoredUsage
from pulse_ai.cache.keys import parse_key

__all__ = ["RedisBackend"]

CHUNK = 1000
_GLOB = re.compile(r"([*?\[\]\\])")


class RedisBackend(CacheBackend):
    tier = "redis"

    def __init__(self, url: str, *, prefix: str = "pulse-ai:", timeout: float = 0.25) -> None:
        self._url = url
        self.prefix = prefix
        self.timeout = timeout
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # the URL may hold a password: never shown
        return f"RedisBackend(prefix={self.prefix!r})"

    @property
    def client(self) -> Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = Redis.from_url(
                self._url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
            self._loop = loop
        return self._client

    def _pattern(self, namespace: str | None, scope: str | None) -> str:
        return (
            _GLOB.sub(r"\\\1", self.prefix)
            + (_GLOB.sub(r"\\\1", namespace) if namespace else "*")
            + ":"
            + (_GLOB.sub(r"\\\1", scope) if scope else "*")
            + ":*"
        )

    async def _keys(self, namespace: str | None, scope: str | None) -> list[bytes]:
        return [key async for key in self.client.scan_iter(match=self._pattern(namespace, scope), count=CHUNK)]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        found: list[bytes | None] = []
        for start in range(0, len(keys), CHUNK):
            chunk = [self.prefix + key for key in keys[start : start + CHUNK]]
            found.extend(_as_bytes(value) for value in await self.client.mget(chunk))
        return found

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        milliseconds = None if ttl is None else max(1, int(ttl * 1000))
        for start in range(0, len(items), CHUNK):
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in items[start : start + CHUNK]:
                    pipe.set(self.prefix + key, value, px=milliseconds)
                await pipe.execute()

    async def delete_many(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), CHUNK):
            chunk = [self.prefix + key for key in keys[start : start + CHUNK]]
            if chunk:
                await self.client.unlink(*chunk)

    async def scan(self, namespace: str, scope: str) -> list[tuple[str, bytes]]:
        keys = await self._keys(namespace, scope)
        found: list[tuple[str, bytes]] = []
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            values = await self.client.mget(chunk)
            found.extend(
                (key.decode()[len(self.prefix) :], _as_bytes(value) or b"")
                for key, value in zip(chunk, values, strict=True)
                if value is not None
            )
        return found

    async def clear(self, namespace: str | None = None, scope: str | None = None) -> int:
        keys = await self._keys(namespace, scope)
        removed = 0
        for start in range(0, len(keys), CHUNK):
            removed += int(await self.client.unlink(*keys[start : start + CHUNK]))
        return removed

    async def usage(self) -> list[StoredUsage]:
        keys = await self._keys(None, None)
        totals: dict[tuple[str, str], list[int]] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            async with self.client.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.strlen(key)
                lengths = await pipe.execute()
            for key, length in zip(chunk, lengths, strict=True):
                name = key.decode()[len(self.prefix) :]
                if name.count(":") < 2:
                    continue
                slot = totals.setdefault(parse_key(name), [0, 0])
                slot[0] += 1
                slot[1] += len(key) + int(length)
        return [StoredUsage(ns, scope, count, size) for (ns, scope), (count, size) in sorted(totals.items())]

    @property
    def _counters(self) -> str:
        return f"{self.prefix}counters"

    async def add_counters(self, increments: Mapping[str, float]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for name, value in increments.items():
                pipe.hincrbyfloat(self._counters, name, value)
            await pipe.execute()

    async def read_counters(self) -> dict[str, float]:
        raw = await self.client.hgetall(self._counters)
        return {_as_text(name): float(value) for name, value in raw.items()}

    async def clear_counters(self, match: Callable[[str], bool]) -> None:
        names = [name for name in (await self.read_counters()) if match(name)]
        if names:
            await self.client.hdel(self._counters, *names)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


def _as_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
