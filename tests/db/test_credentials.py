from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from pulse_ai.db import Credentials, Database, SecretKeyring
from pulse_ai.db.models import ProviderCredentialRow
from pulse_ai.errors import NotFoundError, SecretKeyError

PLAINTEXT = "sk-live-VERY-SECRET-0123456789"


async def _raw_ciphertexts(db: Database) -> list[str]:
    async with db.read("raw") as connection:
        return list(await connection.scalars(select(ProviderCredentialRow.ciphertext)))


async def test_stored_encrypted_and_read_back(
    fresh_db: Database, fresh_tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = await Credentials.open(fresh_db, SecretKeyring([SecretKeyring.generate_key()]))
    info = await credentials.set(fresh_tenant, "openai", SecretStr(PLAINTEXT))
    raw = await _raw_ciphertexts(fresh_db)
    assert raw and all(PLAINTEXT not in value and "VERY-SECRET" not in value for value in raw)
    secret = await credentials.get(fresh_tenant, "openai")
    assert secret.get_secret_value() == PLAINTEXT
    for shown in (repr(secret), str(secret), repr(info), str(info), repr(credentials), caplog.text):
        assert PLAINTEXT not in shown
    await credentials.set(fresh_tenant, "openai", "sk-replaced")
    assert (await credentials.get(fresh_tenant, "openai")).get_secret_value() == "sk-replaced"
    assert [c.provider for c in await credentials.list(fresh_tenant)] == ["openai"]
    assert await credentials.delete(fresh_tenant, "openai") and not await credentials.delete(fresh_tenant, "openai")
    with pytest.raises(NotFoundError):
        await credentials.get(fresh_tenant, "openai")


async def test_rotation_re_encrypts_every_row_with_the_new_key(fresh_db: Database, fresh_tenant: str) -> None:
    old, new = SecretKeyring.generate_key(), SecretKeyring.generate_key()
    credentials = await Credentials.open(fresh_db, SecretKeyring([old]))
    await credentials.set(fresh_tenant, "openai", PLAINTEXT)
    await credentials.set(fresh_tenant, "azure", "azure-secret")
    before = set(await _raw_ciphertexts(fresh_db))
    rotating = await Credentials.open(fresh_db, SecretKeyring([new, old]))
    assert await rotating.rotate() >= 2
    assert not before & set(await _raw_ciphertexts(fresh_db))
    only_new = await Credentials.open(fresh_db, SecretKeyring([new]))  # the old key can now be dropped
    assert (await only_new.get(fresh_tenant, "openai")).get_secret_value() == PLAINTEXT
    with pytest.raises(SecretKeyError, match="cannot be decrypted") as caught:
        await Credentials.open(fresh_db, SecretKeyring([old]))
    assert PLAINTEXT not in str(caught.value)


async def test_a_missing_key_with_encrypted_rows_is_a_clear_startup_error(
    fresh_db: Database, fresh_tenant: str
) -> None:
    await (await Credentials.open(fresh_db, SecretKeyring([SecretKeyring.generate_key()]))).set(
        fresh_tenant, "openai", PLAINTEXT
    )
    with pytest.raises(SecretKeyError, match="PULSE_AI_SECRET_KEYS is not set"):
        await Credentials.open(fresh_db, None)


def test_keys_come_from_the_environment_and_bad_ones_are_not_echoed() -> None:
    key_a, key_b = SecretKeyring.generate_key(), SecretKeyring.generate_key()
    keyring = SecretKeyring.from_env({"PULSE_AI_SECRET_KEYS": f" {key_a}, {key_b} "})
    assert keyring is not None and keyring.key_count == 2
    assert key_a not in repr(keyring)
    assert SecretKeyring.from_env({}) is None and SecretKeyring.from_env({"PULSE_AI_SECRET_KEYS": " , "}) is None
    with pytest.raises(SecretKeyError, match="key 2 of 2") as caught:
        SecretKeyring([key_a, "not-a-key-but-secret"])
    assert "not-a-key-but-secret" not in str(caught.value)


async def test_setting_a_credential_without_keys_fails_before_writing(fresh_db: Database, fresh_tenant: str) -> None:
    credentials = (
        await Credentials.open(fresh_db, None) if not await _raw_ciphertexts(fresh_db) else Credentials(fresh_db, None)
    )
    with pytest.raises(SecretKeyError, match="generate-key"):
        await credentials.set(fresh_tenant, "openai", PLAINTEXT)
