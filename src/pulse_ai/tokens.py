"""An offline token estimate, for packing requests without a tokenizer download.

BPE vocabularies cannot be fetched offline, so requests are packed with an estimate that errs on
the high side: ASCII word characters count one token per four, every other non-space character
(punctuation, accents, CJK) one token each. English prose comes out 10-40% above what OpenAI's
tokenizer counts, which keeps requests inside their limits.

The estimate is a regular expression over every character: for large inputs it runs in a worker
thread (``estimate_many``) so that the event loop keeps serving other calls meanwhile.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

__all__ = [
    "EMBEDDING_OVERHEAD_TOKENS",
    "MESSAGE_OVERHEAD_TOKENS",
    "OFF_LOOP_CHARACTERS",
    "REQUEST_OVERHEAD_TOKENS",
    "estimate_many",
    "estimate_tokens",
    "prompt_ceiling",
    "token_ceiling",
]

_PIECE = re.compile(r"[A-Za-z0-9_]{1,4}|[^\sA-Za-z0-9_]")
# Above this many characters in one call (about 1 ms of regex work), estimate in a worker thread.
OFF_LOOP_CHARACTERS = 50_000


def estimate_tokens(text: str) -> int:
    return max(1, sum(1 for _ in _PIECE.finditer(text)))


def _estimate_all(texts: Sequence[str]) -> list[int]:
    return [estimate_tokens(text) for text in texts]


async def estimate_many(texts: Sequence[str]) -> list[int]:
    """``estimate_tokens`` of every text, off the event loop when the texts are large."""
    if sum(len(text) for text in texts) <= OFF_LOOP_CHARACTERS:
        return _estimate_all(texts)
    return await asyncio.to_thread(_estimate_all, texts)


# Tokens of chat framing per message (role, separators) on top of its content, and per request
# (the answer's priming): generous, since a bound must not be below what a provider counts.
MESSAGE_OVERHEAD_TOKENS = 8
REQUEST_OVERHEAD_TOKENS = 8
# Tokens a model adds to each embedded text (a local model's [CLS] and [SEP]).
EMBEDDING_OVERHEAD_TOKENS = 2


def token_ceiling(texts: Sequence[str], per_text: int = 0, per_request: int = 0) -> int:
    """A bound no tokenizer exceeds: byte-level BPE (OpenAI's) makes at most one token per UTF-8
    byte, and WordPiece (local models) at most one per character, plus ``per_text`` framing tokens
    per text. Budgets reserve it, and a provider that reports more is not believed."""
    return per_request + sum(len(text.encode("utf-8", "surrogatepass")) + per_text for text in texts)


def prompt_ceiling(contents: Sequence[str]) -> int:
    """``token_ceiling`` of a chat request's messages, with their framing."""
    return token_ceiling(contents, MESSAGE_OVERHEAD_TOKENS, REQUEST_OVERHEAD_TOKENS)
