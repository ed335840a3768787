"""Every database test runs on SQLite (a fresh file) and on PostgreSQL (a database made for this
session and dropped after it, so engineers sharing the server never see each other's rows).
PostgreSQL tests skip when PULSE_AI_TEST_POSTGRES_URL is unset."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from pulse_ai.db import Database, Tenants

POSTGRES_ENV = "PULSE_AI_TEST_POSTGRES_URL"
NO_POSTGRES = f"{POSTGRES_ENV} is not set (.ci/run sets it to the local PostgreSQL server)"


def postgres_admin_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


async def _create_database(name: str) -> None:
    admin = postgres_admin_url()
    assert admin is not None
    connection = await asyncpg.connect(make_url(admin).set(drivername="postgresql").render_as_string(False))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_database(name: str) -> None:
    admin = postgres_admin_url()
    assert admin is not None
    connection = await asyncpg.connect(make_url(admin).set(drivername="postgresql").render_as_string(False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped on exit."""
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(NO_POSTGRES)
    name = f"pulse_ai_test_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(_create_database(name))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_drop_database(name))


@contextlib.asynccontextmanager
async def fresh_postgres_database_async() -> AsyncIterator[str]:
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(NO_POSTGRES)
    name = f"pulse_ai_test_{os.getpid()}_{secrets.token_hex(4)}"
    await _create_database(name)
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        await _drop_database(name)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """This session's PostgreSQL database, migrated; None when there is no server to test on."""
    if postgres_admin_url() is None:
        yield None
        return
    with fresh_postgres_database() as url:

        async def migrate() -> None:
            db = await Database.open(url, upgrade=True)
            await db.close()

        asyncio.run(migrate())
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pulse-ai.db'}"
    if postgres_url is None:
        pytest.skip(NO_POSTGRES)
    return postgres_url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await Database.open(db_url, upgrade=True)
    yield database
    await database.close()


def unique_tenant_id(stem: str = "t") -> str:
    return f"{stem}-{secrets.token_hex(5)}"


@pytest.fixture
async def tenant(db: Database) -> str:
    """A new tenant, unique to this test (the PostgreSQL database is shared by the session)."""
    created = await Tenants(db).create(unique_tenant_id(), "Test tenant")
    return created.id


@pytest.fixture
async def fresh_db(db_url: str) -> AsyncIterator[Database]:
    """A database no other test has touched (on PostgreSQL a new one), for tests of global state."""
    if db_url.startswith("sqlite"):
        database = await Database.open(db_url, upgrade=True)
        yield database
        await database.close()
        return
    async with fresh_postgres_database_async() as url:
        database = await Database.open(url, upgrade=True)
        yield database
        await database.close()


@pytest.fixture
async def fresh_tenant(fresh_db: Database) -> str:
    return (await Tenants(fresh_db).create(unique_tenant_id(), "Test tenant")).id
