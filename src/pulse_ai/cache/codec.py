"""How entries are stored: vectors as float32 bytes behind a checked header; answers as JSON.

A vector entry is a 24-byte header (magic, dimensions, a tag of the vector space, the tokens the
text cost, a CRC-32 of the vector bytes) followed by ``dimensions`` little-endian float32 values.
Reading one checks all of it: an entry of the wrong length, of another size or space, with a bad
checksum or a non-finite value is reported as corrupt (``None``): the caller drops and recomputes
it. A corrupt entry is never returned.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Answer",
    "bind",
    "decode_answer",
    "decode_json",
    "decode_vector",
    "encode_answer",
    "encode_json",
    "encode_vector",
    "unbind",
]

_HEADER = struct.Struct("<4sI8sII")
_MAGIC = b"PVC1"
_JSON_MAGIC = b"PJ1\n"


_BOUND_MAGIC = b"PKB1"
_KEY_TAG_BYTES = 16
_BOUND_HEAD = len(_BOUND_MAGIC) + _KEY_TAG_BYTES


def _key_tag(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8"), digest_size=_KEY_TAG_BYTES, person=b"pulse-ai-key").digest()


def bind(key: str, value: bytes) -> bytes:
    """``value`` as stored under ``key``: prefixed with a digest of the key, so that a value read
    back under another key (a row copied, tampered with or mixed up, a hash collision of the keys'
    storage) is recognised as not this key's (``unbind``)."""
    return _BOUND_MAGIC + _key_tag(key) + value


def unbind(key: str, entry: bytes) -> bytes | None:
    """The value stored under ``key``, or None when ``entry`` was not stored under this key."""
    if len(entry) < _BOUND_HEAD or not entry.startswith(_BOUND_MAGIC):
        return None
    if entry[len(_BOUND_MAGIC) : _BOUND_HEAD] != _key_tag(key):
        return None
    return entry[_BOUND_HEAD:]


def space_tag(vector_space: str) -> bytes:
    return hashlib.blake2b(vector_space.encode("utf-8"), digest_size=8).digest()


def encode_vector(vector: npt.NDArray[np.float32], tag: bytes, tokens: int) -> bytes:
    body = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    return _HEADER.pack(_MAGIC, vector.shape[0], tag, min(max(tokens, 0), 0xFFFFFFFF), zlib.crc32(body)) + body


def decode_vector(entry: bytes, dimensions: int, tag: bytes) -> tuple[npt.NDArray[np.float32], int] | None:
    """The vector and its tokens, or None when the entry is not a sound vector of this space."""
    if len(entry) != _HEADER.size + 4 * dimensions:
        return None
    magic, dims, stored_tag, tokens, crc = _HEADER.unpack_from(entry)
    if magic != _MAGIC or dims != dimensions or stored_tag != tag:
        return None
    body = memoryview(entry)[_HEADER.size :]
    if zlib.crc32(body) != crc:
        return None
    vector = np.frombuffer(body, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all() or not vector.any():
        return None
    return vector, int(tokens)


def encode_json(value: Any) -> bytes:
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    return _JSON_MAGIC + zlib.crc32(body).to_bytes(4, "little") + body


def decode_json(entry: bytes) -> Any | None:
    """The stored value, or None when the entry is damaged."""
    head = len(_JSON_MAGIC) + 4
    if len(entry) < head or not entry.startswith(_JSON_MAGIC):
        return None
    body = entry[head:]
    if zlib.crc32(body) != int.from_bytes(entry[len(_JSON_MAGIC) : head], "little"):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


@dataclass(frozen=True)
class Answer:
    """A cached generation answer and what the call that produced it consumed."""

    text: str
    model: str
    finish_reason: str | None
    input_tokens: int
    output_tokens: int


def encode_answer(answer: Answer) -> bytes:
    return encode_json(
        {
            "text": answer.text,
            "model": answer.model,
            "finish_reason": answer.finish_reason,
            "input_tokens": answer.input_tokens,
            "output_tokens": answer.output_tokens,
        }
    )


def decode_answer(entry: bytes) -> Answer | None:
    value = decode_json(entry)
    if not isinstance(value, dict):
        return None
    try:
        answer = Answer(
            str(value["text"]),
            str(value["model"]),
            None if value["finish_reason"] is None else str(value["finish_reason"]),
            int(value["input_tokens"]),
            int(value["output_tokens"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return answer
