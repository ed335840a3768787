"""The embedding cache through CachingRouter, with in-process fake providers behind it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulse_ai import AllProvidersFailed, PulseAI
from pulse_ai.cache import Caches, CachingRouter
from pulse_ai.testing import Fault
from tests.cache.conftest import EMB, ctx, embed_pipeline, expected, fake, fakes_yaml, layer, sent


async def test_a_second_call_is_served_from_the_cache_with_avoided_cost(ai: PulseAI, caches: Caches) -> None:
    cached = layer(ai, caches)
    texts = ["checkout times out", "payment fails on big carts"]
    first = await cached.embed(texts, ctx())
    assert first.cached == 0 and [a.outcome for a in first.attempts] == ["ok"]
    second = await cached.embed(texts, ctx())
    np.testing.assert_array_equal(second.vectors, first.vectors)
    assert second.cached == 2 and len(fake(ai, "a").requests("embed")) == 1
    (hit,) = second.attempts
    _, spec = ai.model(f"a/{EMB}")
    assert (hit.model, hit.outcome, hit.cache_level, hit.inputs, hit.served) == (f"a/{EMB}", "cached", "memory", 2, 2)
    assert hit.usage.cost_usd == 0 and hit.usage.requests == 0
    # the tokens the provider reported for these texts, and what they would cost at the catalog price
    assert hit.usage.input_tokens == first.usage.input_tokens
    assert hit.avoided_usd == spec.cost_usd(hit.usage.input_tokens) > 0
    assert second.usage.cost_usd == 0 and second.usage.requests == 0
    assert caches.stats.total(cache="embeddings").avoided_usd == hit.avoided_usd


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.lists(st.tuples(st.booleans(), st.integers(0, 7)), min_size=1, max_size=40))
def test_partial_hits_keep_input_order(pattern: list[tuple[bool, int]]) -> None:
    """Random hit/miss patterns, repeated texts included: every row is its own text's vector, only
    the distinct misses are sent, in one router call, and the hits are counted."""
    texts = [f"text {n}" if warm else f"cold {i} {n}" for i, (warm, n) in enumerate(pattern)]
    warm_texts = sorted({t for t in texts if t.startswith("text")})

    async def run() -> None:
        yaml = fakes_yaml("a", pipelines=embed_pipeline("a"), model_extra=", max_inputs_per_request: 4")
        async with PulseAI.from_yaml(yaml) as ai, Caches.in_memory() as caches:
            cached = layer(ai, caches)
            if warm_texts:
                await cached.embed(warm_texts, ctx())
            provider = fake(ai, "a")
            provider.reset()
            result = await cached.embed(texts, ctx())
            np.testing.assert_allclose(result.vectors, expected(texts), atol=1e-6)
            misses = list(dict.fromkeys(t for t in texts if t.startswith("cold")))
            assert sent(provider) == misses  # each distinct miss once, in input order
            assert result.cached == sum(t.startswith("text") for t in texts)
            ok = [a for a in result.attempts if a.outcome == "ok"]
            assert sum(a.inputs for a in ok) == len(misses)

    asyncio.run(run())


async def test_no_cross_tenant_hit_unless_the_pipeline_shares(ai: PulseAI, caches: Caches) -> None:
    texts = ["quarterly revenue by region"]
    private = layer(ai, caches)
    await private.embed(texts, ctx("acme"))
    other = await private.embed(texts, ctx("globex"))
    assert other.cached == 0 and len(fake(ai, "a").requests("embed")) == 2

    public = layer(ai, caches, "public")
    await public.embed(texts, ctx("acme"))
    shared = await public.embed(texts, ctx("globex"))
    assert shared.cached == 1 and len(fake(ai, "a").requests("embed")) == 3


async def test_the_fallback_candidate_is_served_the_same_entries(ai: PulseAI, caches: Caches) -> None:
    """Every candidate of a pipeline produces the same vector space, so the ref is not in the key:
    when the primary is down, what it embedded earlier is still a hit."""
    cached = layer(ai, caches)
    await cached.embed(["a warm text"], ctx())
    fake(ai, "a").always(Fault.unavailable())
    result = await cached.embed(["a warm text", "a new text"], ctx())
    np.testing.assert_allclose(result.vectors, expected(["a warm text", "a new text"]), atol=1e-6)
    assert sent(fake(ai, "b")) == ["a new text"]
    assert result.cached == 1 and result.model == f"b/{EMB}"


async def test_one_hundred_concurrent_identical_requests_make_one_provider_call() -> None:
    yaml = fakes_yaml("a", pipelines=embed_pipeline("a"), extra="latency: 0.05, ")
    async with PulseAI.from_yaml(yaml) as ai, Caches.in_memory() as caches:
        cached = layer(ai, caches)
        results = await asyncio.gather(*(cached.embed(["the same text"], ctx()) for _ in range(100)))
        assert len(fake(ai, "a").requests("embed")) == 1
        for result in results:
            np.testing.assert_allclose(result.vectors, expected(["the same text"]), atol=1e-6)
        assert sum(result.cached for result in results) == 99
        assert {a.cache_level for r in results for a in r.attempts if a.outcome == "cached"} == {"flight"}


async def test_single_flight_does_not_join_across_tenants() -> None:
    yaml = fakes_yaml("a", pipelines=embed_pipeline("a"), extra="latency: 0.05, ")
    async with PulseAI.from_yaml(yaml) as ai, Caches.in_memory() as caches:
        cached = layer(ai, caches)
        await asyncio.gather(cached.embed(["same"], ctx("acme")), cached.embed(["same"], ctx("globex")))
        assert len(fake(ai, "a").requests("embed")) == 2


async def test_joined_requests_compute_themselves_when_the_owner_fails() -> None:
    yaml = fakes_yaml("a", pipelines=embed_pipeline("a"), extra="latency: 0.05, ")
    async with PulseAI.from_yaml(yaml) as ai, Caches.in_memory() as caches:
        cached = layer(ai, caches)
        fake(ai, "a").script(Fault.bad_request())  # the first request only
        outcomes = await asyncio.gather(*(cached.embed(["x"], ctx()) for _ in range(5)), return_exceptions=True)
        assert sum(isinstance(o, Exception) for o in outcomes) == 1
        good = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(good) == 4
        for result in good:
            np.testing.assert_allclose(result.vectors, expected(["x"]), atol=1e-6)


async def test_a_failure_reports_hits_as_partial_in_caller_numbering(ai: PulseAI, caches: Caches) -> None:
    cached = layer(ai, caches)
    await cached.embed(["warm 1", "warm 2"], ctx())
    fake(ai, "a").always(Fault.unavailable())
    fake(ai, "b").always(Fault.unavailable())
    with pytest.raises(AllProvidersFailed) as info:
        await cached.embed(["cold 0", "warm 1", "cold 2", "warm 2"], ctx())
    error = info.value
    assert error.failed_inputs == (0, 2)
    assert error.partial is not None and error.partial.indices.tolist() == [1, 3]
    np.testing.assert_allclose(error.partial.vectors, expected(["warm 1", "warm 2"]), atol=1e-6)
    assert error.attempts[0].outcome == "cached"


async def test_corrupt_entries_are_dropped_and_recomputed(ai: PulseAI, caches: Caches) -> None:
    cached = layer(ai, caches)
    texts = ["one", "two", "three", "four"]
    await cached.embed(texts, ctx())
    assert caches.embeddings is not None
    backend = caches.embeddings.tiers[0].backend
    keys = [key for key, _ in await backend.scan("emb", "acme")]
    values = dict(zip(keys, await backend.get_many(keys), strict=True))
    damaged = {
        keys[0]: values[keys[0]][:-4],  # wrong length
        keys[1]: values[keys[1]][:-1] + bytes([values[keys[1]][-1] ^ 0x40]),  # a flipped bit
        keys[2]: values[keys[2]][:4] + (768).to_bytes(4, "little") + values[keys[2]][8 : 24 + 768 * 4],  # other size
    }
    await backend.set_many(list(damaged.items()), None)
    provider = fake(ai, "a")
    provider.reset()
    result = await cached.embed(texts, ctx())
    np.testing.assert_allclose(result.vectors, expected(texts), atol=1e-6)
    assert len(sent(provider)) == 3 and result.cached == 1
    assert caches.stats.total(cache="embeddings").corrupt == 3
    again = await cached.embed(texts, ctx())  # recomputed and stored afresh
    assert again.cached == 4


async def test_purge_removes_the_tenants_entries_only(ai: PulseAI, caches: Caches) -> None:
    cached = layer(ai, caches)
    await cached.embed(["kept", "gone"], ctx("acme"))
    await cached.embed(["kept"], ctx("globex"))
    assert await caches.purge_tenant("acme") == 2
    assert (await cached.embed(["kept"], ctx("globex"))).cached == 1
    assert (await cached.embed(["kept", "gone"], ctx("acme"))).cached == 0


async def test_a_pipeline_with_the_cache_off_passes_through(ai: PulseAI, caches: Caches) -> None:
    cached = layer(ai, caches, "nocache")
    await cached.embed(["x"], ctx())
    again = await cached.embed(["x"], ctx())
    assert again.cached == 0 and len(fake(ai, "a").requests("embed")) == 2


async def test_the_whole_level_off_passes_through(ai: PulseAI) -> None:
    async with Caches() as nothing:
        cached = CachingRouter(ai.router("embedding"), nothing)
        await cached.embed(["x"], ctx())
        assert (await cached.embed(["x"], ctx())).cached == 0


async def test_input_errors_are_the_routers(ai: PulseAI, caches: Caches) -> None:
    cached = layer(ai, caches)
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        await cached.embed(["ok", "  "], ctx())
    empty = await cached.embed([], ctx())
    assert empty.vectors.shape == (0, 1536)
