"""The caches on the call path: a hit is a ledger row with the cost it avoided, a tenant's entries
never serve another tenant, a tenant's search is cached until its table is written, and purging a
tenant removes its cache entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pulse_ai import PulseAI
from pulse_ai.db.models import UsageRecordRow
from pulse_ai.testing import FakeProvider
from tests.db.conftest import unique_tenant_id

EMB = "text-embedding-3-small"


def config(db_url: str, tmp: Path) -> str:
    return (
        "providers:\n"
        f"  a: {{type: fake, models: [{{name: {EMB}, dimensions: 64}}, {{name: gpt-4o-mini}}]}}\n"
        "pipelines:\n"
        f"  embedding: {{kind: embedding, candidates: [a/{EMB}]}}\n"
        "  chat: {kind: generation, candidates: [a/gpt-4o-mini]}\n"
        f"database: {{url: '{db_url}'}}\n"
        # a generous bound: these tests are about the call path, not about a slow cache tier
        f"cache: {{enabled: true, timeout: 30, sqlite_path: '{tmp}/cache.db'}}\n"
        f"vector_store: {{backend: embedded, path: '{tmp}/vectors'}}\n"
    )


@pytest.fixture
async def ai(db_url: str, tmp_path: Path) -> Any:
    instance = PulseAI.from_yaml(config(db_url, tmp_path))
    yield instance
    await instance.aclose()


def fake(ai: PulseAI) -> FakeProvider:
    provider = ai.provider("a")
    assert isinstance(provider, FakeProvider)
    return provider


async def rows(ai: PulseAI, tenant: str) -> list[Any]:
    platform = await ai.platform()
    async with platform.db.read("test") as connection:
        query = select(UsageRecordRow).where(UsageRecordRow.tenant_id == tenant).order_by(UsageRecordRow.created_at)
        return list((await connection.execute(query)).all())


async def new_tenant(ai: PulseAI) -> str:
    return (await (await ai.platform()).tenants.create(unique_tenant_id())).id


async def test_a_hit_is_a_ledger_row_with_the_cost_it_avoided(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    first = await ai.tenant(tenant).embed(["cached text", "other text"])
    again = await ai.tenant(tenant).embed(["cached text", "other text"])
    assert again.cached == 2 and (again.vectors == first.vectors).all()
    assert len(fake(ai).requests("embed")) == 1
    paid, hit = await rows(ai, tenant)
    assert (paid.outcome, hit.outcome) == ("ok", "cached")
    assert hit.billed_nanousd == 0 and hit.avoided_nanousd == paid.billed_nanousd > 0
    assert hit.cache_level in ("memory", "sqlite")


async def test_one_tenants_entries_never_serve_another(ai: PulseAI) -> None:
    first, second = await new_tenant(ai), await new_tenant(ai)
    await ai.tenant(first).embed(["same words"])
    other = await ai.tenant(second).embed(["same words"])
    assert other.cached == 0 and len(fake(ai).requests("embed")) == 2


async def test_generation_at_temperature_0_is_cached_per_tenant(ai: PulseAI) -> None:
    from pulse_ai import GenerationParams

    tenant = await new_tenant(ai)
    params = GenerationParams(temperature=0)
    await ai.tenant(tenant).generate("same question", pipeline="chat", params=params)
    answer = await ai.tenant(tenant).generate("same question", pipeline="chat", params=params)
    assert answer.cached and answer.text == "echo: same question"
    assert len(fake(ai).requests("generate")) == 1
    assert [r.outcome for r in await rows(ai, tenant)] == ["ok", "cached"]


async def test_a_search_is_cached_until_the_table_is_written_and_purge_removes_entries(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    indexer = ai.tenant(tenant).indexer()
    await indexer.index("issues", [{"id": "1", "text": "slow checkout"}, {"id": "2", "text": "dark mode"}])
    first = await indexer.search("issues", "slow checkout", limit=1)
    hits_before = ai.caches.stats.total("search", tenant=tenant).hits
    again = await indexer.search("issues", "slow checkout", limit=1)
    assert [h.record_id for h in again] == [h.record_id for h in first] == ["1"]
    assert ai.caches.stats.total("search", tenant=tenant).hits == hits_before + 1
    await indexer.index("issues", [{"id": "3", "text": "slow checkout on mobile"}])
    after_write = await indexer.search("issues", "slow checkout on mobile", limit=1)
    assert [h.record_id for h in after_write] == ["3"]  # the write invalidated the table's searches
    embedded_before = len(fake(ai).requests("embed"))
    await indexer.purge()
    await ai.tenant(tenant).embed(["slow checkout"])  # its cached vector is gone with the purge
    assert len(fake(ai).requests("embed")) == embedded_before + 1
    assert await indexer.count("issues") == 0
