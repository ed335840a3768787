"""OpenAI, Azure OpenAI and custom gateways against the fake server, through the real openai SDK."""

from __future__ import annotations

import itertools
from decimal import Decimal

import numpy as np
import pytest

from pulse_ai import (
    AuthenticationError,
    BadRequestError,
    InputError,
    MalformedResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    PulseAI,
    RateLimitedError,
)
from pulse_ai.tokens import count_tokens
from pulse_ai.types import GenerationParams
from tests.conftest import openai_yaml
from tests.fakes.openai_server import FakeOpenAIServer, Fault, fake_vector

EMBED = "oa/text-embedding-3-small"
CHAT = "oa/gpt-4o-mini"


def make_ai(server: FakeOpenAIServer, **kwargs: str) -> PulseAI:
    return PulseAI.from_yaml("providers:\n" + openai_yaml(server, **kwargs))


def expected(texts: list[str], dims: int = 1536) -> np.ndarray:
    return np.stack([fake_vector(text, dims) for text in texts])


async def test_embedding_request_shape_vectors_and_usage(fake: FakeOpenAIServer) -> None:
    async with make_ai(fake) as ai:
        result = await ai.embed(["first text", "second one here"], model=EMBED)
    assert result.vectors.dtype == np.float32 and result.vectors.shape == (2, 1536)
    np.testing.assert_allclose(result.vectors, expected(["first text", "second one here"]), atol=1e-6)
    assert result.model == EMBED
    assert result.vector_space == "openai/text-embedding-3-small@1536/unit"
    assert result.usage.input_tokens == 5  # the fake counts words; taken from the response
    assert result.usage.requests == 1
    assert result.usage.cost_usd == Decimal("0.0000001")  # exact: 5 * 0.02 / 1e6
    (request,) = fake.requests
    assert request.path == "/v1/embeddings"
    assert request.headers["authorization"] == "Bearer sk-test-secret-0001"
    assert request.body["model"] == "text-embedding-3-small"
    assert request.body["input"] == ["first text", "second one here"]
    assert "dimensions" not in request.body


async def test_float_list_answers_are_read_too(fake: FakeOpenAIServer) -> None:
    fake.always(Fault.floats())
    async with make_ai(fake) as ai:
        result = await ai.embed(["gateway floats"], model=EMBED)
    np.testing.assert_allclose(result.vectors, expected(["gateway floats"]), atol=1e-6)
    assert fake.requests[0].body["encoding_format"] == "base64"


async def test_dimensions_are_sent_for_text_embedding_3(fake: FakeOpenAIServer) -> None:
    async with make_ai(fake, models="[{name: text-embedding-3-small, dimensions: 256}]") as ai:
        result = await ai.embed(["short"], model=EMBED)
    assert result.vectors.shape == (1, 256)
    assert fake.requests[0].body["dimensions"] == 256
    assert result.vector_space.endswith("@256/unit")


async def test_5000_texts_are_packed_within_limits_and_returned_in_order(fake: FakeOpenAIServer) -> None:
    texts = [f"record {i} " + "word " * (i % 37) for i in range(5000)]
    async with make_ai(fake, models="[{name: text-embedding-3-small, dimensions: 64}]") as ai:
        result = await ai.embed(texts, model=EMBED)
    np.testing.assert_allclose(result.vectors, expected(texts, 64), atol=1e-6)
    sizes = [len(r.body["input"]) for r in fake.requests]
    assert sum(sizes) == 5000 and max(sizes) <= 2048 and len(sizes) == 3
    assert result.usage.requests == 3
    # the requests, concatenated in input order, are exactly the input
    sent = sorted((r.body["input"] for r in fake.requests), key=lambda batch: texts.index(batch[0]))
    assert [text for batch in sent for text in batch] == texts


