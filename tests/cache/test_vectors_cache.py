"""The search cache (invalidated by writes) and the schema cache, through the indexer and the store."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pulse_ai.accounting import Usage
from pulse_ai.cache import Caches
from pulse_ai.config import CacheConfig
from pulse_ai.errors import VectorSpaceError
from pulse_ai.types import EmbeddingResult
from pulse_ai.vectors import Indexer, Record, VectorSpace, VectorStore
from pulse_ai.vectors.server import QdrantServerStore

SPACE = VectorSpace("test/model@8/unit", 8)


class Embedder:
    vector_space = SPACE

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        self.calls += 1
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            row = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
            rows.append(row / np.linalg.norm(row))
        return EmbeddingResult(np.stack(rows), "fake/m", SPACE.id, Usage())


class Spy:
    """Counts the store's backend queries and listings."""

    def __init__(self, store: VectorStore) -> None:
        self.queries = 0
        self.listings = 0
        query, listing = store._query, store._list_collections

        async def counted_query(*args: Any, **kwargs: Any) -> Any:
            self.queries += 1
            return await query(*args, **kwargs)

        async def counted_listing() -> list[str]:
            self.listings += 1
            return await listing()

        store._query = counted_query  # type: ignore[method-assign]
        store._list_collections = counted_listing  # type: ignore[method-assign]


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Indexer, Spy, Caches]]:
    store = QdrantServerStore(location=":memory:")
    async with Caches.in_memory() as caches:
        store.cache = caches.vector_cache()
        spy = Spy(store)
        yield Indexer(Embedder(), store), spy, caches
    await store.close()


RECORDS = [
    Record("A-1", "checkout times out", {"status": "open", "priority": 1}),
    Record("A-2", "discount applied twice", {"status": "closed"}),
]


async def test_a_repeated_search_is_served_from_the_cache(setup: tuple[Indexer, Spy, Caches]) -> None:
    indexer, spy, _ = setup
    await indexer.index("acme", "issues", RECORDS)
    first = await indexer.search("acme", "issues", "slow checkout", limit=5)
    again = await indexer.search("acme", "issues", "slow checkout", limit=5)
    assert again == first and spy.queries == 1
    filtered = await indexer.search("acme", "issues", "slow checkout", limit=5, where={"status": "open"})
    assert [h.record_id for h in filtered] == ["A-1"] and spy.queries == 2
    by_vector = (await indexer.embedder.embed(["slow checkout"])).vectors[0]
    await indexer.search("acme", "issues", by_vector, limit=5)
    await indexer.search("acme", "issues", by_vector.tolist(), limit=5)
    assert spy.queries == 3


async def test_every_write_invalidates_the_tables_searches(setup: tuple[Indexer, Spy, Caches]) -> None:
    indexer, _, _ = setup
    await indexer.index("acme", "issues", RECORDS[:1])
    assert [h.record_id for h in await indexer.search("acme", "issues", "checkout")] == ["A-1"]
    await indexer.index("acme", "issues", RECORDS[1:])  # index
    assert {h.record_id for h in await indexer.search("acme", "issues", "checkout")} == {"A-1", "A-2"}
    await indexer.index("acme", "issues", [Record("A-2", "discount applied twice", {"status": "open"})])
    hits = await indexer.search("acme", "issues", "checkout", where={"status": "open"})  # metadata update
    assert {h.record_id for h in hits} == {"A-1", "A-2"}
    await indexer.delete("acme", "issues", ["A-1"])  # delete
    assert [h.record_id for h in await indexer.search("acme", "issues", "checkout")] == ["A-2"]
    await indexer.purge_tenant("acme")  # purge
    assert await indexer.search("acme", "issues", "checkout") == []


async def test_no_tenant_is_served_anothers_search(setup: tuple[Indexer, Spy, Caches]) -> None:
    indexer, spy, _ = setup
    await indexer.index("acme", "issues", RECORDS)
    await indexer.index("globex", "issues", [Record("G-1", "checkout times out")])
    acme = await indexer.search("acme", "issues", "checkout times out")
    globex = await indexer.search("globex", "issues", "checkout times out")
    assert {h.record_id for h in acme} == {"A-1", "A-2"} and [h.record_id for h in globex] == ["G-1"]
    assert spy.queries == 2


async def test_the_schema_follows_writes_and_replaces_the_listing(setup: tuple[Indexer, Spy, Caches]) -> None:
    indexer, spy, _ = setup
    await indexer.index("acme", "issues", RECORDS)
    await indexer.index("acme", "tickets", [Record("T-1", "printer on fire", {"site": "hq"})])
    schema = await indexer.store.tenant_schema("acme")
    assert schema is not None
    assert [(s.table, s.vector_space, s.count, s.metadata_fields) for s in schema] == [
        ("issues", SPACE.id, 2, ("priority", "status")),
        ("tickets", SPACE.id, 1, ("site",)),
    ]
    await indexer.delete("acme", "issues", ["A-2"])
    assert [s.count for s in await indexer.store.tenant_schema("acme") or []] == [1, 1]
    assert await indexer.store.tenant_schema("globex") == []
    other = VectorSpace("other/model@8/unit", 8)
    listings = spy.listings
    for _ in range(3):  # a search in another space: the first lists, the next are answered by the schema
        with pytest.raises(VectorSpaceError, match="was indexed in"):
            await indexer.store.search("acme", "issues", other, np.ones(8))
    assert spy.listings == listings + 1


async def test_a_write_in_another_process_invalidates_through_the_shared_version(tmp_path: Path) -> None:
    """Two processes share the SQLite tier: the version a write bumps in one is read by the other."""
    config = CacheConfig(enabled=True, sqlite_path=str(tmp_path / "c.db"), search={"backend": "memory+sqlite"})  # type: ignore[arg-type]
    first, second = QdrantServerStore(location=":memory:"), QdrantServerStore(location=":memory:")
    async with Caches.from_config(config) as one, Caches.from_config(config) as two:
        first.cache, second.cache = one.vector_cache(), two.vector_cache()
        spy = Spy(first)
        reader, writer = Indexer(Embedder(), first), Indexer(Embedder(), second)
        await reader.index("acme", "issues", RECORDS)
        await reader.search("acme", "issues", "checkout")
        await reader.search("acme", "issues", "checkout")
        assert spy.queries == 1
        await writer.index("acme", "issues", [Record("X-1", "written elsewhere")])
        await reader.search("acme", "issues", "checkout")
        assert spy.queries == 2
    await first.close()
    await second.close()
