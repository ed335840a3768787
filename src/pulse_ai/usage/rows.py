"""One usage row per attempt: the ledger's unit, built by the layers that make calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pulse_ai.db.ids import new_id, validate_tenant_id
from pulse_ai.db.money import usd_to_nano
from pulse_ai.db.types import utcnow
from pulse_ai.errors import (
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    InputError,
    MalformedResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)

__all__ = ["Operation", "Outcome", "UsageRow", "outcome_of"]


class Operation(StrEnum):
    EMBED = "embed"
    GENERATE = "generate"
    STREAM = "stream"
    HEALTH = "health"
    SEARCH = "search"


class Outcome(StrEnum):
    OK = "ok"
    CACHED = "cached"  # served from a cache: billed 0, avoided_usd what the provider would have cost
    ABANDONED = "abandoned"  # a stream the caller stopped reading
    CANCELLED = "cancelled"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    MALFORMED = "malformed"
    BAD_REQUEST = "bad_request"
    AUTHENTICATION = "authentication"
    BAD_INPUT = "bad_input"
    BUDGET_EXCEEDED = "budget_exceeded"
    ERROR = "error"

    @property
    def is_error(self) -> bool:
        return self not in (Outcome.OK, Outcome.CACHED, Outcome.ABANDONED, Outcome.CANCELLED)


_ERROR_OUTCOMES: tuple[tuple[type[BaseException], Outcome], ...] = (
    (RateLimitedError, Outcome.RATE_LIMITED),
    (ProviderTimeoutError, Outcome.TIMEOUT),
    (ProviderUnavailableError, Outcome.UNAVAILABLE),
    (MalformedResponseError, Outcome.MALFORMED),
    (BadRequestError, Outcome.BAD_REQUEST),
    (AuthenticationError, Outcome.AUTHENTICATION),
    (BudgetExceededError, Outcome.BUDGET_EXCEEDED),
)


def outcome_of(error: BaseException | None) -> Outcome:
    """The ledger's outcome for an attempt that ended with ``error`` (None: ok)."""
    if error is None:
        return Outcome.OK
    if isinstance(error, (KeyboardInterrupt, SystemExit)) or type(error).__name__ == "CancelledError":
        return Outcome.CANCELLED
    for kind, outcome in _ERROR_OUTCOMES:
        if isinstance(error, kind):
            return outcome
    return Outcome.ERROR


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"usage row: {what} must be a non-negative int, not {value!r}")
    return value


def _money(value: object, what: str) -> int:
    if not isinstance(value, (Decimal, int)) or isinstance(value, bool):
        raise InputError(f"usage row: {what} must be a Decimal amount of USD, not {type(value).__name__}")
    nanos = usd_to_nano(value)
    if nanos < 0:
        raise InputError(f"usage row: {what} must not be negative")
    return nanos


@dataclass(frozen=True, kw_only=True, slots=True)
class UsageRow:
    """One attempt: a provider request, a cache hit, a fallback hop, a failure.

    Money is ``Decimal`` USD (stored as integer nano-dollars: ``billed_nanousd``/``avoided_nanousd``);
    ``attempt`` counts from 1 within ``request_id``; ``tenant_id`` may be the system tenant."""

    id: str = field(default_factory=new_id)
    request_id: str
    attempt: int
    tenant_id: str
    api_key_id: str | None = None
    pipeline: str | None = None
    provider: str
    model: str
    operation: Operation | str
    input_tokens: int = 0
    output_tokens: int = 0
    tokens_estimated: bool = False
    billed_usd: Decimal = Decimal(0)
    avoided_usd: Decimal = Decimal(0)
    cache_level: str | None = None
    price_table_version: str
    latency_ms: float
    outcome: Outcome | str
    created_at: datetime = field(default_factory=utcnow)

    def to_values(self) -> dict[str, Any]:
        """The row as column values, validated (``InputError`` names the field at fault)."""
        validate_tenant_id(self.tenant_id)
        if not self.request_id or len(self.request_id) > 64:
            raise InputError("usage row: request_id must be 1 to 64 characters")
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int) or self.attempt < 1:
            raise InputError(f"usage row: attempt counts from 1, not {self.attempt!r}")
        try:
            operation, outcome = Operation(self.operation), Outcome(self.outcome)
        except ValueError as exc:
            raise InputError(f"usage row: {exc}") from None
        if self.created_at.tzinfo is None:
            raise InputError("usage row: created_at must be timezone-aware")
        latency = float(self.latency_ms)
        if not latency >= 0.0:
            raise InputError("usage row: latency_ms must be a non-negative number")
        return {
            "id": self.id,
            "request_id": self.request_id,
            "attempt": self.attempt,
            "tenant_id": self.tenant_id,
            "api_key_id": self.api_key_id,
            "pipeline": self.pipeline,
            "provider": self.provider,
            "model": self.model,
            "operation": operation.value,
            "input_tokens": _count(self.input_tokens, "input_tokens"),
            "output_tokens": _count(self.output_tokens, "output_tokens"),
            "tokens_estimated": bool(self.tokens_estimated),
            "billed_nanousd": _money(self.billed_usd, "billed_usd"),
            "avoided_nanousd": _money(self.avoided_usd, "avoided_usd"),
            "cache_level": self.cache_level,
            "price_table_version": self.price_table_version,
            "latency_ms": latency,
            "outcome": outcome.value,
            "created_at": self.created_at,
        }
