"""In-process fake providers with scriptable faults, for your tests and ours.

Declare a provider of ``type: fake`` in the YAML; its models keep their catalog facts (a fake
``text-embedding-3-small`` has 1536 dimensions, OpenAI's prices and OpenAI's vector space), so a
fake can stand in for any provider in routing, fallback, budget and cache tests::

    ai = PulseAI.from_yaml(\"\"\"
    providers:
      primary: {type: fake, models: [{name: text-embedding-3-small}]}
      backup:  {type: fake, models: [{name: text-embedding-3-small}]}
    pipelines:
      embedding: {kind: embedding, candidates: [primary/text-embedding-3-small, backup/text-embedding-3-small]}
    \"\"\")
    primary = ai.provider("primary")
    assert isinstance(primary, FakeProvider)
    primary.script(Fault.rate_limited(), Fault.ok(), Fault.unavailable())   # one per request, in order
    primary.always(Fault.slow(0.05))                                          # then for every request

Vectors are deterministic per text (``fake_vector``); answers echo the last message. Every request
is recorded in ``calls``. The real SDK path is tested against ``tests/fakes/openai_server.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pulse_ai.accounting import Usage
from pulse_ai.catalog import Capability, ModelSpec
from pulse_ai.errors import (
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from pulse_ai.providers.base import BatchEmbedding, EmbeddingProvider, GenerationProvider
from pulse_ai.tokens import estimate_tokens
from pulse_ai.types import GenerationParams, GenerationResult, Message

__all__ = ["FakeCall", "FakeProvider", "Fault", "fake_vector"]


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour of one request. Build them with the class methods."""

    kind: str
    delay: float = 0.0
    retry_after: float | None = None
    after_chunks: int = 0

    @classmethod
    def ok(cls) -> Fault:
        """No fault: a placeholder in a script."""
        return cls("ok")

    @classmethod
    def rate_limited(cls, retry_after: float | None = None) -> Fault:
        return cls("rate_limited", retry_after=retry_after)

    @classmethod
    def timeout(cls) -> Fault:
        return cls("timeout")

    @classmethod
    def unavailable(cls) -> Fault:
        return cls("unavailable")

    @classmethod
    def bad_request(cls) -> Fault:
        return cls("bad_request")

    @classmethod
    def authentication(cls) -> Fault:
        return cls("authentication")

    @classmethod
    def malformed(cls) -> Fault:
        """An answer that cannot be read."""
        return cls("malformed")

    @classmethod
    def wrong_count(cls) -> Fault:
        """One vector fewer than inputs (the base class must refuse it)."""
        return cls("wrong_count")

    @classmethod
    def wrong_dimension(cls) -> Fault:
        return cls("wrong_dimension")

    @classmethod
    def zero_vector(cls) -> Fault:
        return cls("zero_vector")

    @classmethod
    def no_usage(cls) -> Fault:
        """A good answer whose token counts are missing (they are estimated and flagged)."""
        return cls("no_usage")

    @classmethod
    def slow(cls, delay: float) -> Fault:
        return cls("slow", delay=delay)

    @classmethod
    def cut_stream(cls, after_chunks: int = 1) -> Fault:
        """A stream that stops after ``after_chunks`` deltas with no finish reason."""
        return cls("cut_stream", after_chunks=after_chunks)

    @classmethod
    def fail_mid_stream(cls, after_chunks: int = 1) -> Fault:
        """A stream that fails (unavailable) after ``after_chunks`` deltas."""
        return cls("fail_mid_stream", after_chunks=after_chunks)


@dataclass(frozen=True)
class FakeCall:
    operation: str  # embed | generate | stream | health
    model: str
    inputs: tuple[str, ...]
    fault: Fault | None


