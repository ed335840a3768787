"""HTTP errors: pulse-ai's typed errors mapped to status codes, in OpenAI's error shape.

``{"error": {"message": ..., "type": ..., "code": ...}}``. Messages are those of our typed errors,
which are secret-free by construction (SDK errors are translated and redacted at the provider
boundary); an unexpected exception gets a generic message and its type name only.

=============================================  ======  ==========================================
error                                          status  notes
=============================================  ======  ==========================================
InputError, a bad request body                 400     names the field or the index at fault
ApiKeyRefusedError                             401     403 when the tenant is suspended
a key without the route's scope                403     ``insufficient_scope``
PipelineNotAllowedError, TenantSuspendedError  403
NotFoundError                                  404     in the caller's tenant only: no oracle
request body too large                         413
BudgetExceededError                            429     names the budget; ``x-should-retry: false``
this service's rate limits                     429     Retry-After
RateLimitedError (the provider's)              503     Retry-After when the provider gave one: the
                                                       caller's own limits are not the cause
ProviderUnavailableError, AllProvidersFailed   503     Retry-After when the error carries one (an
                                                       open circuit breaker)
AuthenticationError, BadRequestError,          502     the service's configuration or the provider
MalformedResponseError (providers')                    is at fault, not the caller
ProviderTimeoutError, the request deadline     504
DatabaseError                                  503
BackendUnavailableError, ModelExportError      503     a local model cannot run here; the details
                                                       (paths) go to the log, not the caller
VectorSpaceError                               400     a vector of the wrong size, or a table
                                                       indexed in another vector space
VectorStoreError                               503     500 for TenantIsolationError / a purge left
                                                       incomplete (a bug or damage, not an outage)
=============================================  ======  ==========================================
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from pulse_ai.errors import (
    AllProvidersFailed,
    ApiKeyRefusedError,
    AuthenticationError,
    BackendUnavailableError,
    BadRequestError,
    BudgetExceededError,
    ConfigError,
    DatabaseError,
    InputError,
    MalformedResponseError,
    ModelExportError,
    NotFoundError,
    PipelineNotAllowedError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    PulseAIError,
    PurgeIncompleteError,
    RateLimitedError,
    TenantIsolationError,
    TenantSuspendedError,
    VectorSpaceError,
    VectorStoreError,
)

__all__ = ["HTTPProblem", "Problem", "error_body", "install_error_handlers", "problem_of"]

log = logging.getLogger("pulse_ai.service")
# The openai SDK retries 429 by itself; this header (which it honours) says not to: a budget is not
# freed by waiting a few seconds.
NO_RETRY = {"x-should-retry": "false"}


@dataclass(frozen=True)
class Problem:
    """What an error becomes on the wire."""

    status: int
    message: str
    type: str
    code: str
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.type, self.code), self.status, headers=self.headers)


class HTTPProblem(Exception):
    """An error the service itself raises (limits, scopes, deadlines), already shaped."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(problem.message)

    @classmethod
    def of(cls, status: int, message: str, type_: str, code: str, retry_after: float | None = None) -> HTTPProblem:
        headers = {"retry-after": _seconds(retry_after)} if retry_after is not None else {}
        return cls(Problem(status, message, type_, code, headers))


def error_body(message: str, type_: str, code: str | None) -> dict[str, dict[str, str | None]]:
    return {"error": {"message": message, "type": type_, "code": code, "param": None}}


def _seconds(value: float) -> str:
    return str(max(1, math.ceil(value)))


def _retry_after(error: BaseException) -> dict[str, str]:
    """A Retry-After from the error (or, for AllProvidersFailed, the shortest of its candidates')."""
    values = [getattr(error, "retry_after", None)]
    if isinstance(error, AllProvidersFailed):
        values.extend(getattr(e, "retry_after", None) for e in error.exceptions)
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0]
    return {"retry-after": _seconds(min(numbers))} if numbers else {}


