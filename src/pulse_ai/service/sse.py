"""A streamed chat completion as Server-Sent Events, in OpenAI's chunk format.

The response is sent only once the first delta is there (so an error before it is a plain HTTP
error). While it streams, the client's connection is watched: when the client goes away, the
pending read is cancelled (as ``abandoned``: the consumer left) and the stream closed at once,
which closes the provider's stream and frees its slot; the ledger records what was consumed, as
``abandoned``; if this task itself is cancelled (shutdown), the stream ends ``cancelled``. An error
after the first delta is sent as a last event ``{"error": {...}}``, which the openai SDK raises as
``APIError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from pulse_ai.service.errors import error_body, problem_of
from pulse_ai.streams import ABANDONED, GenerationStream

__all__ = ["FINISH_REASONS", "ChatStreamResponse"]

FINISH_REASONS = {"stop", "length", "content_filter", "tool_calls"}
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ChatStreamResponse(Response):
    """A Response (FastAPI returns it as it is) that streams itself; see the module's docstring."""

    def __init__(
        self,
        stream: GenerationStream,
        first: str | None,
        *,
        completion_id: str,
        created: int,
        model: str,
        include_usage: bool,
        on_end: Callable[[GenerationStream], None],
    ) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self.stream = stream
        self.first = first
        self.completion_id = completion_id
        self.created = created
        self.model = model
        self.include_usage = include_usage
        self.on_end = on_end
        self.client_left = False

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def _delta(self, delta: dict[str, str]) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None}])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(HEADERS)})

        async def client_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        watcher = asyncio.ensure_future(client_gone())
        reader: asyncio.Future[str] | None = None
        try:
            first = {"role": "assistant", "content": self.first or ""}
            await self._send(send, self._delta(first))
            while True:
                reader = asyncio.ensure_future(anext(self.stream))
                await asyncio.wait({reader, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not reader.done():  # the client left while a chunk was awaited
                    self.client_left = True
                    break
                if reader.cancelled():
                    break
                error = reader.exception()
                delta = reader.result() if error is None else ""
                reader = None
                if isinstance(error, StopAsyncIteration):
                    await self._finish(send)
                    break
                if error is not None:
                    await self._error(send, error)
                    break
                if watcher.done():  # the client left between two chunks
                    self.client_left = True
                    break
                await self._send(send, self._delta({"content": delta}))
        finally:
            await self._close(reader, watcher)
            if not self.client_left:
                with contextlib.suppress(OSError):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send(self, send: Send, data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    async def _finish(self, send: Send) -> None:
        result = self.stream.result
        reason = result.finish_reason if result is not None else None
        finish = reason if reason in FINISH_REASONS else "stop"
        body = self._chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
        if self.include_usage and result is not None:
            usage = result.usage
            body += self._chunk(
                [],
                {
                    "prompt_tokens": usage.input_tokens,
                    "completion_tokens": usage.output_tokens,
                    "total_tokens": usage.total_tokens,
                },
            )
        await self._send(send, body + b"data: [DONE]\n\n")

    async def _error(self, send: Send, error: BaseException) -> None:
        problem = problem_of(error)
        data = json.dumps(error_body(problem.message, problem.type, problem.code), separators=(",", ":"))
        await self._send(send, f"data: {data}\n\n".encode())

    async def _close(self, reader: asyncio.Future[str] | None, watcher: asyncio.Future[None]) -> None:
        """Release everything whatever happened (the client left, an error, this task cancelled):
        the pending read is cancelled, the stream closed (the provider's with it) and accounted."""
        try:
            if reader is not None and not reader.done():
                reader.cancel(msg=ABANDONED if self.client_left else None)
                await asyncio.wait({reader})
            await self.stream.aclose()
        finally:
            watcher.cancel()
            self.on_end(self.stream)
