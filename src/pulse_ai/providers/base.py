"""The two capabilities, each a small base class with one abstract method.

Batching, bounded concurrency, input checks and answer checks live here, once; a provider file
only says how to make one request (``embed_batch``, ``complete``, ``stream_text``).
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pulse_ai.catalog import Capability, ModelSpec
from pulse_ai.errors import InputError, MalformedResponseError, ProviderError
from pulse_ai.tokens import estimate_tokens
from pulse_ai.types import (
    EmbeddingResult,
    GenerationParams,
    GenerationResult,
    Message,
    Usage,
    Vectors,
    normalise_messages,
    validate_texts,
)

__all__ = [
    "BatchEmbedding",
    "EmbeddingProvider",
    "GenerationProvider",
    "GenerationStream",
    "HealthStatus",
    "Provider",
    "plan_batches",
]


@dataclass(frozen=True)
class BatchEmbedding:
    """What one request returned: vectors in request order and the tokens it consumed."""

    vectors: Vectors
    input_tokens: int
    truncated: int = 0


@dataclass(frozen=True)
class HealthStatus:
    provider: str
    model: str
    healthy: bool
    latency_ms: float
    error: str | None = None


class Provider(ABC):
    """A configured provider: its credentials, client and concurrency bound.

    Capabilities are the subclasses below; a provider class inherits the ones it serves.
    """

    type_name: ClassVar[str]

    def __init__(self, name: str, config: Any, models: Sequence[ModelSpec]) -> None:
        self.name = name
        self.config = config
        self.models = {spec.name: spec for spec in models}
        self._semaphore = asyncio.Semaphore(config.max_concurrency)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, models={sorted(self.models)})"

    def model(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise InputError(f"provider {self.name!r} has no model {name!r}") from None

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release clients and connections."""

    @abstractmethod
    async def health_check(self, model: ModelSpec) -> None:
        """Make the cheapest real call that proves ``model`` answers; raise a ProviderError if not."""


class EmbeddingProvider(Provider):
    """Embeds texts. Subclasses implement ``embed_batch`` for one request's worth of texts."""

    #: Local models truncate long inputs themselves (and count them); remote ones refuse them.
    truncates_long_inputs: ClassVar[bool] = False

    @abstractmethod
    async def embed_batch(self, texts: list[str], model: ModelSpec) -> BatchEmbedding:
        """Embed one request's texts; the vectors come back in the same order."""

    async def embed(self, texts: Sequence[str], model: ModelSpec) -> EmbeddingResult:
        """Embed any number of texts: checked, packed into requests by the model's limits, run with
        bounded concurrency, and reassembled in input order. A failed request fails the call."""
        if not model.supports(Capability.EMBEDDING):
            raise InputError(f"{model.ref} is not an embedding model")
        checked = validate_texts(texts)
        dims = model.dimensions or 0
        if not checked:
            return EmbeddingResult(np.zeros((0, dims), np.float32), model.ref, model.vector_space, Usage())
        needs_estimate = not self.truncates_long_inputs or model.max_tokens_per_request is not None
        token_counts = [estimate_tokens(text) for text in checked] if needs_estimate else [1] * len(checked)
        if not self.truncates_long_inputs:
            for index, count in enumerate(token_counts):
                if count > model.max_input_tokens:
                    raise InputError(
                        f"texts[{index}] is about {count} tokens; {model.ref} accepts at most "
                        f"{model.max_input_tokens} per input (shorten or split it)",
                        index=index,
                    )
        batches = plan_batches(token_counts, model.max_inputs_per_request, model.max_tokens_per_request)
        outcomes = await asyncio.gather(
            *(self._run_batch(checked[start:end], model) for start, end in batches), return_exceptions=True
        )
        failed: list[int] = []
        first_error: ProviderError | None = None
        for (start, end), outcome in zip(batches, outcomes, strict=True):
            if isinstance(outcome, ProviderError):
                failed.extend(range(start, end))
                first_error = first_error or outcome
            elif isinstance(outcome, BaseException):
                raise outcome
        if first_error is not None:
            first_error.failed_inputs = tuple(failed)
            raise first_error
        parts = [outcome for outcome in outcomes if isinstance(outcome, BatchEmbedding)]
        tokens = sum(part.input_tokens for part in parts)
        usage = Usage(input_tokens=tokens, requests=len(parts), cost_usd=model.cost_usd(tokens))
        return EmbeddingResult(
            vectors=np.concatenate([part.vectors for part in parts]),
            model=model.ref,
            vector_space=model.vector_space,
            usage=usage,
            truncated=sum(part.truncated for part in parts),
        )

    async def _run_batch(self, texts: list[str], model: ModelSpec) -> BatchEmbedding:
        async with self._semaphore:
            batch = await self.embed_batch(texts, model)
        vectors = np.asarray(batch.vectors, dtype=np.float32)
        problem = None
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            problem = f"returned {vectors.shape[0] if vectors.ndim else 0} vectors for {len(texts)} inputs"
        elif vectors.shape[1] != model.dimensions:
            problem = f"returned vectors of {vectors.shape[1]} dimensions; {model.dimensions} expected"
        elif not np.isfinite(vectors).all():
            problem = "returned a vector with NaN or infinite values"
        if problem:
            raise MalformedResponseError(problem, provider=self.name, model=model.name)
        return BatchEmbedding(vectors, batch.input_tokens, batch.truncated)


