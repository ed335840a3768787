"""Results and value types shared by every capability."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pulse_ai.accounting import Attempt, Usage
from pulse_ai.errors import InputError

__all__ = [
    "Attempt",
    "EmbeddingResult",
    "GenerationParams",
    "GenerationResult",
    "Message",
    "Usage",
    "check_params",
    "normalise_messages",
    "one_line",
    "validate_texts",
]

Vectors = npt.NDArray[np.float32]
MAX_OUTPUT_TOKENS = 1_000_000


@dataclass(frozen=True)
class EmbeddingResult:
    """``vectors`` is float32 of shape (len(texts), dimensions), in input order.

    ``model`` is the candidate that served the last inputs; when a fallback served only the inputs
    another candidate failed, ``attempts`` shows the split (every attempt, failed ones included),
    and ``usage`` is the sum of every attempt's usage: what the request cost.
    """

    vectors: Vectors
    model: str
    vector_space: str
    usage: Usage
    truncated: int = 0
    attempts: tuple[Attempt, ...] = field(default=())
    cached: int = 0
    request_id: str | None = None  # the ledger's request id (its rows carry it)

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def failed_attempts(self) -> tuple[Attempt, ...]:
        return tuple(a for a in self.attempts if not a.ok)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


@dataclass(frozen=True)
class GenerationResult:
    text: str
    model: str
    usage: Usage
    finish_reason: str | None
    attempts: tuple[Attempt, ...] = field(default=())
    cached: bool = False
    request_id: str | None = None  # the ledger's request id (its rows carry it)

    @property
    def failed_attempts(self) -> tuple[Attempt, ...]:
        return tuple(a for a in self.attempts if not a.ok)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    # no model answers with more; a larger value would only inflate the budget reservation
    max_tokens: int | None = Field(default=None, gt=0, le=MAX_OUTPUT_TOKENS)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: list[str] | None = Field(default=None, max_length=16)
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)

    @field_validator("stop")
    @classmethod
    def _valid_unicode(cls, value: list[str] | None) -> list[str] | None:
        found = lone_surrogate(value, "stop")
        if found:
            raise ValueError(found)
        return value


def validate_texts(texts: Sequence[str]) -> list[str]:
    """Check every text before anything is sent: a bad one is an error naming its index. ``texts``
    is a list (or tuple, or any ordered iterable) of strings; a string, bytes, a mapping or a set
    is refused rather than read element by element."""
    if isinstance(texts, str):
        raise InputError("texts must be a sequence of strings, not a single string; wrap it in a list")
    if isinstance(texts, (bytes, bytearray, Mapping, AbstractSet)) or not isinstance(texts, Iterable):
        raise InputError(f"texts must be a list of strings, not {type(texts).__name__}")
    checked = list(texts)
    for index, text in enumerate(checked):
        if not isinstance(text, str):
            raise InputError(f"texts[{index}] is {type(text).__name__}, not str", index=index)
        if not text.strip():
            raise InputError(f"texts[{index}] is empty or whitespace only", index=index)
        _check_unicode(text, f"texts[{index}]", index)
    return checked


def _check_unicode(text: str, where: str, index: int | None) -> None:
    """A lone surrogate (half of a UTF-16 pair, e.g. from a bad decode) cannot be sent or encoded."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{where} holds a lone surrogate at character {exc.start} (U+{ord(text[exc.start]):04X}): "
            "not valid Unicode text; fix how it was decoded",
            index=index,
        ) from None


def lone_surrogate(value: object, where: str) -> str | None:
    """Where in ``value`` (strings, and the keys and values of mappings and lists, nested) a lone
    surrogate is, as a message naming the path (``where.messages[0].name``); None when there is none.
    The offending text is never echoed (it cannot even be encoded)."""
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"{where or 'the value'} holds a lone surrogate at character {exc.start} "
                f"(U+{ord(value[exc.start]):04X}): not valid Unicode text; fix how it was decoded"
            )
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and (found := lone_surrogate(key, f"{where} key {key!a}".strip())):
                return found
            name = key if isinstance(key, str) and key.isidentifier() else ascii(key)
            if found := lone_surrogate(item, f"{where}.{name}" if where else str(name)):
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if found := lone_surrogate(item, f"{where}[{index}]"):
                return found
    return None


def check_unicode_fields(value: object, where: str) -> None:
    """``InputError`` naming the path when ``value`` holds a lone surrogate anywhere."""
    found = lone_surrogate(value, where)
    if found:
        raise InputError(found)


def one_line(error: ValidationError, prefix: str) -> str:
    """A pydantic validation error as ``prefix.field: problem; ...`` on one line."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"])
        problems.append(f"{prefix}{where}: {item['msg']}")
    return "; ".join(problems)


def check_params(params: object) -> GenerationParams:
    """``GenerationParams``, a mapping of its fields, or None (the defaults)."""
    if params is None:
        return GenerationParams()
    if isinstance(params, GenerationParams):
        return params
    if isinstance(params, Mapping):
        try:
            return GenerationParams.model_validate(dict(params))
        except ValidationError as exc:
            raise InputError(one_line(exc, "params")) from None
    raise InputError(f"params must be GenerationParams (or a dict of its fields), not {type(params).__name__}")


def normalise_messages(messages: str | Sequence[Message | dict[str, str]]) -> list[Message]:
    if isinstance(messages, str):
        if not messages.strip():
            raise InputError("the prompt is empty")
        _check_unicode(messages, "the prompt", None)
        return [Message(role="user", content=messages)]
    if isinstance(messages, (bytes, bytearray, Mapping, AbstractSet)) or not isinstance(messages, Iterable):
        raise InputError(
            f"messages must be a prompt string or a list of messages, not {type(messages).__name__} "
            "(a single message goes in a list)"
        )
    result = []
    for index, message in enumerate(messages):
        try:
            checked = message if isinstance(message, Message) else Message.model_validate(message)
        except ValidationError as exc:
            raise InputError(one_line(exc, f"messages[{index}]"), index=index) from None
        _check_unicode(checked.content, f"messages[{index}].content", index)
        result.append(checked)
    if not result:
        raise InputError("messages is empty")
    return result
