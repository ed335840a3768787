"""Field types of the configuration models: numbers, secrets, header parts and URLs, each checked at load time.

- Numbers are finite (no ``.inf``/``.nan``) and never booleans (YAML's ``true`` is not ``1``). Strings
  of digits stay accepted, because ``${VAR}`` interpolation always produces strings.
- A secret is not empty and is printable ASCII, so that it can travel in an HTTP header; otherwise the
  failure would surface later as an unreadable answer. An API key has at least 8 characters and a
  header value at least 4: a shorter value could not be redacted from logs by value without mangling
  ordinary words. Messages say where, never the value.
- A URL is ``http(s)://`` with a host and a valid port, and no ``user:password@``: the HTTP stack logs
  request URLs, so a credential belongs in ``api_key`` (or a gateway's ``headers``), never in a URL.
  Otherwise the failure would surface later as "cannot connect" and count against the breaker.
  Messages do not repeat the URL.
- A provider timeout is at least ``MIN_TIMEOUT_SECONDS``: below that every request would time out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import AfterValidator, AllowInfNan, BeforeValidator, Field, SecretStr

__all__ = [
    "MIN_API_KEY_LENGTH",
    "MIN_HEADER_SECRET_LENGTH",
    "MIN_TIMEOUT_SECONDS",
    "ApiKey",
    "Count",
    "Fraction",
    "HeaderName",
    "HeaderText",
    "HttpUrl",
    "NonNegativeSeconds",
    "NotBool",
    "OptionalApiKey",
    "Price",
    "Retries",
    "Seconds",
    "Secret",
    "Timeout",
    "url_passwords",
    "url_without_password",
]

MIN_API_KEY_LENGTH = 8
MIN_HEADER_SECRET_LENGTH = 4
MIN_TIMEOUT_SECONDS = 0.1


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
Timeout = Annotated[float, NotBool, _FINITE, Field(ge=MIN_TIMEOUT_SECONDS)]
"""A provider's deadline per request: finite, and long enough for an answer to arrive at all."""
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


def _at_least(length: int, what: str) -> Callable[[SecretStr], SecretStr]:
    def check(value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value()) < length:
            raise ValueError(
                f"is shorter than {length} characters: not a real {what}, and too short to be redacted "
                "from logs by value; use the real one"
            )
        return value

    return check


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
    if parts.password is not None:
        raise ValueError(
            "must not hold a password (`user:password@host`): the HTTP stack logs request URLs; give "
            "the credential as `api_key` (or, for a gateway, in `headers`)"
        )
    return value


def url_passwords(url: str) -> list[str]:
    """The password of a ``scheme://user:password@host/...`` URL, as written and percent-decoded
    (none when there is none)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return sorted({password, unquote(password)}) if password else []


def url_without_password(url: str) -> str:
    """``url`` with its password shown as ``***`` (for reprs and messages)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<a URL that cannot be read>"
    if not password:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


Secret = Annotated[SecretStr, AfterValidator(_secret), AfterValidator(_at_least(MIN_HEADER_SECRET_LENGTH, "secret"))]
"""A credential sent in an HTTP header: not empty, printable ASCII, no surrounding spaces, 4+ characters."""
ApiKey = Annotated[SecretStr, AfterValidator(_secret), AfterValidator(_at_least(MIN_API_KEY_LENGTH, "API key"))]
"""An API key: a ``Secret`` of at least 8 characters."""
OptionalApiKey = Annotated[SecretStr, AfterValidator(_at_least(MIN_API_KEY_LENGTH, "API key"))]
"""An API key where empty means none (``${VAR:-}``); otherwise at least 8 characters."""
HeaderText = Annotated[str, AfterValidator(_header_text)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
"""An ``http(s)://host...`` URL, kept as written."""
