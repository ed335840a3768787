"""Indexing for a tenant that does not exist: ``NotFoundError`` from the library (TenantIndexer and
PlatformIndexer) and a clear failure from ``pulse-ai index``; nothing is created, embedded or recorded
for it (L1)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from pulse_ai import NotFoundError, PulseAI
from pulse_ai.cli import app
from pulse_ai.db import Database
from pulse_ai.db.models import IndexRunRow, TenantRow
from pulse_ai.testing import FakeProvider
from tests.service.harness import service_yaml

RECORDS = [{"id": "1", "text": "login fails"}]


async def counts(url: str) -> tuple[int, int]:
    db = await Database.open(url)
    try:
        async with db.read("test") as connection:
            tenants = await connection.scalar(
                select(func.count()).select_from(TenantRow).where(TenantRow.id == "ghost")
            )
            runs = await connection.scalar(select(func.count()).select_from(IndexRunRow))
    finally:
        await db.close()
    return int(tenants or 0), int(runs or 0)


async def test_the_library_refuses_an_unknown_tenant(tmp_path: Path) -> None:
    async with PulseAI.from_yaml(service_yaml(tmp_path)) as ai:
        with pytest.raises(NotFoundError, match="ghost"):
            await ai.tenant("ghost").indexer().index("issues", RECORDS)
        with pytest.raises(NotFoundError, match="ghost"):
            await ai.indexer().index("ghost", "issues", RECORDS)
        with pytest.raises(NotFoundError, match="ghost"):
            await ai.tenant("ghost").indexer().search("issues", "login")
        provider = ai.provider("a")
        assert isinstance(provider, FakeProvider) and provider.requests() == []
        url = ai.loaded.config.database.url
    assert await counts(url) == (0, 0)


def test_the_cli_refuses_an_unknown_tenant(tmp_path: Path) -> None:
    config = tmp_path / "pulse-ai.yaml"
    config.write_text(service_yaml(tmp_path))
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    result = CliRunner().invoke(
        app, ["index", str(records), "--tenant", "ghost", "--table", "issues", "--config", str(config)]
    )
    assert result.exit_code != 0
    assert "no tenant 'ghost'" in result.output
    assert "Traceback" not in result.output
    assert asyncio.run(counts(f"sqlite+aiosqlite:///{tmp_path / 'pulse-ai.db'}")) == (0, 0)
