"""Alembic's environment. pulse-ai runs it through ``Database.upgrade`` (``pulse-ai db upgrade``),
which hands over an open connection inside a write transaction; no alembic.ini is needed."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from pulse_ai.db.models import Base

# Two processes upgrading one PostgreSQL database at once queue on this lock (SQLite's
# BEGIN IMMEDIATE does the same there).
_MIGRATION_LOCK = 0x70756C7365  # "pulse"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from pulse_ai.db.database import normalize_url

    engine = create_async_engine(normalize_url(url))
    async with engine.begin() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # the alembic command line, for writing a new revision: PULSE_AI_DATABASE_URL names the database
    asyncio.run(_run_from_url(os.environ.get("PULSE_AI_DATABASE_URL", "sqlite:///./data/pulse-ai.db")))
