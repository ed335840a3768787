"""Results and value types shared by every capability."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from pulse_ai.accounting import Attempt, Usage
from pulse_ai.errors import InputError

__all__ = [
    "Attempt",
    "EmbeddingResult",
    "GenerationParams",
    "GenerationResult",
    "Message",
    "Usage",
    "normalise_messages",
    "validate_texts",
]

Vectors = npt.NDArray[np.float32]


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
    max_tokens: int | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: list[str] | None = None
    seed: int | None = None


def validate_texts(texts: Sequence[str]) -> list[str]:
    """Check every text before anything is sent: a bad one is an error naming its index."""
    if isinstance(texts, str):
        raise InputError("texts must be a sequence of strings, not a single string; wrap it in a list")
    checked = list(texts)
    for index, text in enumerate(checked):
        if not isinstance(text, str):
            raise InputError(f"texts[{index}] is {type(text).__name__}, not str", index=index)
        if not text.strip():
            raise InputError(f"texts[{index}] is empty or whitespace only", index=index)
    return checked


def normalise_messages(messages: str | Sequence[Message | dict[str, str]]) -> list[Message]:
    if isinstance(messages, str):
        if not messages.strip():
            raise InputError("the prompt is empty")
        return [Message(role="user", content=messages)]
    result = []
    for index, message in enumerate(messages):
        try:
            result.append(message if isinstance(message, Message) else Message.model_validate(message))
        except ValueError as exc:
            raise InputError(f"messages[{index}] is not a valid message: {exc}", index=index) from None
    if not result:
        raise InputError("messages is empty")
    return result
