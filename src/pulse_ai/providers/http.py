"""HTTP for the OpenAI-compatible providers: the client the SDK runs on.

* Redirects are not followed: credentials (an ``Authorization`` header, a gateway's own auth and
  extra headers) never go to another address. A redirect is reported as such.
* ``timeout`` is a deadline per HTTP request, body included: httpx's own timeouts apply to each
  read, so a server that trickles its body would keep a call alive indefinitely. Whether a request
  is a stream is decided by the caller, never by the answer's content-type: a provider wraps its
  streaming call in :func:`streaming_request`. A streamed request gets the deadline until its
  headers; after that, the provider's stream loop bounds the wait for text (see
  ``openai_compat``). Every other request gets the deadline for its whole answer.
* Answers are bounded in size: requests ask for ``Accept-Encoding: identity``; a server that
  compresses anyway (gzip, deflate) is decoded here, with a bounded decoder, and any answer whose
  raw or decoded size passes ``MAX_RESPONSE_BYTES`` is refused as malformed. An encoding that
  cannot be decoded within a bound is refused too.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import httpx2
import openai
from openai._constants import DEFAULT_CONNECTION_LIMITS

__all__ = ["MAX_RESPONSE_BYTES", "DeadlineTransport", "ResponseRefused", "http_client", "streaming_request"]

# The most bytes of one answer, as received and once decoded: far above any real answer (2,048
# vectors of 3,072 floats in JSON are about 130 MiB), far below what exhausts a worker's memory.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
_MIB = 1024 * 1024
_streaming: ContextVar[bool] = ContextVar("pulse_ai_streaming_request", default=False)


@contextmanager
def streaming_request() -> Iterator[None]:
    """Mark the requests made inside the block as streamed answers (read as they arrive)."""
    token = _streaming.set(True)
    try:
        yield
    finally:
        _streaming.reset(token)


class ResponseRefused(openai.OpenAIError):
    """An answer the transport refuses (too large, or in an encoding it cannot bound). An
    ``OpenAIError``, so that the SDK raises it as it is, without retrying a request whose answer
    would be refused again; ``translate_error`` makes it a ``MalformedResponseError``."""


def http_client(timeout: float) -> httpx2.AsyncClient:
    """The SDK's HTTP client: its defaults, no redirects, a deadline and a size bound per request."""
    transport = DeadlineTransport(httpx2.AsyncHTTPTransport(limits=DEFAULT_CONNECTION_LIMITS), timeout)
    return openai.DefaultAsyncHttpxClient(follow_redirects=False, transport=transport)


class DeadlineTransport(httpx2.AsyncBaseTransport):
    """Cuts off a request whose answer (headers and body; headers only for a streamed request) takes
    longer than ``seconds`` in all, and refuses answers larger than ``MAX_RESPONSE_BYTES``."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.headers["Accept-Encoding"] = "identity"
        deadline = asyncio.get_running_loop().time() + self.seconds
        try:
            async with asyncio.timeout_at(deadline):
                response = await self.inner.handle_async_request(request)
        except TimeoutError:
            raise httpx2.ReadTimeout(f"no answer within {self.seconds:g} s", request=request) from None
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        encodings = [
            value.strip().lower()
            for value in response.headers.get_list("content-encoding", split_commas=True)
            if value.strip().lower() not in ("", "identity")
        ]
        unknown = [encoding for encoding in encodings if encoding not in _DECODERS]
        if unknown:
            await response.aclose()
            raise ResponseRefused(
                f"the answer is compressed with {unknown[0]!r}, which pulse-ai does not decode "
                "(it asks for an uncompressed answer: Accept-Encoding: identity)"
            )
        headers = response.headers
        if encodings:  # decoded here, within the bound; httpx must not decode again
            headers = httpx2.Headers(
                [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _ENCODING_HEADERS]
            )
        streamed = _streaming.get()
        return httpx2.Response(
            status_code=response.status_code,
            headers=headers,
            stream=_BoundedStream(response.stream, encodings, None if streamed else deadline, self.seconds, request),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


_ENCODING_HEADERS = {"content-encoding", "content-length"}


class _Decoder:
    """Bounded zlib decoding of one content-encoding (gzip, or deflate with or without its header)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.raw_deflate = False
        self.engine = zlib.decompressobj(_DECODERS[encoding])
        self.started = False

    def feed(self, data: bytes, room: int) -> bytes:
        """Decoded bytes of ``data``; more than ``room`` of them is refused."""
        try:
            out = self._decompress(data, room + 1)
        except zlib.error:
            raise ResponseRefused(f"the {self.encoding}-compressed answer cannot be decoded") from None
        if len(out) > room or self.engine.unconsumed_tail:
            raise _too_large()
        return out

    def _decompress(self, data: bytes, limit: int) -> bytes:
        if not self.started and self.encoding == "deflate":
            self.started = True
            try:
                return self.engine.decompress(data, limit)
            except zlib.error:  # "deflate" without its zlib header, as some servers send it
                self.engine = zlib.decompressobj(-zlib.MAX_WBITS)
        self.started = True
        return self.engine.decompress(data, limit)


_DECODERS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


def _too_large() -> ResponseRefused:
    limit = MAX_RESPONSE_BYTES
    shown = f"{limit // _MIB} MiB" if limit % _MIB == 0 else f"{limit:,} bytes"
    return ResponseRefused(f"the answer is larger than {shown} (MAX_RESPONSE_BYTES): refused")


class _BoundedStream(httpx2.AsyncByteStream):
    """The answer's bytes: decoded where the server compressed them, at most ``MAX_RESPONSE_BYTES``
    raw and decoded, and (unless ``deadline`` is None) all of them before ``deadline``."""

    def __init__(
        self,
        inner: httpx2.AsyncByteStream,
        encodings: list[str],
        deadline: float | None,
        seconds: float,
        request: httpx2.Request,
    ) -> None:
        self.inner = inner
        self.decoders = [_Decoder(encoding) for encoding in reversed(encodings)]
        self.deadline = deadline
        self.seconds = seconds
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self.inner.__aiter__()
        received = decoded = 0
        while True:
            try:
                if self.deadline is None:
                    chunk = await anext(chunks)
                else:
                    async with asyncio.timeout_at(self.deadline):
                        chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise httpx2.ReadTimeout(
                    f"the answer was still arriving after {self.seconds:g} s", request=self.request
                ) from None
            received += len(chunk)
            if received > MAX_RESPONSE_BYTES:
                raise _too_large()
            for decoder in self.decoders:
                chunk = decoder.feed(chunk, MAX_RESPONSE_BYTES - decoded)
            decoded += len(chunk)
            if chunk:
                yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()
