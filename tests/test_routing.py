"""Pipelines: strategies, fallback, the vector-space guard, circuit breakers and health checks."""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest

from pulse_ai import (
    AllProvidersFailed,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ConfigError,
    PulseAI,
    RateLimitedError,
)
from pulse_ai.config import load_config_text
from pulse_ai.routing import BreakerState, Router
from tests.fakes.openai_server import FakeOpenAIServer, Fault, fake_vector

MODELS = "[{name: text-embedding-3-small, dimensions: 8}, {name: gpt-4o-mini}, {name: gpt-4o}]"


def provider(server: FakeOpenAIServer, name: str, retries: int = 0) -> str:
    return (
        f"  {name}: {{type: openai, api_key: sk-key-{name}, base_url: '{server.base_url}', "
        f"max_retries: {retries}, timeout: 5, models: {MODELS}}}\n"
    )


def two_providers(primary: FakeOpenAIServer, secondary: FakeOpenAIServer, pipelines: str) -> str:
    return "providers:\n" + provider(primary, "p1") + provider(secondary, "p2") + "pipelines:\n" + pipelines


EMBED_PIPELINE = """  embedding:
    kind: embedding
    candidates: [p1/text-embedding-3-small, p2/text-embedding-3-small]
"""
CHAT_PIPELINE = """  chat:
    kind: generation
    candidates: [p1/gpt-4o-mini, p2/gpt-4o-mini]
"""


