"""Provider credentials are checked when written (M4): non-empty, one line, no whitespace or control
characters, bounded length, a known provider when the configuration is known; the error says what is
wrong and never holds the secret, nor does any log line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from pulse_ai.db import Credentials, Database, SecretKeyring
from pulse_ai.db.credentials import MAX_SECRET_CHARS
from pulse_ai.errors import InputError
from tests.db.conftest import unique_tenant_id
from tests.db.test_cli_admin import invoke

SECRET = "sk-VERY-SECRET-abc123"


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("", "empty"),
        (f"{SECRET}\n", "line break"),
        (f"{SECRET}\r\nmore", "line break"),
        (f"{SECRET} x", "whitespace"),
        (f" {SECRET}", "whitespace"),
        (f"{SECRET}\x00", "control"),
        (f"{SECRET}\x1b[0m", "control"),
        (f"{SECRET}\u200b", "invisible"),
        (f"{SECRET}\ud800", "surrogate"),
        (SECRET + "x" * MAX_SECRET_CHARS, "at most"),
    ],
)
async def test_bad_secrets_are_refused_without_echoing_them(
    fresh_db: Database, fresh_tenant: str, secret: str, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = await Credentials.open(fresh_db, SecretKeyring([SecretKeyring.generate_key()]))
    for value in (secret, SecretStr(secret)):
        with pytest.raises(InputError, match=problem) as info:
            await credentials.set(fresh_tenant, "openai", value)
        assert "SECRET" not in str(info.value) and "SECRET" not in repr(info.value)
    assert "SECRET" not in caplog.text
    assert await credentials.list(fresh_tenant) == []


async def test_providers_are_checked_against_the_known_ones(fresh_db: Database, fresh_tenant: str) -> None:
    keyring = SecretKeyring([SecretKeyring.generate_key()])
    credentials = await Credentials.open(fresh_db, keyring, providers=["openai", "azure"])
    with pytest.raises(InputError, match=r"unknown provider 'opneai'.*azure, openai"):
        await credentials.set(fresh_tenant, "opneai", SECRET)
    with pytest.raises(InputError, match="not a provider name"):
        await credentials.set(fresh_tenant, "open ai\n", SECRET)
    await credentials.set(fresh_tenant, "openai", SECRET)
    assert [c.provider for c in await credentials.list(fresh_tenant)] == ["openai"]


def test_the_cli_refuses_bad_secrets_and_unknown_providers(tmp_path: Path) -> None:
    db = tmp_path / "creds.db"
    config = tmp_path / "pulse-ai.yaml"
    config.write_text(
        "providers:\n"
        "  oa: {type: openai, api_key: sk-config-key, models: [{name: gpt-4o-mini}]}\n"
        "  local: {type: fake, models: [{name: gpt-4o-mini}]}\n"
        f"database: {{url: 'sqlite:///{db}'}}\n"
    )
    tenant = unique_tenant_id()
    env = {"PULSE_AI_SECRET_KEYS": SecretKeyring.generate_key()}
    assert invoke("tenants", "create", tenant, "--config", str(config))[0] == 0
    code, out, err = invoke("credentials", "set", tenant, "oa", "--config", str(config), input=f"{SECRET} x\n", env=env)
    assert code == 1 and "whitespace" in err and "SECRET" not in out + err
    code, out, err = invoke(
        "credentials", "set", tenant, "local", "--config", str(config), input=f"{SECRET}\n", env=env
    )
    assert code == 1 and "unknown provider 'local'" in err and "oa" in err and "SECRET" not in out + err
    code, out, err = invoke("credentials", "set", tenant, "oa", "--config", str(config), input=f"{SECRET}\n", env=env)
    assert code == 0 and "stored encrypted" in out and "SECRET" not in out + err
