"""The circuit breaker alone, on a test clock: when it opens, and how long until its next trial."""

from __future__ import annotations

from pulse_ai.breaker import BreakerState, CircuitBreaker
from pulse_ai.config import BreakerConfig
from pulse_ai.errors import BadRequestError, ProviderUnavailableError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_retry_after_counts_down_to_the_half_open_trial() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(window=2, min_calls=1, cooldown_seconds=30), clock)
    assert breaker.retry_after() == 0.0
    assert breaker.acquire()
    breaker.record_failure(ProviderUnavailableError("down"))
    assert breaker.state is BreakerState.OPEN and breaker.retry_after() == 30.0
    clock.now += 12.5
    assert not breaker.acquire() and breaker.retry_after() == 17.5
    clock.now += 17.5
    assert breaker.retry_after() == 0.0 and breaker.acquire()  # the one trial
    assert not breaker.acquire() and breaker.retry_after() == 0.0  # half-open, its trial in flight
    breaker.record_failure(BadRequestError("bad"))  # no verdict: the trial is released
    assert breaker.acquire()
