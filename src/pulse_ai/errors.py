"""The whole error tree of pulse-ai.

Callers (and the router) decide on the *type* of an error, never on its message::

    PulseAIError
    ├── ConfigError                 the YAML, the catalog or a model reference is wrong
    │   ├── UnknownModelError       a model the catalog does not know and the config does not describe
    │   └── SecretKeyError          PULSE_AI_SECRET_KEYS is missing or cannot decrypt stored credentials
    ├── InputError (ValueError)     bad input from the caller; names the offending index or field
    ├── ProviderError               a provider call failed (carries provider, model, failed_inputs)
    │   ├── RateLimitedError        429; carries retry_after when the provider said it
    │   ├── ProviderTimeoutError    the request timed out
    │   ├── ProviderUnavailableError  5xx or a connection failure
    │   │   └── CircuitOpenError    not called: its circuit breaker is open (retry_after: until its trial)
    │   ├── AuthenticationError     401/403: the credentials are wrong or lack permission
    │   ├── BadRequestError         400/404/422: the request itself is wrong; retrying will not help
    │   └── MalformedResponseError  the answer cannot be used: wrong count, wrong dimension, bad JSON
    ├── AllProvidersFailed          every candidate failed (also an ExceptionGroup of their errors);
    │                               names candidates skipped because their breaker was open
    ├── VectorStoreError            the vector store failed or refused an operation
    │   ├── VectorSpaceError        a vector of the wrong space (model or dimensions) for a collection
    │   ├── TenantIsolationError    a point of another tenant reached a result: refused, never returned
    │   └── PurgeIncompleteError    a tenant purge could not remove everything; says what is left
    ├── DatabaseError               the database is unreachable, failed, or is not at the code's schema
    ├── NotFoundError               a tenant, key, budget or credential that does not exist
    ├── TenantSuspendedError        the tenant exists but is suspended: no calls are made for it
    ├── PipelineNotAllowedError     the tenant's settings do not allow that pipeline or model
    ├── ApiKeyRefusedError          an API key is unknown, revoked, expired or malformed
    └── BudgetExceededError         a hard budget has no room for the call; raised before any provider call

Errors raised by an SDK are translated at the provider boundary and are *not* chained: the SDK's
exception holds the provider's response body, which may echo a credential, so it is neither the
``__cause__`` nor the ``__context__`` of ours. Our texts are redacted before they are truncated; no
rendering of a pulse-ai error (str, repr, traceback, log line) contains a secret.

Errors carry what the call consumed before it failed: ``ProviderError.usage`` (requests of a
multi-request call that succeeded), ``ProviderError.partial`` (the vectors those requests returned)
and ``attempts`` (every candidate tried), so the usage ledger records money spent on failed calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

from pulse_ai.accounting import Attempt, PartialVectors, Usage

__all__ = [
    "AllProvidersFailed",
    "ApiKeyRefusedError",
    "AuthenticationError",
    "BackendUnavailableError",
    "BadRequestError",
    "BudgetExceededError",
    "CacheClearIncompleteError",
    "CircuitOpenError",
    "ConfigError",
    "DatabaseError",
    "InputError",
    "MalformedResponseError",
    "ModelExportError",
    "NotFoundError",
    "PipelineNotAllowedError",
    "ProviderError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "PulseAIError",
    "PurgeIncompleteError",
    "RateLimitedError",
    "SecretKeyError",
    "TenantIsolationError",
    "TenantSuspendedError",
    "UnknownModelError",
    "VectorSpaceError",
    "VectorStoreError",
    "error_kind",
]


class PulseAIError(Exception):
    """The base of every error pulse-ai raises on purpose."""


class ConfigError(PulseAIError):
    """A configuration file, the catalog or a model reference is invalid.

    ``source`` names the file (or ``<string>``), ``key_path`` the dotted path of the key at fault.
    """

    def __init__(self, message: str, *, source: str | None = None, key_path: str | None = None) -> None:
        self.source = source
        self.key_path = key_path
        where = ""
        if source:
            where += source
        if key_path:
            where += f"{': ' if where else ''}{key_path}"
        super().__init__(f"{where}: {message}" if where else message)


class UnknownModelError(ConfigError):
    """A model is neither in the catalog nor fully described in the configuration."""


class BackendUnavailableError(ConfigError):
    """A local model's inference backend needs packages that are not installed; the message names
    the extra to install (``pip install 'pulse-ai[openvino]'``)."""


class ModelExportError(ConfigError):
    """A local model's exported (ONNX/OpenVINO, quantized) files could not be made, or failed their
    self-test against the torch fp32 model, and are not used."""


class InputError(PulseAIError, ValueError):
    """The caller passed something unusable; the message names the index or field at fault."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        self.index = index
        super().__init__(message)

    def renumbered(self, index: int) -> InputError:
        """This error for input ``index`` of the caller's list (the router sent a sub-list on)."""
        old = f"[{self.index}]"
        text = str(self)
        return InputError(text.replace(old, f"[{index}]", 1) if old in text else f"{text} (input {index})", index=index)


