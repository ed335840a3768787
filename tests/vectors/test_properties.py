"""Property-based isolation tests: random tenants, records and queries, on every backend and layout."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulse_ai.vectors import Layout, VectorPoint
from tests.vectors.conftest import BACKENDS, SPACE, make_store

names = st.from_regex(r"[a-z0-9](?:[a-z0-9-]|_(?!_)){0,10}[a-z0-9]", fullmatch=True)
record_ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda s: s.strip() != ""
)
corpus = st.dictionaries(
    keys=st.tuples(names, st.sampled_from(["issues", "prs"])),
    values=st.lists(record_ids, min_size=1, max_size=8, unique=True),
    min_size=1,
    max_size=5,
)

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _vector(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return vector / np.linalg.norm(vector)


async def _scenario(backend: str, layout: Layout, data: dict[tuple[str, str], list[str]], seed: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = make_store(backend, layout, Path(directory))
        try:
            for (tenant, table), ids in data.items():
                batch = [
                    VectorPoint(r, _vector(hash((tenant, table, r)) % 2**32), "h", {"owner": f"{tenant}/{table}"})
                    for r in ids
                ]
                await store.upsert(tenant, table, SPACE, batch)
                await store.upsert(tenant, table, SPACE, batch)  # re-indexing changes nothing
            queries = [_vector(seed + i) for i in range(3)]
            for (tenant, table), ids in data.items():
                assert await store.count(tenant, table, SPACE) == len(ids)
                for query in queries:
                    hits = await store.search(tenant, table, SPACE, query, limit=50)
                    assert {h.metadata["owner"] for h in hits} <= {f"{tenant}/{table}"}
                    assert {h.record_id for h in hits} == set(ids)

            (tenant, table), ids = next(iter(data.items()))
            removed = ids[: len(ids) // 2]
            assert await store.delete(tenant, table, SPACE, removed) == len(removed)
            assert await store.count(tenant, table, SPACE) == len(ids) - len(removed)
            for (other_tenant, other_table), other_ids in data.items():
                if (other_tenant, other_table) != (tenant, table):
                    assert await store.count(other_tenant, other_table, SPACE) == len(other_ids)

            await store.purge_tenant(tenant)
            for (other_tenant, other_table), other_ids in data.items():
                expected = 0 if other_tenant == tenant else len(other_ids)
                assert await store.count(other_tenant, other_table, SPACE) == expected
        finally:
            await store.close()


@pytest.mark.parametrize(("backend", "layout"), BACKENDS, ids=[f"{b}-{lay.value}" for b, lay in BACKENDS])
@SETTINGS
@given(data=corpus, seed=st.integers(0, 2**16))
def test_isolation_reindexing_delete_and_purge(
    backend: str, layout: Layout, data: dict[tuple[str, str], list[str]], seed: int
) -> None:
    asyncio.run(_scenario(backend, layout, data, seed))
