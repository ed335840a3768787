"""No wrong answer returned as success, and every failure typed with its real cause."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from pulse_ai import MalformedResponseError, ProviderTimeoutError, ProviderUnavailableError, PulseAI, PulseAIError
from pulse_ai.config import load_config_text
from tests.conftest import openai_yaml
from tests.fakes.openai_server import FakeOpenAIServer, Fault, fake_vector
from tests.fakes.raw_server import RawFaultServer

EMBED = "oa/text-embedding-3-small"
CHAT = "oa/gpt-4o-mini"


def make_ai(server: FakeOpenAIServer, extra: str = "") -> PulseAI:
    return PulseAI.from_yaml("providers:\n" + openai_yaml(server, extra=extra))


async def read_stream(ai: PulseAI, **kwargs: Any) -> str:
    async with ai.stream("one two three four", **kwargs) as stream:
        return "".join([chunk async for chunk in stream])


# ---- no wrong answer returned as success -----------------------------------------------------
async def test_a_stream_cut_without_finish_reason_is_an_error(fake: FakeOpenAIServer) -> None:
    fake.always(Fault.cut_stream())
    async with make_ai(fake) as ai:
        received: list[str] = []
        with pytest.raises(MalformedResponseError, match="cut off"):
            async with ai.stream("one two three", model=CHAT) as stream:
                async for chunk in stream:
                    received.append(chunk)
    assert received, "the deltas before the cut were delivered"
    assert stream.result is None and stream.outcome == "malformed"


async def test_a_stream_cut_before_its_first_chunk_falls_back(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    fake.always(Fault.cut_stream(after=0))
    text = (
        "providers:\n"
        + openai_yaml(fake, "a")
        + openai_yaml(fake2, "b")
        + "pipelines:\n  chat: {kind: generation, candidates: [a/gpt-4o-mini, b/gpt-4o-mini]}\n"
    )
    async with PulseAI.from_yaml(text) as ai:
        answer = await read_stream(ai, pipeline="chat")
    assert answer == "echo: one two three four"
    assert stream_attempts(fake, fake2) == (1, 1)


def stream_attempts(*servers: FakeOpenAIServer) -> tuple[int, ...]:
    return tuple(len(s.requests) for s in servers)


@pytest.mark.parametrize("fault", [Fault.zero_vector(), Fault.scaled(2.0), Fault.scaled(0.5)], ids=str)
async def test_a_zero_or_not_unit_vector_in_a_unit_space_is_malformed(fake: FakeOpenAIServer, fault: Fault) -> None:
    fake.always(fault)
    async with make_ai(fake) as ai:
        with pytest.raises(MalformedResponseError):
            await ai.embed(["a", "b"], model=EMBED)


async def test_a_raw_space_refuses_zero_vectors_but_takes_any_norm(fake: FakeOpenAIServer) -> None:
    models = "[{name: text-embedding-3-small, normalized: false}]"
    async with PulseAI.from_yaml("providers:\n" + openai_yaml(fake, models=models)) as ai:
        fake.always(Fault.scaled(3.0))
        result = await ai.embed(["a"], model=EMBED)
        np.testing.assert_allclose(result.vectors[0], fake_vector("a", 1536) * 3.0, rtol=1e-5)
        assert result.vector_space.endswith("/raw")
        fake.always(Fault.zero_vector())
        with pytest.raises(MalformedResponseError, match="all-zero"):
            await ai.embed(["a"], model=EMBED)


SPACES = """
providers:
  local: {{type: sentence_transformers, models: [{{name: all-MiniLM-L6-v2{extra}}}]}}
"""


def space_of(extra: str) -> str:
    return load_config_text(SPACES.format(extra=extra)).models["local/all-MiniLM-L6-v2"].vector_space


def test_a_space_id_changes_whenever_the_vectors_would() -> None:
    base = space_of("")
    fine_tuned = space_of(", path: /models/minilm-finetuned-v2")
    other_checkpoint = space_of(", path: /models/minilm-finetuned-v3")
    raw = space_of(", normalized: false")
    assert len({base, fine_tuned, other_checkpoint, raw}) == 4
    assert raw.endswith("/raw")
    assert (
        load_config_text(SPACES.format(extra=", normalized: false")).models["local/all-MiniLM-L6-v2"].normalized
        is False
    )


def test_declared_spaces_never_join_different_dimensions_or_normalisation() -> None:
    from pulse_ai import ConfigError

    text = """
providers:
  a: {{type: openai, api_key: sk-abcdef, models: [{{name: text-embedding-3-small, space: emb, {a}}}]}}
  b: {{type: azure_openai, endpoint: "https://x.example.com", api_key: abcdefgh, api_version: "2024-10-21",
      models: [{{name: text-embedding-3-small, space: emb, {b}}}]}}
pipelines:
  embedding: {{kind: embedding, candidates: [a/text-embedding-3-small, b/text-embedding-3-small]}}
"""
    ok = load_config_text(text.format(a="dimensions: 512", b="dimensions: 512"))
    assert len({spec.vector_space for spec in ok.models.values()}) == 1
    for a, b in [("dimensions: 512", "dimensions: 1024"), ("normalized: true", "normalized: false")]:
        with pytest.raises(ConfigError, match="same vector space"):
            load_config_text(text.format(a=a, b=b))
    with pytest.raises(ConfigError, match="space"):  # a space is a name, not an id with sizes in it
        load_config_text(
            text.format(a="dimensions: 512", b="dimensions: 512").replace("space: emb", "space: 'e@512/unit'")
        )


def test_a_price_override_says_where_its_price_came_from() -> None:
    text = """
