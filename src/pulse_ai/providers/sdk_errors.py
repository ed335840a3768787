"""SDK (and HTTP, and parsing) exceptions -> the pulse-ai error tree, at the provider boundary.

Error texts name the real cause (a refused connection, a reset mid-answer, a broken answer, a
redirect, an answer too large) and are redacted before they are truncated. The SDK's exception is
never attached to ours: it holds the response body, which may echo a credential.
"""

from __future__ import annotations

import email.utils
import json
import math
import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpx2
import openai

from pulse_ai.errors import (
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from pulse_ai.providers.http import ResponseRefused
from pulse_ai.redaction import redact, truncate

__all__ = ["SDK_FAILURES", "translate_error"]

# Everything the SDK, the HTTP stack under it (read while a stream is consumed) or our parsing of
# an answer raises for a call that did not work.
SDK_FAILURES = (openai.OpenAIError, httpx2.HTTPError, ValueError, TypeError, AttributeError, KeyError, IndexError)


def translate_error(exc: BaseException, *, provider: str, model: str, secrets: Iterable[str] = ()) -> ProviderError:
    """Map an SDK (or parsing) exception to the pulse-ai error tree. The text is redacted first and
    truncated after, and the SDK's exception is not attached (the caller raises ours unchained)."""
    where: dict[str, Any] = {"provider": provider, "model": model}

    def text(raw: str) -> str:
        return truncate(redact(raw, secrets))

    if isinstance(exc, ResponseRefused):
        return MalformedResponseError(text(str(exc)), **where)
    if isinstance(exc, (openai.APITimeoutError, httpx2.TimeoutException)):
        return ProviderTimeoutError(text(f"the request timed out{_cause_detail(exc)}"), **where)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderUnavailableError(text(_connection_cause(exc.__cause__)), **where)
    if isinstance(exc, httpx2.TransportError):  # raised while a stream is read, after the SDK's call
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
    if isinstance(exc, json.JSONDecodeError):  # its message says where, never what
        return MalformedResponseError(f"the answer is not valid JSON ({exc.msg} at character {exc.pos})", **where)
    if isinstance(exc, UnicodeEncodeError):
        return BadRequestError(
            "a header could not be sent: the API key or a header value holds a character HTTP cannot carry", **where
        )
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError, AttributeError, openai.OpenAIError)):
        return MalformedResponseError(text(f"cannot read the answer: {type(exc).__name__}: {exc}"), **where)
    raise exc


def _connection_cause(cause: BaseException | None) -> str:
    """What really happened to a request that got no (whole) HTTP answer."""
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
    cause = exc if isinstance(exc, httpx2.HTTPError) else exc.__cause__
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
    """Seconds the server asks us to wait: a finite, non-negative number, or None (not said, or
    unreadable: NaN, infinite, negative, garbage)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = _seconds(millis)
        if seconds is not None:
            return seconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