class ProviderError(PulseAIError):
    """A provider call failed. ``failed_inputs`` lists the input indices that got no result;
    ``usage`` is what the call consumed anyway; ``partial`` holds the vectors of the inputs that
    were answered (embeddings); ``attempts`` every candidate the router tried, this one included."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        status_code: int | None = None,
        failed_inputs: Sequence[int] = (),
    ) -> None:
        self.provider = provider
        self.model = model
        self.status_code = status_code
        self.failed_inputs: tuple[int, ...] = tuple(failed_inputs)
        self.detail = message
        self.usage = Usage()
        self.partial: PartialVectors | None = None
        self.attempts: tuple[Attempt, ...] = ()
        super().__init__(message)

    def __str__(self) -> str:
        who = "/".join(part for part in (self.provider, self.model) if part)
        text = f"{who}: {self.detail}" if who else self.detail
        if self.status_code is not None:
            text += f" (HTTP {self.status_code})"
        if self.failed_inputs:
            text += f"; failed inputs: {_summarise_indices(self.failed_inputs)}"
        return text


class RateLimitedError(ProviderError):
    """The provider refused the call for rate or quota reasons (HTTP 429). ``retry_after``: the
    seconds it asked to wait, a finite non-negative number, or None when it said nothing usable."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        usable = retry_after is not None and math.isfinite(retry_after) and retry_after >= 0
        self.retry_after = float(retry_after) if usable and retry_after is not None else None
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class ProviderTimeoutError(ProviderError):
    """The provider did not answer in time."""

    retryable = True


class ProviderUnavailableError(ProviderError):
    """The provider failed on its side (HTTP 5xx) or could not be reached."""

    retryable = True


