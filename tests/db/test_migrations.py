"""The migrations build exactly the models' schema, on both databases, and opening is safe."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from pulse_ai.db import SYSTEM_TENANT, Database, Tenants, normalize_url
from pulse_ai.db.database import MIGRATIONS_DIR
from pulse_ai.errors import ConfigError, DatabaseError
from pulse_ai.redaction import redact
from tests.db.conftest import fresh_postgres_database, fresh_postgres_database_async


async def _migrate_and_compare(url: str) -> list[object]:
    db = await Database.open(url, upgrade=True)
    try:
        assert await db.current_revision() == Database.head_revision()
        return await db.schema_differences()
    finally:
        await db.close()


def test_autogenerate_finds_no_difference_on_sqlite(tmp_path: Path) -> None:
    assert asyncio.run(_migrate_and_compare(f"sqlite:///{tmp_path / 'fresh.db'}")) == []


def test_autogenerate_finds_no_difference_on_postgres() -> None:
    with fresh_postgres_database() as url:
        assert asyncio.run(_migrate_and_compare(url)) == []


def test_migrations_are_named_and_form_one_line() -> None:
    names = sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
    assert names and names[0] == "0001_initial.py"
    assert Database.head_revision() == names[-1].removesuffix(".py")


async def test_postgres_is_not_migrated_implicitly_and_says_how() -> None:
    async with fresh_postgres_database_async() as url:
        with pytest.raises(DatabaseError, match="pulse-ai db upgrade"):
            await Database.open(url)
        db = await Database.open(url, upgrade=True)
        await db.close()
        db = await Database.open(url)  # now at head: opens without upgrading
        await db.ping()
        await db.close()


async def test_sqlite_default_upgrades_on_first_use_and_twice_is_harmless(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'pulse-ai.db'}"
    first = await Database.open(url)
    await first.close()
    second = await Database.open(url)
    assert await Tenants(second).get(SYSTEM_TENANT)
    async with second.read("pragmas") as connection:
        assert (await connection.scalar(text("PRAGMA journal_mode"))) == "wal"
        assert (await connection.scalar(text("PRAGMA foreign_keys"))) == 1
        assert (await connection.scalar(text("PRAGMA busy_timeout"))) > 0
    await second.close()


async def test_concurrent_first_opens_of_one_sqlite_file_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    dbs = await asyncio.gather(*(Database.open(url) for _ in range(4)))
    for db in dbs:
        assert await db.current_revision() == Database.head_revision()
        await db.close()


def test_a_database_password_is_registered_for_redaction_and_kept_out_of_reprs() -> None:
    url = normalize_url("postgresql://app:Pg-Pass-7781@db.example.com:5432/pulse")
    assert redact("connection to app:Pg-Pass-7781 failed") == "connection to app:*** failed"
    assert "Pg-Pass-7781" not in repr(Database(create_async_engine(url)))
    with pytest.raises(ConfigError, match="port is not a number") as info:
        normalize_url("postgresql://app:Pg-Pass-7781@db.example.com:notaport/pulse")
    assert "Pg-Pass-7781" not in str(info.value)


def test_urls_are_normalised_to_async_drivers() -> None:
    assert normalize_url("postgresql://u:p@h:5432/d").drivername == "postgresql+asyncpg"
    assert normalize_url("postgres://h/d").drivername == "postgresql+asyncpg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert normalize_url(None).database == "./data/pulse-ai.db"
    with pytest.raises(ConfigError, match="unsupported scheme"):
        normalize_url("mysql://h/d")
    with pytest.raises(ConfigError, match="file path"):
        normalize_url("sqlite://")


async def test_an_unreachable_database_is_a_database_error_without_the_password() -> None:
    with pytest.raises(DatabaseError) as caught:
        await Database.open("postgresql://user:hunter2@127.0.0.1:1/nothing")
    assert "hunter2" not in str(caught.value)


async def test_ping_and_repr_hide_the_password(db: Database) -> None:
    await db.ping()
    assert "hunter2" not in repr(await _repr_with_password())


async def _repr_with_password() -> str:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine("postgresql+asyncpg://user:hunter2@127.0.0.1:1/nothing")
    try:
        return repr(Database(engine))
    finally:
        await engine.dispose()