def own_router(ai: PulseAI, clock: Clock | None = None, rng: random.Random | None = None) -> Router:
    """The `embedding` pipeline's router, with a test clock (default: the real one) or random source."""
    config = ai.loaded.config.pipelines["embedding"]
    candidates = [ai.model(ref) for ref in config.candidates]
    return Router("embedding", config, candidates, clock=clock or time.monotonic, rng=rng)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_primary_429_falls_back_to_secondary(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    fake.always(Fault.rate_limited(retry_after=0.01))
    async with PulseAI.from_yaml(two_providers(fake, fake2, EMBED_PIPELINE)) as ai:
        result = await ai.embed(["route me"], pipeline="embedding")
    assert result.model == "p2/text-embedding-3-small"
    np.testing.assert_allclose(result.vectors[0], fake_vector("route me", 8), atol=1e-6)
    (failed,) = result.failed_attempts
    assert failed.candidate == "p1/text-embedding-3-small"
    assert isinstance(failed.error, RateLimitedError)
    assert len(fake.requests) == 1 and len(fake2.requests) == 1


async def test_generation_and_stream_fall_back(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    fake.always(Fault.http(503))
    async with PulseAI.from_yaml(two_providers(fake, fake2, CHAT_PIPELINE)) as ai:
        answer = await ai.generate("hello", pipeline="chat")
        stream = ai.stream("streamed hello", pipeline="chat")
        text = "".join([chunk async for chunk in stream])
    assert answer.model == "p2/gpt-4o-mini" and answer.text == "echo: hello"
    assert text == "echo: streamed hello"
    assert stream.result is not None and stream.result.model == "p2/gpt-4o-mini"
    assert [a.candidate for a in stream.result.failed_attempts] == ["p1/gpt-4o-mini"]


async def test_all_failing_raises_one_error_with_every_cause(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    fake.always(Fault.http(503))
    fake2.always(Fault.slow(2.0))
    text = two_providers(fake, fake2, EMBED_PIPELINE).replace("timeout: 5", "timeout: 0.2")
    async with PulseAI.from_yaml(text) as ai:
        with pytest.raises(AllProvidersFailed) as info:
            await ai.embed(["x"], pipeline="embedding")
    attempts = info.value.attempts
    assert [a.candidate for a in attempts] == ["p1/text-embedding-3-small", "p2/text-embedding-3-small"]
    assert [type(a.error).__name__ for a in attempts] == ["ProviderUnavailableError", "ProviderTimeoutError"]
    assert "ProviderUnavailableError" in str(info.value) and "ProviderTimeoutError" in str(info.value)


@pytest.mark.parametrize(("status", "error_type"), [(400, BadRequestError), (401, AuthenticationError)])
async def test_bad_request_and_auth_do_not_fall_back_by_default(
    fake: FakeOpenAIServer, fake2: FakeOpenAIServer, status: int, error_type: type[Exception]
) -> None:
    fake.always(Fault.http(status))
    async with PulseAI.from_yaml(two_providers(fake, fake2, EMBED_PIPELINE)) as ai:
        with pytest.raises(error_type):
            await ai.embed(["x"], pipeline="embedding")
    assert fake2.requests == []


async def test_fallback_on_bad_request_when_configured(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    pipeline = EMBED_PIPELINE + "    fallback: {on_errors: [bad_request, unavailable]}\n"
    fake.always(Fault.http(400))
    async with PulseAI.from_yaml(two_providers(fake, fake2, pipeline)) as ai:
        result = await ai.embed(["x"], pipeline="embedding")
    assert result.model == "p2/text-embedding-3-small"


async def test_fallback_disabled_raises_the_first_error(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    pipeline = EMBED_PIPELINE + "    fallback: {enabled: false}\n"
    fake.always(Fault.http(503))
    async with PulseAI.from_yaml(two_providers(fake, fake2, pipeline)) as ai:
        with pytest.raises(Exception, match="503"):
            await ai.embed(["x"], pipeline="embedding")
    assert fake2.requests == []


async def test_breaker_opens_skips_half_opens_and_closes(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    pipeline = EMBED_PIPELINE + "    breaker: {window: 4, min_calls: 2, failure_rate: 0.5, cooldown_seconds: 10}\n"
    ai = PulseAI.from_yaml(two_providers(fake, fake2, pipeline))
    clock = Clock()
    router = own_router(ai, clock)
    primary = router.candidates[0].breaker

    fake.always(Fault.http(503))
    for _ in range(2):
        assert (await router.embed(["x"])).model == "p2/text-embedding-3-small"
    assert primary.state is BreakerState.OPEN
    assert len(fake.requests) == 2

    clock.now += 5  # still cooling down: the primary gets no request at all
    for _ in range(3):
        await router.embed(["x"])
    assert len(fake.requests) == 2

    clock.now += 6  # cooldown over: one trial call half-opens it
    fake.always(None)
    assert primary.state is BreakerState.HALF_OPEN
    result = await router.embed(["x"])
    assert result.model == "p1/text-embedding-3-small"
    assert primary.state is BreakerState.CLOSED
    await ai.aclose()


async def test_half_open_trial_failure_reopens(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    pipeline = EMBED_PIPELINE + "    breaker: {window: 4, min_calls: 1, failure_rate: 0.5, cooldown_seconds: 10}\n"
    ai = PulseAI.from_yaml(two_providers(fake, fake2, pipeline))
    clock = Clock()
    router = own_router(ai, clock)
    fake.always(Fault.http(503))
    await router.embed(["x"])
    assert router.candidates[0].breaker.state is BreakerState.OPEN
    clock.now += 11
    await router.embed(["x"])  # the trial fails
    assert router.candidates[0].breaker.state is BreakerState.OPEN
    assert len(fake.requests) == 2
    await ai.aclose()


async def test_all_breakers_open_fails_fast_without_a_call(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    pipeline = EMBED_PIPELINE + "    breaker: {window: 2, min_calls: 1, failure_rate: 0.5, cooldown_seconds: 60}\n"
    ai = PulseAI.from_yaml(two_providers(fake, fake2, pipeline))
    clock = Clock()
    router = own_router(ai, clock)
    fake.always(Fault.http(503))
    fake2.always(Fault.http(503))
    with pytest.raises(AllProvidersFailed):
        await router.embed(["x"])
    assert all(c.breaker.state is BreakerState.OPEN for c in router.candidates)
    fake2.always(None)
    clock.now += 20
    with pytest.raises(AllProvidersFailed) as info:
        await router.embed(["x"])  # both open: no call at all
    assert len(fake.requests) == 1 and len(fake2.requests) == 1
    error = info.value
    assert error.attempts == () and error.skipped == ("p1/text-embedding-3-small", "p2/text-embedding-3-small")
    assert [type(e) for e in error.exceptions] == [CircuitOpenError, CircuitOpenError]
    assert [e.retry_after for e in error.exceptions] == [40.0, 40.0]  # type: ignore[attr-defined]
    assert "circuit breaker" in str(error) and "no call was made" in str(error)
    clock.now += 41  # cooldown over: one trial each
    result = await router.embed(["x"])
    assert result.model == "p2/text-embedding-3-small"
    assert len(fake.requests) == 2 and len(fake2.requests) == 2
    await ai.aclose()


async def test_auth_failure_opens_the_breaker_at_once(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    pipeline = EMBED_PIPELINE + "    fallback: {on_errors: [authentication]}\n"
    fake.always(Fault.http(401))
    async with PulseAI.from_yaml(two_providers(fake, fake2, pipeline)) as ai:
        await ai.embed(["x"])
        assert ai.router("embedding").candidates[0].breaker.state is BreakerState.OPEN
        await ai.embed(["y"])
    assert len(fake.requests) == 1


async def test_cheapest_picks_the_cheapest_candidate(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    pipeline = """  chat:
    kind: generation
    candidates: [p1/gpt-4o, p2/gpt-4o-mini, p1/gpt-4o-mini]
    strategy: cheapest
"""
    async with PulseAI.from_yaml(two_providers(fake, fake2, pipeline)) as ai:
        result = await ai.generate("which one?", pipeline="chat")
        order = [c.ref for c in ai.router("chat").ranked(100, 100)]
    assert result.model == "p2/gpt-4o-mini"
    assert order == ["p2/gpt-4o-mini", "p1/gpt-4o-mini", "p1/gpt-4o"]  # a tie keeps the configured order
    assert fake.requests == []


async def test_quality_orders_by_tier(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    pipeline = """  chat:
    kind: generation
    candidates: [p1/gpt-4o-mini, p2/gpt-4o]
    strategy: quality
"""
    async with PulseAI.from_yaml(two_providers(fake, fake2, pipeline)) as ai:
        result = await ai.generate("best please", pipeline="chat")
    assert result.model == "p2/gpt-4o"


async def test_fastest_moves_to_the_faster_server(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    pipeline = EMBED_PIPELINE + "    strategy: fastest\n    explore_rate: 0.0\n"
    ai = PulseAI.from_yaml(two_providers(fake, fake2, pipeline))
    router = own_router(ai, rng=random.Random(1))
    for candidate in router.candidates:  # a first call outside the router: the process's cold start
        await candidate.provider.embed(["warm up"], candidate.model)  # (imports, ~0.5 s) is not latency
    fake.set_latency(0.0)
    fake2.set_latency(0.12)
    served = [(await router.embed([f"t{i}"])).model for i in range(6)]
    assert served[:2] == ["p1/text-embedding-3-small", "p2/text-embedding-3-small"]  # both get measured
    assert set(served[2:]) == {"p1/text-embedding-3-small"}
    fake.set_latency(0.3)  # the primary slows down
    fake2.set_latency(0.0)
    served = [(await router.embed([f"u{i}"])).model for i in range(6)]
    assert served[-1] == "p2/text-embedding-3-small"
    await ai.aclose()


async def test_fastest_probes_other_candidates(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    pipeline = EMBED_PIPELINE + "    strategy: fastest\n    explore_rate: 0.5\n"
    ai = PulseAI.from_yaml(two_providers(fake, fake2, pipeline))
    router = own_router(ai, rng=random.Random(7))
    fake2.set_latency(0.05)
    for i in range(20):
        await router.embed([f"t{i}"])
    assert len(fake2.requests) >= 3  # the slower one keeps being measured
    await ai.aclose()


def test_mixed_vector_spaces_are_refused(fake: FakeOpenAIServer) -> None:
    text = f"""
providers:
  local: {{type: sentence_transformers, models: [{{name: all-MiniLM-L6-v2}}]}}
  oa: {{type: openai, api_key: sk-12345, base_url: '{fake.base_url}', models: [{{name: text-embedding-3-small}}]}}
pipelines:
  embedding: {{kind: embedding, candidates: [oa/text-embedding-3-small, local/all-MiniLM-L6-v2]}}
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    message = str(info.value)
    assert "pipelines.embedding.candidates" in message and "same vector space" in message
    assert "@384" in message and "@1536" in message
    # the same model at two sizes is two spaces too
    text2 = text.replace(
        "models: [{name: text-embedding-3-small}]}",
        "models: [{name: text-embedding-3-small}, {name: text-embedding-3-large}]}",
    ).replace("local/all-MiniLM-L6-v2]", "oa/text-embedding-3-large]")
    with pytest.raises(ConfigError, match="same vector space"):
        load_config_text(text2)


def test_same_model_on_two_providers_and_declared_spaces_are_accepted() -> None:
    text = """
providers:
  oa: {type: openai, api_key: sk-12345, models: [{name: text-embedding-3-small}]}
  az: {type: azure_openai, endpoint: 'https://x', api_key: sk-12345, api_version: v,
       models: [{name: text-embedding-3-small, deployment: emb}]}
  gw1: {type: custom_gateway, base_url: 'http://a/v1', models: [{name: bge-a, capabilities: [embedding],
        dimensions: 768, max_input_tokens: 512, input_price_per_million: 0, space: bge-base-en}]}
  gw2: {type: custom_gateway, base_url: 'http://b/v1', models: [{name: bge-b, capabilities: [embedding],
        dimensions: 768, max_input_tokens: 512, input_price_per_million: 0, space: bge-base-en}]}
pipelines:
  openai_pair: {kind: embedding, candidates: [oa/text-embedding-3-small, az/text-embedding-3-small]}
  declared: {kind: embedding, candidates: [gw1/bge-a, gw2/bge-b]}
"""
    loaded = load_config_text(text)
    assert loaded.models["gw1/bge-a"].vector_space == loaded.models["gw2/bge-b"].vector_space
    undeclared = text.replace(", space: bge-base-en}", "}")
    with pytest.raises(ConfigError, match="same vector space"):
        load_config_text(undeclared)


@pytest.mark.parametrize(
    ("candidates", "fragment"),
    [
        ("[oa/nope]", "not a configured provider/model"),
        ("[oa/gpt-4o-mini]", "cannot serve a embedding pipeline"),
        ("[oa/text-embedding-3-small, oa/text-embedding-3-small]", "listed twice"),
        ("[]", "candidates"),
    ],
)
def test_pipeline_validation_names_the_key(candidates: str, fragment: str) -> None:
    text = f"""
providers:
  oa: {{type: openai, api_key: sk-12345, models: [{{name: text-embedding-3-small}}, {{name: gpt-4o-mini}}]}}
pipelines:
  embedding: {{kind: embedding, candidates: {candidates}}}
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert fragment in str(info.value) and "pipelines.embedding" in str(info.value)


async def test_200_concurrent_calls_with_a_flaky_primary_all_succeed_once(
    fake: FakeOpenAIServer, fake2: FakeOpenAIServer
) -> None:
    fake.script(*[Fault.http(503), Fault.ok()] * 100)
    pipeline = EMBED_PIPELINE + "    breaker: {window: 20, min_calls: 10, failure_rate: 0.9, cooldown_seconds: 0.2}\n"
    async with PulseAI.from_yaml(two_providers(fake, fake2, pipeline)) as ai:
        texts = [f"concurrent text {i}" for i in range(200)]
        results = await asyncio.gather(*(ai.embed([text]) for text in texts))
    for text, result in zip(texts, results, strict=True):
        np.testing.assert_allclose(result.vectors[0], fake_vector(text, 8), atol=1e-6)
    served_by_primary = sum(r.model.startswith("p1/") for r in results)
    fell_back = [r for r in results if r.failed_attempts]
    assert served_by_primary + len(fake2.requests) == 200  # each call answered exactly once
    assert all(r.model.startswith("p2/") for r in fell_back)
    assert len(fell_back) > 0 and served_by_primary > 0


async def test_health_checks_report_and_feed_the_breaker(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    fake.always(Fault.http(401))
    async with PulseAI.from_yaml(two_providers(fake, fake2, EMBED_PIPELINE + CHAT_PIPELINE)) as ai:
        report = await ai.check_providers()
        assert [s.healthy for s in report["embedding"]] == [False, True]
        assert "AuthenticationError" in (report["embedding"][0].error or "")
        assert "sk-p1" not in (report["embedding"][0].error or "")
        assert ai.router("embedding").candidates[0].breaker.state is BreakerState.OPEN
        chat_paths = [r.path for r in fake2.requests if r.method == "GET"]
        # generation models are checked with a models list: p2/gpt-4o-mini and p2/gpt-4o
        assert chat_paths == ["/v1/models", "/v1/models"]
        assert {f"{s.provider}/{s.model}" for s in report[""]} == {"p1/gpt-4o", "p2/gpt-4o"}
