"""Scripted faults of the fake OpenAI-compatible server (``tests.fakes.openai_server``): one per
request, built with the class methods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Fault"]


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour. Build them with the class methods."""

    kind: str
    status: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    message: str | None = None
    value: Any = None
    media_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def http(cls, status: int, retry_after: float | None = None, message: str | None = None) -> Fault:
        return cls("status", status=status, retry_after=retry_after, message=message)

    @classmethod
    def ok(cls) -> Fault:
        """No fault: a placeholder in a script, for a request that should succeed."""
        return cls("ok")

    @classmethod
    def rate_limited(cls, retry_after: float | None = 0.2) -> Fault:
        return cls("status", status=429, retry_after=retry_after)

    @classmethod
    def floats(cls) -> Fault:
        """Answer embeddings as float lists whatever encoding_format asked (as some gateways do)."""
        return cls("floats")

    @classmethod
    def slow(cls, delay: float) -> Fault:
        return cls("slow", delay=delay)

    @classmethod
    def malformed(cls) -> Fault:
        return cls("malformed")

    @classmethod
    def too_few(cls) -> Fault:
        return cls("too_few")

    @classmethod
    def wrong_dimension(cls) -> Fault:
        return cls("wrong_dim")

    @classmethod
    def echo_key(cls) -> Fault:
        """A 401 whose error message and headers echo the credentials the request carried."""
        return cls("echo_key", status=401)

    @classmethod
    def echo_key_header(cls) -> Fault:
        """A good answer with a response header that echoes the request's credentials."""
        return cls("echo_key_header")

    @classmethod
    def echo_key_in_vector(cls) -> Fault:
        """An embedding answer whose first vector is the request's credentials, as a float list of one string."""
        return cls("echo_key_in_vector")

    @classmethod
    def redirect(cls, location: str, status: int = 307) -> Fault:
        return cls("redirect", status=status, message=location)

    @classmethod
    def trickle(cls, seconds: float, pieces: int = 20, media_type: str = "application/json") -> Fault:
        """A good answer whose body arrives in ``pieces`` over ``seconds``, labelled ``media_type``."""
        return cls("trickle", delay=seconds, value=pieces, media_type=media_type)

    @classmethod
    def cut_stream(cls, after: int | None = None) -> Fault:
        """A stream that ends cleanly after ``after`` deltas (default: all of them), with no
        finish_reason, no usage and no [DONE]."""
        return cls("cut_stream", value=after)

    @classmethod
    def usage(cls, value: Any) -> Fault:
        """A good answer whose `usage` is ``value`` (``"missing"`` drops the key)."""
        return cls("usage", value=value)

    @classmethod
    def zero_vector(cls) -> Fault:
        return cls("zero_vector")

    @classmethod
    def scaled(cls, factor: float) -> Fault:
        """Vectors multiplied by ``factor`` (not unit length)."""
        return cls("scaled", value=factor)

    @classmethod
    def slow_stream(cls, delay: float) -> Fault:
        """A stream that waits ``delay`` seconds between deltas."""
        return cls("slow_stream", delay=delay)

    @classmethod
    def stall_stream(cls, every: float, mode: str = "comment", after: int = 0, count: int = 100) -> Fault:
        """A stream that sends ``after`` deltas, then ``count`` keep-alives ``every`` seconds (SSE
        comments for ``mode="comment"``, chunks with an empty delta for ``"empty"``), then the rest."""
        return cls("stall_stream", delay=every, message=mode, value=(after, count))

    @classmethod
    def events(cls, *events: Any) -> Fault:
        """A streamed answer made of exactly these SSE ``data:`` payloads (a str is sent as it is,
        anything else as JSON), then ``[DONE]``."""
        return cls("events", value=events)

    @classmethod
    def answer(cls, body: Any, media_type: str = "application/json", headers: dict[str, str] | None = None) -> Fault:
        """A 200 whose body is ``body`` (a str as it is, anything else as JSON), with ``headers``."""
        return cls("answer", value=body, media_type=media_type, headers=tuple((headers or {}).items()))

    @classmethod
    def encoded(cls, encoding: str = "gzip", pad: int = 0) -> Fault:
        """A good answer followed by ``pad`` bytes of whitespace, compressed with ``encoding``
        (gzip, deflate, or identity: not compressed) whatever the request accepted."""
        return cls("encoded", message=encoding, value=pad)
