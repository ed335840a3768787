"""Per-key rate limits: requests and tokens per minute, as token buckets, in this process.

Each API key has two buckets (requests, tokens) holding up to a minute's allowance and refilling
continuously. A request takes one request and its estimated tokens before it runs; when it ends,
``settle`` charges the difference to what it really used (a bucket may go below zero, and then the
next requests wait for it to refill). A refused request gets how long to wait (Retry-After).

The buckets are per replica: with N replicas behind a balancer, a key gets up to N times its limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Admission", "RateLimiter", "TokenBucket", "estimate_tokens"]

# Buckets of keys not seen for this long are full again and may be forgotten.
IDLE_FORGET_S = 120.0
MAX_KEYS_BEFORE_SWEEP = 10_000


def estimate_tokens(chars: int) -> int:
    """A cheap estimate for admission (about four characters a token, rounded up)."""
    return max(1, (chars + 3) // 4)


class TokenBucket:
    """``capacity`` per minute, refilled continuously; ``level`` may go negative after a settle."""

    def __init__(self, capacity: int, clock: Callable[[], float]) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / 60.0
        self.level = float(capacity)
        self._clock = clock
        self.updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken (0: now). A request larger than the whole bucket
        may go when the bucket is full, so it is not refused for ever."""
        self._refill()
        needed = min(amount, self.capacity)
        return 0.0 if self.level >= needed else (needed - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount


@dataclass(frozen=True)
class Admission:
    """What was taken for one request (``settle`` it with what the request really used)."""

    key_id: str
    tokens: int


class RateLimiter:
    """Requests and tokens per minute per API key (0 turns a limit off)."""

    def __init__(
        self, requests_per_minute: int, tokens_per_minute: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.requests_per_minute or self.tokens_per_minute)

    def admit(self, key_id: str, tokens: int) -> tuple[Admission | None, str, float]:
        """Take one request and ``tokens`` for ``key_id``: (the admission, "", 0), or (None, which
        limit refused it, seconds to wait). Nothing is taken from either bucket when one refuses."""
        self._sweep()
        requests = self._bucket(self._requests, key_id, self.requests_per_minute)
        token_bucket = self._bucket(self._tokens, key_id, self.tokens_per_minute)
        if requests is not None:
            wait = requests.wait_for(1)
            if wait > 0:
                return None, "requests", wait
        if token_bucket is not None and tokens > 0:  # a request that uses no tokens is not held by them
            wait = token_bucket.wait_for(tokens)
            if wait > 0:
                return None, "tokens", wait
        if requests is not None:
            requests.take(1)
        if token_bucket is not None:
            token_bucket.take(tokens)
        return Admission(key_id, tokens), "", 0.0

    def settle(self, admission: Admission, used_tokens: int) -> None:
        """Charge (or give back) the difference between the estimate and what was used."""
        bucket = self._tokens.get(admission.key_id)
        if bucket is not None and used_tokens != admission.tokens:
            bucket.take(used_tokens - admission.tokens)

    def _bucket(self, buckets: dict[str, TokenBucket], key_id: str, capacity: int) -> TokenBucket | None:
        if not capacity:
            return None
        bucket = buckets.get(key_id)
        if bucket is None:
            bucket = buckets[key_id] = TokenBucket(capacity, self._clock)
        return bucket

    def _sweep(self) -> None:
        """Forget buckets idle long enough to be full again (bounded memory with many keys)."""
        if len(self._requests) + len(self._tokens) < MAX_KEYS_BEFORE_SWEEP:
            return
        cutoff = self._clock() - IDLE_FORGET_S
        for buckets in (self._requests, self._tokens):
            for key_id in [k for k, b in buckets.items() if b.updated < cutoff]:
                del buckets[key_id]
