"""Results and value types shared by every capability."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from pulse_ai.errors import FailedAttempt, InputError

__all__ = [
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
class Usage:
    """What one call consumed. Add two with ``+``."""

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.requests + other.requests,
            self.cost_usd + other.cost_usd,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class EmbeddingResult:
    """``vectors`` is float32 of shape (len(texts), dimensions), in input order."""

    vectors: Vectors
    model: str
    vector_space: str
    usage: Usage
    truncated: int = 0
    failed_attempts: tuple[FailedAttempt, ...] = field(default=())

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


@dataclass(frozen=True)
class GenerationResult:
    text: str
    model: str
    usage: Usage
    finish_reason: str | None
    failed_attempts: tuple[FailedAttempt, ...] = field(default=())


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
