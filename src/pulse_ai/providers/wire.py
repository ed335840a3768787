"""Reading OpenAI-compatible answers: every field checked before it is used.

The SDK builds its answer objects without validating them, so a gateway's answer can hold anything
(a string where an object belongs, a number where text belongs, an HTML page instead of JSON).
Nothing here trusts a field: an answer of the wrong shape is a :class:`MalformedResponseError`
that says what was wrong, never a raw ``AttributeError`` and never a wrong answer returned as good.

Token counts follow one rule (:func:`read_usage`): used when plausible, otherwise estimated and
flagged.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from openai.types import CreateEmbeddingResponse, Embedding
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat import chat_completion as completion_types
from openai.types.chat import chat_completion_chunk as chunk_types

__all__ = [
    "IMPLAUSIBLE_FACTOR",
    "MAX_TOKENS_PER_CALL",
    "Malformed",
    "StreamReader",
    "read_completion",
    "read_usage",
    "read_vectors",
]

# Token counts above either bound are not believed (see read_usage).
MAX_TOKENS_PER_CALL = 10**9
IMPLAUSIBLE_FACTOR = 100
_MIN_ESTIMATE = 10  # a tiny text's fixed overhead (roles, separators) is not implausible


class Malformed(ValueError):
    """An answer of the wrong shape; the provider turns it into a MalformedResponseError."""


def _kind(value: object) -> str:
    if isinstance(value, str):
        return "text, not JSON (an HTML page or a plain-text error?)"
    if value is None:
        return "JSON null"
    return f"a JSON {'list' if isinstance(value, list) else type(value).__name__}"


def _check_answer(answer: object, expected: type, what: str) -> None:
    if not isinstance(answer, expected):
        raise Malformed(f"the answer is {_kind(answer)}, not {what}")
    error = (answer.model_extra or {}).get("error")  # type: ignore[attr-defined]
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else error
        raise Malformed(f"the server answered 200 with an error: {str(message)[:300]}")


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- embeddings -------------------------------------------------------------------------------
def read_vectors(answer: object, count: int, dimensions: int | None) -> npt.NDArray[np.float32]:
    """The answer's vectors in input order, as one float32 matrix; each row checked on its own."""
    _check_answer(answer, CreateEmbeddingResponse, "an embeddings list object")
    data = getattr(answer, "data", None)
    if not isinstance(data, list):
        raise Malformed("the answer has no `data` list of embeddings")
    for position, item in enumerate(data):
        if not isinstance(item, Embedding) or not _is_index(getattr(item, "index", None)):
            raise Malformed(f"data[{position}] is not an embedding object with an integer index")
    items = sorted(data, key=lambda item: item.index)
    if [item.index for item in items] != list(range(len(items))):
        raise Malformed("the answer's indices are not 0..n-1")
    if len(items) != count:
        raise Malformed(f"returned {len(items)} vectors for {count} inputs")
    rows = [_decode_vector(getattr(item, "embedding", None), item.index) for item in items]
    expected = dimensions if dimensions is not None else (len(rows[0]) if rows else 0)
    for index, row in enumerate(rows):
        if row.shape[0] != expected:
            raise Malformed(f"vector {index} has {row.shape[0]} dimensions; {expected} expected")
    return np.stack(rows) if rows else np.zeros((0, expected), np.float32)


def _decode_vector(embedding: object, index: int) -> npt.NDArray[np.float32]:
    """Little-endian float32 in base64, as OpenAI sends it; a float list from gateways that ignore
    ``encoding_format``. The message never quotes a value (it could echo anything)."""
    if isinstance(embedding, str):
        try:
            raw = base64.b64decode(embedding, validate=True)
        except (binascii.Error, ValueError):
            raise Malformed(f"vector {index} is not valid base64") from None
        if len(raw) % 4:
            raise Malformed(f"vector {index} is {len(raw)} bytes, not a whole number of float32 values")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not isinstance(embedding, list) or not all(
        isinstance(value, (int, float)) and not isinstance(value, bool) for value in embedding
    ):
        raise Malformed(f"vector {index} is not a list of numbers (nor base64)")
    return np.asarray(embedding, dtype=np.float32)


# ---- chat completions -------------------------------------------------------------------------
def read_completion(answer: object) -> tuple[str, str | None]:
    """The text and finish reason of a non-streamed answer: exactly one choice, index 0, text or
    null, and a finish reason. Null text with a finish reason (stop, length, content_filter,
    tool_calls) is an empty answer; null text without one is not an answer at all."""
    _check_answer(answer, ChatCompletion, "a chat completion object")
    choices = getattr(answer, "choices", None)
    if not isinstance(choices, list) or len(choices) != 1:
        shown = f"{len(choices)} choices" if isinstance(choices, list) else "no `choices` list"
        raise Malformed(f"the answer has {shown}; one was asked for")
    choice = choices[0]
    if not isinstance(choice, completion_types.Choice) or getattr(choice, "index", None) != 0:
        raise Malformed("the answer's choice is not an object with index 0")
    if not _is_index(choice.index):
        raise Malformed("the answer's choice index is not an integer")
    message = getattr(choice, "message", None)
    if not isinstance(message, ChatCompletionMessage):
        raise Malformed("the answer's choice has no message object")
    content = getattr(message, "content", None)
    finish_reason = getattr(choice, "finish_reason", None)
    if content is not None and not isinstance(content, str):
        raise Malformed(f"the message content is {_kind(content)}, not text")
    if finish_reason is not None and not isinstance(finish_reason, str):
        raise Malformed("the finish reason is not text")
    if content is None and finish_reason is None:
        raise Malformed("the answer has neither text nor a finish reason")
    return content or "", finish_reason


