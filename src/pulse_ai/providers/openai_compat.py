"""The shared base of every OpenAI-compatible provider (OpenAI, Azure OpenAI, custom gateways).

The official SDK makes the requests and retries them: exponential backoff with jitter, honouring
``Retry-After`` on 429, and retrying 408/409/429/5xx, timeouts and connection errors, never
400/401/403/404. ``max_retries`` and ``timeout`` come from the configuration. ``timeout`` is a
deadline for each HTTP request, body included (a server that trickles its answer is cut off at
``timeout`` and retried). A streamed answer gets it until its headers arrive; then the stream loop
here waits at most ``timeout`` for the first text delta and at most ``timeout`` between two text
deltas (SSE keep-alive comments and chunks without text do not count as progress), so a stream
that never says anything is a ``ProviderTimeoutError`` (a fallback, before the first chunk).
Redirects are never followed, so credentials never go to another address. Every read of an answer
or a chunk happens inside the translated call: SDK errors and answers of the wrong shape become
``pulse_ai.errors`` here, at the boundary, and are not chained (the SDK's exception holds the
response body, which may echo a key).
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import openai

from pulse_ai.accounting import Usage
from pulse_ai.catalog import Capability, ModelSpec
from pulse_ai.errors import MalformedResponseError, ProviderError, ProviderTimeoutError
from pulse_ai.providers.base import BatchEmbedding, EmbeddingProvider, GenerationProvider
from pulse_ai.providers.http import http_client, streaming_request
from pulse_ai.providers.sdk_errors import SDK_FAILURES, translate_error
from pulse_ai.providers.wire import Malformed, StreamReader, read_completion, read_usage, read_vectors
from pulse_ai.tokens import EMBEDDING_OVERHEAD_TOKENS, count_tokens, prompt_ceiling, token_ceiling
from pulse_ai.types import GenerationParams, GenerationResult, Message

__all__ = ["OpenAICompatibleProvider", "read_usage", "translate_error"]

T = TypeVar("T")


class OpenAICompatibleProvider(EmbeddingProvider, GenerationProvider):
    """A provider spoken to through the official ``openai`` SDK. Subclasses build the client."""

    _client: openai.AsyncOpenAI | None = None

    @abstractmethod
    def make_client(self, http: Any) -> openai.AsyncOpenAI:
        """Build the SDK client (auth, base URL, headers) over ``http``; called once per event loop."""

    def secrets(self) -> list[str]:
        api_key = getattr(self.config, "api_key", None)
        return [api_key.get_secret_value()] if api_key is not None else []

    def request_headers(self) -> dict[str, Any] | None:
        """Headers to send (or, as ``openai.Omit()``, to suppress) on every request."""
        return None

    @property
    def client(self) -> openai.AsyncOpenAI:
        self.slots  # noqa: B018 - binds (or refuses) the running loop before a client is made for it
        if self._client is None:
            self._client = self.make_client(http_client(self.config.timeout))
        return self._client

    def on_new_loop(self) -> None:
        # a client of a closed loop cannot be closed any more; its connections died with the loop
        self._client = None

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.close()  # a client of a loop that is gone has nothing left to close

    async def _call(self, model: ModelSpec, call: Callable[[], Awaitable[T]]) -> T:
        """Run one SDK call; its failure becomes a pulse-ai error with no SDK exception attached."""
        try:
            return await call()
        except ProviderError:
            raise
        except Malformed as exc:
            error: ProviderError = MalformedResponseError(str(exc), provider=self.name, model=model.name)
        except SDK_FAILURES as exc:
            error = translate_error(exc, provider=self.name, model=model.name, secrets=self.secrets())
        raise error  # outside the except block: nothing of the SDK's exception is chained

    async def embed_batch(self, texts: list[str], model: ModelSpec) -> BatchEmbedding:
        # base64 asked for explicitly comes back undecoded: one frombuffer per vector, no float lists.
        request: dict[str, Any] = {
            "model": model.wire_name,
            "input": texts,
            "encoding_format": "base64",
            "extra_headers": self.request_headers(),
        }
        if model.send_dimensions:
            request["dimensions"] = model.dimensions

        async def call() -> BatchEmbedding:
            response = await self.client.embeddings.create(**request)
            vectors = read_vectors(response, len(texts), model.dimensions)
            tokens, _, estimated = read_usage(
                getattr(response, "usage", None),
                lambda: sum(count_tokens(t, model.encoding) for t in texts),
                lambda: 0,
                input_bound=token_ceiling(texts, EMBEDDING_OVERHEAD_TOKENS),
            )
            return BatchEmbedding(vectors=vectors, input_tokens=tokens, estimated=estimated)

        return await self._call(model, call)

    async def complete(self, messages: list[Message], params: GenerationParams, model: ModelSpec) -> GenerationResult:
        async def call() -> GenerationResult:
            response = await self.client.chat.completions.create(
                model=model.wire_name,
                messages=[message.model_dump() for message in messages],  # type: ignore[misc]
                extra_headers=self.request_headers(),
                **params.model_dump(exclude_none=True),
            )
            text, finish_reason = read_completion(response)
            input_tokens, output_tokens, estimated = read_usage(
                getattr(response, "usage", None),
                lambda: sum(count_tokens(m.content, model.encoding) for m in messages),
                lambda: count_tokens(text, model.encoding),
                _output_ceiling(params, model),
                input_bound=prompt_ceiling([m.content for m in messages]),
            )
            return GenerationResult(
                text=text,
                model=model.ref,
                usage=Usage(input_tokens, output_tokens, 1, model.cost_usd(input_tokens, output_tokens), estimated),
                finish_reason=finish_reason,
            )

        return await self._call(model, call)

    async def stream_text(
        self, messages: list[Message], params: GenerationParams, model: ModelSpec
    ) -> AsyncIterator[str | GenerationResult]:
        request: dict[str, Any] = {
            "model": model.wire_name,
            "messages": [message.model_dump() for message in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "extra_headers": self.request_headers(),
            **params.model_dump(exclude_none=True),
        }
        with streaming_request():  # the transport's deadline covers the headers only
            stream: Any = await self._call(model, lambda: self.client.chat.completions.create(**request))
        reader = StreamReader()
        parts: list[str] = []
        silence = self.config.timeout
        loop = asyncio.get_running_loop()
        try:
            deadline = loop.time() + silence
            while True:
                text = await self._call(model, partial(self._next_text, model, stream, reader, deadline, bool(parts)))
                if text is None:
                    break
                if text:
                    deadline = loop.time() + silence
                    parts.append(text)
                    yield text
        finally:
            await stream.close()  # early exit or error: the HTTP stream goes at once
        if reader.finish_reason is None:
            raise MalformedResponseError(
                "the stream ended without a finish reason: the answer was cut off", provider=self.name, model=model.name
            )
        text = "".join(parts)
        input_tokens, output_tokens, estimated = read_usage(
            reader.usage,
            lambda: sum(count_tokens(m.content, model.encoding) for m in messages),
            lambda: count_tokens(text, model.encoding) if text else 0,
            _output_ceiling(params, model),
            input_bound=prompt_ceiling([m.content for m in messages]),
        )
        yield GenerationResult(
            text=text,
            model=model.ref,
            usage=Usage(input_tokens, output_tokens, 1, model.cost_usd(input_tokens, output_tokens), estimated),
            finish_reason=reader.finish_reason,
        )

    async def _next_text(
        self, model: ModelSpec, stream: Any, reader: StreamReader, deadline: float, started: bool
    ) -> str | None:
        """The text of the next chunk ('' for a chunk without text), or None at the end of the stream.
        Only text counts as progress: keep-alives and empty deltas do not move ``deadline``."""
        timed_out = False
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await anext(stream)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            timed_out = True
        if timed_out:
            silence = self.config.timeout
            if started:
                message = f"the stream sent no text for {silence:g} s (keep-alives and empty deltas do not count)"
            else:
                message = f"no first text within {silence:g} s of the answer's headers (keep-alives do not count)"
            raise ProviderTimeoutError(message, provider=self.name, model=model.name)
        return reader.read(chunk)

    async def health_check(self, model: ModelSpec) -> None:
        if model.supports(Capability.EMBEDDING):
            await self.embed(["ping"], model)
            return
        await self._call(model, lambda: self.client.models.list(extra_headers=self.request_headers()))


def _output_ceiling(params: GenerationParams, model: ModelSpec) -> int | None:
    """The most output tokens an answer can have: what was asked for, within the model's limit."""
    limit = model.max_output_tokens
    if params.max_tokens is not None:
        return min(params.max_tokens, limit) if limit else params.max_tokens
    return limit
