"""One conformance suite, run on both backends and both layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pulse_ai import InputError
from pulse_ai.errors import TenantIsolationError, VectorSpaceError
from pulse_ai.vectors import Layout, VectorPoint, VectorSpace, VectorStore, point_id
from pulse_ai.vectors.base import Found, MetadataUpdate, QueryOptions
from pulse_ai.vectors.embedded import EmbeddedVectorStore
from pulse_ai.vectors.scope import All
from tests.vectors.conftest import SPACE, vectors


def points(ids: list[str], array: np.ndarray, **metadata: Any) -> list[VectorPoint]:
    return [
        VectorPoint(record_id, vector, content_hash=f"h-{record_id}", metadata={"n": i, **metadata})
        for i, (record_id, vector) in enumerate(zip(ids, array, strict=True))
    ]


async def test_upsert_and_search_finds_the_nearest_first(store: VectorStore) -> None:
    array = vectors(20)
    ids = [f"r{i}" for i in range(20)]
    assert await store.upsert("acme", "issues", SPACE, points(ids, array, kind="issue")) == 20
    hits = await store.search("acme", "issues", SPACE, array[7], limit=5)
    assert hits[0].record_id == "r7" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].metadata == {"n": 7, "kind": "issue"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(hits) == 5
    assert await store.count("acme", "issues", SPACE) == 20


async def test_tenants_and_tables_never_see_each_other(store: VectorStore) -> None:
    array = vectors(10)
    ids = [f"r{i}" for i in range(10)]
    await store.upsert("acme", "issues", SPACE, points(ids, array, owner="acme"))
    await store.upsert("globex", "issues", SPACE, points(ids[:4], array[:4], owner="globex"))
    await store.upsert("acme", "tickets", SPACE, points(ids[:3], array[:3], owner="acme-tickets"))
    for vector in array:
        globex_hits = await store.search("globex", "issues", SPACE, vector, limit=100)
        assert {h.metadata["owner"] for h in globex_hits} == {"globex"}
        assert len(globex_hits) == 4
        acme_hits = await store.search("acme", "tickets", SPACE, vector, limit=100)
        assert {h.metadata["owner"] for h in acme_hits} == {"acme-tickets"}
    assert await store.count("acme", "issues", SPACE) == 10
    assert await store.count("globex", "issues", SPACE) == 4
    assert await store.count("acme", "tickets", SPACE) == 3
    assert await store.count("initech", "issues", SPACE) == 0
    assert await store.search("initech", "issues", SPACE, array[0]) == []


async def test_a_caller_filter_cannot_widen_the_tenant_scope(store: VectorStore) -> None:
    array = vectors(4)
    await store.upsert("acme", "issues", SPACE, points(["a", "b"], array[:2], status="open"))
    await store.upsert("globex", "issues", SPACE, points(["c", "d"], array[2:], status="open", tenant_id="acme"))
    hits = await store.search("acme", "issues", SPACE, array[2], limit=10, where={"tenant_id": "acme"})
    assert hits == []  # the key is a metadata field, nested under the tenant condition
    hits = await store.search("acme", "issues", SPACE, array[2], limit=10, where={"status": "open"})
    assert {h.record_id for h in hits} == {"a", "b"}


async def test_metadata_filters(store: VectorStore) -> None:
    array = vectors(6)
    batch = [
        VectorPoint(f"r{i}", array[i], "h", {"status": ["open", "closed"][i % 2], "priority": i}) for i in range(6)
    ]
    await store.upsert("acme", "issues", SPACE, batch)
    open_hits = await store.search("acme", "issues", SPACE, array[0], limit=10, where={"status": "open"})
    assert {h.record_id for h in open_hits} == {"r0", "r2", "r4"}
    some = await store.search("acme", "issues", SPACE, array[0], limit=10, where={"priority": [1, 2]})
    assert {h.record_id for h in some} == {"r1", "r2"}
    both = await store.search(
        "acme", "issues", SPACE, array[0], limit=10, where={"status": ["closed"], "priority": [1, 3, 4]}
    )
    assert {h.record_id for h in both} == {"r1", "r3"}
    for bad in ({"a.b": 1}, {"x": 1.5}, {"x": []}, {"x": [1, "a"]}, {"x": {"nested": 1}}):
        with pytest.raises(InputError):
            await store.search("acme", "issues", SPACE, array[0], where=bad)


async def test_rewriting_updates_instead_of_duplicating(store: VectorStore) -> None:
    array = vectors(5)
    ids = [f"r{i}" for i in range(5)]
    await store.upsert("acme", "issues", SPACE, points(ids, array, version=1))
    await store.upsert("acme", "issues", SPACE, points(ids, array[::-1].copy(), version=2))
    assert await store.count("acme", "issues", SPACE) == 5
    hits = await store.search("acme", "issues", SPACE, array[0], limit=1)
    assert hits[0].record_id == "r4" and hits[0].metadata["version"] == 2


async def test_delete_and_purge_remove_exactly_what_they_should(store: VectorStore) -> None:
    array = vectors(6)
    ids = [f"r{i}" for i in range(6)]
    await store.upsert("acme", "issues", SPACE, points(ids, array))
    await store.upsert("acme", "tickets", SPACE, points(ids[:2], array[:2]))
    await store.upsert("globex", "issues", SPACE, points(ids, array))
    assert await store.delete("acme", "issues", SPACE, ["r1", "r3", "missing"]) == 2
    assert await store.count("acme", "issues", SPACE) == 4
    assert await store.count("globex", "issues", SPACE) == 6
    remaining = {h.record_id for h in await store.search("acme", "issues", SPACE, array[1], limit=10)}
    assert remaining == {"r0", "r2", "r4", "r5"}
    assert await store.delete("acme", "issues", SPACE, []) == 0
    await store.purge_tenant("acme")
    assert await store.count("acme", "issues", SPACE) == 0
    assert await store.count("acme", "tickets", SPACE) == 0
    assert await store.count("globex", "issues", SPACE) == 6


async def test_stored_states_report_hashes_for_existing_records(store: VectorStore) -> None:
    array = vectors(3)
    await store.upsert("acme", "issues", SPACE, points(["a", "b"], array[:2]))
    states = await store.stored_states("acme", "issues", SPACE, ["a", "b", "c"])
    assert set(states) == {"a", "b"} and states["a"].content_hash == "h-a"
    assert await store.stored_states("globex", "issues", SPACE, ["a"]) == {}


async def test_metadata_updates_keep_vectors_and_stay_in_scope(store: VectorStore) -> None:
    array = vectors(600)
    ids = [f"r{i}" for i in range(600)]
    await store.upsert("acme", "issues", SPACE, points(ids, array, status="open"))
    await store.upsert("globex", "issues", SPACE, points(ids[:3], array[:3], status="open"))
    updates = [MetadataUpdate(r, f"h-{r}", {"status": "closed"}, "m2") for r in ids]  # > one batch
    assert await store.update_metadata("acme", "issues", SPACE, updates) == 600
    hit = (await store.search("acme", "issues", SPACE, array[2], limit=1))[0]
    assert hit.record_id == "r2" and hit.score == pytest.approx(1.0, abs=1e-4)  # the vector is intact
    assert hit.metadata == {"status": "closed"}
    assert (await store.stored_states("acme", "issues", SPACE, ["r2"]))["r2"].metadata_hash == "m2"
    assert (await store.search("globex", "issues", SPACE, array[2], limit=1))[0].metadata["status"] == "open"
    assert await store.count("acme", "issues", SPACE) == 600
    assert await store.update_metadata("acme", "issues", SPACE, []) == 0
    await store.upsert("acme", "tickets", SPACE, points(["t1"], array[:1]))
    with pytest.raises(InputError, match=r"not stored in 'tickets'.*: r0, r1"):
        await store.update_metadata("acme", "tickets", SPACE, updates[:2])
    # a record id of another tenant is "not stored" for this one, and nothing was half-updated
    with pytest.raises(InputError, match="r5"):
        await store.update_metadata("globex", "issues", SPACE, [MetadataUpdate("r1", "h", {"x": 1}, "m"), updates[5]])
    assert (await store.search("globex", "issues", SPACE, array[1], limit=1))[0].metadata["status"] == "open"


async def test_score_threshold_and_search_params(store: VectorStore) -> None:
    array = vectors(30, seed=3)
    await store.upsert("acme", "issues", SPACE, points([f"r{i}" for i in range(30)], array))
    hits = await store.search("acme", "issues", SPACE, array[5], limit=30, score_threshold=0.5)
    assert hits and all(h.score >= 0.5 for h in hits)
    exact = await store.search("acme", "issues", SPACE, array[5], limit=3, exact=True)
    tuned = await store.search("acme", "issues", SPACE, array[5], limit=3, hnsw_ef=128)
    assert exact[0].record_id == tuned[0].record_id == "r5"


async def test_wrong_dimensions_are_refused_before_anything_is_written(store: VectorStore) -> None:
    await store.upsert("acme", "issues", SPACE, points(["a"], vectors(1)))
    mixed = [VectorPoint("b", vectors(1)[0], "h"), VectorPoint("c", np.ones(7, dtype=np.float32), "h")]
    with pytest.raises((VectorSpaceError, InputError)):
        await store.upsert("acme", "issues", SPACE, mixed)
    with pytest.raises(VectorSpaceError):
        await store.upsert("acme", "issues", SPACE, [VectorPoint("d", np.ones(9), "h")])
    with pytest.raises(VectorSpaceError):
        await store.search("acme", "issues", SPACE, np.ones(16))
    assert await store.count("acme", "issues", SPACE) == 1


async def test_a_collection_keeps_its_space_and_other_spaces_are_refused(store: VectorStore) -> None:
    await store.upsert("acme", "issues", SPACE, points(["a"], vectors(1)))
    other = VectorSpace("other/model@8/unit", 8)
    with pytest.raises(VectorSpaceError, match="test/model@8/unit"):
        await store.search("acme", "issues", other, vectors(1)[0])
    assert await store.spaces("acme", "issues") == ["test/model@8/unit"]
    # a second space gets its own collection: the vectors never mix
    await store.upsert("acme", "issues", other, points(["a"], vectors(1, seed=9)))
    assert await store.count("acme", "issues", other) == 1
    assert await store.count("acme", "issues", SPACE) == 1


@pytest.mark.parametrize(
    "name",
    ["../etc", "a/b", "a b", "ünïcode", "x" * 10_000, "", "a__b", "_a", "a_", "-a", "a\x00b", "tenant.name"],
)
async def test_hostile_names_are_refused(store: VectorStore, name: str) -> None:
    array = vectors(1)
    with pytest.raises(InputError):
        await store.upsert(name, "issues", SPACE, points(["a"], array))
    with pytest.raises(InputError):
        await store.upsert("acme", name, SPACE, points(["a"], array))
    with pytest.raises(InputError):
        await store.search(name, "issues", SPACE, array[0])
    with pytest.raises(InputError):
        await store.count("acme", name, SPACE)
    with pytest.raises(InputError):
        await store.purge_tenant(name)
    assert await store._list_collections() == []


async def test_bad_batches_write_nothing(store: VectorStore) -> None:
    array = vectors(3)
    assert await store.upsert("acme", "issues", SPACE, []) == 0
    assert await store._list_collections() == []
    with pytest.raises(InputError, match="repeated"):
        await store.upsert("acme", "issues", SPACE, points(["a", "b", "a"], array))
    with pytest.raises(InputError, match="empty"):
        await store.upsert("acme", "issues", SPACE, points(["a", ""], array[:2]))
    nan = array.copy()
    nan[1, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        await store.upsert("acme", "issues", SPACE, points(["a", "b", "c"], nan))
    with pytest.raises(InputError):
        await store.search("acme", "issues", SPACE, array[0], limit=0)
    assert await store.count("acme", "issues", SPACE) == 0


async def test_point_ids_are_deterministic_and_scoped() -> None:
    assert point_id("acme", "issues", "1") == point_id("acme", "issues", "1")
    assert len({point_id("acme", "issues", "1"), point_id("globex", "issues", "1"), point_id("acme", "prs", "1")}) == 3
    assert point_id("a", "b_c", "1") != point_id("a_b", "c", "1")


class _Leaky(EmbeddedVectorStore):
    """A broken backend that returns another tenant's point: the store must refuse the result."""

    async def _query(self, name: str, vector: list[float], where: All, options: QueryOptions) -> list[Found]:
        found = await super()._query(name, vector, where, options)
        leak = Found("x", 0.99, {"tenant_id": "globex", "table": "issues", "record_id": "secret", "metadata": {}})
        return [*found, leak]


async def test_a_foreign_point_fails_the_search_closed(tmp_path: Path) -> None:
    store = _Leaky(tmp_path, layout=Layout.SHARED)
    await store.upsert("acme", "issues", SPACE, points(["a"], vectors(1)))
    with pytest.raises(TenantIsolationError) as info:
        await store.search("acme", "issues", SPACE, vectors(1)[0])
    assert "secret" not in str(info.value) and "globex" not in str(info.value)
    await store.close()


async def test_embedded_data_survives_a_reopen(tmp_path: Path) -> None:
    array = vectors(100)
    store = EmbeddedVectorStore(tmp_path, layout=Layout.SHARED, optimize_after=40)
    await store.upsert("acme", "issues", SPACE, points([f"r{i}" for i in range(100)], array))
    await store.close()
    reopened = EmbeddedVectorStore(tmp_path, layout=Layout.SHARED)
    assert await reopened.count("acme", "issues", SPACE) == 100
    assert (await reopened.search("acme", "issues", SPACE, array[42], limit=1))[0].record_id == "r42"
    await reopened.close()