def problem_of(error: BaseException) -> Problem:
    """The status, type and code for any exception (most specific class first)."""
    message = str(error)
    if isinstance(error, HTTPProblem):
        return error.problem
    if isinstance(error, ApiKeyRefusedError):
        if error.reason == "tenant suspended":
            return Problem(403, message, "permission_error", "tenant_suspended")
        return Problem(401, message, "authentication_error", "invalid_api_key")
    if isinstance(error, TenantSuspendedError):
        return Problem(403, message, "permission_error", "tenant_suspended")
    if isinstance(error, PipelineNotAllowedError):
        return Problem(403, message, "permission_error", "model_not_allowed")
    if isinstance(error, NotFoundError):
        return Problem(404, message, "invalid_request_error", "not_found")
    if isinstance(error, BudgetExceededError):
        return Problem(429, message, "insufficient_quota", "budget_exceeded", dict(NO_RETRY))
    if isinstance(error, InputError):
        return Problem(400, message, "invalid_request_error", "invalid_input")
    if isinstance(error, (BackendUnavailableError, ModelExportError)):
        # the server's own local model cannot run: not the caller's fault, and its paths stay in the log
        log.error("local model unavailable: %s", message)
        return Problem(503, "a local model cannot run on this server", "service_unavailable", "model_unavailable")
    if isinstance(error, ConfigError):  # a model or pipeline the configuration cannot serve as asked
        return Problem(400, message, "invalid_request_error", "invalid_model")
    if isinstance(error, RateLimitedError):
        return Problem(503, message, "upstream_error", "upstream_rate_limited", _retry_after(error))
    if isinstance(error, ProviderTimeoutError):
        return Problem(504, message, "upstream_error", "upstream_timeout")
    if isinstance(error, ProviderUnavailableError):
        return Problem(503, message, "upstream_error", "upstream_unavailable", _retry_after(error))
    if isinstance(error, (MalformedResponseError, AuthenticationError, BadRequestError, ProviderError)):
        return Problem(502, message, "upstream_error", "upstream_error")
    if isinstance(error, AllProvidersFailed):
        return _all_failed(error)
    if isinstance(error, DatabaseError):
        return Problem(503, message, "service_unavailable", "database_unavailable")
    if isinstance(error, VectorSpaceError):
        return Problem(400, message, "invalid_request_error", "vector_space_mismatch")
    if isinstance(error, (TenantIsolationError, PurgeIncompleteError)):
        return Problem(500, message, "server_error", "vector_store_error")
    if isinstance(error, VectorStoreError):
        return Problem(503, message, "service_unavailable", "vector_store_unavailable")
    if isinstance(error, PulseAIError):
        return Problem(500, message, "server_error", "internal_error")
    return Problem(500, f"internal error ({type(error).__name__})", "server_error", "internal_error")


def _all_failed(error: AllProvidersFailed) -> Problem:
    """Every candidate failed: 504 when they all timed out, 502 when none was an outage (answers
    that could not be used, refused credentials), else 503 (try again later)."""
    causes = list(error.exceptions)
    if causes and all(isinstance(e, ProviderTimeoutError) for e in causes):
        return Problem(504, str(error), "upstream_error", "upstream_timeout")
    outage = (ProviderUnavailableError, RateLimitedError, ProviderTimeoutError)
    if causes and not any(isinstance(e, outage) for e in causes):
        return Problem(502, str(error), "upstream_error", "upstream_error")
    return Problem(503, str(error), "upstream_error", "upstream_unavailable", _retry_after(error))


def field_path(location: Sequence[int | str]) -> str:
    """``("body", "messages", 0, "name")`` as ``messages[0].name`` (``body`` for the whole body)."""
    path = ""
    for part in location:
        if part == "body" and not path:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def _validation_message(error: RequestValidationError) -> str:
    """Field paths and reasons only: the offending values (which may hold anything) are not echoed."""
    parts = []
    for item in error.errors()[:10]:
        kind = item.get("type")
        where = tuple(item.get("loc", ()))
        if kind == "json_invalid":
            # the decoder's reason names a position and what it expected, never the text itself
            detail = str((item.get("ctx") or {}).get("error", "")).split(":", 1)[0]
            position = where[1] if len(where) > 1 and isinstance(where[1], int) else None
            at = f" at character {position}" if position is not None else ""
            return f"invalid request: the body is not valid JSON{at}" + (f" ({detail})" if detail else "")
        location = field_path(where)
        reason = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if where == ("body",) and kind == "missing":
            reason = "a JSON object is required"
        elif where == ("body",) and kind in ("model_attributes_type", "dict_type"):
            reason = "must be a JSON object"
        if item.get("type") == "extra_forbidden":
            reason = "unsupported parameter"
        parts.append(f"{location}: {reason}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    async def pulse_error(request: Request, exc: Exception) -> Response:
        problem = problem_of(exc)
        return problem.response()

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        about_body = any(tuple(item.get("loc", ()))[:1] == ("body",) for item in exc.errors())
        if about_body and content_type and not (content_type == "application/json" or content_type.endswith("+json")):
            # the body was not even read as JSON: say that, not which fields it then lacked
            shown = ascii(content_type[:80])
            message = f"the request body must be JSON (Content-Type: application/json), not {shown}"
            return Problem(400, message, "invalid_request_error", "invalid_request").response()
        return Problem(400, _validation_message(exc), "invalid_request_error", "invalid_request").response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            exc.status_code, "http_error"
        )
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return Problem(exc.status_code, str(exc.detail), kind, code, dict(exc.headers or {})).response()

    app.add_exception_handler(PulseAIError, pulse_error)
    app.add_exception_handler(HTTPProblem, pulse_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # Any other exception reaches the service middleware, which answers 500 in the same shape.
