"""Answers and chunks of the wrong shape: typed MalformedResponseErrors that say what was wrong,
that fall back before a stream's first chunk and that the breaker hears; and token counts that are
not believed when they are implausible."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from pulse_ai import GenerationParams, MalformedResponseError, PulseAI
from tests.conftest import openai_yaml
from tests.fakes.openai_server import FakeOpenAIServer, Fault, fake_vector

EMBED = "oa/text-embedding-3-small"
CHAT = "oa/gpt-4o-mini"


def chunk(*choices: Any, **extra: Any) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": list(choices), **extra}


def delta(content: Any = None, finish: Any = None, index: Any = 0, raw_delta: Any = None) -> dict[str, Any]:
    body = raw_delta if raw_delta is not None else ({} if content is None else {"content": content})
    return {"index": index, "delta": body, "finish_reason": finish}


STOP = chunk(delta(finish="stop"))
# Malformed before any text reaches the caller: the pipeline falls back.
BEFORE_FIRST_TEXT = {
    "content-is-a-number": [chunk(delta(123)), STOP],
    "content-is-a-list": [chunk(delta(["a", "b"], finish="stop"))],
    "delta-is-a-string": [chunk(delta(raw_delta="hello")), STOP],
    "choice-is-a-number": [chunk(1), STOP],
    "choices-is-an-object": [{**chunk(), "choices": {"a": 1}}],
    "finish-reason-is-a-number": [chunk(delta("hi", finish=7))],
    "two-choices": [chunk(delta("A"), delta("B", index=1)), STOP],
    "choice-index-1": [chunk(delta("B", index=1)), STOP],
    "index-is-a-string": [chunk(delta("A", index="0")), STOP],
    "not-json": ["{not json"],
    "an-array-event": [[1, 2, 3]],
    "a-null-event": ["null"],
}


def pipeline(first: FakeOpenAIServer, second: FakeOpenAIServer, breaker: str = "") -> PulseAI:
    return PulseAI.from_yaml(
        "providers:\n"
        + openai_yaml(first, "a")
        + openai_yaml(second, "b")
        + f"pipelines:\n  chat: {{kind: generation, candidates: [a/gpt-4o-mini, b/gpt-4o-mini]{breaker}}}\n"
    )


@pytest.mark.parametrize("events", BEFORE_FIRST_TEXT.values(), ids=BEFORE_FIRST_TEXT.keys())
async def test_a_malformed_chunk_before_the_first_text_falls_back(
    fake: FakeOpenAIServer, fake2: FakeOpenAIServer, events: list[Any]
) -> None:
    fake.always(Fault.events(*events))
    async with pipeline(fake, fake2) as ai:
        async with ai.stream("one two", pipeline="chat") as stream:
            received = [d async for d in stream]
        health = ai.health.states()
    assert "".join(received) == "echo: one two" and all(isinstance(d, str) for d in received)
    failed, served = stream.attempts
    assert failed.model == "a/gpt-4o-mini" and failed.outcome == "malformed"
    assert isinstance(failed.error, MalformedResponseError)
    assert "Error:" not in str(failed.error), "a raw exception's text leaked into the message"
    assert served.model == "b/gpt-4o-mini" and health["a/gpt-4o-mini"] == "closed"


AFTER_FIRST_TEXT = {
    "text-after-the-finish-reason": [chunk(delta("A", finish="stop")), chunk(delta(" injected"))],
    "a-second-choice-later": [chunk(delta("A")), chunk(delta("B", index=1)), STOP],
    "a-number-later": [chunk(delta("A")), chunk(delta(5)), STOP],
}


@pytest.mark.parametrize("events", AFTER_FIRST_TEXT.values(), ids=AFTER_FIRST_TEXT.keys())
async def test_a_malformed_chunk_after_the_first_text_is_raised_and_counted(
    fake: FakeOpenAIServer, fake2: FakeOpenAIServer, events: list[Any]
) -> None:
    fake.always(Fault.events(*events))
    breaker = ", breaker: {window: 2, min_calls: 2, failure_rate: 0.5}"
    async with pipeline(fake, fake2, breaker) as ai:
        received: list[str] = []
        with pytest.raises(MalformedResponseError):
            async with ai.stream("one two", pipeline="chat") as stream:
                async for piece in stream:
                    received.append(piece)
        assert received == ["A"] and stream.outcome == "malformed"
        (attempt,) = stream.attempts
        assert attempt.outcome == "malformed" and attempt.usage.requests == 1
        assert ai.health.states()["a/gpt-4o-mini"] == "open"  # a first chunk (a success), then this failure
    assert fake2.requests == []


def completion(content: Any = "ok", finish: Any = "stop", index: Any = 0, **extra: Any) -> dict[str, Any]:
    choice = {"index": index, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [choice],
        "usage": usage,
        **extra,
    }


@pytest.mark.parametrize(
    ("body", "media_type", "cause"),
    [
        (completion(content=None, finish=None), "application/json", "neither text nor a finish reason"),
        (completion(index=5), "application/json", "index 0"),
        ({**completion(), "choices": []}, "application/json", "0 choices"),
        ({**completion(), "choices": completion()["choices"] * 2}, "application/json", "2 choices"),
        (completion(content=123), "application/json", "not text"),
        (completion(finish=7), "application/json", "finish reason is not text"),
        ("<html><body>502 Bad Gateway</body></html>", "text/html", "not JSON (an HTML page"),
        (
            {"error": {"message": "model overloaded"}},
            "application/json",
            "answered 200 with an error: model overloaded",
        ),
    ],
)
async def test_a_chat_answer_of_the_wrong_shape_names_its_cause(
    fake: FakeOpenAIServer, body: Any, media_type: str, cause: str
) -> None:
    fake.always(Fault.answer(body, media_type=media_type))
    async with PulseAI.from_yaml("providers:\n" + openai_yaml(fake)) as ai:
        with pytest.raises(MalformedResponseError) as info:
            await ai.generate("hi", model=CHAT)
    assert cause in str(info.value) and "AttributeError" not in str(info.value)


@pytest.mark.parametrize("finish", ["stop", "length", "content_filter", "tool_calls"])
async def test_no_text_with_a_finish_reason_is_an_empty_answer(fake: FakeOpenAIServer, finish: str) -> None:
    fake.always(Fault.answer(completion(content=None, finish=finish)))
    async with PulseAI.from_yaml("providers:\n" + openai_yaml(fake)) as ai:
        answer = await ai.generate("hi", model=CHAT)
    assert answer.text == "" and answer.finish_reason == finish


def embeddings(*vectors: Any, **extra: Any) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 2, "total_tokens": 2}, **extra}


def b64(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode()


@pytest.mark.parametrize(
    ("body", "media_type", "cause"),
    [
        (embeddings(b64(fake_vector("a", 1536)), b64(fake_vector("b", 1535))), "application/json", "vector 1 has 1535"),
        (
            embeddings([0.1] * 1536, ["sk-echoed-value-4242"] * 1536),
            "application/json",
            "vector 1 is not a list of numbers",
        ),
        (embeddings(b64(fake_vector("a", 1536)), "!!not base64!!"), "application/json", "vector 1 is not valid base64"),
        ("<!doctype html><title>login</title>", "text/html", "not JSON (an HTML page"),
        ([1, 2], "application/json", "a JSON list"),
        ({"error": {"message": "quota exceeded"}}, "application/json", "answered 200 with an error: quota exceeded"),
    ],
)
async def test_an_embedding_answer_of_the_wrong_shape_names_its_cause(
    fake: FakeOpenAIServer, body: Any, media_type: str, cause: str
) -> None:
    fake.always(Fault.answer(body, media_type=media_type))
    async with PulseAI.from_yaml("providers:\n" + openai_yaml(fake)) as ai:
        with pytest.raises(MalformedResponseError) as info:
            await ai.embed(["a", "b"], model=EMBED)
    message = str(info.value)
    assert cause in message and "sequence" not in message and "sk-echoed-value-4242" not in message


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 10**30, "completion_tokens": 1},
        {"prompt_tokens": 10**9 + 1, "completion_tokens": 1},
        {"prompt_tokens": 50_000, "completion_tokens": 1},  # "hi" is about one token: 50,000 is not believable
        {"prompt_tokens": 3, "completion_tokens": 10**12},
    ],
)
async def test_implausible_token_counts_are_estimated_and_flagged(fake: FakeOpenAIServer, usage: Any) -> None:
    fake.always(Fault.answer({**completion(content="fine"), "usage": usage}))
    async with PulseAI.from_yaml("providers:\n" + openai_yaml(fake)) as ai:
        answer = await ai.generate("hi", model=CHAT)
    assert answer.text == "fine" and answer.usage.estimated
    assert answer.usage.input_tokens < 1000 and answer.usage.output_tokens < 1000
    assert answer.usage.cost_usd < 1


async def test_output_within_the_requested_ceiling_is_believed(fake: FakeOpenAIServer) -> None:
    # hidden reasoning tokens count as output: a short text may cost thousands of them
    fake.always(Fault.answer({**completion(content="yes"), "usage": {"prompt_tokens": 9, "completion_tokens": 6000}}))
    async with PulseAI.from_yaml("providers:\n" + openai_yaml(fake)) as ai:
        answer = await ai.generate("hi", model=CHAT, params=GenerationParams(max_tokens=8000))
    assert answer.usage.output_tokens == 6000 and not answer.usage.estimated
