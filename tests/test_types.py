"""Callers' input, checked before anything is sent: texts, messages and params that cannot be used
are one-line InputErrors naming what is wrong, on every provider, with no request made."""

from __future__ import annotations

from typing import Any

import pytest

from pulse_ai import GenerationParams, InputError, PulseAI
from pulse_ai.testing import FakeProvider, Fault
from tests.conftest import openai_yaml
from tests.fakes.openai_server import FakeOpenAIServer

FAKES = """
providers:
  f: {type: fake, models: [{name: text-embedding-3-small}, {name: gpt-4o-mini}]}
pipelines:
  embedding: {kind: embedding, candidates: [f/text-embedding-3-small]}
  generation: {kind: generation, candidates: [f/gpt-4o-mini]}
"""


def fake_of(ai: PulseAI) -> FakeProvider:
    provider = ai.provider("f")
    assert isinstance(provider, FakeProvider)
    return provider


@pytest.mark.parametrize(
    ("texts", "says"),
    [
        (None, "not NoneType"),
        ({"a": 1}, "not dict"),
        ({"a", "b"}, "not set"),
        (b"bytes", "not bytes"),
        (42, "not int"),
    ],
)
async def test_texts_that_are_not_a_list_of_strings_are_refused(texts: Any, says: str) -> None:
    async with PulseAI.from_yaml(FAKES) as ai:
        with pytest.raises(InputError, match="texts must be a list of strings") as info:
            await ai.embed(texts)
        assert says in str(info.value)
        assert fake_of(ai).calls == []


async def test_a_generator_of_texts_is_still_fine() -> None:
    async with PulseAI.from_yaml(FAKES) as ai:
        result = await ai.embed(text for text in ["a", "b"])
    assert result.vectors.shape == (2, 1536)


async def test_a_lone_surrogate_is_refused_with_its_index_on_fake_and_local_models() -> None:
    async with PulseAI.from_yaml(FAKES) as ai:
        with pytest.raises(InputError, match=r"texts\[1\].*surrogate") as info:
            await ai.embed(["fine", "bad \ud800 text"])
        assert info.value.index == 1
        with pytest.raises(InputError, match=r"messages\[0\].*surrogate"):
            await ai.generate([{"role": "user", "content": "bad \udfff"}])
        with pytest.raises(InputError, match=r"prompt.*surrogate"):
            async with ai.stream("bad \ud800") as stream:
                async for _ in stream:
                    pass
        assert fake_of(ai).calls == []
    async with PulseAI.default() as ai:
        with pytest.raises(InputError, match=r"texts\[0\].*surrogate"):
            await ai.embed(["bad \ud800"])


async def test_a_lone_surrogate_never_reaches_a_remote_provider(fake: FakeOpenAIServer) -> None:
    async with PulseAI.from_yaml("providers:\n" + openai_yaml(fake)) as ai:
        with pytest.raises(InputError, match=r"texts\[0\].*surrogate"):
            await ai.embed(["bad \ud800 text"], model="oa/text-embedding-3-small")
        with pytest.raises(InputError, match=r"prompt.*surrogate"):
            await ai.generate("bad \ud800", model="oa/gpt-4o-mini")
    assert fake.requests == []


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ([{"role": "tool", "content": "x"}], "messages[0].role: Input should be"),
        ([{"role": "user", "content": None}], "messages[0].content: Input should be a valid string"),
        ([{"role": "user"}], "messages[0].content: Field required"),
        ({"role": "user", "content": "x"}, "a list of messages"),
    ],
)
async def test_bad_messages_are_one_line_input_errors(messages: Any, says: str) -> None:
    async with PulseAI.from_yaml(FAKES) as ai:
        with pytest.raises(InputError) as info:
            await ai.generate(messages)
    assert says in str(info.value) and "\n" not in str(info.value)


async def test_params_may_be_a_dict_and_bad_params_are_one_line_input_errors() -> None:
    async with PulseAI.from_yaml(FAKES) as ai:
        answer = await ai.generate("one two three", params={"max_tokens": 2})  # type: ignore[arg-type]
        assert answer.text == "echo: one"
        with pytest.raises(InputError) as info:
            await ai.generate("x", params={"temperature": 5})  # type: ignore[arg-type]
        assert "params.temperature: Input should be less than or equal to 2" in str(info.value)
        assert "\n" not in str(info.value)
        with pytest.raises(InputError, match="params must be GenerationParams"):
            async with ai.stream("x", params=0.5) as stream:  # type: ignore[arg-type]
                async for _ in stream:
                    pass
        assert fake_of(ai).requests("generate") == [fake_of(ai).calls[0]]
        typed = await ai.generate("a b", params=GenerationParams(max_tokens=1))
    assert typed.text == "echo:"


async def test_the_fakes_no_usage_fault_flags_generation_and_streams_too() -> None:
    async with PulseAI.from_yaml(FAKES) as ai:
        fake_of(ai).script(Fault.no_usage(), Fault.no_usage(), Fault.no_usage())
        embedded = await ai.embed(["a b"])
        answer = await ai.generate("a b")
        async with ai.stream("a b") as stream:
            text = "".join([d async for d in stream])
    assert embedded.usage.estimated and answer.usage.estimated
    assert text == "echo: a b" and stream.result is not None and stream.result.usage.estimated