class CircuitOpenError(ProviderUnavailableError):
    """A candidate that was not called because its circuit breaker is open. ``retry_after``: the
    seconds until the breaker lets a trial call through (0 when one is in flight now)."""

    def __init__(self, message: str, *, retry_after: float, **kwargs: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class AuthenticationError(ProviderError):
    """The credentials were refused (HTTP 401) or lack permission (HTTP 403)."""


class BadRequestError(ProviderError):
    """The provider rejected the request itself (HTTP 400, 404, 422)."""


class MalformedResponseError(ProviderError):
    """The provider answered, but the answer cannot be used (wrong count or dimension, bad JSON)."""

    retryable = True


class AllProvidersFailed(PulseAIError, ExceptionGroup):
    """Every candidate of a pipeline failed, or was skipped because its circuit breaker is open.

    It is also an ``ExceptionGroup`` of the candidates' errors (``except*`` works, and a traceback
    shows each): the error of every candidate tried, then one ``CircuitOpenError`` per candidate
    skipped. ``attempts`` holds every attempt in order, ``skipped`` the candidates that were not
    tried because their circuit breaker was open (when every one was, no call was made and
    ``attempts`` is empty). For embeddings, ``partial`` holds the vectors some candidates did return
    and ``failed_inputs`` the inputs that got none.
    """

    def __new__(
        cls,
        pipeline: str,
        attempts: Sequence[Attempt],
        skipped: Sequence[str] = (),
        *,
        partial: PartialVectors | None = None,
        failed_inputs: Sequence[int] = (),
        circuit_open: Sequence[CircuitOpenError] = (),
    ) -> AllProvidersFailed:
        errors = _group(attempts, circuit_open)
        return super().__new__(cls, _all_failed_message(pipeline, attempts, skipped, circuit_open), errors)

    def __init__(
        self,
        pipeline: str,
        attempts: Sequence[Attempt],
        skipped: Sequence[str] = (),
        *,
        partial: PartialVectors | None = None,
        failed_inputs: Sequence[int] = (),
        circuit_open: Sequence[CircuitOpenError] = (),
    ) -> None:
        super().__init__(_all_failed_message(pipeline, attempts, skipped, circuit_open), _group(attempts, circuit_open))
        self.pipeline = pipeline
        self.attempts: tuple[Attempt, ...] = tuple(attempts)
        self.skipped: tuple[str, ...] = tuple(skipped)
        self.partial = partial
        self.failed_inputs: tuple[int, ...] = tuple(failed_inputs)

    def __str__(self) -> str:
        return self.message

    def derive(self, excs: Sequence[Exception]) -> ExceptionGroup[Exception]:  # type: ignore[override]
        # except* splits the group: the parts are plain groups (our attributes belong to the whole)
        return ExceptionGroup(self.message, excs)

    @property
    def usage(self) -> Usage:
        return Usage.total([a.usage for a in self.attempts])


def _group(attempts: Sequence[Attempt], circuit_open: Sequence[CircuitOpenError]) -> list[Exception]:
    errors: list[Exception] = [a.error for a in attempts if a.error is not None]
    errors.extend(circuit_open)
    return errors or [PulseAIError("no candidate was tried")]


def _all_failed_message(
    pipeline: str, attempts: Sequence[Attempt], skipped: Sequence[str], circuit_open: Sequence[CircuitOpenError] = ()
) -> str:
    causes = "; ".join(f"{a.model}: {type(a.error).__name__}: {a.error}" for a in attempts if a.error is not None)
    if not attempts and skipped:
        waits = "; ".join(
            f"{'/'.join(p for p in (e.provider, e.model) if p)}: next trial in {e.retry_after:.1f} s"
            for e in circuit_open
        )
        return f"pipeline {pipeline!r}: every candidate's circuit breaker is open, so no call was made" + (
            f" ({waits})" if waits else f": {', '.join(skipped)}"
        )
    text = f"pipeline {pipeline!r}: all candidates tried failed ({causes})"
    if skipped:
        text += f"; skipped with an open circuit breaker: {', '.join(skipped)}"
    return text


class VectorStoreError(PulseAIError):
    """The vector store failed or refused an operation; the backend's error is the cause."""


class VectorSpaceError(VectorStoreError):
    """Vectors of one space (model identity, dimensions) met a collection of another."""


class TenantIsolationError(VectorStoreError):
    """A point of another tenant (or table) came back from the store. The whole result is refused:
    this means a bug or a corrupted collection, and nothing of it may reach the caller."""


class PurgeIncompleteError(VectorStoreError):
    """``purge_tenant`` removed what it could, but not everything: ``failures`` says what is left
    and why, ``removed`` what was removed. Run the purge again once the cause is fixed."""

    def __init__(self, tenant: str, failures: Sequence[str], *, removed: Sequence[str] = ()) -> None:
        self.tenant = tenant
        self.failures: tuple[str, ...] = tuple(failures)
        self.removed: tuple[str, ...] = tuple(removed)
        super().__init__(f"purge of tenant {tenant!r} is incomplete: {'; '.join(self.failures)}")


class CacheClearIncompleteError(PulseAIError):
    """A cache clear or tenant purge could not reach every tier (a backend down, slow or failing):
    entries listed in ``failures`` may remain and be served. Nothing is reported as cleared that was
    not; run the clear again once the tier answers."""

    def __init__(self, scope: str | None, failures: Sequence[str], *, removed: int = 0) -> None:
        self.scope = scope
        self.failures: tuple[str, ...] = tuple(failures)
        self.removed = removed
        what = "every tenant" if scope is None else f"tenant {scope!r}"
        super().__init__(f"cache clear of {what} is incomplete: {'; '.join(self.failures)}")


class SecretKeyError(ConfigError):
    """The keys in ``PULSE_AI_SECRET_KEYS`` are missing, malformed, or cannot decrypt stored credentials."""


class DatabaseError(PulseAIError):
    """The database failed (unreachable, locked, a constraint) or its schema is not the code's.

    The message names the operation; SQL parameters (which may hold secrets) are never included."""


class NotFoundError(PulseAIError):
    """A tenant, API key, budget or credential that does not exist."""


class TenantSuspendedError(PulseAIError):
    """The tenant is suspended: calls for it are refused before any provider is called."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        super().__init__(f"tenant {tenant_id!r} is suspended")


class PipelineNotAllowedError(PulseAIError):
    """The tenant's settings do not allow this pipeline (or ``provider/model``)."""

    def __init__(self, tenant_id: str, name: str, why: str | None = None) -> None:
        self.tenant_id = tenant_id
        self.name = name
        super().__init__(f"tenant {tenant_id!r} may not use {name!r}" + (f" ({why})" if why else ""))


class ApiKeyRefusedError(PulseAIError):
    """An API key was refused. ``reason`` (unknown, revoked, expired, malformed, suspended) is for
    logs and metrics; the message never repeats the key."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"API key refused ({reason})")


class BudgetExceededError(PulseAIError):
    """A hard budget has no room for the call's worst-case cost; raised before any provider is called.

    ``scope`` is the budget's pipeline, or ``"all"`` for a tenant-wide budget. Money is in USD
    (``Decimal``); a token budget sets ``limit_tokens``/``spent_tokens`` instead or as well."""

    def __init__(
        self,
        *,
        tenant_id: str,
        scope: str,
        period: str,
        period_start: str,
        limit_usd: object = None,
        spent_usd: object = None,
        reserved_usd: object = None,
        requested_usd: object = None,
        limit_tokens: int | None = None,
        spent_tokens: int | None = None,
        reserved_tokens: int | None = None,
        requested_tokens: int | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.scope = scope
        self.period = period
        self.period_start = period_start
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.requested_usd = requested_usd
        self.limit_tokens = limit_tokens
        self.spent_tokens = spent_tokens
        self.reserved_tokens = reserved_tokens
        self.requested_tokens = requested_tokens
        parts = []
        if limit_usd is not None:
            parts.append(
                f"limit {_usd(limit_usd)}, spent {_usd(spent_usd)}, reserved {_usd(reserved_usd)}, "
                f"this call needs {_usd(requested_usd)}"
            )
        if limit_tokens is not None:
            parts.append(
                f"limit {limit_tokens} tokens, spent {spent_tokens}, reserved {reserved_tokens}, "
                f"this call needs {requested_tokens}"
            )
        super().__init__(
            f"budget exceeded for tenant {tenant_id!r}, scope {scope} ({period} from {period_start}): "
            + "; ".join(parts)
        )


def _usd(value: object) -> str:
    if isinstance(value, Decimal):
        cents = value.quantize(Decimal("0.01"))
        return f"${cents:f}" if cents == value else f"${value.normalize():f}"
    return f"${value}"


def _summarise_indices(indices: Sequence[int], shown: int = 20) -> str:
    head = ", ".join(str(i) for i in indices[:shown])
    rest = len(indices) - shown
    return f"{head} and {rest} more" if rest > 0 else head


_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (RateLimitedError, "rate_limited"),
    (ProviderTimeoutError, "timeout"),
    (ProviderUnavailableError, "unavailable"),
    (MalformedResponseError, "malformed"),
    (BadRequestError, "bad_request"),
    (AuthenticationError, "authentication"),
    (InputError, "bad_input"),
)


def error_kind(error: BaseException) -> str:
    """The ledger's name for how a call ended in ``error``."""
    for cls, kind in _KINDS:
        if isinstance(error, cls):
            return kind
    return getattr(error, "kind", "error")