providers:
  oa: {{type: openai, api_key: sk-abcdef, models: [{{name: gpt-4o-mini{extra}}}]}}
"""
    catalog = load_config_text(text.format(extra="")).models["oa/gpt-4o-mini"]
    overridden = load_config_text(text.format(extra=", input_price_per_million: 0.1")).models["oa/gpt-4o-mini"]
    assert catalog.price_table_version[0].isdigit()  # the catalog's dated table
    assert overridden.price_table_version == "config:oa/gpt-4o-mini"
    assert str(overridden.input_price_per_million) == "0.1"


# ---- every failure typed, every deadline a deadline ------------------------------------------
USAGES = ["missing", None, "twelve", {"prompt_tokens": None, "total_tokens": None}, {"prompt_tokens": -3}]


@pytest.mark.parametrize("usage", USAGES, ids=repr)
async def test_a_good_answer_without_usable_token_counts_is_kept_and_flagged(
    fake: FakeOpenAIServer, usage: Any
) -> None:
    fake.always(Fault.usage(usage))
    async with make_ai(fake) as ai:
        embedded = await ai.embed(["count these words"], model=EMBED)
        answer = await ai.generate("hello there", model=CHAT)
        streamed = ai.stream("hello stream", model=CHAT)
        async with streamed:
            text = "".join([c async for c in streamed])
    np.testing.assert_allclose(embedded.vectors[0], fake_vector("count these words", 1536), atol=1e-6)
    assert embedded.usage.estimated and embedded.usage.input_tokens > 0 and embedded.usage.cost_usd > 0
    assert answer.text == "echo: hello there" and answer.usage.estimated and answer.usage.output_tokens > 0
    assert text == "echo: hello stream"
    assert streamed.result is not None and streamed.result.usage.estimated


async def test_timeout_is_a_deadline_for_the_whole_answer(fake: FakeOpenAIServer) -> None:
    # every piece arrives well within the 1 s read timeout, the whole body takes 3 s
    fake.always(Fault.trickle(3.0, pieces=15))
    extra = "    timeout: 1\n"
    text = "providers:\n" + openai_yaml(fake, extra=extra).replace("    timeout: 5\n", "").replace(
        "max_retries: 2", "max_retries: 0"
    )
    async with PulseAI.from_yaml(text) as ai:
        with pytest.raises(ProviderTimeoutError):
            await ai.embed(["slowly"], model=EMBED)
        with pytest.raises(ProviderTimeoutError):
            await ai.generate("slowly", model=CHAT)


async def test_a_slow_stream_is_not_cut_by_the_deadline(fake: FakeOpenAIServer) -> None:
    # a stream may take longer than `timeout` in all, as long as chunks keep coming
    fake.always(Fault.slow_stream(0.4))
    text = "providers:\n" + openai_yaml(fake).replace("timeout: 5", "timeout: 1")
    async with PulseAI.from_yaml(text) as ai:
        assert await read_stream(ai, model=CHAT) == "echo: one two three four"


@pytest.mark.parametrize(
    ("behaviour", "cause"),
    [
        ("reset_mid_body", "reset"),
        ("short_body", "broke the HTTP exchange"),
        ("bad_chunk", "broke the HTTP exchange"),
    ],
)
async def test_connection_faults_name_their_real_cause(behaviour: str, cause: str) -> None:
    with RawFaultServer(behaviour) as server:
        text = f"""
providers:
  oa: {{type: openai, api_key: sk-abcdef, base_url: "{server.base_url}", max_retries: 0,
       models: [{{name: text-embedding-3-small}}]}}
"""
        async with PulseAI.from_yaml(text) as ai:
            with pytest.raises(ProviderUnavailableError) as info:
                await ai.embed(["x"], model=EMBED)
    assert cause in str(info.value) and "cannot connect" not in str(info.value)
    assert server.requests == 1


async def test_connection_refused_says_cannot_connect() -> None:
    text = """
providers:
  oa: {type: openai, api_key: sk-abcdef, base_url: "http://127.0.0.1:9/v1", max_retries: 0,
       models: [{name: text-embedding-3-small}]}
"""
    async with PulseAI.from_yaml(text) as ai:
        with pytest.raises(ProviderUnavailableError, match="cannot connect"):
            await ai.embed(["x"], model=EMBED)


def test_one_pulse_ai_serves_two_event_loops_one_after_the_other(fake: FakeOpenAIServer) -> None:
    ai = make_ai(fake)
    first = asyncio.run(ai.embed(["first loop"], model=EMBED))
    second = asyncio.run(ai.embed(["second loop"], model=EMBED))
    asyncio.run(ai.aclose())
    np.testing.assert_allclose(first.vectors[0], fake_vector("first loop", 1536), atol=1e-6)
    np.testing.assert_allclose(second.vectors[0], fake_vector("second loop", 1536), atol=1e-6)


def test_two_running_loops_at_once_are_refused_clearly(fake: FakeOpenAIServer) -> None:
    fake.set_latency(0.5)
    ai = make_ai(fake)
    errors: list[BaseException] = []
    started = threading.Event()

    def in_thread() -> None:
        async def call() -> None:
            started.set()
            await ai.embed(["thread loop"], model=EMBED)

        try:
            asyncio.run(call())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=in_thread)
    thread.start()
    started.wait(5)

    async def main_loop() -> None:
        await asyncio.sleep(0.1)
        await ai.embed(["main loop"], model=EMBED)

    try:
        asyncio.run(main_loop())
    except PulseAIError as error:
        errors.append(error)
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], PulseAIError) and "event loop" in str(errors[0])
