"""Pipelines: ordered candidates, a selection strategy, circuit breakers and fallback.

A pipeline call tries its candidates in the order the strategy gives, skipping those whose
breaker is open (unless every one is open: then all are tried rather than failing without a call).
A candidate's own retries happen inside its provider; the router moves on only on the error types
the pipeline lists in ``fallback.on_errors``. When every candidate failed, one ``AllProvidersFailed``
carries each candidate's error.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

from pulse_ai.catalog import Capability, ModelSpec
from pulse_ai.config import BreakerConfig, ErrorKind, PipelineConfig, Strategy
from pulse_ai.errors import (
    AllProvidersFailed,
    AuthenticationError,
    BadRequestError,
    FailedAttempt,
    MalformedResponseError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from pulse_ai.providers.base import (
    EmbeddingProvider,
    GenerationProvider,
    GenerationStream,
    HealthStatus,
    Provider,
)
from pulse_ai.tokens import estimate_tokens
from pulse_ai.types import (
    EmbeddingResult,
    GenerationParams,
    GenerationResult,
    Message,
    normalise_messages,
    validate_texts,
)

__all__ = ["BreakerState", "Candidate", "CircuitBreaker", "Router", "probe"]

T = TypeVar("T")
Clock = Callable[[], float]

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
EWMA_ALPHA = 0.3


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Failure rate over a sliding window of calls; cooldown; one trial call when it half-opens."""

    def __init__(self, config: BreakerConfig, clock: Clock = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._outcomes: deque[bool] = deque(maxlen=config.window)
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.config.cooldown_seconds:
            self._state = BreakerState.HALF_OPEN
            self._trial_in_flight = False
        return self._state

    def acquire(self) -> bool:
        """May a call go to this candidate now? In half-open, only one trial at a time may."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        if self._state is not BreakerState.CLOSED:
            self._outcomes.clear()
        self._state = BreakerState.CLOSED
        self._trial_in_flight = False
        self._outcomes.append(True)

    def record_failure(self, error: ProviderError) -> None:
        if isinstance(error, BadRequestError):
            return  # the request was wrong, not the provider
        self._outcomes.append(False)
        failures = self._outcomes.count(False)
        tripped = (
            len(self._outcomes) >= self.config.min_calls and failures / len(self._outcomes) >= self.config.failure_rate
        )
        if tripped or isinstance(error, AuthenticationError) or self._state is BreakerState.HALF_OPEN:
            self._open()

    def release(self) -> None:
        """A half-open trial ended without a verdict (cancelled, or a caller error)."""
        self._trial_in_flight = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._trial_in_flight = False


@dataclass
class Candidate:
    provider: Provider
    model: ModelSpec
    breaker: CircuitBreaker
    latency_ewma: float | None = None

    @property
    def ref(self) -> str:
        return self.model.ref

    def observe_latency(self, seconds: float) -> None:
        previous = self.latency_ewma
        self.latency_ewma = seconds if previous is None else EWMA_ALPHA * seconds + (1 - EWMA_ALPHA) * previous


class Router:
    """Serves one named pipeline."""

    def __init__(
        self,
        name: str,
        config: PipelineConfig,
        candidates: Sequence[tuple[Provider, ModelSpec]],
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self.candidates = [
            Candidate(provider, model, CircuitBreaker(config.breaker, clock)) for provider, model in candidates
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
                probe = candidates.pop(self._rng.randrange(1, len(candidates)))
                candidates.insert(0, probe)
        return candidates

    def _estimate(self, texts: Iterable[str]) -> int:
        """Input tokens, estimated only where the strategy prices them."""
        if self.config.strategy is not Strategy.CHEAPEST:
            return 0
        return sum(estimate_tokens(text) for text in texts)

    # ---- calls ---------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        checked = validate_texts(texts)
        tokens = self._estimate(checked)

        async def call(candidate: Candidate) -> EmbeddingResult:
            assert isinstance(candidate.provider, EmbeddingProvider)
            return await candidate.provider.embed(checked, candidate.model)

        result, failed = await self._run(call, tokens, 0)
        return replace(result, failed_attempts=failed)

    async def generate(
        self, messages: str | Sequence[Message | dict[str, str]], params: GenerationParams | None = None
    ) -> GenerationResult:
        checked = normalise_messages(messages)
        params = params or GenerationParams()
        tokens = self._estimate(message.content for message in checked)

        async def call(candidate: Candidate) -> GenerationResult:
            assert isinstance(candidate.provider, GenerationProvider)
            return await candidate.provider.generate(checked, candidate.model, params)

        result, failed = await self._run(call, tokens, params.max_tokens or DEFAULT_OUTPUT_ESTIMATE)
        return replace(result, failed_attempts=failed)

    def stream(
        self, messages: str | Sequence[Message | dict[str, str]], params: GenerationParams | None = None
    ) -> GenerationStream:
        """Stream from the first candidate that produces a first chunk; after that, no fallback."""
        checked = normalise_messages(messages)
        params = params or GenerationParams()
        tokens = self._estimate(message.content for message in checked)

        async def chunks() -> AsyncIterator[str | GenerationResult]:
            async def first_chunk(candidate: Candidate) -> tuple[GenerationStream, str | None]:
                assert isinstance(candidate.provider, GenerationProvider)
                stream = candidate.provider.stream(checked, candidate.model, params)
                async for chunk in stream:
                    return stream, chunk
                return stream, None

            (stream, first), failed = await self._run(first_chunk, tokens, params.max_tokens or DEFAULT_OUTPUT_ESTIMATE)
            if first is not None:
                yield first
            async for chunk in stream:
                yield chunk
            if stream.result is not None:
                yield replace(stream.result, failed_attempts=failed)

        return GenerationStream(chunks())

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
        self, call: Callable[[Candidate], Awaitable[T]], input_tokens: int, output_tokens: int
    ) -> tuple[T, tuple[FailedAttempt, ...]]:
        ranked = self.ranked(input_tokens, output_tokens)
        attempts: list[FailedAttempt] = []
        admitted_any = False
        for candidate in ranked:
            if not candidate.breaker.acquire():
                continue  # open: skipped until its cooldown ends
            admitted_any = True
            served = await self._attempt(call, candidate, attempts)
            if served is not _FELL_THROUGH:
                return served, tuple(attempts)  # type: ignore[return-value]
        if not admitted_any:
            # Every breaker is open: try them all rather than fail without a call.
            for candidate in ranked:
                served = await self._attempt(call, candidate, attempts)
                if served is not _FELL_THROUGH:
                    return served, tuple(attempts)  # type: ignore[return-value]
        raise AllProvidersFailed(self.name, attempts)

    async def _attempt(
        self, call: Callable[[Candidate], Awaitable[T]], candidate: Candidate, attempts: list[FailedAttempt]
    ) -> T | object:
        """One candidate's call: its result, or _FELL_THROUGH when the router should move on."""
        started = self._clock()
        try:
            result = await call(candidate)
        except ProviderError as error:
            candidate.breaker.record_failure(error)
            attempts.append(FailedAttempt(candidate.ref, error))
            if self.config.fallback.enabled and isinstance(error, self._fallback_on):
                return _FELL_THROUGH
            candidate.breaker.release()
            raise
        except BaseException:
            candidate.breaker.release()  # cancelled, or the caller's own error: no verdict
            raise
        candidate.breaker.record_success()
        candidate.observe_latency(self._clock() - started)
        return result


_FELL_THROUGH = object()


async def probe(provider: Provider, model: ModelSpec) -> tuple[HealthStatus, ProviderError | None]:
    """One real, cheap call to ``model``; the status, and the error when it failed."""
    started = time.perf_counter()
    try:
        await provider.health_check(model)
    except ProviderError as error:
        elapsed = (time.perf_counter() - started) * 1000
        return HealthStatus(provider.name, model.name, False, elapsed, f"{type(error).__name__}: {error}"), error
    return HealthStatus(provider.name, model.name, True, (time.perf_counter() - started) * 1000), None
