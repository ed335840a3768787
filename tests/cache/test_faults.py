"""A backend that is down or slow degrades to a miss with one warning and a metric, never a failed call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np
import pytest

from pulse_ai import PulseAI
from pulse_ai.cache import CacheLevel, Caches, CacheStats, CachingRouter, MemoryBackend, Tier
from tests.cache.conftest import ctx, expected, fake


class FlakyBackend(MemoryBackend):
    """A shared-tier stand-in that can be made slow or broken."""

    tier = "sqlite"
    persistent = True

    def __init__(self) -> None:
        super().__init__(2**30)
        self.mode = "ok"
        self.calls = 0

    async def _misbehave(self) -> None:
        self.calls += 1
        if self.mode == "down":
            raise ConnectionRefusedError("refused")
        if self.mode == "slow":
            await asyncio.sleep(5)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        await self._misbehave()
        return await super().get_many(keys)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        await self._misbehave()
        await super().set_many(items, ttl)


def caches_over(backend: FlakyBackend, *, front: bool = False, retry_after: float = 0.0) -> Caches:
    stats = CacheStats()
    tier = Tier(backend, stats, timeout=0.05, retry_after=retry_after)
    tiers = [Tier(MemoryBackend(2**26), stats), tier] if front else [tier]
    return Caches(embeddings=CacheLevel("embeddings", tiers, None, stats), stats=stats)


@pytest.mark.parametrize("mode", ["down", "slow"])
async def test_a_failing_backend_is_a_miss_with_one_warning(
    mode: str, ai: PulseAI, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FlakyBackend()
    caches = caches_over(backend)
    cached = CachingRouter(ai.router("embedding"), caches)
    await cached.embed(["warm"], ctx())
    backend.mode = mode
    caplog.set_level(logging.WARNING, logger="pulse_ai.cache")
    for _ in range(3):  # retry_after 0: the backend is tried (and fails) on every call
        result = await cached.embed(["warm", "cold"], ctx())
        np.testing.assert_allclose(result.vectors, expected(["warm", "cold"]), atol=1e-6)
        assert result.cached == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "sqlite" in warnings[0].getMessage()
    assert "warm" not in warnings[0].getMessage() and "cold" not in warnings[0].getMessage()
    assert caches.stats.total(cache="embeddings", tier="sqlite").errors == 6  # a read and a write per call
    backend.mode = "ok"
    caplog.clear()
    caplog.set_level(logging.INFO, logger="pulse_ai.cache")
    assert (await cached.embed(["warm"], ctx())).cached == 1
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert len(fake(ai, "a").requests("embed")) == 4


async def test_a_down_tier_is_left_alone_for_retry_after(ai: PulseAI) -> None:
    backend = FlakyBackend()
    caches = caches_over(backend, front=True, retry_after=3600)
    cached = CachingRouter(ai.router("embedding"), caches)
    await cached.embed(["warm"], ctx())
    backend.mode = "down"
    calls = backend.calls
    for _ in range(5):
        result = await cached.embed(["warm", f"cold {_}"], ctx())
        # the memory tier in front is not served either: with the shared tier down, this process
        # cannot tell whether another one cleared (purged) those entries meanwhile
        assert result.cached == 0 and result.vectors.shape[0] == 2
    assert backend.calls == calls + 1  # one failure, then no more tries until retry_after