async def test_token_limit_per_request_splits_batches(fake: FakeOpenAIServer) -> None:
    models = "[{name: text-embedding-3-small, dimensions: 8, max_tokens_per_request: 500}]"
    texts = [f"text number {i} " + "lorem ipsum dolor " * 5 for i in range(200)]
    async with make_ai(fake, models=models) as ai:
        result = await ai.embed(texts, model=EMBED)
    assert len(result) == 200
    for request in fake.requests:
        assert sum(count_tokens(t, "cl100k_base") for t in request.body["input"]) <= 500  # exact, not estimated
    assert len(fake.requests) > 1


async def test_concurrency_is_bounded(fake: FakeOpenAIServer) -> None:
    fake.set_latency(0.05)
    models = "[{name: text-embedding-3-small, dimensions: 8, max_inputs_per_request: 10}]"
    async with make_ai(fake, models=models, extra="    max_concurrency: 3\n") as ai:
        result = await ai.embed([f"t{i}" for i in range(200)], model=EMBED)
    assert len(result) == 200 and len(fake.requests) == 20
    assert 2 <= fake.max_in_flight <= 3


async def test_429_is_retried_honouring_retry_after(fake: FakeOpenAIServer) -> None:
    fake.script(Fault.rate_limited(retry_after=0.4), Fault.rate_limited(retry_after=0.4))
    async with make_ai(fake) as ai:
        result = await ai.embed(["hello"], model=EMBED)
    assert len(result) == 1
    times = [r.at for r in fake.requests]
    assert len(times) == 3
    assert all(later - earlier >= 0.38 for earlier, later in itertools.pairwise(times))


async def test_a_retry_after_beyond_two_minutes_is_raised_not_waited(fake: FakeOpenAIServer) -> None:
    fake.always(Fault.rate_limited(retry_after=500))
    async with make_ai(fake) as ai:
        with pytest.raises(RateLimitedError) as info:
            await ai.embed(["hello"], model=EMBED)
    assert len(fake.requests) == 1 and info.value.retry_after == 500


async def test_5xx_is_retried_then_succeeds(fake: FakeOpenAIServer) -> None:
    fake.script(Fault.http(503))
    async with make_ai(fake) as ai:
        result = await ai.embed(["hello"], model=EMBED)
    assert len(result) == 1 and len(fake.requests) == 2


async def test_rate_limit_after_all_retries_is_typed_with_retry_after(fake: FakeOpenAIServer) -> None:
    fake.always(Fault.rate_limited(retry_after=0.05))
    async with make_ai(fake) as ai:
        with pytest.raises(RateLimitedError) as info:
            await ai.embed(["a", "b"], model=EMBED)
    assert len(fake.requests) == 3  # 1 + max_retries
    assert info.value.retry_after == pytest.approx(0.05)
    assert info.value.status_code == 429 and info.value.failed_inputs == (0, 1)


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, BadRequestError), (401, AuthenticationError), (403, AuthenticationError), (404, BadRequestError)],
)
async def test_4xx_is_not_retried(fake: FakeOpenAIServer, status: int, error_type: type[Exception]) -> None:
    fake.always(Fault.http(status))
    async with make_ai(fake) as ai:
        with pytest.raises(error_type):
            await ai.embed(["a"], model=EMBED)
    assert len(fake.requests) == 1


async def test_timeout_is_retried_then_typed(fake: FakeOpenAIServer) -> None:
    fake.always(Fault.slow(3.0))
    extra = "    timeout: 0.3\n"
    text = "providers:\n" + openai_yaml(fake, extra=extra).replace("    timeout: 5\n", "")
    text = text.replace("max_retries: 2", "max_retries: 1")
    async with PulseAI.from_yaml(text) as ai:
        with pytest.raises(ProviderTimeoutError):
            await ai.embed(["slow"], model=EMBED)
    assert len(fake.requests) == 2


async def test_connection_refused_is_unavailable() -> None:
    text = (
        "providers:\n  oa: {type: openai, api_key: sk-x-test-key, base_url: 'http://127.0.0.1:9/v1', max_retries: 0,"
        " models: [{name: text-embedding-3-small}]}"
    )
    async with PulseAI.from_yaml(text) as ai:
        with pytest.raises(ProviderUnavailableError):
            await ai.embed(["a"], model=EMBED)


