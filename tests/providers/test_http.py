"""The HTTP layer under the SDK: deadlines decided by the request (never by the answer's
content-type), silence limits on streams, and answers bounded in size whatever their encoding."""

from __future__ import annotations

import numpy as np
import pytest

from pulse_ai import MalformedResponseError, ProviderTimeoutError, PulseAI, RateLimitedError
from pulse_ai.providers import http
from tests.conftest import openai_yaml
from tests.fakes.openai_server import FakeOpenAIServer, Fault, fake_vector

EMBED = "oa/text-embedding-3-small"
CHAT = "oa/gpt-4o-mini"


def make_ai(server: FakeOpenAIServer, timeout: float = 5, retries: int = 0) -> PulseAI:
    text = openai_yaml(server).replace("timeout: 5", f"timeout: {timeout}")
    return PulseAI.from_yaml("providers:\n" + text.replace("max_retries: 2", f"max_retries: {retries}"))


def two_candidates(first: FakeOpenAIServer, second: FakeOpenAIServer, timeout: float) -> PulseAI:
    text = (
        "providers:\n"
        + openai_yaml(first, "a").replace("timeout: 5", f"timeout: {timeout}")
        + openai_yaml(second, "b")
        + "pipelines:\n  chat: {kind: generation, candidates: [a/gpt-4o-mini, b/gpt-4o-mini]}\n"
    )
    return PulseAI.from_yaml(text)


# ---- deadlines -------------------------------------------------------------------------------
@pytest.mark.parametrize("media_type", ["text/event-stream", "Text/Event-Stream; charset=utf-8"])
async def test_a_non_streamed_answer_labelled_as_a_stream_still_has_the_whole_answer_deadline(
    fake: FakeOpenAIServer, media_type: str
) -> None:
    # every piece arrives well within the 1 s read timeout; the whole body takes 4 s
    fake.always(Fault.trickle(4.0, pieces=20, media_type=media_type))
    async with make_ai(fake, timeout=1) as ai:
        with pytest.raises(ProviderTimeoutError):
            await ai.embed(["slowly"], model=EMBED)
        with pytest.raises(ProviderTimeoutError):
            await ai.generate("slowly", model=CHAT)


@pytest.mark.parametrize("mode", ["comment", "empty"])
async def test_keep_alives_before_the_first_text_do_not_hold_a_stream_open(
    fake: FakeOpenAIServer, fake2: FakeOpenAIServer, mode: str
) -> None:
    fake.always(Fault.stall_stream(0.2, mode=mode, after=0, count=100))
    async with two_candidates(fake, fake2, timeout=1) as ai, ai.stream("one two three", pipeline="chat") as stream:
        text = "".join([delta async for delta in stream])
    assert text == "echo: one two three"  # the second candidate served: the first timed out before any text
    first, served = stream.attempts
    assert first.model == "a/gpt-4o-mini" and first.outcome == "timeout"
    assert isinstance(first.error, ProviderTimeoutError) and "first text" in str(first.error)
    assert served.model == "b/gpt-4o-mini" and served.outcome == "ok"


@pytest.mark.parametrize("mode", ["comment", "empty"])
async def test_keep_alives_between_texts_do_not_count_as_progress(fake: FakeOpenAIServer, mode: str) -> None:
    fake.always(Fault.stall_stream(0.2, mode=mode, after=1, count=100))
    received: list[str] = []
    async with make_ai(fake, timeout=1) as ai:
        with pytest.raises(ProviderTimeoutError, match="no text for 1 s"):
            async with ai.stream("one two three", model=CHAT) as stream:
                async for delta in stream:
                    received.append(delta)
    assert received == ["echo:"]
    assert stream.outcome == "timeout"


# ---- size ------------------------------------------------------------------------------------
async def test_requests_ask_for_an_uncompressed_answer(fake: FakeOpenAIServer) -> None:
    async with make_ai(fake) as ai:
        await ai.embed(["plain"], model=EMBED)
        await ai.generate("plain", model=CHAT)
    assert [r.headers["accept-encoding"] for r in fake.requests] == ["identity", "identity"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_answer_within_the_cap_is_decoded(fake: FakeOpenAIServer, encoding: str) -> None:
    fake.always(Fault.encoded(encoding, pad=10_000))
    async with make_ai(fake) as ai:
        embedded = await ai.embed(["compressed anyway"], model=EMBED)
        answer = await ai.generate("compressed anyway", model=CHAT)
    np.testing.assert_allclose(embedded.vectors[0], fake_vector("compressed anyway", 1536), atol=1e-6)
    assert answer.text == "echo: compressed anyway"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity"])
async def test_an_answer_beyond_the_cap_is_malformed_and_not_retried(
    fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    monkeypatch.setattr(http, "MAX_RESPONSE_BYTES", 1024 * 1024)
    fake.always(Fault.encoded(encoding, pad=4 * 1024 * 1024))  # gzip: a few KiB that inflate to 4 MiB
    async with make_ai(fake, retries=2) as ai:
        with pytest.raises(MalformedResponseError, match="larger than 1 MiB"):
            await ai.embed(["bomb"], model=EMBED)
        with pytest.raises(MalformedResponseError, match="larger than 1 MiB"):
            await ai.generate("bomb", model=CHAT)
    assert len(fake.requests) == 2, "a refused answer is not asked for again"


async def test_an_encoding_that_cannot_be_bounded_is_refused(fake: FakeOpenAIServer) -> None:
    fake.always(Fault.encoded("br"))
    async with make_ai(fake) as ai:
        with pytest.raises(MalformedResponseError, match="'br'"):
            await ai.embed(["brotli"], model=EMBED)


async def test_a_corrupt_compressed_answer_is_malformed(fake: FakeOpenAIServer) -> None:
    fake.always(Fault.answer("this is not gzip at all", headers={"content-encoding": "gzip"}))
    async with make_ai(fake) as ai:
        with pytest.raises(MalformedResponseError, match="gzip"):
            await ai.embed(["corrupt"], model=EMBED)


# ---- Retry-After -----------------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -5.0, 1e400])
async def test_a_retry_after_that_is_not_a_wait_is_not_reported(fake: FakeOpenAIServer, value: float) -> None:
    fake.always(Fault.rate_limited(retry_after=value))
    async with make_ai(fake) as ai:
        with pytest.raises(RateLimitedError) as info:
            await ai.embed(["x"], model=EMBED)
    assert info.value.retry_after is None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -5.0])
def test_a_rate_limited_error_keeps_only_a_real_wait(value: float) -> None:
    assert RateLimitedError("429", retry_after=value).retry_after is None
    assert RateLimitedError("429", retry_after=2.5).retry_after == 2.5
