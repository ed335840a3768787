from __future__ import annotations

import hmac
from datetime import timedelta

import pytest
from sqlalchemy import select

from pulse_ai.db import ApiKeys, Database, Tenants
from pulse_ai.db import api_keys as api_keys_module
from pulse_ai.db.models import ApiKeyRow
from pulse_ai.db.types import utcnow
from pulse_ai.errors import ApiKeyRefusedError, NotFoundError


async def test_only_a_hash_and_prefix_are_stored(db: Database, tenant: str) -> None:
    created = await ApiKeys(db).create(tenant, name="ci", scopes=["embed", "search"])
    key = created.key.get_secret_value()
    assert key.startswith(created.info.prefix + "_") and created.info.prefix.startswith("pk_live_")
    assert key not in repr(created)
    async with db.read("raw") as connection:
        rows = (await connection.execute(select(ApiKeyRow))).all()
    flattened = " ".join(str(value) for row in rows for value in row)
    assert key not in flattened and key[len(created.info.prefix) + 1 :] not in flattened
    assert created.info.prefix in flattened


async def test_verify_accepts_the_key_and_compares_in_constant_time(
    db: Database, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ApiKeys(db)
    created = await keys.create(tenant, scopes=["embed"])
    calls: list[tuple[str, str]] = []
    real_compare = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(api_keys_module.hmac, "compare_digest", spy)
    info = await keys.verify(created.key.get_secret_value(), scope="embed")
    assert info.id == created.info.id and info.tenant_id == tenant and calls
    assert info.last_used_at is not None
    with pytest.raises(ApiKeyRefusedError, match="scope"):
        await keys.verify(created.key.get_secret_value(), scope="admin")
    # a wrong secret behind a real prefix is still compared (in constant time), then refused
    calls.clear()
    forged = created.key.get_secret_value()[:-4] + "AAAA"
    with pytest.raises(ApiKeyRefusedError, match="unknown"):
        await keys.verify(forged)
    assert len(calls) == 1


async def test_revoked_expired_malformed_and_suspended_keys_are_refused(db: Database, tenant: str) -> None:
    keys = ApiKeys(db)
    revoked = await keys.create(tenant)
    await keys.revoke(revoked.info.prefix)
    again = await keys.revoke(revoked.info.id)  # repeat: harmless
    assert again.revoked_at is not None
    with pytest.raises(ApiKeyRefusedError, match="revoked"):
        await keys.verify(revoked.key.get_secret_value())
    expired = await keys.create(tenant, expires_at=utcnow() - timedelta(seconds=1))
    with pytest.raises(ApiKeyRefusedError, match="expired"):
        await keys.verify(expired.key.get_secret_value())
    with pytest.raises(ApiKeyRefusedError, match="malformed"):
        await keys.verify("pk_live_nothing")
    live = await keys.create(tenant)
    await Tenants(db).suspend(tenant)
    with pytest.raises(ApiKeyRefusedError, match="suspended"):
        await keys.verify(live.key.get_secret_value())
    listed = {k.id: k.state() for k in await keys.list(tenant)}
    assert listed[revoked.info.id] == "revoked" and listed[expired.info.id] == "expired"
    with pytest.raises(NotFoundError):
        await keys.revoke("pk_live_00000000")
