"""Pipelines: ordered candidates, a selection strategy, circuit breakers and fallback.

A pipeline call tries its candidates in the order the strategy gives, skipping those whose
breaker is open. When every one is open, the call fails fast without any request: an
``AllProvidersFailed`` of one ``CircuitOpenError`` per candidate, each saying when its breaker
lets a trial through. A candidate's own retries happen inside its provider; the router moves on only on the error types
the pipeline lists in ``fallback.on_errors``. When every candidate tried failed, one
``AllProvidersFailed`` carries each attempt and names the candidates that were skipped.

An embedding call that a candidate answered in part (some of its requests failed) keeps what was
answered and sends only the rest to the next candidate. Every attempt, successful or not, is on
the result or the error with what it consumed, for the usage ledger.

Health (breaker and latency, :mod:`pulse_ai.breaker`) is kept per model ref in a ``HealthRegistry``
shared by every pipeline, and by direct ``model=`` calls, so a model in two pipelines is one health
state.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import numpy as np

from pulse_ai.accounting import Attempt, PartialVectors, Usage, note_attempt
from pulse_ai.breaker import BreakerState, CircuitBreaker, Clock, HealthRegistry, ModelHealth
from pulse_ai.catalog import Capability, ModelSpec
from pulse_ai.config import ErrorKind, PipelineConfig, Strategy
from pulse_ai.errors import (
    AllProvidersFailed,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    InputError,
    MalformedResponseError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
    error_kind,
)
from pulse_ai.providers.base import EmbeddingProvider, GenerationProvider, HealthStatus, Provider
from pulse_ai.streams import GenerationStream, cancel_outcome
from pulse_ai.tokens import count_tokens, estimate_many
from pulse_ai.types import (
    EmbeddingResult,
    GenerationParams,
    GenerationResult,
    Message,
    check_params,
    normalise_messages,
    validate_texts,
)

__all__ = ["BreakerState", "Candidate", "CircuitBreaker", "HealthRegistry", "ModelHealth", "Router", "probe"]

T = TypeVar("T")

ERROR_TYPES: dict[ErrorKind, type[ProviderError]] = {
    ErrorKind.RATE_LIMITED: RateLimitedError,
    ErrorKind.TIMEOUT: ProviderTimeoutError,
    ErrorKind.UNAVAILABLE: ProviderUnavailableError,
    ErrorKind.MALFORMED: MalformedResponseError,
    ErrorKind.BAD_REQUEST: BadRequestError,
    ErrorKind.AUTHENTICATION: AuthenticationError,
}
# Generation answers are estimated at this many tokens when the caller sets no max_tokens.
DEFAULT_OUTPUT_ESTIMATE = 256


@dataclass
class Candidate:
    provider: Provider
    model: ModelSpec
    health: ModelHealth

    @property
    def ref(self) -> str:
        return self.model.ref

    @property
    def breaker(self) -> CircuitBreaker:
        return self.health.breaker

    @property
    def latency_ewma(self) -> float | None:
        return self.health.latency_ewma


@dataclass
class _Served(Generic[T]):
    value: T


class Router:
    """Serves one named pipeline (or one model, for direct ``model=`` calls)."""

    def __init__(
        self,
        name: str,
        config: PipelineConfig,
        candidates: Sequence[tuple[Provider, ModelSpec]],
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        health: HealthRegistry | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._rng = rng or random.Random()
        registry = health or HealthRegistry(clock)
        self.candidates = [
            Candidate(provider, model, registry.get(model.ref, config.breaker)) for provider, model in candidates
        ]
        self._fallback_on = tuple(ERROR_TYPES[kind] for kind in config.fallback.on_errors)

    @property
    def vector_space(self) -> str | None:
        if self.config.kind is not Capability.EMBEDDING:
            return None
        return self.candidates[0].model.vector_space

    # ---- selection -----------------------------------------------------------------------
    def ranked(self, input_tokens: int = 0, output_tokens: int = 0) -> list[Candidate]:
        """Candidates in the strategy's order; ties keep the configured order."""
        candidates = list(self.candidates)
        strategy = self.config.strategy
        if strategy is Strategy.CHEAPEST:
            candidates.sort(key=lambda c: c.model.cost_usd(max(input_tokens, 1), output_tokens))
        elif strategy is Strategy.QUALITY:
            candidates.sort(key=lambda c: -c.model.tier.rank)
        elif strategy is Strategy.FASTEST:
            # Unmeasured candidates go first, so that every one gets measured.
            candidates.sort(key=lambda c: -1.0 if c.latency_ewma is None else c.latency_ewma)
            if len(candidates) > 1 and self._rng.random() < self.config.explore_rate:
                explored = candidates.pop(self._rng.randrange(1, len(candidates)))
                candidates.insert(0, explored)
        return candidates

    async def _estimate(self, texts: Iterable[str]) -> int:
        """Input tokens, estimated only where the strategy prices them (off the loop when large)."""
        if self.config.strategy is not Strategy.CHEAPEST:
            return 0
        return sum(await estimate_many(list(texts)))

    @staticmethod
    def _admitted(ranked: list[Candidate], skipped: list[Candidate]) -> Iterable[Candidate]:
        """The candidates whose breaker admits a call now, in order; the others go to ``skipped``."""
        for candidate in ranked:
            if candidate.breaker.acquire():
                yield candidate
            else:
                skipped.append(candidate)

    def _all_failed(
        self,
        attempts: Sequence[Attempt],
        skipped: Sequence[Candidate],
        partial: PartialVectors | None = None,
        failed_inputs: Sequence[int] = (),
    ) -> AllProvidersFailed:
        """Every candidate failed or was skipped; a skipped one is a ``CircuitOpenError`` in the group."""
        circuit_open = [
            CircuitOpenError(
                f"not called: its circuit breaker is open (next trial in {wait:.1f} s)",
                provider=c.provider.name,
                model=c.model.name,
                retry_after=wait,
            )
            for c in skipped
            for wait in (c.breaker.retry_after(),)
        ]
        return AllProvidersFailed(
            self.name,
            attempts,
            [c.ref for c in skipped],
            partial=partial,
            failed_inputs=failed_inputs,
            circuit_open=circuit_open,
        )

    # ---- calls ---------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        checked = validate_texts(texts)
        ranked = self.ranked(await self._estimate(checked), 0)
        dims = self.candidates[0].model.dimensions or 0
        vectors = np.empty((len(checked), dims), dtype=np.float32)
        remaining = np.arange(len(checked), dtype=np.int64)
        attempts: list[Attempt] = []
        skipped: list[Candidate] = []
        truncated = 0
        for candidate in self._admitted(ranked, skipped):
            todo = remaining

            async def call(c: Candidate, todo: np.ndarray = todo) -> EmbeddingResult:
                assert isinstance(c.provider, EmbeddingProvider)
                return await c.provider.embed([checked[i] for i in todo], c.model)

            try:
                sent = functools.partial(_sent_tokens, checked, todo)
                outcome = await self._attempt(call, candidate, attempts, len(todo), sent)
            except ProviderError as error:  # not a fallback error: raised, with what was consumed
                self._remap(error, todo, vectors, remaining)
                error.attempts = tuple(attempts)
                raise
            except InputError as error:  # a later candidate refused one of the inputs sent on to it
                if error.index is None or todo.size == len(checked):
                    raise
                renumbered = error.renumbered(int(todo[error.index]))
                raise renumbered from None
            if isinstance(outcome, _Served):
                result = outcome.value
                vectors[todo] = result.vectors
                truncated += result.truncated
                return EmbeddingResult(
                    vectors=vectors,
                    model=candidate.ref,
                    vector_space=candidate.model.vector_space,
                    usage=Usage.total([a.usage for a in attempts]),
                    truncated=truncated,
                    attempts=tuple(attempts),
                )
            partial = outcome.partial
            if partial is not None and len(partial):
                vectors[todo[partial.indices]] = partial.vectors
                remaining = np.setdiff1d(todo, todo[partial.indices], assume_unique=True)
        done = np.setdiff1d(np.arange(len(checked)), remaining, assume_unique=True)
        raise self._all_failed(
            attempts,
            skipped,
            partial=PartialVectors(done, vectors[done]) if done.size else None,
            failed_inputs=remaining.tolist(),
        )

    @staticmethod
    def _remap(error: ProviderError, todo: np.ndarray, vectors: np.ndarray, remaining: np.ndarray) -> None:
        """Express a candidate's error in the caller's input indices, with every vector any
        candidate returned so far."""
        served = np.setdiff1d(np.arange(vectors.shape[0]), remaining, assume_unique=True)
        indices = [served]
        rows = [vectors[served]]
        if error.partial is not None and len(error.partial):
            indices.append(todo[error.partial.indices])
            rows.append(error.partial.vectors)
        all_indices = np.concatenate(indices)
        error.partial = PartialVectors(all_indices, np.concatenate(rows)) if all_indices.size else None
        failed = todo[list(error.failed_inputs)] if error.failed_inputs else todo
        error.failed_inputs = tuple(int(i) for i in failed)

    async def generate(
        self, messages: str | Sequence[Message | dict[str, str]], params: GenerationParams | None = None
    ) -> GenerationResult:
        checked = normalise_messages(messages)
        params = check_params(params)

        async def call(candidate: Candidate) -> GenerationResult:
            assert isinstance(candidate.provider, GenerationProvider)
            return await candidate.provider.generate(checked, candidate.model, params)

        tokens = await self._estimate(message.content for message in checked)

        def prompt_tokens(encoding_name: str | None) -> int:
            return sum(count_tokens(m.content, encoding_name) for m in checked)

        result, attempts = await self._run(
            call, tokens, params.max_tokens or DEFAULT_OUTPUT_ESTIMATE, sent_tokens=prompt_tokens
        )
        return replace(result, attempts=attempts, usage=Usage.total([a.usage for a in attempts]))

    def stream(
        self, messages: str | Sequence[Message | dict[str, str]], params: GenerationParams | None = None
    ) -> GenerationStream:
        """Stream from the first candidate that produces a first chunk; after that, no fallback."""
        checked = normalise_messages(messages)
        params = check_params(params)
        tried: list[Attempt] = []  # every attempt to get a first chunk, as they happen
        chosen: list[GenerationStream] = []

        def failed() -> list[Attempt]:
            return [a for a in tried if not a.ok]

        def prompt_tokens(encoding_name: str | None) -> int:
            return sum(count_tokens(m.content, encoding_name) for m in checked)

        async def first_chunk(candidate: Candidate) -> tuple[GenerationStream, str | None]:
            assert isinstance(candidate.provider, GenerationProvider)
            stream = candidate.provider.stream(checked, candidate.model, params)
            try:
                async for chunk in stream:
                    return stream, chunk
            except BaseException:
                await stream.aclose()
                raise
            if stream.error is None and stream.result is None:
                await stream.aclose()
            return stream, None

        async def chunks() -> AsyncIterator[str | GenerationResult]:
            tokens = await self._estimate(message.content for message in checked)
            (stream, first), attempts = await self._run(
                first_chunk, tokens, params.max_tokens or DEFAULT_OUTPUT_ESTIMATE, tried, prompt_tokens
            )
            chosen.append(stream)
            served = next(c for c in self.candidates if c.ref == attempts[-1].model)
            try:
                if first is not None:
                    yield first
                async for chunk in stream:
                    yield chunk
            except ProviderError as error:  # after the first chunk: no fallback, but the breaker hears it
                served.breaker.record_failure(error)
                raise
            finally:
                await stream.aclose()
            if stream.result is not None:
                yield replace(stream.result, attempts=(*failed(), *stream.attempts))

        def attempts_of(_: GenerationStream) -> tuple[Attempt, ...]:
            return (*failed(), *(chosen[0].attempts if chosen else ()))

        return GenerationStream(chunks(), attempts_of)

    async def health_check(self) -> list[HealthStatus]:
        """Probe every candidate; the results feed the breakers."""
        statuses = []
        for candidate in self.candidates:
            status, error = await probe(candidate.provider, candidate.model)
            if error is None:
                candidate.breaker.record_success()
            else:
                candidate.breaker.record_failure(error)
            statuses.append(status)
        return statuses

    async def _run(
        self,
        call: Callable[[Candidate], Awaitable[T]],
        input_tokens: int,
        output_tokens: int,
        attempts: list[Attempt] | None = None,
        sent_tokens: Callable[[str | None], int] = lambda encoding_name: 0,
    ) -> tuple[T, tuple[Attempt, ...]]:
        attempts = [] if attempts is None else attempts
        skipped: list[Candidate] = []
        for candidate in self._admitted(self.ranked(input_tokens, output_tokens), skipped):
            try:
                outcome = await self._attempt(call, candidate, attempts, 1, sent_tokens)
            except ProviderError as error:
                error.attempts = tuple(attempts)
                raise
            if isinstance(outcome, _Served):
                return outcome.value, tuple(attempts)
        raise self._all_failed(attempts, skipped)

    async def _attempt(
        self,
        call: Callable[[Candidate], Awaitable[T]],
        candidate: Candidate,
        attempts: list[Attempt],
        inputs: int,
        sent_tokens: Callable[[str | None], int] = lambda encoding_name: 0,
    ) -> _Served[T] | ProviderError:
        """One candidate's call: its result, or the error when the router should move on (any other
        error is raised). Either way it is recorded in ``attempts``, and the breaker gets a verdict
        or its trial back. A call cancelled mid-way is recorded too, as ``cancelled`` with what it
        sent (``sent_tokens(encoding)`` input tokens, counted in the candidate's encoding; estimated
        when it has none): the provider may bill them."""
        started = self._clock()
        perf = time.perf_counter()
        verdict = False
        try:
            result = await call(candidate)
            candidate.breaker.record_success()
            verdict = True
            candidate.health.observe_latency(self._clock() - started)
            usage = getattr(result, "usage", None)
            attempts.append(
                Attempt(
                    candidate.ref,
                    usage if isinstance(usage, Usage) else Usage(requests=1),
                    (time.perf_counter() - perf) * 1000,
                    "ok",
                    None,
                    candidate.model.price_table_version,
                    inputs,
                    inputs,
                )
            )
            note_attempt(attempts[-1])
            return _Served(result)
        except ProviderError as error:
            candidate.breaker.record_failure(error)
            verdict = True
            attempts.append(
                Attempt(
                    candidate.ref,
                    error.usage,
                    (time.perf_counter() - perf) * 1000,
                    error_kind(error),
                    error,
                    candidate.model.price_table_version,
                    inputs,
                    len(error.partial) if error.partial is not None else 0,
                )
            )
            note_attempt(attempts[-1])
            if self.config.fallback.enabled and isinstance(error, self._fallback_on):
                return error
            raise
        except asyncio.CancelledError as cancel:
            tokens = sent_tokens(candidate.model.encoding)
            usage = Usage(tokens, 0, 1, candidate.model.cost_usd(tokens), estimated=True)
            attempts.append(
                Attempt(
                    candidate.ref,
                    usage,
                    (time.perf_counter() - perf) * 1000,
                    cancel_outcome(cancel),
                    None,
                    candidate.model.price_table_version,
                    inputs,
                    0,
                )
            )
            note_attempt(attempts[-1])
            raise
        finally:
            if not verdict:
                candidate.breaker.release()  # cancelled, or the caller's own error: no verdict


def _sent_tokens(texts: Sequence[str], indices: Iterable[int], encoding_name: str | None) -> int:
    return sum(count_tokens(texts[i], encoding_name) for i in indices)


async def probe(provider: Provider, model: ModelSpec) -> tuple[HealthStatus, ProviderError | None]:
    """One real, cheap call to ``model``; the status, and the error when it failed."""
    started = time.perf_counter()
    try:
        await provider.health_check(model)
    except ProviderError as error:
        elapsed = (time.perf_counter() - started) * 1000
        return HealthStatus(provider.name, model.name, False, elapsed, f"{type(error).__name__}: {error}"), error
    return HealthStatus(provider.name, model.name, True, (time.perf_counter() - started) * 1000), None