def fake_vector(text: str, dims: int, normalized: bool = True) -> npt.NDArray[np.float32]:
    """A deterministic vector for ``text``: the same text always gets the same vector."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    vector /= np.linalg.norm(vector)
    return vector if normalized else vector * 3.0


@dataclass
class _Script:
    queue: deque[Fault] = field(default_factory=deque)
    always: Fault | None = None


class FakeProvider(EmbeddingProvider, GenerationProvider):
    """Embeds and generates in-process, deterministically, with the faults it is scripted with."""

    type_name = "fake"

    def __init__(self, name: str, config: Any, models: Any) -> None:
        super().__init__(name, config, models)
        self._script = _Script()
        self.calls: list[FakeCall] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.open_streams = 0

    # ---- scripting -------------------------------------------------------------------------
    def script(self, *faults: Fault) -> None:
        """Faults for the next requests, one each, in order."""
        self._script.queue.extend(faults)

    def always(self, fault: Fault | None) -> None:
        """A fault for every request once the script is used up (None: no fault)."""
        self._script.always = fault

    def reset(self) -> None:
        self._script = _Script()
        self.calls.clear()
        self.max_in_flight = 0

    def requests(self, operation: str | None = None) -> list[FakeCall]:
        return [call for call in self.calls if operation is None or call.operation == operation]

    # ---- capabilities ----------------------------------------------------------------------
    async def embed_batch(self, texts: list[str], model: ModelSpec) -> BatchEmbedding:
        fault = await self._begin("embed", model, texts)
        try:
            dims = model.dimensions or 0
            count = len(texts) - 1 if fault and fault.kind == "wrong_count" else len(texts)
            size = dims - 1 if fault and fault.kind == "wrong_dimension" else dims
            vectors = np.stack([fake_vector(t, size, model.normalized) for t in texts[:count]]) if count else None
            if vectors is None:
                vectors = np.zeros((0, size), np.float32)
            if fault and fault.kind == "zero_vector":
                vectors[0] = 0.0
            tokens = sum(estimate_tokens(t) for t in texts)
            return BatchEmbedding(vectors, tokens, estimated=bool(fault and fault.kind == "no_usage"))
        finally:
            self.in_flight -= 1

    async def complete(self, messages: list[Message], params: GenerationParams, model: ModelSpec) -> GenerationResult:
        fault = await self._begin("generate", model, [m.content for m in messages])
        try:
            text = _answer(messages, params)
            return GenerationResult(text, model.ref, _usage(messages, text, model, fault), finish_reason="stop")
        finally:
            self.in_flight -= 1

    async def stream_text(
        self, messages: list[Message], params: GenerationParams, model: ModelSpec
    ) -> AsyncIterator[str | GenerationResult]:
        fault = await self._begin("stream", model, [m.content for m in messages])
        self.open_streams += 1
        try:
            words = _answer(messages, params).split(" ")
            sent: list[str] = []
            for index, word in enumerate(words):
                if fault and fault.kind in ("cut_stream", "fail_mid_stream") and index >= fault.after_chunks:
                    if fault.kind == "fail_mid_stream":
                        raise ProviderUnavailableError(
                            "scripted: the stream broke", provider=self.name, model=model.name
                        )
                    raise MalformedResponseError(
                        "the stream ended without a finish reason: the answer was cut off",
                        provider=self.name,
                        model=model.name,
                    )
                delta = word if index == 0 else f" {word}"
                sent.append(delta)
                await asyncio.sleep(self.config.latency / max(1, len(words)))
                yield delta
            text = "".join(sent)
            yield GenerationResult(text, model.ref, _usage(messages, text, model, fault), finish_reason="stop")
        finally:
            self.open_streams -= 1
            self.in_flight -= 1

    async def health_check(self, model: ModelSpec) -> None:
        if model.supports(Capability.EMBEDDING):
            await self.embed(["ping"], model)
            return
        fault = await self._begin("health", model, [])
        self.in_flight -= 1
        del fault

    # ---- internals -------------------------------------------------------------------------
    async def _begin(self, operation: str, model: ModelSpec, inputs: list[str]) -> Fault | None:
        """Record the request, apply its fault (raise, or return it for the caller to apply)."""
        script = self._script
        fault = script.queue.popleft() if script.queue else script.always
        self.calls.append(FakeCall(operation, model.ref, tuple(inputs), fault))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.config.latency + (fault.delay if fault and fault.kind == "slow" else 0.0)
            if delay:
                await asyncio.sleep(delay)
            error = _error_for(fault, self.name, model.name)
            if error is not None:
                raise error
        except BaseException:
            self.in_flight -= 1
            raise
        return fault


def _error_for(fault: Fault | None, provider: str, model: str) -> ProviderError | None:
    if fault is None:
        return None
    where: dict[str, Any] = {"provider": provider, "model": model}
    kind = fault.kind
    if kind == "rate_limited":
        return RateLimitedError("scripted 429", retry_after=fault.retry_after, status_code=429, **where)
    if kind == "timeout":
        return ProviderTimeoutError("scripted: the request timed out", **where)
    if kind == "unavailable":
        return ProviderUnavailableError("scripted 503", status_code=503, **where)
    if kind == "bad_request":
        return BadRequestError("scripted 400", status_code=400, **where)
    if kind == "authentication":
        return AuthenticationError("scripted 401", status_code=401, **where)
    if kind == "malformed":
        return MalformedResponseError("scripted: the answer cannot be read", **where)
    return None


def _answer(messages: list[Message], params: GenerationParams) -> str:
    text = f"echo: {messages[-1].content}"
    if params.max_tokens is not None:
        text = " ".join(text.split(" ")[: params.max_tokens])
    return text


def _usage(messages: list[Message], text: str, model: ModelSpec, fault: Fault | None) -> Usage:
    """What the fake "counted"; with the ``no_usage`` fault, flagged as estimated (it did not say)."""
    prompt = sum(estimate_tokens(m.content) for m in messages)
    output = estimate_tokens(text)
    estimated = fault is not None and fault.kind == "no_usage"
    return Usage(prompt, output, 1, model.cost_usd(prompt, output), estimated)
