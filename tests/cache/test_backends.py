"""The backends: the byte-bounded LRU, TTLs, SQLite shared by processes, two tiers, counters."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from pulse_ai import PulseAI
from pulse_ai.cache import Caches, CachingRouter, MemoryBackend
from pulse_ai.cache.backend import ENTRY_OVERHEAD
from pulse_ai.cache.caches import default_sqlite_path
from pulse_ai.cache.sqlite import SqliteBackend
from pulse_ai.config import CacheConfig
from tests.cache.conftest import ctx, expected, fake

ROOT = Path(__file__).resolve().parents[2]


async def test_the_lru_is_bounded_in_bytes_and_evicts_the_least_recently_used() -> None:
    entry = ENTRY_OVERHEAD + len("emb:t:k0") + 100
    lru = MemoryBackend(max_bytes=3 * entry)
    await lru.set_many([(f"emb:t:k{i}", bytes(100)) for i in range(3)], None)
    assert await lru.get_many(["emb:t:k0"]) == [bytes(100)]  # k0 is now the most recent
    await lru.set_many([("emb:t:k3", bytes(100))], None)
    assert [v is not None for v in await lru.get_many([f"emb:t:k{i}" for i in range(4)])] == [True, False, True, True]
    assert lru.bytes <= lru.max_bytes and len(lru) == 3
    await lru.set_many([("emb:t:big", bytes(4 * entry))], None)  # larger than the whole bound: not kept
    assert await lru.get_many(["emb:t:big"]) == [None] and len(lru) == 3


async def test_entries_expire_after_their_ttl() -> None:
    now = [100.0]
    lru = MemoryBackend(10_000, clock=lambda: now[0])
    await lru.set_many([("gen:t:a", b"x")], ttl=10)
    now[0] = 109.0
    assert await lru.get_many(["gen:t:a"]) == [b"x"]
    now[0] = 110.5
    assert await lru.get_many(["gen:t:a"]) == [None] and len(lru) == 0


async def test_sqlite_ttl_clear_by_tenant_and_usage(tmp_path: Path) -> None:
    now = [1000.0]
    db = SqliteBackend(tmp_path / "c.db", clock=lambda: now[0])
    await db.set_many([("emb:acme:1", b"a"), ("emb:globex:1", b"b")], None)
    await db.set_many([("gen:acme:1", b"c")], ttl=5)
    now[0] = 1006.0
    assert await db.get_many(["emb:acme:1", "gen:acme:1", "emb:nobody:1"]) == [b"a", None, None]
    usage = {(u.namespace, u.scope): u.entries for u in await db.usage()}
    assert usage == {("emb", "acme"): 1, ("emb", "globex"): 1}
    assert await db.clear(scope="acme") == 2  # the expired row goes too
    assert await db.get_many(["emb:acme:1", "emb:globex:1"]) == [None, b"b"]
    await db.aclose()


def test_the_cache_file_lies_beside_a_sqlite_database() -> None:
    assert default_sqlite_path("sqlite+aiosqlite:////srv/pulse/pulse-ai.db") == Path("/srv/pulse/pulse-ai-cache.db")
    assert default_sqlite_path("postgresql://u@h/db") == Path("data/pulse-ai-cache.db")
    assert default_sqlite_path(None) == Path("data/pulse-ai-cache.db")


def run_worker(path: Path, tenant: str, count: int, prefix: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "tests.cache._worker", "sqlite", str(path), tenant, str(count), prefix]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(process: subprocess.Popen[str]) -> dict[str, int]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    result: dict[str, int] = json.loads(out)
    return result


async def test_a_sqlite_cache_is_shared_by_two_processes(tmp_path: Path, ai: PulseAI) -> None:
    path = tmp_path / "shared-cache.db"
    # two processes write at the same time (many small transactions each), then read each other's
    first, second = run_worker(path, "acme", 300, "first"), run_worker(path, "acme", 300, "second")
    assert outcome(first)["cached"] == 0 and outcome(second)["cached"] == 0
    assert outcome(run_worker(path, "acme", 300, "second")) == {"requests": 0, "cached": 300}
    # and this process sees both
    config = CacheConfig(enabled=True, sqlite_path=str(path), embeddings={"backend": "memory+sqlite"})  # type: ignore[arg-type]
    async with Caches.from_config(config) as caches:
        cached = CachingRouter(ai.router("embedding"), caches)
        texts = ["first 7", "second 299"]
        result = await cached.embed(texts, ctx())
        assert result.cached == 2 and {a.cache_level for a in result.attempts} == {"sqlite"}
        np.testing.assert_allclose(result.vectors, expected(texts), atol=1e-6)
        again = await cached.embed(texts, ctx())  # promoted to the memory tier in front
        assert {a.cache_level for a in again.attempts} == {"memory"}
        assert not fake(ai, "a").requests("embed")


async def test_counters_are_kept_in_the_persistent_tier(tmp_path: Path, ai: PulseAI) -> None:
    config = CacheConfig(enabled=True, sqlite_path=str(tmp_path / "c.db"), embeddings={"backend": "sqlite"})  # type: ignore[arg-type]
    async with Caches.from_config(config) as caches:
        cached = CachingRouter(ai.router("embedding"), caches)
        await cached.embed(["a", "b"], ctx())
        await cached.embed(["a", "b"], ctx())
    async with Caches.from_config(config) as later:  # another process, later
        counters = await later.counters()
        (key,) = [k for k in counters if k.cache == "embeddings"]
        counts = counters[key]
        assert (key.tier, key.tenant, counts.hits, counts.misses) == ("sqlite", "acme", 2, 2)
        assert counts.avoided_usd > 0 and counts.bytes_written > 2 * 1536 * 4
        await later.clear(tenant="acme")
        assert not await later.counters()
        assert not [u for u in await later.usage() if u.tenant == "acme"]


async def test_concurrent_sqlite_readers_and_writers_in_one_process(tmp_path: Path, ai: PulseAI) -> None:
    config = CacheConfig(enabled=True, sqlite_path=str(tmp_path / "c.db"), embeddings={"backend": "sqlite"})  # type: ignore[arg-type]
    async with Caches.from_config(config) as caches:
        cached = CachingRouter(ai.router("embedding"), caches)
        batches = [[f"t{(i * 7 + j) % 40}" for j in range(10)] for i in range(30)]
        results = await asyncio.gather(*(cached.embed(batch, ctx()) for batch in batches))
        for batch, result in zip(batches, results, strict=True):
            np.testing.assert_allclose(result.vectors, expected(batch), atol=1e-6)
        assert len({text for batch in batches for text in batch}) == 40
        assert len({text for call in fake(ai, "a").requests("embed") for text in call.inputs}) == 40
