"""Credentials in the configuration: long enough to be redacted, never in a URL that gets logged,
never in a repr; and the odd values around them (a wrong `type`, a timeout no request can meet)."""

from __future__ import annotations

import pytest

from pulse_ai import ConfigError, load_config_text
from pulse_ai.redaction import redact

MODELS = "models: [{name: gpt-4o-mini}]"


def _refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, environ={})
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (f"providers:\n  oa: {{type: openai, api_key: 'Xy7+abc', {MODELS}}}\n", "providers.oa.api_key"),
        (
            "providers:\n  az: {type: azure_openai, endpoint: 'https://x.example.com', api_key: 'Xy7+abc',"
            f" api_version: v, {MODELS}}}\n",
            "providers.az.api_key",
        ),
        (
            "providers:\n  gw: {type: custom_gateway, base_url: 'http://gw.example.com/v1', api_key: 'Xy7+abc',"
            f" {MODELS}}}\n",
            "providers.gw.api_key",
        ),
        (
            f"providers:\n  oa: {{type: openai, api_key: sk-12345, {MODELS}}}\n"
            "vector_store: {backend: qdrant, url: 'http://q.example.com:6333', api_key: 'Xy7+abc'}\n",
            "vector_store.api_key",
        ),
    ],
)
def test_api_keys_shorter_than_8_characters_are_refused_without_the_value(text: str, path: str) -> None:
    message = _refused(text)
    assert path in message and "8 characters" in message
    assert "Xy7+abc" not in message


def test_gateway_header_values_shorter_than_4_characters_are_refused() -> None:
    text = (
        "providers:\n  gw: {type: custom_gateway, base_url: 'http://gw.example.com/v1', "
        f"headers: {{X-Team: 'Q7z'}}, {MODELS}}}\n"
    )
    message = _refused(text)
    assert "providers.gw.headers.X-Team" in message and "4 characters" in message
    assert "Q7z" not in message
    four = load_config_text(text.replace("'Q7z'", "'Q7zW'"))
    assert four.config.providers["gw"].headers["X-Team"].get_secret_value() == "Q7zW"  # type: ignore[union-attr]


def test_every_configured_secret_is_registered_for_redaction_at_load() -> None:
    load_config_text(
        "providers:\n  gw: {type: custom_gateway, base_url: 'http://gw.example.com/v1', api_key: 'gw-Key-8e5d1c',"
        f" headers: {{X-Team: 'Hd9q'}}, {MODELS}}}\n"
        "vector_store: {backend: qdrant, url: 'http://q.example.com:6333', api_key: 'qd-Key-1f2e3d'}\n"
        "database: {url: 'postgresql://app:Db%40Pass-77@db.example.com:5432/pulse'}\n"
    )
    text = "gw-Key-8e5d1c / Hd9q / qd-Key-1f2e3d / Db@Pass-77 / Db%40Pass-77"
    assert redact(text) == "*** / *** / *** / *** / ***"


@pytest.mark.parametrize(
    ("block", "path"),
    [
        (
            f"oa: {{type: openai, api_key: sk-12345, base_url: 'https://svc:Pw-in-url-1@gw.example.com/v1', {MODELS}}}",
            "providers.oa.base_url",
        ),
        (
            "az: {type: azure_openai, endpoint: 'https://svc:Pw-in-url-1@x.example.com', api_key: sk-12345,"
            f" api_version: v, {MODELS}}}",
            "providers.az.endpoint",
        ),
        (
            f"gw: {{type: custom_gateway, base_url: 'http://svc:Pw-in-url-1@gw.example.com/v1', {MODELS}}}",
            "providers.gw.base_url",
        ),
        (f"gw: {{type: custom_gateway, base_url: 'http://svc:@gw.example.com/v1', {MODELS}}}", "providers.gw.base_url"),
    ],
)
def test_a_password_in_a_provider_url_is_refused(block: str, path: str) -> None:
    message = _refused(f"providers:\n  {block}\n")
    assert path in message and "api_key" in message and "password" in message
    assert "Pw-in-url-1" not in message


def test_a_password_in_the_vector_store_url_is_refused() -> None:
    message = _refused(
        f"providers:\n  oa: {{type: openai, api_key: sk-12345, {MODELS}}}\n"
        "vector_store: {backend: qdrant, url: 'http://admin:Qd-Password-9@127.0.0.1:6333'}\n"
    )
    assert "vector_store.url" in message and "api_key" in message
    assert "Qd-Password-9" not in message


def test_the_database_password_is_in_no_repr() -> None:
    loaded = load_config_text(
        f"providers:\n  oa: {{type: openai, api_key: sk-12345, {MODELS}}}\n"
        "database: {url: 'postgresql://app:Db-Password-99@db.example.com:5432/pulse'}\n"
    )
    database = loaded.config.database
    assert database.url == "postgresql://app:Db-Password-99@db.example.com:5432/pulse"  # usable as it is
    for shown in (repr(loaded), repr(loaded.config), str(loaded.config), repr(database), str(database)):
        assert "Db-Password-99" not in shown
    assert "postgresql://app:***@db.example.com:5432/pulse" in repr(database)


def test_a_database_url_whose_port_is_not_a_number_is_refused_at_load() -> None:
    message = _refused(
        f"providers:\n  oa: {{type: openai, api_key: sk-12345, {MODELS}}}\n"
        "database: {url: 'postgresql://app:Db-Password-99@db.example.com:notaport/pulse'}\n"
    )
    assert "database.url" in message and "port" in message
    assert "Db-Password-99" not in message


def test_a_wrong_provider_type_is_not_echoed() -> None:
    message = _refused("providers:\n  p: {type: sk-SECRETVAL-123, models: [{name: x}]}\n")
    assert "providers.p" in message and "openai" in message
    assert "SECRETVAL" not in message


@pytest.mark.parametrize("timeout", ["1e-300", "0.0001", "0.05"])
def test_a_timeout_no_request_can_meet_is_refused(timeout: str) -> None:
    message = _refused(f"providers:\n  oa: {{type: openai, api_key: sk-12345, timeout: {timeout}, {MODELS}}}\n")
    assert "providers.oa.timeout" in message and "0.1" in message
