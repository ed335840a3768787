"""A streamed generation: an async iterator of text deltas that is also an async context manager.

::

    async with ai.stream("Summarise ...") as stream:
        async for delta in stream:
            print(delta, end="")
    stream.result      # the whole answer and its usage (None if it did not finish)
    stream.attempts    # every attempt, with what it consumed, however the stream ended

Leaving the ``async with`` block early (``break``, an exception, cancellation) closes the provider's
HTTP stream and releases its concurrency slot at once. Plain ``async for`` keeps working; a consumer
that breaks out of it without the ``async with`` should call ``await stream.aclose()``.

However a stream ends, it ends once: ``ok`` (exhausted), ``abandoned`` (closed early), ``cancelled``,
or the error kind; its attempts are then final and the ``on_finish`` callbacks run (the usage
ledger records them there, with estimated tokens for what was consumed of an unfinished stream).

A consumer that leaves while a read is pending in another task (an HTTP client that disconnects
while the next chunk is awaited) cancels that task with ``task.cancel(msg=ABANDONED)``: the stream
then ends ``abandoned`` (the consumer left), not ``cancelled``, at every level down to the provider.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType

from pulse_ai.accounting import Attempt
from pulse_ai.errors import error_kind
from pulse_ai.types import GenerationResult

__all__ = ["ABANDONED", "GenerationStream", "cancel_outcome", "relay"]

# The cancellation message of a read stopped because its consumer left (see the module docstring).
ABANDONED = "pulse-ai: the stream's consumer left"

FinishCallback = Callable[["GenerationStream"], Awaitable[None] | None]
AttemptsOf = Callable[["GenerationStream"], tuple[Attempt, ...]]


class GenerationStream:
    """Async iterator of text deltas; once exhausted, ``result`` holds the whole answer and usage."""

    def __init__(self, chunks: AsyncIterator[str | GenerationResult], attempts_of: AttemptsOf | None = None) -> None:
        self._chunks = chunks
        self._attempts_of = attempts_of
        self._parts: list[str] = []
        self._callbacks: list[FinishCallback] = []
        self.result: GenerationResult | None = None
        self.outcome: str | None = None  # set once, when the stream ends
        self.error: BaseException | None = None
        self._attempts: tuple[Attempt, ...] = ()
        self._final = False

    # ---- what was consumed -------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """Every attempt of this stream; final once the stream has ended."""
        if self._final:
            return self._attempts
        return self._attempts_of(self) if self._attempts_of is not None else ()

    def on_finish(self, callback: FinishCallback) -> None:
        """Run ``callback(stream)`` once when the stream ends, however it ends."""
        self._callbacks.append(callback)

    # ---- iteration -------------------------------------------------------------------------
    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> str:
        if self.finished:
            raise StopAsyncIteration
        try:
            while True:
                chunk = await anext(self._chunks)
                if isinstance(chunk, GenerationResult):
                    self.result = chunk
                    continue
                self._parts.append(chunk)
                return chunk
        except StopAsyncIteration:
            await self._finish("ok")
            raise
        except asyncio.CancelledError as cancel:
            await self._close_source()
            await self._finish(cancel_outcome(cancel))
            raise
        except BaseException as error:
            await self._close_source()
            await self._finish(error_kind(error), error)
            raise

    async def aclose(self) -> None:
        """Stop early: close the provider's stream and release its slot. Safe to repeat."""
        if self.finished:
            return
        await self._close_source()
        await self._finish("abandoned")

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.finished:
            return
        await self._close_source()
        await self._finish(cancel_outcome(exc) if isinstance(exc, asyncio.CancelledError) else "abandoned")

    # ---- internals ---------------------------------------------------------------------------
    async def _close_source(self) -> None:
        closer = getattr(self._chunks, "aclose", None)
        if closer is not None:
            await closer()

    async def _finish(self, outcome: str, error: BaseException | None = None) -> None:
        if self.finished:
            return
        self.outcome, self.error = outcome, error
        self._attempts = self._attempts_of(self) if self._attempts_of is not None else ()
        self._final = True
        for callback in self._callbacks:
            returned = callback(self)
            if inspect.isawaitable(returned):
                await returned


def relay(
    open_inner: Callable[[], Awaitable[GenerationStream]],
    finish: Callable[[GenerationResult], GenerationResult] | None = None,
    check: Callable[[], None] | None = None,
) -> GenerationStream:
    """A stream that opens ``open_inner()`` on its first read (where a layer does its async work:
    a budget reservation, a settings lookup) and relays it: the deltas, the final result (through
    ``finish``), its attempts, and its closing when the outer stream is closed early. ``check()``
    runs before each delta is passed on; what it raises ends the stream (the inner one is closed)."""
    opened: list[GenerationStream] = []

    async def chunks() -> AsyncIterator[str | GenerationResult]:
        inner = await open_inner()
        opened.append(inner)
        try:
            async for delta in inner:
                if check is not None:
                    check()
                yield delta
        finally:
            await inner.aclose()
        if inner.result is not None:
            yield finish(inner.result) if finish is not None else inner.result

    return GenerationStream(chunks(), lambda _: opened[0].attempts if opened else ())


def cancel_outcome(cancel: asyncio.CancelledError) -> str:
    """``abandoned`` when the consumer left (the service's disconnect), else ``cancelled``."""
    return "abandoned" if cancel.args == (ABANDONED,) else "cancelled"
