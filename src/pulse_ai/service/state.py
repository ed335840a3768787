"""What every route shares: the facade, the settings, the key verifier, the rate limiter, the metrics,
and the one helper through which a route calls the facade (deadline, attempts, rate-limit settlement).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from pulse_ai.accounting import Attempt, attempt_sink
from pulse_ai.client import PulseAI
from pulse_ai.errors import ApiKeyRefusedError, DatabaseError
from pulse_ai.service.auth import AdminGuard, Caller, KeyVerifier, bearer_token
from pulse_ai.service.errors import HTTPProblem
from pulse_ai.service.metrics import ServiceMetrics
from pulse_ai.service.ratelimit import Admission, RateLimiter
from pulse_ai.service.settings import ServiceSettings

__all__ = [
    "Admin",
    "EmbedCaller",
    "GenerateCaller",
    "IndexCaller",
    "KeyCaller",
    "RequestInfo",
    "SearchCaller",
    "ServiceState",
    "UsageCaller",
    "admin",
    "caller",
    "request_info",
    "service",
]

T = TypeVar("T")


@dataclass
class RequestInfo:
    """Per request, shared by the middleware and the route: the id it answers with and the time its
    calls spent in providers (subtracted from the total for ``x-pulse-overhead-ms``)."""

    request_id: str
    provider_ms: float = 0.0
    overhead_ms: float | None = None  # set by a route that measures it itself (a stream)


def request_info(request: Request) -> RequestInfo:
    info = request.scope.setdefault("state", {}).get("pulse_request")
    if not isinstance(info, RequestInfo):
        info = RequestInfo(uuid.uuid4().hex)
        request.scope["state"]["pulse_request"] = info
    return info


class ServiceState:
    def __init__(self, ai: PulseAI, settings: ServiceSettings) -> None:
        self.ai = ai
        self.settings = settings
        self.keys = KeyVerifier(ai, settings.key_cache_s)
        self.admin = AdminGuard(settings.admin_key)
        self.limiter = RateLimiter(settings.requests_per_minute, settings.tokens_per_minute)
        self.metrics = ServiceMetrics(ai.health, settings.tenant_label_limit)

    # ---- who is calling ----------------------------------------------------------------------
    async def caller(self, request: Request, scope: str | None) -> Caller:
        raw = bearer_token(request)
        try:
            async with self.deadline("verifying the API key", database=True):
                key = await self.keys.verify(raw, scope)
        except ApiKeyRefusedError:
            self.metrics.refused_keys.inc()
            raise
        return Caller(key, self.ai.tenant(key.tenant_id, api_key_id=key.id))

    # ---- calls -------------------------------------------------------------------------------
    def deadline(self, what: str, *, database: bool = False) -> _Deadline:
        """The request deadline around ``what``: its expiry is a 504, or (``database``) a
        ``DatabaseError`` (503), for a step that only talks to the database."""
        return _Deadline(self.settings.request_timeout_s, what, database)

    def admit(self, caller: Caller, tokens: int) -> Admission | None:
        """Take one request and ``tokens`` from the key's rate limits, or refuse with 429."""
        if not self.limiter.enabled:
            return None
        admission, limit, wait = self.limiter.admit(caller.key.id, tokens)
        if admission is None:
            self.metrics.rate_limited.labels(limit).inc()
            per_minute = self.limiter.requests_per_minute if limit == "requests" else self.limiter.tokens_per_minute
            raise HTTPProblem.of(
                429,
                f"rate limit of this API key reached: {per_minute} {limit} per minute (per service replica); "
                f"retry in {wait:.1f} s",
                "rate_limit_error",
                f"rate_limit_{limit}",
                retry_after=wait,
            )
        return admission

    async def call(self, request: Request, caller: Caller, work: Callable[[], Awaitable[T]], *, tokens: int) -> T:
        """Run one facade call for ``caller``: rate limits first, then the call under the request
        deadline; every model attempt it made is counted (metrics, provider time, tokens used)."""
        admission = self.admit(caller, tokens)
        attempts: list[Attempt] = []
        sink = attempt_sink.set(attempts)
        try:
            async with self.deadline("the call"):
                return await work()
        finally:
            attempt_sink.reset(sink)
            self.account(request, caller, attempts, admission)

    def account(
        self, request: Request, caller: Caller, attempts: Sequence[Attempt], admission: Admission | None
    ) -> None:
        request_info(request).provider_ms += sum(max(0.0, a.latency_ms) for a in attempts)
        self.metrics.observe_attempts(caller.tenant_id, attempts)
        if admission is not None:
            self.limiter.settle(admission, sum(a.usage.total_tokens for a in attempts))


class _Deadline:
    """``asyncio.timeout`` whose expiry is a 504 naming what took too long."""

    def __init__(self, seconds: float, what: str, database: bool) -> None:
        self.seconds = seconds
        self.what = what
        self.database = database
        self._timeout: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        self._timeout = asyncio.timeout(self.seconds)
        await self._timeout.__aenter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        assert self._timeout is not None
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)  # type: ignore[arg-type]
        except TimeoutError:
            if self.database:
                raise DatabaseError(f"{self.what} took longer than {self.seconds:g} s") from None
            raise HTTPProblem.of(
                504, f"{self.what} took longer than the service's deadline of {self.seconds:g} s", "timeout", "timeout"
            ) from None


def service(request: Request) -> ServiceState:
    state = request.app.state.pulse
    assert isinstance(state, ServiceState)
    return state


def caller(scope: str | None) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency: the verified caller of a tenant route needing ``scope``."""

    async def dependency(request: Request) -> Caller:
        return await service(request).caller(request, scope)

    return dependency


async def admin(request: Request) -> ServiceState:
    """A dependency: the admin key was given; the shared state."""
    state = service(request)
    state.admin.check(request)
    return state


# Route parameters: the verified caller (with the scope the route needs), or the admin check.
KeyCaller = Annotated[Caller, Depends(caller(None))]
EmbedCaller = Annotated[Caller, Depends(caller("embed"))]
GenerateCaller = Annotated[Caller, Depends(caller("generate"))]
IndexCaller = Annotated[Caller, Depends(caller("index"))]
SearchCaller = Annotated[Caller, Depends(caller("search"))]
UsageCaller = Annotated[Caller, Depends(caller("usage"))]
Admin = Annotated[ServiceState, Depends(admin)]
