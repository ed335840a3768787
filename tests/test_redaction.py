"""Redaction by value: every escaped form a text may hold a secret in, and short secrets too."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest

from pulse_ai.redaction import install_log_redaction, redact, register_secrets

SHAPES = {
    "backslash": r"Zq\Xw\Secret9876543210",
    "quotes": "Zq'Xw\"Secret9876543211",
    "single-quote": "Zq'Xw-Secret9876543212",
    "all-three": "Zq\\'Xw\"Secret9876543213",
}


def renderings(secret: str) -> dict[str, str]:
    """The ways a secret reaches a text: as it is, in a repr (an error quoting a value), in JSON (a
    response body), in a bytes repr (httpcore's DEBUG lines), in a URL, and a repr of each of those."""
    once = {
        "plain": f"key {secret} refused",
        "repr": f"could not convert string to float: {secret!r}",
        "json": json.dumps({"error": {"message": f"bad key {secret}"}}),
        "bytes-repr": repr([(b"x-echo", secret.encode())]),
        "url": f"http://gw.example.com/v1?key={quote(secret, safe='')}",
    }
    twice = {f"repr-of-{name}": repr(text) for name, text in once.items()}
    twice["json-of-repr"] = json.dumps({"detail": repr(secret)})
    return {**once, **twice}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_secret_is_redacted_in_every_escaped_form(shape: str) -> None:
    secret = SHAPES[shape]
    register_secrets([secret])
    tail = secret[-10:]
    for name, text in renderings(secret).items():
        assert tail in text, f"{name}: the rendering does not hold the secret: this test proves nothing"
        cleaned = redact(text)
        assert tail not in cleaned, f"{name}: {cleaned}"
        assert "***" in cleaned


def test_extra_secrets_are_redacted_in_every_escaped_form_too() -> None:
    secret = r"Ex\tra'Key\"5550001"
    for text in renderings(secret).values():
        assert "5550001" not in redact(text, extra=[secret])


def test_secrets_of_4_characters_or_more_are_redacted() -> None:
    register_secrets(["t0k3", "Zq9pL"])
    assert redact("token=t0k3 other=Zq9pL") == "token=*** other=***"
    register_secrets(["abc"])  # configuration refuses these; they are too short to redact by value
    assert redact("abc") == "abc"


def test_the_log_filter_redacts_bytes_reprs_of_headers(caplog: pytest.LogCaptureFixture) -> None:
    secret = SHAPES["all-three"]
    register_secrets([secret])
    install_log_redaction()
    with caplog.at_level(logging.DEBUG, logger="httpcore2.http11"):
        answer = (b"HTTP/1.1", 200, b"OK", [(b"x-echo", secret.encode())])
        logging.getLogger("httpcore2.http11").debug("receive_response_headers.complete return_value=%r", answer)
    (record,) = caplog.records
    assert "9876543213" not in record.getMessage() and "***" in record.getMessage()
