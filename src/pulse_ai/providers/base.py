"""The two capabilities, each a small base class with one abstract method.

Batching, bounded concurrency, input checks and answer checks live here, once; a provider file
only says how to make one request (``embed_batch``, ``complete``, ``stream_text``).
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pulse_ai.accounting import Attempt, PartialVectors, Usage
from pulse_ai.catalog import Capability, ModelSpec
from pulse_ai.errors import InputError, MalformedResponseError, ProviderError, PulseAIError
from pulse_ai.redaction import install_log_redaction, register_secrets
from pulse_ai.streams import GenerationStream
from pulse_ai.tokens import count_many, count_tokens, prepare
from pulse_ai.types import (
    EmbeddingResult,
    GenerationParams,
    GenerationResult,
    Message,
    Vectors,
    check_params,
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

# A unit-length space tolerates float32 rounding and base64 transport, not a different scale.
UNIT_NORM_TOLERANCE = 1e-2


@dataclass(frozen=True)
class BatchEmbedding:
    """What one request returned: vectors in request order and the tokens it consumed.
    ``estimated``: the provider did not report the tokens; they are our estimate."""

    vectors: Vectors
    input_tokens: int
    truncated: int = 0
    estimated: bool = False


@dataclass(frozen=True)
class HealthStatus:
    provider: str
    model: str
    healthy: bool
    latency_ms: float
    error: str | None = None


class Provider(ABC):
    """A configured provider: its credentials, client and concurrency bound.

    Capabilities are the subclasses below; a provider class inherits the ones it serves. Resources
    that belong to an event loop (the concurrency semaphore, an SDK client) are made per loop: a
    provider used again after its loop closed (a second ``asyncio.run``) starts afresh; one used
    from two running loops at once is refused with a clear error.
    """

    type_name: ClassVar[str]

    def __init__(self, name: str, config: Any, models: Sequence[ModelSpec]) -> None:
        self.name = name
        self.config = config
        self.models = {spec.name: spec for spec in models}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        register_secrets(self.secrets())
        install_log_redaction()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, models={sorted(self.models)})"

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line or an error message."""
        return []

    def model(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise InputError(f"provider {self.name!r} has no model {name!r}") from None

    @property
    def slots(self) -> asyncio.Semaphore:
        """The concurrency bound of the running event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._semaphore is None:
            if self._loop is not None and self._loop is not loop and self._loop.is_running():
                raise PulseAIError(
                    f"provider {self.name!r} is in use by another running event loop; use one PulseAI "
                    "per event loop (or per thread)"
                )
            self._loop = loop
            self._semaphore = asyncio.Semaphore(self.config.max_concurrency)
            self.on_new_loop()
        return self._semaphore

    def on_new_loop(self) -> None:  # noqa: B027 - optional hook
        """Drop resources bound to a previous (closed) event loop."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release clients and connections."""

    @abstractmethod
    async def health_check(self, model: ModelSpec) -> None:
        """Make the cheapest real call that proves ``model`` answers; raise a ProviderError if not."""


class EmbeddingProvider(Provider):
    """Embeds texts. Subclasses implement ``embed_batch`` for one request's worth of texts."""

    #: Local models truncate long inputs themselves (and count them); remote ones refuse them.
    truncates_long_inputs: ClassVar[bool] = False
    #: The provider merges concurrent requests itself (a local model's micro-batcher, which runs one
    #: model call at a time and serves any event loop): the per-loop concurrency bound would only
    #: keep apart the requests it wants to merge, so it is not applied.
    merges_concurrent_calls: ClassVar[bool] = False

    @abstractmethod
    async def embed_batch(self, texts: list[str], model: ModelSpec) -> BatchEmbedding:
        """Embed one request's texts; the vectors come back in the same order."""

    async def embed(self, texts: Sequence[str], model: ModelSpec) -> EmbeddingResult:
        """Embed any number of texts: checked, packed into requests by the model's limits, run with
        bounded concurrency, and reassembled in input order.

        When some requests fail, the error carries what the others returned (``partial``), what they
        consumed (``usage``) and the inputs that got nothing (``failed_inputs``): the router sends
        only those on to the next candidate.
        """
        if not model.supports(Capability.EMBEDDING):
            raise InputError(f"{model.ref} is not an embedding model")
        checked = validate_texts(texts)
        dims = model.dimensions or 0
        if not checked:
            return EmbeddingResult(np.zeros((0, dims), np.float32), model.ref, model.vector_space, Usage())
        needs_estimate = not self.truncates_long_inputs or model.max_tokens_per_request is not None
        token_counts = await count_many(checked, model.encoding) if needs_estimate else [1] * len(checked)
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
        served = [
            (span, part) for span, part in zip(batches, outcomes, strict=True) if isinstance(part, BatchEmbedding)
        ]
        usage = Usage.total(
            [Usage(part.input_tokens, 0, 1, model.cost_usd(part.input_tokens), part.estimated) for _, part in served]
        )
        if first_error is not None:
            first_error.failed_inputs = tuple(failed)
            first_error.usage = usage
            if served:
                first_error.partial = PartialVectors(
                    np.concatenate([np.arange(start, end) for (start, end), _ in served]).astype(np.int64),
                    np.concatenate([part.vectors for _, part in served]),
                )
            raise first_error
        return EmbeddingResult(
            vectors=np.concatenate([part.vectors for _, part in served]),
            model=model.ref,
            vector_space=model.vector_space,
            usage=usage,
            truncated=sum(part.truncated for _, part in served),
        )

    async def _run_batch(self, texts: list[str], model: ModelSpec) -> BatchEmbedding:
        if self.merges_concurrent_calls:
            batch = await self.embed_batch(texts, model)
        else:
            async with self.slots:
                batch = await self.embed_batch(texts, model)
        vectors = np.asarray(batch.vectors, dtype=np.float32)
        problem = check_vectors(vectors, len(texts), model)
        if problem:
            raise MalformedResponseError(problem, provider=self.name, model=model.name)
        return BatchEmbedding(vectors, batch.input_tokens, batch.truncated, batch.estimated)


def check_vectors(vectors: Vectors, count: int, model: ModelSpec) -> str | None:
    """What is wrong with a provider's vectors for ``count`` inputs, or None: a wrong count or size,
    a NaN, an all-zero row, or (in a unit-length space) a row whose norm is not 1."""
    if vectors.ndim != 2 or vectors.shape[0] != count:
        return f"returned {vectors.shape[0] if vectors.ndim else 0} vectors for {count} inputs"
    if vectors.shape[1] != model.dimensions:
        return f"returned vectors of {vectors.shape[1]} dimensions; {model.dimensions} expected"
    if not np.isfinite(vectors).all():
        return "returned a vector with NaN or infinite values"
    norms = np.linalg.norm(vectors, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        return f"returned an all-zero vector (input {int(zero[0])} of the request)"
    if model.normalized:
        off = np.flatnonzero(np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE)
        if off.size:
            index = int(off[0])
            return f"returned a vector of norm {norms[index]:.4f} (input {index}) in a unit-length space"
    return None


class GenerationProvider(Provider):
    """Generates text. Subclasses implement ``complete`` (one answer) and ``stream_text``."""

    @abstractmethod
    async def complete(self, messages: list[Message], params: GenerationParams, model: ModelSpec) -> GenerationResult:
        """One chat completion."""

    @abstractmethod
    def stream_text(
        self, messages: list[Message], params: GenerationParams, model: ModelSpec
    ) -> AsyncIterator[str | GenerationResult]:
        """Yield text deltas, then one final GenerationResult with the usage. Closing the iterator
        early must close the underlying connection."""

    async def generate(
        self,
        messages: str | Sequence[Message | dict[str, str]],
        model: ModelSpec,
        params: GenerationParams | None = None,
    ) -> GenerationResult:
        checked = self._check(messages, model)
        checked_params = check_params(params)
        await prepare(model.encoding)  # a usage fallback counts on the loop: load the encoding off it
        async with self.slots:
            return await self.complete(checked, checked_params, model)

    def stream(
        self,
        messages: str | Sequence[Message | dict[str, str]],
        model: ModelSpec,
        params: GenerationParams | None = None,
    ) -> GenerationStream:
        """A stream that holds one concurrency slot from its first read until it ends or is closed."""
        checked = self._check(messages, model)
        params = check_params(params)
        started = time.perf_counter()
        sent = False

        async def bounded() -> AsyncIterator[str | GenerationResult]:
            nonlocal sent
            await prepare(model.encoding)  # a usage fallback counts on the loop: load the encoding off it
            async with self.slots:
                source = self.stream_text(checked, params, model)
                sent = True
                try:
                    async for chunk in source:
                        yield chunk
                finally:
                    await source.aclose()  # type: ignore[attr-defined]

        def attempts_of(stream: GenerationStream) -> tuple[Attempt, ...]:
            latency = (time.perf_counter() - started) * 1000
            outcome = stream.outcome or "abandoned"
            if stream.result is not None and outcome == "ok":
                usage = stream.result.usage
            elif not sent or (stream.error is not None and not stream.text):
                usage = Usage(requests=1 if sent else 0)  # refused before anything was generated
            else:
                # unfinished: what was sent and what was received, estimated (the provider did not say)
                prompt = sum(count_tokens(m.content, model.encoding) for m in checked)
                output = count_tokens(stream.text, model.encoding) if stream.text else 0
                usage = Usage(prompt, output, 1, model.cost_usd(prompt, output), estimated=True)
            return (
                Attempt(
                    model.ref,
                    usage,
                    latency,
                    outcome,
                    stream.error if isinstance(stream.error, PulseAIError) else None,
                    model.price_table_version,
                ),
            )

        return GenerationStream(bounded(), attempts_of)

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
