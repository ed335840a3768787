"""The storage under the caches: one small base class, and the in-process LRU bounded in bytes.

A backend maps string keys (``namespace:scope:digest``, see ``keys.py``) to bytes with an optional
TTL, and can list, count and clear by namespace and scope (so a tenant's entries can be purged).
It knows nothing of vectors or tenants' rules: checking entries is the codec's job, and timeouts and
failures are handled once, around every backend, by ``level.Tier``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from pulse_ai.cache.keys import parse_key

__all__ = ["CacheBackend", "MemoryBackend", "StoredUsage"]

# What an entry costs beyond its key and value bytes (the dict slot, the tuple, the objects' headers).
ENTRY_OVERHEAD = 120


@dataclass(frozen=True)
class StoredUsage:
    """What a backend holds for one namespace and scope."""

    namespace: str
    scope: str
    entries: int
    bytes: int


class CacheBackend(ABC):
    tier: ClassVar[str]
    #: Shared with other processes (its counters and versions outlive this one).
    persistent: ClassVar[bool] = True

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, None where missing or expired, in order."""

    @abstractmethod
    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None: ...

    @abstractmethod
    async def delete_many(self, keys: Sequence[str]) -> None: ...

    @abstractmethod
    async def scan(self, namespace: str, scope: str) -> list[tuple[str, bytes]]:
        """Every live entry of one namespace and scope."""

    @abstractmethod
    async def clear(self, namespace: str | None = None, scope: str | None = None) -> int:
        """Remove entries (of a namespace, of a scope, or both); returns how many."""

    @abstractmethod
    async def usage(self) -> list[StoredUsage]: ...

    async def add_counters(self, increments: Mapping[str, float]) -> None:  # noqa: B027 - optional
        """Add to the counters kept with the data (persistent backends)."""

    async def read_counters(self) -> dict[str, float]:
        return {}

    async def clear_counters(self, match: Callable[[str], bool]) -> None:  # noqa: B027 - optional
        """Remove the counters whose name ``match`` accepts."""

    async def aclose(self) -> None:  # noqa: B027 - optional
        """Release connections."""


class MemoryBackend(CacheBackend):
    """An LRU in this process, bounded by the bytes of its keys and values (plus a fixed overhead per
    entry); the least recently used entries go first. Never fails, never blocks."""

    tier = "memory"
    persistent = False

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _size(key: str, value: bytes) -> int:
        return len(key) + len(value) + ENTRY_OVERHEAD

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        entries = self._entries
        found: list[bytes | None] = []
        for key in keys:
            entry = entries.get(key)
            if entry is None:
                found.append(None)
            elif entry[1] is not None and entry[1] <= now:
                self._remove(key)
                found.append(None)
            else:
                entries.move_to_end(key)
                found.append(entry[0])
        return found

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        expires = None if ttl is None else self._clock() + ttl
        for key, value in items:
            size = self._size(key, value)
            if size > self.max_bytes:
                continue
            self._remove(key)
            self._entries[key] = (value, expires)
            self.bytes += size
        while self.bytes > self.max_bytes and self._entries:
            oldest = next(iter(self._entries))
            self._remove(oldest)

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= self._size(key, entry[0])

    async def delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._remove(key)

    async def scan(self, namespace: str, scope: str) -> list[tuple[str, bytes]]:
        prefix = f"{namespace}:{scope}:"
        now = self._clock()
        return [
            (key, value)
            for key, (value, expires) in list(self._entries.items())
            if key.startswith(prefix) and (expires is None or expires > now)
        ]

    async def clear(self, namespace: str | None = None, scope: str | None = None) -> int:
        doomed = [key for key in self._entries if _matches(key, namespace, scope)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    async def usage(self) -> list[StoredUsage]:
        totals: dict[tuple[str, str], list[int]] = {}
        for key, (value, _) in self._entries.items():
            slot = totals.setdefault(parse_key(key), [0, 0])
            slot[0] += 1
            slot[1] += self._size(key, value)
        return [StoredUsage(ns, scope, count, size) for (ns, scope), (count, size) in sorted(totals.items())]


def _matches(key: str, namespace: str | None, scope: str | None) -> bool:
    key_namespace, key_scope = parse_key(key)
    return (namespace is None or key_namespace == namespace) and (scope is None or key_scope == scope)
