"""One pure-ASGI middleware (no BaseHTTPMiddleware: it would buffer streams and cost time):

- refuses a body over ``max_body_bytes`` (413): at once from Content-Length, else while reading;
- gives every response ``x-request-id`` and ``x-pulse-overhead-ms`` (time in pulse-ai: the whole
  request up to the response's first byte, less the time its calls spent in providers);
- counts requests by route template, method and status, with latency and overhead histograms.
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pulse_ai.service.errors import Problem, log, problem_of
from pulse_ai.service.metrics import ServiceMetrics
from pulse_ai.service.state import RequestInfo

__all__ = ["BodyTooLarge", "ServiceMiddleware"]

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
# Request ids of requests that make no ledger call: 32 hex characters, a random prefix per process
# and a counter (unique across replicas without a random draw per request).
_ID_PREFIX = secrets.token_hex(8)
_ids = itertools.count()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):016x}"


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body is read (FastAPI lets an HTTPException through its body parsing)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit))


def _too_large(limit: int) -> str:
    return f"request body larger than the service's limit of {limit} bytes; send fewer inputs per request"


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: ServiceMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        info = RequestInfo(new_request_id())
        scope.setdefault("state", {})["pulse_request"] = info
        status = 500
        answered_at: float | None = None
        limit = self.max_body_bytes

        async def send_with_headers(message: Message) -> None:
            nonlocal status, answered_at
            if message["type"] == "http.response.start":
                answered_at = time.perf_counter()
                status = message["status"]
                overhead_ms = info.overhead_ms
                if overhead_ms is None:
                    overhead_ms = (answered_at - started) * 1000 - info.provider_ms
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = info.request_id
                headers["x-pulse-overhead-ms"] = f"{max(0.0, overhead_ms):.3f}"
                info.overhead_ms = overhead_ms
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await self._refuse(send_with_headers, limit)
                return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(limit)
                return message

            try:
                await self.app(scope, limited_receive, send_with_headers)
            except Exception as error:  # not one of ours: a bug; answer 500 if nothing was sent yet
                log.exception("unexpected error on %s %s", scope["method"], scope["path"])
                if answered_at is not None:
                    raise
                await problem_of(error).response()(scope, receive, send_with_headers)
        finally:
            route = _route_of(scope)
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            total = ((answered_at or time.perf_counter()) - started) * 1000
            overhead = info.overhead_ms if info.overhead_ms is not None else total - info.provider_ms
            self.metrics.observe_request(route, method, status, total / 1000, overhead / 1000)

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        response = Problem(413, _too_large(limit), "invalid_request_error", "request_too_large").response()
        response.headers["connection"] = "close"  # the unread body is not drained

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await response({"type": "http"}, no_body, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