@dataclass
class StreamReader:
    """Reads a stream's chunks in order: one choice (index 0), text deltas that are text, and
    nothing after the finish reason."""

    finish_reason: str | None = None
    usage: object = None

    def read(self, chunk: object) -> str:
        """The text this chunk adds ('' for none); records its finish reason and usage."""
        if not isinstance(chunk, ChatCompletionChunk):
            raise Malformed(f"a stream event is {_kind(chunk)}, not a chunk object")
        _check_answer(chunk, ChatCompletionChunk, "a chunk object")
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
        choices = getattr(chunk, "choices", None)
        if choices is None:
            return ""
        if not isinstance(choices, list) or len(choices) > 1:
            raise Malformed("a chunk's `choices` is not a list of at most one choice")
        text = ""
        for choice in choices:
            if not isinstance(choice, chunk_types.Choice):
                raise Malformed(f"a chunk's choice is {_kind(choice)}, not an object")
            index = getattr(choice, "index", None)
            if not _is_index(index) or index != 0:
                raise Malformed("a chunk's choice index is not 0 (one answer was asked for)")
            delta = getattr(choice, "delta", None)
            if delta is not None and not isinstance(delta, chunk_types.ChoiceDelta):
                raise Malformed(f"a chunk's delta is {_kind(delta)}, not an object")
            content = getattr(delta, "content", None) if delta is not None else None
            if content is not None and not isinstance(content, str):
                raise Malformed(f"a chunk's text is {_kind(content)}, not text")
            finish_reason = getattr(choice, "finish_reason", None)
            if finish_reason is not None and not isinstance(finish_reason, str):
                raise Malformed("a chunk's finish reason is not text")
            if content and self.finish_reason is not None:
                raise Malformed("text arrived after the finish reason")
            text = content or ""
            self.finish_reason = finish_reason or self.finish_reason
        return text


# ---- token counts -----------------------------------------------------------------------------
def read_usage(
    usage: object,
    estimate_input: Callable[[], int],
    estimate_output: Callable[[], int],
    output_ceiling: int | None = None,
    input_bound: int | None = None,
) -> tuple[int, int, bool]:
    """The one rule for a provider's token counts. A count is used when it is a non-negative integer
    that is plausible: at most ``MAX_TOKENS_PER_CALL`` and at most ``IMPLAUSIBLE_FACTOR`` times our
    offline estimate of it (the estimate taken as at least 10 tokens; for output, the ceiling the
    request allowed, ``max_tokens`` or the model's output limit, is plausible too, since hidden
    reasoning tokens count as output). A count that is missing, unreadable or implausible is
    replaced by the estimate, and the result says so (``estimated``): the answer itself is still
    good, its vectors or text are kept, and the ledger flags the row.

    Above a hard bound no count is believed, and no estimate goes past it: the input's
    ``input_bound`` (``tokens.token_ceiling``: no tokenizer makes more) and the output's ceiling
    (the model cannot answer with more than ``max_tokens`` or its output limit). Budgets reserve
    exactly these bounds, so what a call is settled at never exceeds what it reserved."""
    input_tokens, input_estimated = _count(getattr(usage, "prompt_tokens", None), estimate_input, 0, input_bound)
    output_tokens, output_estimated = _count(
        getattr(usage, "completion_tokens", None), estimate_output, output_ceiling or 0, output_ceiling
    )
    return input_tokens, output_tokens, input_estimated or (output_estimated and output_tokens > 0)


def _count(value: object, estimate: Callable[[], int], ceiling: int, bound: int | None = None) -> tuple[int, bool]:
    counted, estimated = _plausible(value, estimate, ceiling)
    if bound is not None and counted > bound:
        return bound, True
    return counted, estimated


def _plausible(value: object, estimate: Callable[[], int], ceiling: int) -> tuple[int, bool]:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TOKENS_PER_CALL:
        return estimate(), True
    if value <= ceiling or value <= IMPLAUSIBLE_FACTOR * _MIN_ESTIMATE:
        return value, False  # plausible whatever the estimate: no need to compute it
    estimated = estimate()
    if value <= IMPLAUSIBLE_FACTOR * max(_MIN_ESTIMATE, estimated):
        return value, False
    return estimated, True
