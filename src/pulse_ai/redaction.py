"""Secrets never reach a log line or an error text, whoever writes it.

Every configured secret (API keys, gateway header values) is registered here when its provider is
built. ``redact`` removes registered secrets and anything shaped like a key; it always runs before
a text is truncated, so a cut can never leave the first characters of a key behind.

The HTTP stack logs on its own (the openai SDK at DEBUG logs request options and response
headers; httpx/httpcore log connection traces with headers): a filter on those loggers rewrites
each record through ``redact`` before any handler sees it. A filter on a logger applies only to
records created at that logger, so it is attached to every logger of those libraries by name.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

__all__ = ["install_log_redaction", "redact", "register_secrets", "truncate"]

# sk-..., key-..., Bearer ..., and the common "api-key: value" / "api_key=value" shapes
_KEY_LIKE = re.compile(
    r"(?i)\b(sk-|key-|pk_[a-z]+_|bearer\s+|api[-_]?key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9_\-*.+/=]{4,}"
)
_LOGGERS = (
    "openai",
    "openai._base_client",
    "openai._response",
    "openai._legacy_response",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    *(f"httpcore.{part}" for part in ("connection", "connection_pool", "http11", "http2", "proxy", "socks")),
    *(f"httpcore2.{part}" for part in ("connection", "connection_pool", "http11", "http2", "proxy", "socks")),
)
_secrets: set[str] = set()
_lock = threading.Lock()
_installed: set[str] = set()
# Shorter values are not secrets worth redacting by value (they would mangle ordinary words).
MIN_SECRET_LENGTH = 6


def register_secrets(values: Iterable[str]) -> None:
    """Remember values that must never appear in a log line or an error."""
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every registered secret (and ``extra``) and every key-shaped token replaced."""
    with _lock:
        known = sorted({*_secrets, *(e for e in extra if e and len(e) >= MIN_SECRET_LENGTH)}, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, "***")
    return _KEY_LIKE.sub(lambda match: f"{match.group(1)}***", text)


def truncate(text: str, limit: int = 500) -> str:
    """Cut a text that was already redacted."""
    return text if len(text) <= limit else f"{text[:limit]}…"


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler's own error path
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = _RedactingFilter()


def install_log_redaction() -> None:
    """Attach the redacting filter to the HTTP stack's loggers (idempotent)."""
    with _lock:
        names = set(_LOGGERS)
        names.update(
            name
            for name in list(logging.root.manager.loggerDict)
            if name.split(".", 1)[0] in {"openai", "httpx", "httpx2", "httpcore", "httpcore2"}
        )
        for name in names - _installed:
            logging.getLogger(name).addFilter(_FILTER)
            _installed.add(name)
