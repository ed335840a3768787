"""Generation answers: cached at temperature 0 or when the pipeline opts in, keyed on what changes them."""

from __future__ import annotations

import asyncio

from pulse_ai import GenerationParams, PulseAI
from pulse_ai.cache import Caches
from tests.cache.conftest import GEN, ctx, fake, fakes_yaml, gen_pipeline, layer

ZERO = GenerationParams(temperature=0)


async def test_a_deterministic_answer_is_cached_with_its_avoided_cost(ai: PulseAI, caches: Caches) -> None:
    cached = layer(ai, caches, "generation")
    first = await cached.generate("Summarise: checkout is slow", ZERO, ctx())
    second = await cached.generate([{"role": "user", "content": "Summarise: checkout is slow"}], ZERO, ctx())
    assert len(fake(ai, "a").requests("generate")) == 1
    assert (second.text, second.model, second.finish_reason) == (first.text, first.model, first.finish_reason)
    assert second.cached and not first.cached
    (hit,) = second.attempts
    _, spec = ai.model(f"a/{GEN}")
    assert (hit.outcome, hit.cache_level, hit.model) == ("cached", "memory", f"a/{GEN}")
    assert (hit.usage.input_tokens, hit.usage.output_tokens) == (first.usage.input_tokens, first.usage.output_tokens)
    assert hit.avoided_usd == first.usage.cost_usd == spec.cost_usd(hit.usage.input_tokens, hit.usage.output_tokens)
    assert second.usage.cost_usd == 0


async def test_sampled_answers_are_not_cached_unless_the_pipeline_opts_in(ai: PulseAI, caches: Caches) -> None:
    cached = layer(ai, caches, "generation")
    for params in (None, GenerationParams(temperature=0.7)):  # unset: the provider's default, sampled
        await cached.generate("hi", params, ctx())
        assert not (await cached.generate("hi", params, ctx())).cached
    creative = layer(ai, caches, "creative")
    await creative.generate("hi", GenerationParams(temperature=0.7), ctx())
    assert (await creative.generate("hi", GenerationParams(temperature=0.7), ctx())).cached


async def test_every_parameter_that_changes_the_answer_changes_the_key(ai: PulseAI, caches: Caches) -> None:
    cached = layer(ai, caches, "generation")
    await cached.generate("hi", ZERO, ctx())
    variants = [
        GenerationParams(temperature=0, max_tokens=1),
        GenerationParams(temperature=0, top_p=0.5),
        GenerationParams(temperature=0, stop=["."]),
        GenerationParams(temperature=0, seed=7),
    ]
    for params in variants:
        assert not (await cached.generate("hi", params, ctx())).cached
    assert not (await cached.generate("hi there", ZERO, ctx())).cached
    with_system = [{"role": "system", "content": "be short"}, {"role": "user", "content": "hi"}]
    assert not (await cached.generate(with_system, ZERO, ctx())).cached
    assert not (await cached.generate("hi", ZERO, ctx("globex"))).cached  # another tenant
    assert (await cached.generate("hi", ZERO, ctx(pipeline="other"))).cached  # a new request id, same call


async def test_concurrent_identical_questions_make_one_call() -> None:
    yaml = fakes_yaml("a", pipelines=gen_pipeline("a"), extra="latency: 0.05, ")
    async with PulseAI.from_yaml(yaml) as ai, Caches.in_memory() as caches:
        cached = layer(ai, caches, "generation")
        results = await asyncio.gather(*(cached.generate("same", ZERO, ctx()) for _ in range(20)))
        assert len(fake(ai, "a").requests("generate")) == 1
        assert {r.text for r in results} == {"echo: same"} and sum(r.cached for r in results) == 19


async def test_streams_pass_through(ai: PulseAI, caches: Caches) -> None:
    cached = layer(ai, caches, "generation")
    for _ in range(2):
        async with cached.stream("hi", ZERO, ctx()) as stream:
            text = "".join([delta async for delta in stream])
        assert text == "echo: hi"
    assert len(fake(ai, "a").requests("stream")) == 2
