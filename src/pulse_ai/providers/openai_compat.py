"""The shared base of every OpenAI-compatible provider (OpenAI, Azure OpenAI, custom gateways).

The official SDK makes the requests and retries them: exponential backoff with jitter, honouring
``Retry-After`` on 429, and retrying 408/409/429/5xx, timeouts and connection errors, never
400/401/403/404. ``max_retries`` and ``timeout`` come from the configuration. ``timeout`` is a
deadline for each HTTP request, body included (a server that trickles its answer is cut off at
``timeout`` and retried); a streamed answer gets it until its headers arrive, and then as the most
it may stay silent between two chunks. Redirects are never followed, so credentials never go to
another address. SDK errors are translated here, at the boundary, into ``pulse_ai.errors``, and are
not chained (the SDK's exception holds the response body, which may echo a key).
"""

from __future__ import annotations

import asyncio
import base64
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import openai

from pulse_ai.accounting import Usage
from pulse_ai.catalog import Capability, ModelSpec
from pulse_ai.errors import MalformedResponseError, ProviderError
from pulse_ai.providers.base import BatchEmbedding, EmbeddingProvider, GenerationProvider
from pulse_ai.providers.http import http_client, translate_error
from pulse_ai.tokens import estimate_tokens
from pulse_ai.types import GenerationParams, GenerationResult, Message

__all__ = ["OpenAICompatibleProvider", "read_usage", "translate_error"]

T = TypeVar("T")
# Everything the SDK (or our parsing of its answer) raises for a call that did not work.
_SDK_FAILURES = (openai.OpenAIError, ValueError, TypeError, AttributeError, KeyError, IndexError)


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
        except _SDK_FAILURES as exc:
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
            items = sorted(response.data, key=lambda item: item.index)
            if [item.index for item in items] != list(range(len(items))):
                raise MalformedResponseError(
                    "the answer's indices are not 0..n-1", provider=self.name, model=model.name
                )
            vectors = np.array([_decode_vector(item.embedding) for item in items], dtype=np.float32)
            tokens, _, estimated = read_usage(
                getattr(response, "usage", None), lambda: sum(estimate_tokens(t) for t in texts), lambda: 0
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
            choice = response.choices[0]
            text = choice.message.content or ""
            if not isinstance(text, str):
                raise TypeError("the message content is not text")
            input_tokens, output_tokens, estimated = read_usage(
                response.usage, lambda: sum(estimate_tokens(m.content) for m in messages), lambda: estimate_tokens(text)
            )
            return GenerationResult(
                text=text,
                model=model.ref,
                usage=Usage(input_tokens, output_tokens, 1, model.cost_usd(input_tokens, output_tokens), estimated),
                finish_reason=choice.finish_reason,
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
        stream: Any = await self._call(model, lambda: self.client.chat.completions.create(**request))
        parts: list[str] = []
        finish_reason: str | None = None
        usage: object = None
        try:
            while True:
                chunk = await self._call(model, lambda: _next_chunk(stream))
                if chunk is None:
                    break
                if getattr(chunk, "usage", None) is not None:
                    usage = chunk.usage
                for choice in chunk.choices or ():
                    finish_reason = choice.finish_reason or finish_reason
                    content = choice.delta.content if choice.delta is not None else None
                    if content:
                        parts.append(content)
                        yield content
        finally:
            await stream.close()  # early exit or error: the HTTP stream goes at once
        if finish_reason is None:
            raise MalformedResponseError(
                "the stream ended without a finish reason: the answer was cut off", provider=self.name, model=model.name
            )
        text = "".join(parts)
        input_tokens, output_tokens, estimated = read_usage(
            usage,
            lambda: sum(estimate_tokens(m.content) for m in messages),
            lambda: estimate_tokens(text) if text else 0,
        )
        yield GenerationResult(
            text=text,
            model=model.ref,
            usage=Usage(input_tokens, output_tokens, 1, model.cost_usd(input_tokens, output_tokens), estimated),
            finish_reason=finish_reason,
        )

    async def health_check(self, model: ModelSpec) -> None:
        if model.supports(Capability.EMBEDDING):
            await self.embed(["ping"], model)
            return
        await self._call(model, lambda: self.client.models.list(extra_headers=self.request_headers()))


async def _next_chunk(stream: Any) -> Any:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


def read_usage(
    usage: object, estimate_input: Callable[[], int], estimate_output: Callable[[], int]
) -> tuple[int, int, bool]:
    """The one rule for a provider's token counts: use them when they are non-negative integers;
    when the answer has none (missing, null, a string, null counts), estimate them and say so. The
    answer itself is still good: its vectors or text are kept, and the ledger flags the row."""
    input_tokens = _count(getattr(usage, "prompt_tokens", None))
    output_tokens = _count(getattr(usage, "completion_tokens", None))
    estimated = False
    if input_tokens is None:
        input_tokens, estimated = estimate_input(), True
    if output_tokens is None:
        output = estimate_output()
        output_tokens, estimated = output, estimated or output > 0
    return input_tokens, output_tokens, estimated


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _decode_vector(embedding: str | list[float]) -> npt.NDArray[np.float32]:
    """Little-endian float32 in base64, as OpenAI sends it; a float list from gateways that ignore
    ``encoding_format``."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)
