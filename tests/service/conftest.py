"""Fixtures of the service tests: a service per module over real HTTP (uvicorn in a thread), its own
SQLite database and embedded store in a temporary directory, and helpers that act as clients."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from pulse_ai.db import Database
from pulse_ai.db.models import UsageRecordRow
from pulse_ai.service import ServiceSettings
from tests.service.harness import ADMIN_KEY, ServiceServer, service_yaml

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def settings(**overrides: Any) -> ServiceSettings:
    """The tests' settings: small limits so that they can be reached."""
    values: dict[str, Any] = {
        "admin_key": SecretStr(ADMIN_KEY),
        "max_inputs": 100,
        "max_input_chars": 5000,
        "max_body_bytes": 256 * 1024,
    }
    values.update(overrides)
    return ServiceSettings(**values)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceServer]:
    tmp = tmp_path_factory.mktemp("service")
    with ServiceServer(service_yaml(tmp, slow_latency=2.0), settings()) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_fakes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Scripts of one test never leak into the next (the module's server is shared)."""
    servers = [request.getfixturevalue(name) for name in ("server",) if name in request.fixturenames]
    for running in servers:
        for name in ("a", "b", "slow"):
            running.fake(name).reset()
    yield
    for running in servers:
        for name in ("a", "b", "slow"):
            running.fake(name).reset()


@dataclass(frozen=True)
class TenantKey:
    tenant: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}


async def make_tenant(server: ServiceServer, stem: str = "t", scopes: list[str] | None = None) -> TenantKey:
    """A new tenant and a key for it, through the admin API."""
    tenant = f"{stem}-{secrets.token_hex(4)}"
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as http:
        created = await http.post("/admin/tenants", json={"id": tenant})
        assert created.status_code == 201, created.text
        body: dict[str, Any] = {"name": "test"} if scopes is None else {"name": "test", "scopes": scopes}
        key = await http.post(f"/admin/tenants/{tenant}/keys", json=body)
        assert key.status_code == 201, key.text
    return TenantKey(tenant, key.json()["key"], key.json()["id"])


_clients: list[openai.AsyncOpenAI] = []


def sdk(server: ServiceServer, key: str, **options: Any) -> openai.AsyncOpenAI:
    """The official SDK against the service; no retries unless a test asks for them (closed after
    the test, on the test's event loop)."""
    options.setdefault("max_retries", 0)
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, **options)
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
async def _close_clients() -> Any:
    yield
    while _clients:
        await _clients.pop().close()


def http(server: ServiceServer, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers=headers or {}, timeout=30)


async def ledger(server: ServiceServer, tenant: str) -> list[Any]:
    """The tenant's usage rows, read with this test's own connection."""
    db = await Database.open(server.database_url)
    try:
        async with db.read("test") as connection:
            result = await connection.execute(
                select(UsageRecordRow).where(UsageRecordRow.tenant_id == tenant).order_by(UsageRecordRow.created_at)
            )
            return list(result.all())
    finally:
        await db.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 15.0) -> None:
    """Wait until ``check()`` holds (a generous bound, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)
