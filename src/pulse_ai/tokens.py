"""Token counts: exact where the model's tokenizer is known, a high-side estimate otherwise.

OpenAI and Azure models are counted with their real BPE encoding (``cl100k_base``, ``o200k_base``:
the catalog names each model's), through tiktoken with the encoding files shipped in
``pulse_ai/encodings`` (tiktoken's own download does not work offline), each checked against the
SHA-256 tiktoken pins for it. Local models count with their own tokenizer, in the provider.

A model whose tokenizer is unknown (a gateway's) gets the estimate, which errs on the high side:
ASCII word characters count one token per four, every other character one token per UTF-8 byte
(the most a byte-level BPE makes of it: punctuation 1, accents 2, CJK 3, emoji 4), and whitespace
one token a character except a single space between two words (which BPE joins to the next word).
English prose comes out 10-40% above what OpenAI's tokenizer counts; runs of spaces or newlines,
emoji and rare CJK, which it once undercounted, are now above it too.

Counting is CPU work over every character: for large inputs (and while an encoding is first being
loaded) it runs in a worker thread (``count_many``) so that the event loop keeps serving other calls.
Budgets do not reserve from counts: they reserve ``token_ceiling``, a bound no tokenizer exceeds.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import re
import threading
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING

from pulse_ai.errors import ConfigError

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "EMBEDDING_OVERHEAD_TOKENS",
    "ENCODINGS",
    "MESSAGE_OVERHEAD_TOKENS",
    "OFF_LOOP_CHARACTERS",
    "REQUEST_OVERHEAD_TOKENS",
    "count_many",
    "count_tokens",
    "encoding",
    "estimate_many",
    "estimate_tokens",
    "prepare",
    "prompt_ceiling",
    "token_ceiling",
]

_WORD_PIECE = re.compile(r"[A-Za-z0-9_]{1,4}")
_WHITESPACE = re.compile(r"\s")
_JOINING_SPACE = re.compile(r"(?<=\S) (?=\S)")
_OTHER = re.compile(r"[^\sA-Za-z0-9_]+")
# Above this many characters in one call (about 1 ms of regex work), estimate in a worker thread.
OFF_LOOP_CHARACTERS = 50_000


def estimate_tokens(text: str) -> int:
    """The high-side estimate (module docstring) of ``text``'s tokens, at least 1."""
    words = sum(1 for _ in _WORD_PIECE.finditer(text))
    spaces = sum(1 for _ in _WHITESPACE.finditer(text)) - sum(1 for _ in _JOINING_SPACE.finditer(text))
    other = sum(len(run.group().encode("utf-8", "surrogatepass")) for run in _OTHER.finditer(text))
    return max(1, words + spaces + other)


def _estimate_all(texts: Sequence[str]) -> list[int]:
    return [estimate_tokens(text) for text in texts]


async def estimate_many(texts: Sequence[str]) -> list[int]:
    """``estimate_tokens`` of every text, off the event loop when the texts are large."""
    if sum(len(text) for text in texts) <= OFF_LOOP_CHARACTERS:
        return _estimate_all(texts)
    return await asyncio.to_thread(_estimate_all, texts)


# The encodings shipped with pulse-ai: the SHA-256 of each decompressed file (tiktoken pins the same),
# its split pattern and special tokens (from tiktoken_ext/openai_public.py, MIT).
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
ENCODINGS: dict[str, tuple[str, str, dict[str, int]]] = {
    "cl100k_base": (
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        _CL100K_PATTERN,
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
    "o200k_base": (
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        _O200K_PATTERN,
        {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
}
_encodings: dict[str, tiktoken.Encoding] = {}
_encodings_lock = threading.Lock()


def encoding(name: str) -> tiktoken.Encoding:
    """The named BPE encoding, loaded once from the shipped file (about a second for o200k_base)."""
    with _encodings_lock:
        if name not in _encodings:
            _encodings[name] = _load_encoding(name)
        return _encodings[name]


def _load_encoding(name: str) -> tiktoken.Encoding:
    if name not in ENCODINGS:
        raise ConfigError(f"unknown token encoding {name!r}; pulse-ai ships {', '.join(sorted(ENCODINGS))}")
    import tiktoken

    expected_sha256, pattern, special_tokens = ENCODINGS[name]
    packed = resources.files("pulse_ai").joinpath(f"encodings/{name}.tiktoken.gz").read_bytes()
    data = gzip.decompress(packed)
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ConfigError(f"the shipped encoding file {name}.tiktoken is damaged (its SHA-256 does not match)")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_tokens)


async def prepare(encoding_name: str | None) -> None:
    """Load the encoding in a worker thread if it is not loaded yet, so that counting it later on
    the event loop never waits for the file."""
    if encoding_name is not None and encoding_name not in _encodings:
        await asyncio.to_thread(encoding, encoding_name)


def count_tokens(text: str, encoding_name: str | None) -> int:
    """Tokens of ``text`` in the named encoding (special-token text counts as plain text, as the API
    treats user input), or the estimate when the model's encoding is unknown (``None``)."""
    if encoding_name is None:
        return estimate_tokens(text)
    return len(encoding(encoding_name).encode_ordinary(text))


def _count_all(texts: Sequence[str], encoding_name: str | None) -> list[int]:
    if encoding_name is None:
        return _estimate_all(texts)
    bpe = encoding(encoding_name)
    return [len(bpe.encode_ordinary(text)) for text in texts]


async def count_many(texts: Sequence[str], encoding_name: str | None) -> list[int]:
    """``count_tokens`` of every text, off the event loop when the texts are large or the encoding
    is not loaded yet."""
    small = sum(len(text) for text in texts) <= OFF_LOOP_CHARACTERS
    if small and (encoding_name is None or encoding_name in _encodings):
        return _count_all(texts, encoding_name)
    return await asyncio.to_thread(_count_all, texts, encoding_name)


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
