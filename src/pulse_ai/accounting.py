"""What calls consume: ``Usage`` (tokens and exact money) and ``Attempt`` (one call to one model).

Every layer passes these up: a provider call fills a ``Usage``; the router wraps each candidate call
in an ``Attempt``; results and errors carry every attempt of a request, successful or not, so the
usage ledger can write one row per attempt (money spent on a call that later failed is not lost).
Money is ``Decimal`` USD, never float.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from pulse_ai.errors import PulseAIError

__all__ = ["ZERO_USD", "Attempt", "PartialVectors", "Usage", "attempt_sink", "note_attempt"]

ZERO_USD = Decimal(0)


@dataclass(frozen=True)
class Usage:
    """What one call consumed. Add two with ``+``. ``estimated``: a token count is our estimate
    because the provider did not report it (the ledger flags such rows)."""

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    cost_usd: Decimal = ZERO_USD
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.requests + other.requests,
            self.cost_usd + other.cost_usd,
            self.estimated or other.estimated,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @staticmethod
    def total(usages: list[Usage] | tuple[Usage, ...]) -> Usage:
        result = Usage()
        for usage in usages:
            result = result + usage
        return result


@dataclass(frozen=True)
class Attempt:
    """One call to one model (``provider/model``) inside a request, and how it ended.

    ``outcome`` is ``ok``, ``cached`` (served from a cache: ``avoided_usd`` is what the provider
    call would have cost, ``cache_level`` which cache), ``abandoned`` (a stream the consumer left),
    ``cancelled``, or the error kind (``rate_limited``, ``timeout``, ``unavailable``, ``malformed``,
    ``bad_request``, ``authentication``, ``error``). ``inputs`` is how many inputs the attempt
    carried and ``served`` how many it answered (an embedding attempt may serve some of its requests
    and fail others).
    """

    model: str
    usage: Usage
    latency_ms: float
    outcome: str = "ok"
    error: PulseAIError | None = field(default=None, compare=False)
    price_table_version: str = ""
    inputs: int = 0
    served: int = 0
    avoided_usd: Decimal = ZERO_USD
    cache_level: str | None = None

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def candidate(self) -> str:
        """The ``provider/model`` ref (the name routing uses)."""
        return self.model

    @property
    def ok(self) -> bool:
        """Served: by the provider, or from a cache."""
        return self.outcome in ("ok", "cached")


@dataclass(frozen=True)
class PartialVectors:
    """The inputs a failed embedding call did answer: their indices (into that call's inputs) and
    vectors. A fallback sends only the other inputs on, and nothing that was paid for is lost."""

    indices: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.indices.shape[0])


# The attempts finished so far in the current task (set by the metering layer): when a call is
# cancelled mid-way, what its finished attempts consumed is still recorded.
attempt_sink: contextvars.ContextVar[list[Attempt] | None] = contextvars.ContextVar("attempt_sink", default=None)


def note_attempt(attempt: Attempt) -> None:
    sink = attempt_sink.get()
    if sink is not None:
        sink.append(attempt)
