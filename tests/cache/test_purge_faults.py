"""A purge or clear is never silently partial, and a process that cannot read the clear tokens does
not serve its memory tier.

Two ``Caches`` over one SQLite file (or one Redis prefix) play two processes: each has its own memory
tier in front of the shared one. Backend failures are injected on the shared backend object.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from pulse_ai.cache import Caches
from pulse_ai.cache.keys import digest, make_key
from pulse_ai.config import CacheConfig
from pulse_ai.errors import CacheClearIncompleteError

VALUE = b"v" * 64


def config(backend: str, location: str) -> CacheConfig:
    levels: dict[str, Any] = {"embeddings": {"backend": f"memory+{backend}"}}
    if backend == "sqlite":
        return CacheConfig(enabled=True, sqlite_path=location, **levels)
    url, prefix = location.split(" ", 1)
    return CacheConfig(enabled=True, redis_url=url, key_prefix=prefix, **levels)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "redis"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "cache.db")
    url = request.getfixturevalue("redis_url")
    return "redis", f"{url} {request.getfixturevalue('key_prefix')}"


def failing(original: Callable[..., Awaitable[Any]], error: BaseException, times: int) -> Callable[..., Any]:
    """``original`` that raises ``error`` on its first ``times`` calls."""
    calls = {"n": 0}

    async def wrapper(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return await original(*args)

    return wrapper


def backend_error(backend: str) -> BaseException:
    return sqlite3.OperationalError("disk I/O error") if backend == "sqlite" else RedisConnectionError("reset")


async def with_victim_entry(caches: Caches) -> str:
    """One entry of tenant ``victim`` in every tier of the embeddings level; its key."""
    victim = make_key("emb", "victim", digest("secret text"))
    await caches.levels["embeddings"].set_many([(victim, VALUE)], "victim")
    return victim


async def shared_count(caches: Caches, key: str, tenant: str) -> int:
    """Whether the shared tier still holds ``key`` (read straight from the backend)."""
    found = await caches.levels["embeddings"].back.backend.get_many([key])
    return sum(value is not None for value in found)


async def test_a_purge_after_a_blip_still_clears_the_shared_tier(location: tuple[str, str]) -> None:
    backend, where = location
    async with Caches.from_config(config(backend, where)) as caches:
        level = caches.levels["embeddings"]
        victim = await with_victim_entry(caches)
        shared = level.back.backend
        shared.get_many = failing(shared.get_many, backend_error(backend), times=1)  # type: ignore[method-assign]
        await level.get_many([make_key("emb", "other", digest("q"))], "other")  # one failure: marked down
        assert not level.back.available
        await caches.purge_tenant("victim")  # tried although the tier is marked down
        assert await shared_count(caches, victim, "victim") == 0
        assert level.back.available  # and it answered, so it is up again


async def test_a_purge_that_cannot_reach_the_shared_tier_says_so(location: tuple[str, str]) -> None:
    backend, where = location
    async with Caches.from_config(config(backend, where)) as caches:
        level = caches.levels["embeddings"]
        victim = await with_victim_entry(caches)
        shared = level.back.backend
        original_clear = shared.clear
        shared.clear = failing(shared.clear, backend_error(backend), times=100)  # type: ignore[method-assign]
        with pytest.raises(
            CacheClearIncompleteError, match=r"tenant 'victim'.*embeddings.*(sqlite|redis) tier"
        ) as info:
            await caches.purge_tenant("victim")
        assert info.value.scope == "victim" and info.value.failures
        assert await shared_count(caches, victim, "victim") == 1  # what is left is what was reported
        shared.clear = original_clear  # type: ignore[method-assign]
        await caches.purge_tenant("victim")  # once the tier answers, the same purge completes
        assert await shared_count(caches, victim, "victim") == 0


async def test_a_process_that_cannot_read_the_clear_tokens_serves_no_memory_entry(location: tuple[str, str]) -> None:
    backend, where = location
    cfg = config(backend, where)
    async with Caches.from_config(cfg) as first, Caches.from_config(cfg) as second:
        level = first.levels["embeddings"]
        victim = make_key("emb", "victim", digest("victim secret"))
        await level.get_many([victim], "victim")  # this process has read the tokens once
        await level.set_many([(victim, VALUE)], "victim")
        assert (await level.get_many([victim], "victim"))[0] == (VALUE, "memory")
        await second.purge_tenant("victim")  # the other process purges the tenant
        shared = level.back.backend
        shared.get_many = failing(shared.get_many, backend_error(backend), times=1)  # type: ignore[method-assign]
        assert (await level.get_many([victim], "victim")) == [None]  # tokens unreadable: no memory hit
        assert (await level.get_many([victim], "victim")) == [None]  # shared tier down: a miss all the same


async def test_a_clear_that_cannot_write_its_token_says_so(tmp_path: Path) -> None:
    async with Caches.from_config(config("sqlite", str(tmp_path / "cache.db"))) as caches:
        shared = caches.levels["embeddings"].back.backend
        shared.set_many = failing(shared.set_many, sqlite3.OperationalError("locked"), times=100)  # type: ignore[method-assign]
        with pytest.raises(CacheClearIncompleteError, match="every tenant"):
            await caches.clear()


async def test_the_facade_purge_is_incomplete_when_the_cache_purge_is(tmp_path: Path) -> None:
    from pulse_ai import PulseAI
    from pulse_ai.errors import PurgeIncompleteError

    yaml = (
        "providers:\n  a: {type: fake, models: [{name: text-embedding-3-small}]}\n"
        "pipelines:\n  embedding: {kind: embedding, candidates: [a/text-embedding-3-small]}\n"
        f"vector_store: {{backend: embedded, path: '{tmp_path / 'vectors'}'}}\n"
        f"cache: {{enabled: true, sqlite_path: '{tmp_path / 'cache.db'}', embeddings: {{backend: memory+sqlite}}}}\n"
    )
    async with PulseAI.from_yaml(yaml) as ai:
        shared = ai.caches.levels["embeddings"].back.backend
        shared.clear = failing(shared.clear, sqlite3.OperationalError("disk I/O error"), times=100)  # type: ignore[method-assign]
        with pytest.raises(PurgeIncompleteError, match=r"cache: embeddings level, sqlite tier"):
            await ai.indexer().purge_tenant("acme")
