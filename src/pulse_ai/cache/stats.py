"""Counters: hits, misses, errors, corrupt entries dropped, bytes written and avoided cost, per cache
(embeddings, generation, search, schema), tier (memory, sqlite, redis) and tenant.

They are kept in this process and, for caches with a persistent tier, added to that tier's counters
from time to time (``Caches.flush_stats``, and at close), so that ``pulse-ai cache stats`` can show
what every process saved. Money is counted in integer nano-dollars, shown as ``Decimal`` USD.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal

__all__ = ["METRICS", "CacheStats", "Counts", "StatKey", "counter_name", "merge_counters", "parse_counter_name"]

NANOS = Decimal(1_000_000_000)
METRICS = ("hits", "misses", "errors", "corrupt", "bytes_written", "avoided_nanos")


@dataclass(frozen=True, order=True)
class StatKey:
    cache: str
    tier: str
    tenant: str


@dataclass
class Counts:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    corrupt: int = 0
    bytes_written: int = 0
    avoided_nanos: int = 0

    @property
    def avoided_usd(self) -> Decimal:
        return Decimal(self.avoided_nanos) / NANOS

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def counter_name(key: StatKey, metric: str) -> str:
    return f"{key.cache}|{key.tier}|{key.tenant}|{metric}"


def parse_counter_name(name: str) -> tuple[StatKey, str] | None:
    parts = name.split("|")
    if len(parts) != 4 or parts[3] not in METRICS:
        return None
    return StatKey(parts[0], parts[1], parts[2]), parts[3]


def to_nanos(usd: Decimal) -> int:
    return int((usd * NANOS).to_integral_value())


class CacheStats:
    """In-process counters, and the increments not yet written to a persistent tier."""

    def __init__(self) -> None:
        self.totals: dict[StatKey, Counts] = {}
        self._pending: dict[StatKey, Counts] = {}

    def _bump(self, key: StatKey, **increments: int) -> None:
        for table in (self.totals, self._pending):
            counts = table.get(key)
            if counts is None:
                counts = table[key] = Counts()
            for name, value in increments.items():
                setattr(counts, name, getattr(counts, name) + value)

    def hit(self, cache: str, tier: str, tenant: str, count: int = 1) -> None:
        if count:
            self._bump(StatKey(cache, tier, tenant), hits=count)

    def miss(self, cache: str, tier: str, tenant: str, count: int = 1) -> None:
        if count:
            self._bump(StatKey(cache, tier, tenant), misses=count)

    def error(self, cache: str, tier: str, tenant: str) -> None:
        self._bump(StatKey(cache, tier, tenant), errors=1)

    def corrupt(self, cache: str, tier: str, tenant: str, count: int = 1) -> None:
        self._bump(StatKey(cache, tier, tenant), corrupt=count)

    def written(self, cache: str, tier: str, tenant: str, size: int) -> None:
        self._bump(StatKey(cache, tier, tenant), bytes_written=size)

    def avoided(self, cache: str, tier: str, tenant: str, usd: Decimal) -> None:
        if usd:
            self._bump(StatKey(cache, tier, tenant), avoided_nanos=to_nanos(usd))

    def get(self, cache: str, tier: str, tenant: str) -> Counts:
        return self.totals.get(StatKey(cache, tier, tenant), Counts())

    def total(self, cache: str | None = None, tier: str | None = None, tenant: str | None = None) -> Counts:
        result = Counts()
        for key, counts in self.totals.items():
            if all(
                want is None or want == have
                for want, have in ((cache, key.cache), (tier, key.tier), (tenant, key.tenant))
            ):
                result.add(counts)
        return result

    def take_pending(self, caches: Iterable[str]) -> dict[str, float]:
        """The increments of these caches not yet persisted, as counter names (and forget them)."""
        wanted = set(caches)
        taken: dict[str, float] = {}
        for key in [k for k in self._pending if k.cache in wanted]:
            for metric, value in self._pending.pop(key).as_dict().items():
                if value:
                    taken[counter_name(key, metric)] = float(value)
        return taken

    def restore_pending(self, increments: Mapping[str, float]) -> None:
        """Put back increments a flush could not write (they go with the next one)."""
        for name, value in increments.items():
            parsed = parse_counter_name(name)
            if parsed is not None:
                counts = self._pending.setdefault(parsed[0], Counts())
                setattr(counts, parsed[1], getattr(counts, parsed[1]) + int(value))


def merge_counters(raw: Mapping[str, float]) -> dict[StatKey, Counts]:
    """Persisted counter names -> counts."""
    merged: dict[StatKey, Counts] = {}
    for name, value in raw.items():
        parsed = parse_counter_name(name)
        if parsed is None:
            continue
        key, metric = parsed
        counts = merged.setdefault(key, Counts())
        setattr(counts, metric, getattr(counts, metric) + int(value))
    return merged
