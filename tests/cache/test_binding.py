"""Cache values are bound to their keys, and deployments sharing a Redis are kept apart (L2).

A value copied (or tampered) under another key is a miss counted as corrupt, never the other key's
answer; a Redis key prefix of another deployment sees nothing of this one's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pulse_ai import PulseAI
from pulse_ai.cache import Caches, CachingRouter
from pulse_ai.cache.codec import bind, unbind
from pulse_ai.config import CacheConfig
from pulse_ai.types import GenerationParams
from tests.cache.conftest import ctx, fake

ZERO = GenerationParams(temperature=0)


def test_bind_and_unbind() -> None:
    stored = bind("gen:acme:1", b"value")
    assert unbind("gen:acme:1", stored) == b"value"
    assert unbind("gen:acme:2", stored) is None  # another key's value
    assert unbind("gen:acme:1", b"value") is None  # not bound at all
    assert unbind("gen:acme:1", stored[:-1] + b"X") == b"valuX"  # the value itself is the codec's to check


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_an_answer_copied_under_another_key_is_a_miss_not_that_answer(
    ai: PulseAI, tmp_path: Path, backend: str
) -> None:
    config = CacheConfig(enabled=True, sqlite_path=str(tmp_path / "c.db"), generation={"backend": backend})  # type: ignore[arg-type]
    async with Caches.from_config(config) as caches:
        cached = CachingRouter.for_pipeline(ai.router("generation"), caches)
        first = await cached.generate("question one", ZERO, ctx())
        second = await cached.generate("question two", ZERO, ctx())
        assert first.text != second.text
        assert caches.generation is not None
        store = caches.generation.back.backend
        entries = dict(await store.scan("gen", "acme"))
        assert len(entries) == 2
        key_one = next(key for key, value in entries.items() if first.text.encode() in value)
        key_two = next(key for key in entries if key != key_one)
        value_one = entries[key_one]
        await store.set_many([(key_two, value_one)], None)  # question one's answer under question two's key
        provider = fake(ai, "a")
        provider.reset()
        again = await cached.generate("question two", ZERO, ctx())
        assert not again.cached and again.text == second.text
        assert len(provider.requests("generate")) == 1
        assert caches.stats.total(cache="generation").corrupt == 1
        assert (await cached.generate("question two", ZERO, ctx())).cached  # stored afresh, served again


@pytest.fixture
def two_prefixes(redis_url: str, key_prefix: str) -> Iterator[tuple[str, str, str]]:
    other = key_prefix.rstrip(":") + "-other:"
    yield redis_url, key_prefix, other
    client = redis.Redis.from_url(redis_url)
    for prefix in (key_prefix, other):
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    client.close()


async def test_two_deployments_on_one_redis_do_not_see_each_other(
    ai: PulseAI, two_prefixes: tuple[str, str, str]
) -> None:
    url, mine, theirs = two_prefixes

    def config(prefix: str) -> CacheConfig:
        return CacheConfig(enabled=True, redis_url=url, key_prefix=prefix, embeddings={"backend": "redis"})  # type: ignore[arg-type]

    async with Caches.from_config(config(mine)) as one, Caches.from_config(config(theirs)) as two:
        await CachingRouter(ai.router("embedding"), one).embed(["shared text"], ctx())
        other = await CachingRouter(ai.router("embedding"), two).embed(["shared text"], ctx())
        assert other.cached == 0
        assert await two.purge_tenant("acme") == 1  # its own entry only
        assert (await CachingRouter(ai.router("embedding"), one).embed(["shared text"], ctx())).cached == 1
