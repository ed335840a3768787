"""Micro-batching of concurrent embedding calls for a local model ("continuous batching").

Two hundred callers that each embed one text would otherwise run the model two hundred times, one
after another. Here every call is queued; a runner thread drains the queue: when the model is idle a
call starts at once (a lone call is not delayed), and the calls that arrive while the model is busy
are merged into the next run, which the model then cuts into its own token-budgeted batches.
There is no fixed wait: the time a run takes is the gathering window.

Runs are fair between calls: a call is cut into pieces of at most ``max_texts_per_run`` texts, and
each run takes pieces round-robin from the waiting calls, so that a one-text call arriving behind a
4,096-text bulk call waits for at most two runs, not for the whole bulk call (a tenant's indexing job
does not stall another tenant's search). Fairness is per call, not per tenant: a tenant with five
bulk calls in flight gets five turns. A call's answer is assembled from its pieces, in order; a
model answer of the wrong length fails the run (it would hand one caller another's vectors).

Each caller gets back exactly its own vectors, in order, and its own token counts (usage is billed
per tenant, so ``input_tokens`` and ``truncated`` are summed from per-text counts, never shared out).
A caller cancelled before its texts are taken costs no model work (nor do its pieces not yet taken);
one cancelled later is dropped from the answer without disturbing the others. When a merged run
fails, each of its pieces is run again on its own, so a text that breaks the model fails only the
call that sent it.

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

from pulse_ai.errors import ProviderUnavailableError
from pulse_ai.providers.base import BatchEmbedding

__all__ = ["EncodedTexts", "MicroBatcher"]

# A run takes up to this many texts, and a call is cut into pieces of at most this many: large
# enough to fill many model batches, small enough that a caller behind a bulk call waits one run.
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
    # pieces (start, end) not yet taken by a run, and the answers of the pieces done (by start)
    pieces: deque[tuple[int, int]] = field(default_factory=deque)
    done: dict[int, EncodedTexts] = field(default_factory=dict)
    piece_count: int = 0
    failed: bool = False

    @property
    def finished(self) -> bool:
        return self.abandoned or self.failed or self.future.done()


@dataclass(frozen=True, eq=False)
class _Piece:
    call: _Call
    start: int
    end: int

    @property
    def texts(self) -> list[str]:
        return self.call.texts[self.start : self.end]


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
        size = self._max_texts
        call.pieces.extend((start, min(start + size, len(texts))) for start in range(0, len(texts), size))
        if not call.pieces:  # no texts: one empty piece, so that the model still answers the call
            call.pieces.append((0, 0))
        call.piece_count = len(call.pieces)
        with self._work:
            self._queue.append(call)
            start = not self._running
            self._running = True
            self._work.notify()
        if start:
            self._start_runner()
        try:
            return await call.future
        except asyncio.CancelledError:
            call.abandoned = True  # if not yet taken, the runner skips it
            raise

    def _start_runner(self) -> None:
        """Start the runner thread (``_running`` is already set); when no thread can be had (a
        container's thread limit), the queued calls fail instead of waiting forever."""
        try:
            threading.Thread(target=self._drain, name="pulse-ai-micro-batcher", daemon=True).start()
        except RuntimeError as exc:
            error = ProviderUnavailableError(f"local inference could not start a thread: {exc}")
            with self._work:
                self._running = False
                pending = list(self._queue)
                self._queue.clear()
            for call in pending:
                _settle(call, error)

    def _take(self) -> list[_Piece]:
        """The next run's pieces, round-robin over the waiting calls (under the lock)."""
        taken: list[_Piece] = []
        count = 0
        while self._queue:
            call = self._queue[0]
            if call.finished:
                self._queue.popleft()
                continue
            start, end = call.pieces[0]
            if taken and count + (end - start) > self._max_texts:
                break
            self._queue.popleft()
            call.pieces.popleft()
            taken.append(_Piece(call, start, end))
            count += end - start
            if call.pieces:
                self._queue.append(call)  # its next piece waits for every other call's turn
        return taken

    def _drain(self) -> None:
        while True:
            with self._work:
                pieces = self._take()
                if not pieces:  # idle: wait a little for more before the thread ends
                    self._work.wait(IDLE_SECONDS)
                    pieces = self._take()
                    if not pieces:
                        self._running = False
                        return
            try:
                self._run(pieces)
            except BaseException as exc:  # never leave a caller waiting on a dead runner
                # the run's callers get an ordinary error (a KeyboardInterrupt set on their futures would
                # stop their event loops); calls only queued are served by a fresh runner
                error = ProviderUnavailableError(f"local inference stopped: {type(exc).__name__}")
                for piece in pieces:
                    _settle(piece.call, error)
                with self._work:
                    restart = bool(self._queue)
                    self._running = restart
                if restart:
                    self._start_runner()
                raise

    def _run(self, pieces: list[_Piece]) -> None:
        self.runs += 1
        self.calls_served += len({id(piece.call) for piece in pieces if piece.start == 0})
        answers: list[EncodedTexts] = []
        failure: Exception | None = None
        try:
            answers = _split(self._encode([text for piece in pieces for text in piece.texts]), pieces)
        except Exception as exc:
            failure = exc
        if failure is not None:
            if len(pieces) == 1:
                pieces[0].call.failed = True  # its other pieces are not run
                _settle(pieces[0].call, failure)
                return
            # One piece's text may be what broke the run: run each on its own to find out (outside the
            # handler, so that a caller's error never carries another caller's run as its context).
            for piece in pieces:
                if not piece.call.finished:
                    self._run([piece])
            return
        for piece, answer in zip(pieces, answers, strict=True):
            call = piece.call
            call.done[piece.start] = answer
            if not call.finished and len(call.done) == call.piece_count:
                _settle(call, _assemble(call))


def _split(encoded: EncodedTexts, pieces: list[_Piece]) -> list[EncodedTexts]:
    """Each piece's share of a run's answer; an answer of the wrong length fails the whole run (it
    would hand one caller another's vectors), which is then run again piece by piece."""
    count = sum(piece.end - piece.start for piece in pieces)
    vectors = np.asarray(encoded.vectors, dtype=np.float32)
    lengths = (vectors.shape[0] if vectors.ndim == 2 else -1, len(encoded.tokens), len(encoded.truncated))
    if lengths != (count, count, count):
        raise ProviderUnavailableError(
            f"local inference returned {lengths[0]} vectors, {lengths[1]} token counts and {lengths[2]} "
            f"truncation flags for {count} texts"
        )
    tokens = [int(n) for n in encoded.tokens]
    truncated = [bool(flag) for flag in encoded.truncated]
    shares, offset = [], 0
    for piece in pieces:
        end = offset + piece.end - piece.start
        shares.append(EncodedTexts(vectors[offset:end].copy(), tokens[offset:end], truncated[offset:end]))
        offset = end
    return shares


def _assemble(call: _Call) -> BatchEmbedding:
    parts = [call.done[start] for start in sorted(call.done)]
    return BatchEmbedding(
        vectors=np.concatenate([part.vectors for part in parts]),
        input_tokens=sum(sum(part.tokens) for part in parts),
        truncated=sum(1 for part in parts for flag in part.truncated if flag),
    )


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