@pytest.mark.parametrize("fault", [Fault.malformed(), Fault.too_few(), Fault.wrong_dimension()])
async def test_unusable_answers_are_errors_never_zero_vectors(fake: FakeOpenAIServer, fault: Fault) -> None:
    fake.always(fault)
    async with make_ai(fake) as ai:
        with pytest.raises(MalformedResponseError) as info:
            await ai.embed(["one", "two", "three"], model=EMBED)
    assert info.value.failed_inputs == (0, 1, 2)


async def test_a_failed_batch_names_exactly_its_inputs(fake: FakeOpenAIServer) -> None:
    models = "[{name: text-embedding-3-small, dimensions: 8, max_inputs_per_request: 4}]"
    fake.script(Fault.ok(), Fault.http(400))
    async with make_ai(fake, models=models, extra="    max_concurrency: 1\n") as ai:
        with pytest.raises(BadRequestError) as info:
            await ai.embed([f"text {i}" for i in range(12)], model=EMBED)
    assert info.value.failed_inputs == (4, 5, 6, 7)
    assert "failed inputs: 4, 5, 6, 7" in str(info.value)


async def test_secrets_are_redacted_from_provider_errors(fake: FakeOpenAIServer) -> None:
    fake.always(Fault.http(401, message="Incorrect API key provided: sk-test-secret-0001"))
    async with make_ai(fake) as ai:
        with pytest.raises(AuthenticationError) as info:
            await ai.embed(["a"], model=EMBED)
    assert "sk-test-secret-0001" not in str(info.value)
    assert "sk-test-secret-0001" not in repr(info.value)
    assert "sk-test-secret-0001" not in repr(ai.provider("oa"))


async def test_bad_input_fails_before_any_request(fake: FakeOpenAIServer) -> None:
    async with make_ai(fake) as ai:
        empty = await ai.embed([], model=EMBED)
        assert empty.vectors.shape == (0, 1536) and empty.usage.requests == 0
        with pytest.raises(InputError, match=r"texts\[1\]") as info:
            await ai.embed(["ok", "   "], model=EMBED)
        assert info.value.index == 1
        with pytest.raises(InputError, match=r"texts\[2\] is int"):
            await ai.embed(["ok", "fine", 7], model=EMBED)  # type: ignore[list-item]
        with pytest.raises(InputError, match="single string"):
            await ai.embed("not a list", model=EMBED)
        with pytest.raises(InputError, match=r"texts\[0\].*8191"):
            await ai.embed(["word " * 9000], model=EMBED)
        with pytest.raises(InputError, match="not a generation model"):
            await ai.generate("hi", model=EMBED)
        with pytest.raises(InputError, match="no model"):
            await ai.embed(["x"], model="oa/nope")
    assert fake.requests == []


async def test_generation_text_usage_and_params(fake: FakeOpenAIServer) -> None:
    async with make_ai(fake) as ai:
        result = await ai.generate(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
            model=CHAT,
            params=GenerationParams(temperature=0.2, max_tokens=50),
        )
    assert result.text == "echo: hello there"
    assert result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (4, 3)
    assert result.usage.cost_usd == Decimal("0.0000024")  # exact: (4 * 0.15 + 3 * 0.60) / 1e6
    body = fake.requests[0].body
    assert fake.requests[0].path == "/v1/chat/completions"
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50
    assert body["messages"][0] == {"role": "system", "content": "be brief"}


async def test_streaming_yields_deltas_then_usage(fake: FakeOpenAIServer) -> None:
    async with make_ai(fake) as ai:
        stream = ai.stream("stream these words", model=CHAT)
        chunks = [chunk async for chunk in stream]
    assert "".join(chunks) == "echo: stream these words"
    assert len(chunks) == 4
    assert stream.result is not None
    assert stream.result.text == "echo: stream these words"
    assert stream.result.usage.output_tokens == 4 and stream.result.finish_reason == "stop"
    assert fake.requests[0].body["stream"] is True


