"""Numbers out of range at the admin API: 400 naming the field, never a 500 from an overflow in
Python or in the database (H5). On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from pulse_ai.db import Database
from tests.db.conftest import fresh_postgres_database
from tests.service.conftest import ADMIN, http, make_tenant, settings
from tests.service.harness import ServiceServer, service_yaml


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceServer]:
    tmp = tmp_path_factory.mktemp("bounds")
    yaml = service_yaml(tmp)
    if request.param == "sqlite":
        with ServiceServer(yaml, settings()) as running:
            yield running
        return
    with fresh_postgres_database() as url:

        async def migrate() -> None:
            db = await Database.open(url, upgrade=True)
            await db.close()

        asyncio.run(migrate())
        yaml = yaml.replace(f"sqlite+aiosqlite:///{tmp / 'pulse-ai.db'}", url)
        with ServiceServer(yaml, settings()) as running:
            yield running


HUGE = 10**40


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"limit_usd": 1e30}', "limit_usd"),
        ('{"limit_usd": "1e30"}', "limit_usd"),
        ('{"limit_usd": NaN}', "limit_usd"),
        ('{"limit_usd": Infinity}', "limit_usd"),
        ('{"limit_usd": "Infinity"}', "limit_usd"),
        ('{"limit_usd": -1}', "limit_usd"),
        (f'{{"limit_tokens": {HUGE}}}', "limit_tokens"),
        (f'{{"limit_tokens": {2**63}}}', "limit_tokens"),
        ('{"limit_tokens": -5}', "limit_tokens"),
        ('{"limit_tokens": 1e400}', "limit_tokens"),
        ('{"limit_tokens": 1.5}', "limit_tokens"),
    ],
)
async def test_budget_amounts_out_of_range_are_400_naming_the_field(
    db_server: ServiceServer, body: str, field: str
) -> None:
    tenant = await make_tenant(db_server)
    async with http(db_server, ADMIN | {"content-type": "application/json"}) as client:
        response = await client.put(f"/admin/tenants/{tenant.tenant}/budgets", content=body)
        assert response.status_code == 400, response.text
        assert field in response.json()["error"]["message"]
        listed = await client.get(f"/admin/tenants/{tenant.tenant}/budgets")
    assert listed.json()["data"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_days": HUGE}, "expires_days"),
        ({"expires_days": 10**7}, "expires_days"),
        ({"expires_days": 2**63}, "expires_days"),
        ({"expires_days": -1}, "expires_days"),
        ({"name": "x" * 10_000}, "name"),
        ({"scopes": ["*"] * 10_000}, "scopes"),
    ],
)
async def test_key_fields_out_of_range_are_400(db_server: ServiceServer, body: dict[str, Any], field: str) -> None:
    tenant = await make_tenant(db_server)
    async with http(db_server, ADMIN) as client:
        response = await client.post(f"/admin/tenants/{tenant.tenant}/keys", json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["message"]


async def test_the_largest_accepted_values_are_stored_and_read_back(db_server: ServiceServer) -> None:
    tenant = await make_tenant(db_server)
    async with http(db_server, ADMIN) as client:
        response = await client.put(
            f"/admin/tenants/{tenant.tenant}/budgets", json={"limit_usd": "1000000", "limit_tokens": 10**15}
        )
        assert response.status_code == 200, response.text
        assert response.json()["limit_tokens"] == 10**15
        key = await client.post(f"/admin/tenants/{tenant.tenant}/keys", json={"expires_days": 36500})
        assert key.status_code == 201, key.text


async def test_usage_query_dates_out_of_range_are_400(db_server: ServiceServer) -> None:
    async with http(db_server, ADMIN) as client:
        response = await client.get("/admin/usage", params={"since": "99999-01-01"})
    assert response.status_code == 400, response.text