class GenerationStream:
    """Async iterator of text deltas; once exhausted, ``result`` holds the whole answer and usage."""

    def __init__(self, chunks: AsyncIterator[str | GenerationResult]) -> None:
        self._chunks = chunks
        self._parts: list[str] = []
        self.result: GenerationResult | None = None

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> str:
        async for chunk in self._chunks:
            if isinstance(chunk, GenerationResult):
                self.result = chunk
                continue
            self._parts.append(chunk)
            return chunk
        raise StopAsyncIteration

    async def aclose(self) -> None:
        closer = getattr(self._chunks, "aclose", None)
        if closer is not None:
            await closer()


class GenerationProvider(Provider):
    """Generates text. Subclasses implement ``complete`` (one answer) and ``stream_text``."""

    @abstractmethod
    async def complete(self, messages: list[Message], params: GenerationParams, model: ModelSpec) -> GenerationResult:
        """One chat completion."""

    @abstractmethod
    def stream_text(
        self, messages: list[Message], params: GenerationParams, model: ModelSpec
    ) -> AsyncIterator[str | GenerationResult]:
        """Yield text deltas, then one final GenerationResult with the usage."""

    async def generate(
        self,
        messages: str | Sequence[Message | dict[str, str]],
        model: ModelSpec,
        params: GenerationParams | None = None,
    ) -> GenerationResult:
        checked = self._check(messages, model)
        async with self._semaphore:
            return await self.complete(checked, params or GenerationParams(), model)

    def stream(
        self,
        messages: str | Sequence[Message | dict[str, str]],
        model: ModelSpec,
        params: GenerationParams | None = None,
    ) -> GenerationStream:
        checked = self._check(messages, model)

        async def bounded() -> AsyncIterator[str | GenerationResult]:
            async with self._semaphore:
                async for chunk in self.stream_text(checked, params or GenerationParams(), model):
                    yield chunk

        return GenerationStream(bounded())

    @staticmethod
    def _check(messages: str | Sequence[Message | dict[str, str]], model: ModelSpec) -> list[Message]:
        if not model.supports(Capability.GENERATION):
            raise InputError(f"{model.ref} is not a generation model")
        return normalise_messages(messages)


def plan_batches(token_counts: Sequence[int], max_inputs: int, max_tokens: int | None) -> list[tuple[int, int]]:
    """Split inputs, in order, into [start, end) ranges within both request limits."""
    batches: list[tuple[int, int]] = []
    start, tokens = 0, 0
    token_limit = max_tokens if max_tokens is not None else math.inf
    for index, count in enumerate(token_counts):
        if index > start and (index - start >= max_inputs or tokens + count > token_limit):
            batches.append((start, index))
            start, tokens = index, 0
        tokens += count
    if start < len(token_counts):
        batches.append((start, len(token_counts)))
    return batches
