"""Micro-batching of concurrent embedding calls for a local model ("continuous batching").

Two hundred callers that each embed one text would otherwise run the model two hundred times, one
after another. Here every call is queued; a runner thread drains the queue: when the model is idle a
call starts at once (a lone call is not delayed), and the calls that arrive while the model is busy
are merged into the next run, which the model then cuts into its own token-budgeted batches.
There is no fixed wait: the time a run takes is the gathering window.

Each caller gets back exactly its own vectors, in order, and its own token counts (usage is billed
per tenant, so ``input_tokens`` and ``truncated`` are summed from per-text counts, never shared out).
A caller cancelled before its texts are taken costs no model work; one cancelled later is dropped
from the answer without disturbing the others. When a merged run fails, each of its calls is run
again on its own, so a text that breaks the model fails only the call that sent it.

Callers may come from several event loops and threads at once: results go back to each caller's
own loop with ``call_soon_threadsafe``, and the runner thread belongs to no loop (it is started on
demand and ends after a short idle time, so an unused provider holds no thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pulse_ai.providers.base import BatchEmbedding

__all__ = ["EncodedTexts", "MicroBatcher"]

# A run takes queued calls up to this many texts (a call is never split): large enough to fill
# many model batches, small enough that the first caller in a crowd is not held for all of it.
MAX_TEXTS_PER_RUN = 256
# The runner thread outlives a burst by this long, so that one caller after another (or bursts in
# quick succession) reuse it and the thread pools torch keeps per calling thread.
IDLE_SECONDS = 2.0


@dataclass(frozen=True)
class EncodedTexts:
    """What the model gave for a list of texts, per text: the vector, the tokens it consumed and
    whether it was cut to the model's window."""

    vectors: npt.NDArray[np.float32]
    tokens: Sequence[int]
    truncated: Sequence[bool]


@dataclass(eq=False)
class _Call:
    texts: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[BatchEmbedding]
    abandoned: bool = field(default=False)


class MicroBatcher:
    """Merges concurrent ``submit`` calls into runs of ``encode`` (which must be thread-safe: it is
    called from the runner thread, one run at a time per batcher)."""

    def __init__(self, encode: Callable[[list[str]], EncodedTexts], max_texts_per_run: int = MAX_TEXTS_PER_RUN):
        self._encode = encode
        self._max_texts = max(1, max_texts_per_run)
        self._queue: deque[_Call] = deque()
        self._work = threading.Condition()
        self._running = False
        #: Runs made so far and calls served by them: how much merging happened (for tests and benches).
        self.runs = 0
        self.calls_served = 0

    async def submit(self, texts: list[str]) -> BatchEmbedding:
        """Embed ``texts`` (already checked by the caller) as part of whatever run takes them."""
        loop = asyncio.get_running_loop()
        call = _Call(list(texts), loop, loop.create_future())
        with self._work:
            self._queue.append(call)
            start = not self._running
            self._running = True
            self._work.notify()
        if start:
            threading.Thread(target=self._drain, name="pulse-ai-micro-batcher", daemon=True).start()
        try:
            return await call.future
        except asyncio.CancelledError:
            call.abandoned = True  # if not yet taken, the runner skips it
            raise

    def _take(self) -> list[_Call]:
        """The next run's calls, oldest first (under the lock)."""
        taken: list[_Call] = []
        count = 0
        while self._queue:
            call = self._queue[0]
            if call.abandoned or call.future.done():
                self._queue.popleft()
                continue
            if taken and count + len(call.texts) > self._max_texts:
                break
            taken.append(self._queue.popleft())
            count += len(call.texts)
        return taken

    def _drain(self) -> None:
        while True:
            with self._work:
                calls = self._take()
                if not calls:  # idle: wait a little for more before the thread ends
                    self._work.wait(IDLE_SECONDS)
                    calls = self._take()
                    if not calls:
                        self._running = False
                        return
            try:
                self._run(calls)
            except BaseException as exc:  # never leave a caller waiting on a dead runner
                for call in calls:
                    _settle(call, exc)
                with self._work:
                    pending = list(self._queue)
                    self._queue.clear()
                    self._running = False
                for call in pending:
                    _settle(call, exc)
                raise

    def _run(self, calls: list[_Call]) -> None:
        self.runs += 1
        self.calls_served += len(calls)
        texts = [text for call in calls for text in call.texts]
        try:
            encoded = self._encode(texts)
        except Exception as exc:
            if len(calls) == 1:
                _settle(calls[0], exc)
                return
            # One call's text may be what broke the run: run each on its own to find out.
            for call in calls:
                if not call.abandoned:
                    self._run([call])
            return
        start = 0
        for call in calls:
            end = start + len(call.texts)
            _settle(
                call,
                BatchEmbedding(
                    vectors=encoded.vectors[start:end].copy(),
                    input_tokens=sum(encoded.tokens[start:end]),
                    truncated=sum(1 for flag in encoded.truncated[start:end] if flag),
                ),
            )
            start = end


def _settle(call: _Call, outcome: BatchEmbedding | BaseException) -> None:
    """Hand ``outcome`` to the caller's own loop; a cancelled caller or a closed loop gets nothing."""

    def deliver() -> None:
        if call.future.done():
            return
        if isinstance(outcome, BaseException):
            call.future.set_exception(outcome)
        else:
            call.future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody is waiting any more
        call.loop.call_soon_threadsafe(deliver)