async def test_streaming_error_is_typed(fake: FakeOpenAIServer) -> None:
    fake.always(Fault.http(401))
    async with make_ai(fake) as ai:
        with pytest.raises(AuthenticationError):
            async for _ in ai.stream("hi", model=CHAT):
                pass


async def test_generation_bad_messages_are_input_errors(fake: FakeOpenAIServer) -> None:
    async with make_ai(fake) as ai:
        with pytest.raises(InputError, match=r"messages\[0\]"):
            await ai.generate([{"role": "wizard", "content": "x"}], model=CHAT)
        with pytest.raises(InputError, match="empty"):
            await ai.generate([], model=CHAT)
        with pytest.raises(InputError, match="empty"):
            await ai.generate("  ", model=CHAT)
    assert fake.requests == []


async def test_azure_paths_api_version_deployment_and_key_header(fake: FakeOpenAIServer) -> None:
    text = f"""
providers:
  az:
    type: azure_openai
    endpoint: {fake.url}
    api_key: azure-secret-key
    api_version: "2024-10-21"
    max_retries: 0
    models:
      - {{name: text-embedding-3-small, deployment: emb-small, dimensions: 16}}
      - {{name: gpt-4o-mini, deployment: chat-mini}}
"""
    async with PulseAI.from_yaml(text) as ai:
        embedded = await ai.embed(["azure text"], model="az/text-embedding-3-small")
        answer = await ai.generate("hi azure", model="az/gpt-4o-mini")
    np.testing.assert_allclose(embedded.vectors, expected(["azure text"], 16), atol=1e-6)
    assert embedded.vector_space == "openai/text-embedding-3-small@16/unit"  # the model's space, not Azure's
    assert answer.text == "echo: hi azure"
    embed_request, chat_request = fake.requests
    assert embed_request.path == "/openai/deployments/emb-small/embeddings"
    assert chat_request.path == "/openai/deployments/chat-mini/chat/completions"
    for request in (embed_request, chat_request):
        assert request.query["api-version"] == "2024-10-21"
        assert request.headers["api-key"] == "azure-secret-key"
        assert "authorization" not in request.headers


async def test_gateway_custom_auth_header_and_extra_headers(fake: FakeOpenAIServer) -> None:
    text = f"""
providers:
  gw:
    type: custom_gateway
    base_url: {fake.base_url}
    api_key: gateway-token
    auth_header: X-Api-Key
    auth_prefix: "Token "
    headers: {{X-Team: analytics}}
    models:
      - {{name: llama-3.1-70b, capabilities: [generation], max_input_tokens: 8000, max_output_tokens: 1000,
          input_price_per_million: 0.5, output_price_per_million: 1.0}}
"""
    async with PulseAI.from_yaml(text) as ai:
        result = await ai.generate("hello gateway", model="gw/llama-3.1-70b")
    assert result.text == "echo: hello gateway"
    assert result.usage.cost_usd == Decimal("0.000004")  # exact: (2 * 0.5 + 3 * 1.0) / 1e6
    (request,) = fake.requests
    assert request.headers["x-api-key"] == "Token gateway-token"
    assert request.headers["x-team"] == "analytics"
    assert "authorization" not in request.headers
    assert request.body["model"] == "llama-3.1-70b"


async def test_gateway_default_bearer_and_no_auth(fake: FakeOpenAIServer) -> None:
    model = (
        "[{name: local-llm, capabilities: [generation], max_input_tokens: 4000, max_output_tokens: 500,"
        " input_price_per_million: 0, output_price_per_million: 0}]"
    )
    text = f"""
providers:
  bearer: {{type: custom_gateway, base_url: "{fake.base_url}", api_key: tok-test-1, models: {model}}}
  open: {{type: custom_gateway, base_url: "{fake.base_url}", models: {model}}}
"""
    async with PulseAI.from_yaml(text) as ai:
        await ai.generate("a", model="bearer/local-llm")
        await ai.generate("b", model="open/local-llm")
    with_key, without = fake.requests
    assert with_key.headers["authorization"] == "Bearer tok-test-1"
    assert "authorization" not in without.headers
