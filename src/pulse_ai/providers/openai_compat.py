"""The shared base of every OpenAI-compatible provider (OpenAI, Azure OpenAI, custom gateways).

The official SDK makes the requests and retries them: exponential backoff with jitter, honouring
``Retry-After`` on 429, and retrying 408/409/429/5xx, timeouts and connection errors, never
400/401/403/404. ``max_retries`` and ``timeout`` come from the configuration. SDK errors are
translated here, at the boundary, into the tree of ``pulse_ai.errors``.
"""

from __future__ import annotations

import base64
import email.utils
import re
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import openai

from pulse_ai.catalog import Capability, ModelSpec
from pulse_ai.errors import (
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from pulse_ai.providers.base import BatchEmbedding, EmbeddingProvider, GenerationProvider
from pulse_ai.tokens import estimate_tokens
from pulse_ai.types import GenerationParams, GenerationResult, Message, Usage

__all__ = ["OpenAICompatibleProvider", "translate_error"]

_KEY_LIKE = re.compile(r"\b(sk-|key-|Bearer\s+)[A-Za-z0-9_\-*.]{4,}")


class OpenAICompatibleProvider(EmbeddingProvider, GenerationProvider):
    """A provider spoken to through the official ``openai`` SDK. Subclasses build the client."""

    _client: openai.AsyncOpenAI | None = None

    @abstractmethod
    def make_client(self) -> openai.AsyncOpenAI:
        """Build the SDK client (auth, base URL, headers); called once, on first use."""

    def secrets(self) -> Iterable[str]:
        """Values that must never appear in an error message."""
        api_key = getattr(self.config, "api_key", None)
        return [api_key.get_secret_value()] if api_key is not None else []

    def request_headers(self) -> dict[str, Any] | None:
        """Headers to send (or, as ``openai.Omit()``, to suppress) on every request."""
        return None

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = self.make_client()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

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
        try:
            response = await self.client.embeddings.create(**request)
        except (openai.OpenAIError, ValueError) as exc:  # ValueError: a body that is not JSON
            raise self._translate(exc, model) from exc
        try:
            items = sorted(response.data, key=lambda item: item.index)
            if [item.index for item in items] != list(range(len(items))):
                raise MalformedResponseError(
                    "the answer's indices are not 0..n-1", provider=self.name, model=model.name
                )
            vectors = np.array([_decode_vector(item.embedding) for item in items], dtype=np.float32)
        except (TypeError, ValueError, AttributeError) as exc:  # binascii.Error is a ValueError
            raise self._translate(exc, model) from exc
        usage = getattr(response, "usage", None)
        tokens = usage.prompt_tokens if usage is not None else sum(estimate_tokens(t) for t in texts)
        return BatchEmbedding(vectors=vectors, input_tokens=int(tokens))

    async def complete(self, messages: list[Message], params: GenerationParams, model: ModelSpec) -> GenerationResult:
        try:
            response = await self.client.chat.completions.create(
                model=model.wire_name,
                messages=[message.model_dump() for message in messages],  # type: ignore[misc]
                extra_headers=self.request_headers(),
                **params.model_dump(exclude_none=True),
            )
        except (openai.OpenAIError, ValueError) as exc:  # ValueError: a body that is not JSON
            raise self._translate(exc, model) from exc
        try:
            choice = response.choices[0]
            text = choice.message.content or ""
            finish_reason = choice.finish_reason
        except (TypeError, IndexError, AttributeError) as exc:
            raise self._translate(exc, model) from exc
        usage = response.usage
        input_tokens = usage.prompt_tokens if usage else sum(estimate_tokens(m.content) for m in messages)
        output_tokens = usage.completion_tokens if usage else estimate_tokens(text)
        return GenerationResult(
            text=text,
            model=model.ref,
            usage=Usage(input_tokens, output_tokens, 1, model.cost_usd(input_tokens, output_tokens)),
            finish_reason=finish_reason,
        )

    async def stream_text(
        self, messages: list[Message], params: GenerationParams, model: ModelSpec
    ) -> AsyncIterator[str | GenerationResult]:
        parts: list[str] = []
        finish_reason: str | None = None
        input_tokens = output_tokens = None
        try:
            request: dict[str, Any] = {
                "model": model.wire_name,
                "messages": [message.model_dump() for message in messages],
                "stream": True,
                "stream_options": {"include_usage": True},
                "extra_headers": self.request_headers(),
                **params.model_dump(exclude_none=True),
            }
            stream = await self.client.chat.completions.create(**request)
            async for chunk in stream:
                if chunk.usage is not None:
                    input_tokens, output_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                for choice in chunk.choices:
                    finish_reason = choice.finish_reason or finish_reason
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                        yield choice.delta.content
        except (openai.OpenAIError, ValueError, TypeError, AttributeError) as exc:
            raise self._translate(exc, model) from exc
        text = "".join(parts)
        if input_tokens is None or output_tokens is None:
            input_tokens = sum(estimate_tokens(m.content) for m in messages)
            output_tokens = estimate_tokens(text) if text else 0
        yield GenerationResult(
            text=text,
            model=model.ref,
            usage=Usage(input_tokens, output_tokens, 1, model.cost_usd(input_tokens, output_tokens)),
            finish_reason=finish_reason,
        )

    async def health_check(self, model: ModelSpec) -> None:
        if model.supports(Capability.EMBEDDING):
            await self.embed(["ping"], model)
            return
        try:
            await self.client.models.list(extra_headers=self.request_headers())
        except openai.OpenAIError as exc:
            raise self._translate(exc, model) from exc

    def _translate(self, exc: Exception, model: ModelSpec) -> ProviderError:
        if isinstance(exc, ProviderError):
            return exc
        return translate_error(exc, provider=self.name, model=model.name, secrets=self.secrets())


def translate_error(exc: Exception, *, provider: str, model: str, secrets: Iterable[str] = ()) -> ProviderError:
    """Map an SDK (or parsing) exception to the pulse-ai error tree, with secrets redacted."""
    message = _redact(_sdk_message(exc), secrets)
    where: dict[str, Any] = {"provider": provider, "model": model}
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeoutError("the request timed out", **where)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderUnavailableError(f"cannot connect: {message}", **where)
    if isinstance(exc, openai.APIResponseValidationError):
        return MalformedResponseError(f"the answer does not match the API: {message}", **where)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        where["status_code"] = status
        if status == 429:
            return RateLimitedError(message, retry_after=_retry_after(exc.response.headers), **where)
        if status in (401, 403):
            return AuthenticationError(message, **where)
        if status == 408:
            return ProviderTimeoutError(message, **where)
        if status >= 500:
            return ProviderUnavailableError(message, **where)
        return BadRequestError(message, **where)
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError, AttributeError, openai.OpenAIError)):
        return MalformedResponseError(f"cannot read the answer: {type(exc).__name__}: {message}", **where)
    raise exc


def _decode_vector(embedding: str | list[float]) -> npt.NDArray[np.float32]:
    """Little-endian float32 in base64, as OpenAI sends it; a float list from gateways that ignore
    ``encoding_format``."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)


def _sdk_message(exc: Exception) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        if isinstance(body, dict):
            error = body.get("error", body)
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                return str(error["message"])[:500]
        return f"{exc.status_code} {exc.response.reason_phrase}"
    return str(exc)[:500]


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _KEY_LIKE.sub(lambda match: f"{match.group(1)}***", text)


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
