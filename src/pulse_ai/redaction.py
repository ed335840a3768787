"""Secrets never reach a log line or an error text, whoever writes it.

Every configured secret (API keys, gateway header values, a database password) is registered here
when its configuration is loaded and when its provider is built. ``redact`` removes registered
secrets and anything shaped like a key; it always runs before a text is truncated, so a cut can
never leave the first characters of a key behind.

A secret is also removed in every escaped form a text may hold it in: Python's ``repr`` (an error
quoting a value: ``'Zq\\\\Xw'``), JSON (a response body), a ``bytes`` repr (httpcore logs headers
as ``(b'x-echo', b'...')``), percent-encoding (a URL), and each of those escaped once more. A key
holding ``\\``, ``'`` or ``"`` is therefore redacted wherever it is echoed. Configuration refuses
API keys shorter than 8 characters and header values shorter than 4, so every secret is long
enough to be redacted by value (``MIN_SECRET_LENGTH``).

The HTTP stack logs on its own (the openai SDK at DEBUG logs request options and response
headers; httpx/httpcore log connection traces with headers): a filter on those loggers rewrites
each record through ``redact`` before any handler sees it. A filter on a logger applies only to
records created at that logger, so it is attached to every logger of those libraries by name.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote

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
_forms: list[str] = []  # every escaped form of every registered secret, longest first
_lock = threading.Lock()
_installed: set[str] = set()
# Shorter values are not redacted by value (they would mangle ordinary words); configuration refuses
# API keys shorter than 8 characters and header values shorter than this.
MIN_SECRET_LENGTH = 4


def escaped_forms(secret: str) -> set[str]:
    """``secret`` as it appears once escaped by repr (either quote), JSON, a bytes repr or a URL,
    and escaped twice (a repr of a text that already held a repr, a JSON body quoting a repr...)."""
    forms = {secret}
    for _ in range(2):
        for form in list(forms):
            forms.update(_escape_once(form))
    return {form for form in forms if form}


def _escape_once(text: str) -> set[str]:
    backslashed = text.replace("\\", "\\\\")
    return {
        repr(text)[1:-1],
        backslashed.replace("'", "\\'"),  # repr's escaping inside '...' when both quotes occur
        backslashed.replace('"', '\\"'),
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        repr(text.encode("utf-8", "backslashreplace"))[2:-1],
        quote(text, safe=""),
    }


def register_secrets(values: Iterable[str]) -> None:
    """Remember values that must never appear in a log line or an error (in any escaped form)."""
    global _forms
    with _lock:
        new = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH} - _secrets
        if not new:
            return
        _secrets.update(new)
        forms = set(_forms)
        for secret in new:
            forms.update(escaped_forms(secret))
        _forms = sorted(forms, key=len, reverse=True)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every registered secret (and ``extra``), in every escaped form, and every
    key-shaped token replaced."""
    with _lock:
        known = _forms
    extras = {form for e in extra if e and len(e) >= MIN_SECRET_LENGTH for form in escaped_forms(e)}
    if extras:
        known = sorted({*known, *extras}, key=len, reverse=True)
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
