"""Field types of the configuration models: numbers, secrets, header parts and URLs, each checked at load time.

- Numbers are finite (no ``.inf``/``.nan``) and never booleans (YAML's ``true`` is not ``1``). Strings
  of digits stay accepted, because ``${VAR}`` interpolation always produces strings.
- A secret is not empty and is printable ASCII, so that it can travel in an HTTP header; otherwise the
  failure would surface later as an unreadable answer. Messages say where, never the value.
- A URL is ``http(s)://`` with a host and a valid port; otherwise the failure would surface later as
  "cannot connect" and count against the breaker. Messages do not repeat the URL (it may hold
  credentials).
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, AllowInfNan, BeforeValidator, Field, SecretStr

__all__ = [
    "Count",
    "Fraction",
    "HeaderName",
    "HeaderText",
    "HttpUrl",
    "NonNegativeSeconds",
    "NotBool",
    "Price",
    "Retries",
    "Seconds",
    "Secret",
]


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


NotBool = BeforeValidator(_not_bool)
_FINITE = AllowInfNan(False)

Count = Annotated[int, NotBool, Field(gt=0)]
"""A positive integer: sizes, limits, concurrency, window lengths."""
Retries = Annotated[int, NotBool, Field(ge=0, le=10)]
Seconds = Annotated[float, NotBool, _FINITE, Field(gt=0)]
"""A positive, finite duration."""
NonNegativeSeconds = Annotated[float, NotBool, _FINITE, Field(ge=0)]
Price = Annotated[float, NotBool, _FINITE, Field(ge=0)]
"""USD per million tokens."""
Fraction = Annotated[float, NotBool, _FINITE]
"""A finite float; bounds are given on the field."""


def _first_unsendable(text: str) -> int | None:
    for position, character in enumerate(text, start=1):
        if not " " <= character <= "~":
            return position
    return None


def _header_text(value: str) -> str:
    position = _first_unsendable(value)
    if position is not None:
        raise ValueError(
            f"character {position} is not printable ASCII (no control characters, no accents), "
            "and an HTTP header cannot carry it"
        )
    return value


def _secret(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not text:
        raise ValueError(
            "is empty (an unset variable with an empty default, `${VAR:-}`?); set it, "
            "or leave the key out where it is optional"
        )
    _header_text(text)
    if text != text.strip():
        raise ValueError("starts or ends with a space; is it a copy-paste left-over?")
    return value


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(
            "is not a valid HTTP header name: printable ASCII letters, digits and !#$%&'*+-.^_`|~ only, "
            "no spaces or colons"
        )
    return value


def _http_url(value: str) -> str:
    problem = "must be an http:// or https:// URL with a host, such as https://api.example.com/v1"
    if not value or any(character.isspace() or not character.isprintable() for character in value):
        raise ValueError(problem)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number or out of range
    except ValueError:
        raise ValueError(problem) from None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        raise ValueError(problem)
    return value


Secret = Annotated[SecretStr, AfterValidator(_secret)]
"""A credential sent in an HTTP header: not empty, printable ASCII, no surrounding spaces."""
HeaderText = Annotated[str, AfterValidator(_header_text)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
"""An ``http(s)://host...`` URL, kept as written."""
