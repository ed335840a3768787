"""Routing with in-process fakes: breakers that always get a verdict, skipped candidates named,
partial embedding fallback that keeps what succeeded, one health state per model, and every
attempt's usage on the result or the error."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import numpy as np
import pytest

from pulse_ai import (
    AllProvidersFailed,
    BadRequestError,
    CircuitOpenError,
    InputError,
    ProviderUnavailableError,
    PulseAI,
    RateLimitedError,
)
from pulse_ai.routing import BreakerState
from pulse_ai.testing import FakeProvider, Fault, fake_vector
from pulse_ai.vectors import Record

EMB = "text-embedding-3-small"


def fakes_yaml(*names: str, pipelines: str = "", extra: str = "", model: str = EMB) -> str:
    providers = "".join(
        f"  {n}: {{type: fake, {extra}models: [{{name: {model}}}, {{name: gpt-4o-mini}}]}}\n" for n in names
    )
    return f"providers:\n{providers}" + (f"pipelines:\n{pipelines}" if pipelines else "")


def embed_pipeline(*names: str, name: str = "embedding", options: str = "") -> str:
    refs = ", ".join(f"{n}/{EMB}" for n in names)
    return f"  {name}: {{kind: embedding, candidates: [{refs}]{options}}}\n"


def fake(ai: PulseAI, name: str) -> FakeProvider:
    provider = ai.provider(name)
    assert isinstance(provider, FakeProvider)
    return provider


def expected(texts: list[str]) -> np.ndarray:
    return np.stack([fake_vector(t, 1536) for t in texts])


async def test_partial_failure_sends_only_the_failed_inputs_on() -> None:
    texts = [f"text {i}" for i in range(6)]
    yaml = fakes_yaml("a", "b", pipelines=embed_pipeline("a", "b"), extra="max_concurrency: 1, ")
    yaml = yaml.replace(f"{{name: {EMB}}}", f"{{name: {EMB}, max_inputs_per_request: 2}}")
    async with PulseAI.from_yaml(yaml) as ai:
        b = fake(ai, "b")
        fake(ai, "a").script(Fault.ok(), Fault.unavailable(), Fault.ok())  # requests of 2 texts, in order
        result = await ai.embed(texts)
    np.testing.assert_allclose(result.vectors, expected(texts), atol=1e-6)
    assert [c.inputs for c in b.requests("embed")] == [("text 2", "text 3")]
    first, second = result.attempts
    assert (first.model, first.outcome, first.inputs, first.served) == (f"a/{EMB}", "unavailable", 6, 4)
    assert (second.model, second.outcome, second.inputs, second.served) == (f"b/{EMB}", "ok", 2, 2)
    # the 4 texts a embedded were paid for and are on the result, not thrown away
    assert first.usage.requests == 2 and first.usage.input_tokens > 0 and first.usage.cost_usd > 0
    assert result.usage == first.usage + second.usage
    assert result.model == f"b/{EMB}" and result.failed_attempts == (first,)


async def test_a_non_fallback_error_keeps_partial_vectors_and_every_attempt() -> None:
    texts = [f"doc {i}" for i in range(4)]
    yaml = fakes_yaml("a", "b", pipelines=embed_pipeline("a", "b"), extra="max_concurrency: 1, ")
    yaml = yaml.replace(f"{{name: {EMB}}}", f"{{name: {EMB}, max_inputs_per_request: 1}}")
    async with PulseAI.from_yaml(yaml) as ai:
        fake(ai, "a").script(Fault.rate_limited(), Fault.ok(), Fault.ok(), Fault.ok())
        fake(ai, "b").script(Fault.bad_request())
        with pytest.raises(BadRequestError) as info:
            await ai.embed(texts)
    error = info.value
    # a served 1..3 and was rate limited on 0; b got only input 0 and refused it
    assert error.failed_inputs == (0,)
    assert error.partial is not None
    assert sorted(error.partial.indices.tolist()) == [1, 2, 3]
    order = np.argsort(error.partial.indices)
    np.testing.assert_allclose(error.partial.vectors[order], expected(texts[1:]), atol=1e-6)
    assert [a.model for a in error.attempts] == [f"a/{EMB}", f"b/{EMB}"]
    assert error.attempts[0].usage.requests == 3


async def test_all_failed_names_skipped_candidates_and_is_an_exception_group() -> None:
    yaml = fakes_yaml(
        "a",
        "b",
        "c",
        pipelines=embed_pipeline(
            "a",
            "b",
            "c",
            options=", breaker: {window: 4, min_calls: 2}, fallback: {on_errors: [authentication, unavailable]}",
        ),
    )
    async with PulseAI.from_yaml(yaml) as ai:
        fake(ai, "b").always(Fault.authentication())  # opens b's breaker at once
        fake(ai, "c").always(Fault.unavailable())
        fake(ai, "a").always(Fault.unavailable())
        with pytest.raises(AllProvidersFailed):
            await ai.embed(["x"])
        fake(ai, "a").always(Fault.unavailable())
        with pytest.raises(AllProvidersFailed) as info:
            await ai.embed(["y"])
    error = info.value
    assert isinstance(error, ExceptionGroup)
    assert all(isinstance(e, ProviderUnavailableError) for e in error.exceptions)
    assert f"b/{EMB}" in error.skipped and f"skipped with an open circuit breaker: b/{EMB}" in str(error)


async def test_a_half_open_trial_ended_by_a_bad_request_is_released() -> None:
    options = (
        ", breaker: {window: 2, min_calls: 1, cooldown_seconds: 0}, fallback: {on_errors: [bad_request, unavailable]}"
    )
    yaml = fakes_yaml("a", "b", pipelines=embed_pipeline("a", "b", options=options))
    async with PulseAI.from_yaml(yaml) as ai:
        a = fake(ai, "a")
        a.script(Fault.unavailable())  # opens a (min_calls 1); cooldown 0 -> half-open at once
        await ai.embed(["one"])
        breaker = ai.router("embedding").candidates[0].breaker
        assert breaker.state is BreakerState.HALF_OPEN
        a.script(Fault.bad_request())  # the trial ends in a bad request: no verdict on a's health
        await ai.embed(["two"])  # served by b
        a.reset()
        result = await ai.embed(["three"])  # a must get a trial again, not be stuck half-open
    assert result.model == f"a/{EMB}"
    assert breaker.state is BreakerState.CLOSED


async def test_one_health_state_per_model_across_pipelines_and_direct_calls() -> None:
    pipelines = embed_pipeline("a", "b", name="first", options=", breaker: {window: 4, min_calls: 2}") + embed_pipeline(
        "a", "b", name="second"
    )
    async with PulseAI.from_yaml(fakes_yaml("a", "b", pipelines=pipelines)) as ai:
        a = fake(ai, "a")
        a.always(Fault.unavailable())
        with pytest.raises(ProviderUnavailableError):
            await ai.embed(["direct"], model=f"a/{EMB}")  # a direct call counts too
        await ai.embed(["via first"], pipeline="first")
        a.reset()
        served = await ai.embed(["via second"], pipeline="second")
    # a failed twice (direct + first): open for every pipeline, so "second" went straight to b
    assert served.model == f"b/{EMB}" and served.failed_attempts == ()
    assert a.requests("embed") == []
    assert ai.health.states()[f"a/{EMB}"] is BreakerState.OPEN


async def test_direct_model_calls_carry_attempts_with_cost() -> None:
    async with PulseAI.from_yaml(fakes_yaml("a")) as ai:
        result = await ai.embed(["hello world"], model=f"a/{EMB}")
    (attempt,) = result.attempts
    assert attempt.ok and attempt.usage == result.usage
    assert attempt.usage.cost_usd == Decimal(attempt.usage.input_tokens) * Decimal("0.02") / 1_000_000
    assert attempt.price_table_version[0].isdigit()


CHAT = "  chat: {kind: generation, candidates: [a/gpt-4o-mini, b/gpt-4o-mini]}\n"


async def test_leaving_a_stream_early_frees_its_slot_at_once() -> None:
    yaml = fakes_yaml("a", "b", pipelines=CHAT, extra="max_concurrency: 1, ")
    async with PulseAI.from_yaml(yaml) as ai:
        a = fake(ai, "a")
        async with ai.stream("one two three four five", pipeline="chat") as stream:
            async for _ in stream:
                break
        assert a.open_streams == 0 and stream.outcome == "abandoned"
        # max_concurrency 1: a held slot would make this wait forever
        answer = await asyncio.wait_for(ai.generate("next", pipeline="chat"), timeout=10)
    assert answer.model == "a/gpt-4o-mini"
    (attempt,) = stream.attempts
    assert attempt.outcome == "abandoned" and attempt.usage.estimated and attempt.usage.output_tokens >= 1


async def test_an_error_or_a_cancellation_in_the_consumer_frees_the_slot() -> None:
    yaml = fakes_yaml(
        "a",
        pipelines="  chat: {kind: generation, candidates: [a/gpt-4o-mini]}\n",
        extra="max_concurrency: 1, latency: 0.5, ",
    )
    async with PulseAI.from_yaml(yaml) as ai:
        a = fake(ai, "a")
        with pytest.raises(KeyError):
            async with ai.stream("one two three four", pipeline="chat") as stream:
                async for _ in stream:
                    raise KeyError("consumer bug")
        assert a.open_streams == 0 and stream.outcome == "abandoned"

        async def consume() -> None:
            async with ai.stream("one two three four", pipeline="chat") as cancelled:
                holder.append(cancelled)
                async for _ in cancelled:
                    pass

        holder: list[object] = []
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert a.open_streams == 0
        assert getattr(holder[0], "outcome", None) == "cancelled"
        a.config = a.config.model_copy(update={"latency": 0.0})
        await asyncio.wait_for(ai.generate("after", pipeline="chat"), timeout=10)


async def test_a_stream_that_breaks_mid_way_feeds_the_breaker_and_records_what_was_consumed() -> None:
    async with PulseAI.from_yaml(fakes_yaml("a", "b", pipelines=CHAT)) as ai:
        fake(ai, "a").script(Fault.fail_mid_stream(after_chunks=2))
        received = []
        with pytest.raises(ProviderUnavailableError):
            async with ai.stream("one two three four", pipeline="chat") as stream:
                async for chunk in stream:
                    received.append(chunk)
    assert len(received) == 2  # no fallback after the first chunk
    (attempt,) = stream.attempts
    assert attempt.outcome == "unavailable" and attempt.usage.output_tokens >= 1 and attempt.usage.estimated


async def test_a_finished_stream_has_every_attempt() -> None:
    async with PulseAI.from_yaml(fakes_yaml("a", "b", pipelines=CHAT)) as ai:
        fake(ai, "a").script(Fault.rate_limited())
        async with ai.stream("hello", pipeline="chat") as stream:
            text = "".join([c async for c in stream])
    assert text == "echo: hello"
    assert [a.outcome for a in stream.attempts] == ["rate_limited", "ok"]
    assert stream.result is not None and [a.outcome for a in stream.result.attempts] == ["rate_limited", "ok"]
    assert isinstance(stream.attempts[0].error, RateLimitedError)


async def test_plain_iteration_still_works() -> None:
    async with PulseAI.from_yaml(
        fakes_yaml("a", pipelines="  chat: {kind: generation, candidates: [a/gpt-4o-mini]}\n")
    ) as ai:
        stream = ai.stream("plain", pipeline="chat")
        assert "".join([c async for c in stream]) == "echo: plain"
    assert stream.outcome == "ok" and stream.result is not None


async def test_200_concurrent_calls_with_a_flaky_primary_lose_nothing() -> None:
    options = ", breaker: {window: 1000, min_calls: 1000}"
    async with PulseAI.from_yaml(fakes_yaml("a", "b", pipelines=embed_pipeline("a", "b", options=options))) as ai:
        fake(ai, "a").script(*[Fault.unavailable() if i % 2 else Fault.ok() for i in range(200)])
        texts = [f"concurrent {i}" for i in range(200)]
        results = await asyncio.gather(*(ai.embed([t]) for t in texts))
    for text, result in zip(texts, results, strict=True):
        np.testing.assert_allclose(result.vectors[0], fake_vector(text, 1536), atol=1e-6)
    served = [r.model for r in results]
    assert served.count(f"a/{EMB}") + served.count(f"b/{EMB}") == 200
    assert served.count(f"b/{EMB}") == 100


@pytest.mark.parametrize("route", ["pipeline", "model"])
async def test_an_open_breaker_gets_no_request_until_its_cooldown_passes(route: str) -> None:
    options = ", breaker: {window: 4, min_calls: 2, failure_rate: 0.5, cooldown_seconds: 30}"
    pipelines = "  solo: {kind: generation, candidates: [b/gpt-4o-mini]" + options + "}\n"
    async with PulseAI.from_yaml(fakes_yaml("b", pipelines=pipelines)) as ai:
        b = fake(ai, "b")
        b.always(Fault.unavailable())
        target = {"pipeline": "solo"} if route == "pipeline" else {"model": "b/gpt-4o-mini"}
        for _ in range(2):  # opens the breaker (shared by the pipeline and direct calls)
            with pytest.raises((ProviderUnavailableError, AllProvidersFailed)):
                await ai.generate("z", pipeline="solo")
        for _ in range(10):
            with pytest.raises(AllProvidersFailed) as info:
                await ai.generate("z", **target)
            with pytest.raises(AllProvidersFailed):
                async with ai.stream("z", **target) as stream:
                    async for _ in stream:
                        pass
        assert len(b.requests()) == 2, "a request reached a model whose breaker is open"
    error = info.value
    (skipped,) = error.exceptions
    assert isinstance(skipped, CircuitOpenError) and isinstance(skipped, ProviderUnavailableError)
    assert skipped.retry_after is not None and 0 < skipped.retry_after <= 30
    assert error.skipped == ("b/gpt-4o-mini",) and error.attempts == () and error.usage.requests == 0


async def test_a_skipped_candidate_is_in_the_group_beside_the_ones_that_failed() -> None:
    options = ", breaker: {window: 4, min_calls: 1, cooldown_seconds: 30}, fallback: {on_errors: [unavailable]}"
    async with PulseAI.from_yaml(fakes_yaml("a", "b", pipelines=embed_pipeline("a", "b", options=options))) as ai:
        fake(ai, "a").always(Fault.unavailable())
        fake(ai, "b").script(Fault.ok())
        await ai.embed(["opens a"])
        fake(ai, "b").always(Fault.unavailable())
        with pytest.raises(AllProvidersFailed) as info:
            await ai.embed(["x"])
    error = info.value
    assert error.skipped == (f"a/{EMB}",) and [a.model for a in error.attempts] == [f"b/{EMB}"]
    assert [type(e).__name__ for e in error.exceptions] == ["ProviderUnavailableError", "CircuitOpenError"]


async def test_an_input_error_from_a_later_candidate_names_the_callers_index() -> None:
    # a answers one text per request and fails the last two; b (same space) takes only short texts
    yaml = (
        f"providers:\n  a: {{type: fake, models: [{{name: {EMB}, max_inputs_per_request: 1}}]}}\n"
        f"  b: {{type: fake, models: [{{name: {EMB}, max_input_tokens: 20}}]}}\n"
        f"pipelines:\n{embed_pipeline('a', 'b')}vector_store: {{backend: qdrant, location: ':memory:'}}\n"
    )
    texts = ["short one", "short two", "this text is long " * 10]  # only the third is too long for b
    async with PulseAI.from_yaml(yaml) as ai:
        a = fake(ai, "a")
        a.script(Fault.ok(), Fault.unavailable(), Fault.unavailable())
        with pytest.raises(InputError) as info:
            await ai.embed(texts)
        assert info.value.index == 2 and str(info.value).startswith("texts[2] ")
        a.reset()
        a.script(Fault.ok(), Fault.unavailable(), Fault.unavailable())
        report = await ai.indexer().index("acme", "docs", [Record(f"R{i}", t) for i, t in enumerate(texts)])
        stored = await ai.indexer().count("acme", "docs")
    assert [failure.record_id for failure in report.failures] == ["R2"]
    assert report.new == 2 and stored == 2
