"""Model health: a circuit breaker and an observed latency per model ref, shared by every pipeline
that lists the model and by direct ``model=`` calls.

A breaker opens when the failure rate over the last ``window`` calls reaches ``failure_rate``
(after at least ``min_calls``), or at once on an authentication failure. An open breaker admits no
call until ``cooldown_seconds`` pass; then one trial call half-opens it: success closes it, failure
opens it again. Bad requests give no verdict. ``retry_after`` says how long until the next trial.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from pulse_ai.config import BreakerConfig
from pulse_ai.errors import AuthenticationError, BadRequestError, ProviderError

__all__ = ["EWMA_ALPHA", "BreakerState", "CircuitBreaker", "Clock", "HealthRegistry", "ModelHealth"]

Clock = Callable[[], float]
EWMA_ALPHA = 0.3


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Failure rate over a sliding window of calls; cooldown; one trial call when it half-opens.

    Every ``acquire`` that returned True ends in exactly one of ``record_success``,
    ``record_failure`` or ``release``; a half-open trial is never left hanging.
    """

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
            self.release()  # the request was wrong, not the provider: no verdict on its health
            return
        self._outcomes.append(False)
        failures = self._outcomes.count(False)
        tripped = (
            len(self._outcomes) >= self.config.min_calls and failures / len(self._outcomes) >= self.config.failure_rate
        )
        if tripped or isinstance(error, AuthenticationError) or self._state is BreakerState.HALF_OPEN:
            self._open()

    def release(self) -> None:
        """A call ended without a verdict (cancelled, a caller error, a bad request)."""
        self._trial_in_flight = False

    def retry_after(self) -> float:
        """Seconds until this breaker lets a trial call through (0 when it is not open: closed, or
        half-open with a trial in flight that is about to decide)."""
        if self.state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.config.cooldown_seconds - self._clock())
        return 0.0

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._trial_in_flight = False


@dataclass
class ModelHealth:
    """One model ref's health: its breaker and its observed latency."""

    breaker: CircuitBreaker
    latency_ewma: float | None = None

    def observe_latency(self, seconds: float) -> None:
        previous = self.latency_ewma
        self.latency_ewma = seconds if previous is None else EWMA_ALPHA * seconds + (1 - EWMA_ALPHA) * previous


@dataclass
class HealthRegistry:
    """Health per model ref. The breaker settings of the first pipeline that asks for a ref win."""

    clock: Clock = time.monotonic
    _health: dict[str, ModelHealth] = field(default_factory=dict)

    def get(self, ref: str, config: BreakerConfig) -> ModelHealth:
        if ref not in self._health:
            self._health[ref] = ModelHealth(CircuitBreaker(config, self.clock))
        return self._health[ref]

    def states(self) -> dict[str, BreakerState]:
        return {ref: health.breaker.state for ref, health in self._health.items()}
