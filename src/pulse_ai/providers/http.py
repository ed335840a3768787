"""HTTP for the OpenAI-compatible providers: the client the SDK runs on, and SDK errors -> ours.

* Redirects are not followed: credentials (an ``Authorization`` header, a gateway's own auth and
  extra headers) never go to another address. A redirect is reported as such.
* ``timeout`` is a deadline per HTTP request, body included: httpx's own timeouts apply to each
  read, so a server that trickles its body would keep a call alive indefinitely. A streamed answer
  (``text/event-stream``) gets the deadline until its headers; after that, ``timeout`` bounds the
  silence between two chunks (httpx's read timeout).
* Error texts name the real cause (a refused connection, a reset mid-answer, a broken answer,
  a redirect) and are redacted before they are truncated.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx2
import openai
from openai._constants import DEFAULT_CONNECTION_LIMITS

from pulse_ai.errors import (
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from pulse_ai.redaction import redact, truncate

__all__ = ["DeadlineTransport", "http_client", "translate_error"]


def http_client(timeout: float) -> httpx2.AsyncClient:
    """The SDK's HTTP client: its defaults, no redirects, and a deadline per request."""
    transport = DeadlineTransport(httpx2.AsyncHTTPTransport(limits=DEFAULT_CONNECTION_LIMITS), timeout)
    return openai.DefaultAsyncHttpxClient(follow_redirects=False, transport=transport)


class DeadlineTransport(httpx2.AsyncBaseTransport):
    """Cuts off a request whose answer (headers and body) takes longer than ``seconds`` in all."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        deadline = asyncio.get_running_loop().time() + self.seconds
        try:
            async with asyncio.timeout_at(deadline):
                response = await self.inner.handle_async_request(request)
        except TimeoutError:
            raise httpx2.ReadTimeout(f"no answer within {self.seconds:g} s", request=request) from None
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response  # a stream: bounded per chunk by the read timeout
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_DeadlineStream(response.stream, deadline, self.seconds, request),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _DeadlineStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, deadline: float, seconds: float, request: httpx2.Request) -> None:
        self.inner = inner
        self.deadline = deadline
        self.seconds = seconds
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self.inner.__aiter__()
        while True:
            try:
                async with asyncio.timeout_at(self.deadline):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise httpx2.ReadTimeout(
                    f"the answer was still arriving after {self.seconds:g} s", request=self.request
                ) from None
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


# ---- errors ------------------------------------------------------------------------------------
def translate_error(exc: BaseException, *, provider: str, model: str, secrets: Iterable[str] = ()) -> ProviderError:
    """Map an SDK (or parsing) exception to the pulse-ai error tree. The text is redacted first and
    truncated after, and the SDK's exception is not attached (the caller raises ours unchained)."""
    where: dict[str, Any] = {"provider": provider, "model": model}

    def text(raw: str) -> str:
        return truncate(redact(raw, secrets))

    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeoutError(text(f"the request timed out{_cause_detail(exc)}"), **where)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderUnavailableError(text(_connection_cause(exc)), **where)
    if isinstance(exc, openai.APIResponseValidationError):
        return MalformedResponseError(text(f"the answer does not match the API: {exc}"), **where)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        where["status_code"] = status
        message = text(_status_message(exc))
        if 300 <= status < 400:
            target = _origin(exc.response.headers.get("location", ""))
            return ProviderUnavailableError(
                text(
                    f"the server redirects to {target or 'another address'}; redirects are not followed, "
                    "so that credentials never go to another address: set the base URL to the final address"
                ),
                **where,
            )
        if status == 429:
            return RateLimitedError(message, retry_after=_retry_after(exc.response.headers), **where)
        if status in (401, 403):
            return AuthenticationError(message, **where)
        if status == 408:
            return ProviderTimeoutError(message, **where)
        if status >= 500:
            return ProviderUnavailableError(message, **where)
        return BadRequestError(message, **where)
    if isinstance(exc, UnicodeEncodeError):
        return BadRequestError(
            "a header could not be sent: the API key or a header value holds a character HTTP cannot carry", **where
        )
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError, AttributeError, openai.OpenAIError)):
        return MalformedResponseError(text(f"cannot read the answer: {type(exc).__name__}: {exc}"), **where)
    raise exc


def _connection_cause(exc: openai.APIConnectionError) -> str:
    """What really happened to a request that got no HTTP answer."""
    cause = exc.__cause__
    detail = f": {cause}" if cause is not None and str(cause) else ""
    if isinstance(cause, httpx2.ConnectError):
        return f"cannot connect{detail}"
    if isinstance(cause, httpx2.RemoteProtocolError):
        return f"the server broke the HTTP exchange (connection closed or invalid framing mid-answer){detail}"
    if isinstance(cause, httpx2.ReadError):
        return f"the connection was reset while reading the answer{detail}"
    if isinstance(cause, httpx2.WriteError):
        return f"the connection failed while sending the request{detail}"
    if isinstance(cause, httpx2.LocalProtocolError):
        return f"the request could not be sent (invalid request or header){detail}"
    if isinstance(cause, httpx2.ProxyError):
        return f"the proxy failed{detail}"
    if isinstance(cause, ssl.SSLError):
        return f"the TLS handshake failed{detail}"
    if isinstance(cause, httpx2.TooManyRedirects):
        return f"too many redirects{detail}"
    return f"the connection failed ({type(cause).__name__ if cause else 'unknown cause'}){detail}"


def _cause_detail(exc: BaseException) -> str:
    cause = exc.__cause__
    return f" ({cause})" if cause is not None and str(cause) else ""


def _status_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return f"{exc.status_code} {exc.response.reason_phrase}"


def _origin(location: str) -> str:
    try:
        url = httpx2.URL(location)
    except Exception:
        return ""
    return f"{url.scheme}://{url.host}" if url.host else ""


def _retry_after(headers: Any) -> float | None:
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return max(0.0, email.utils.mktime_tz(parsed) - time.time())
