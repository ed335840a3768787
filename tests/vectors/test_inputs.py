"""Every bad input is an InputError raised before any backend call, the same on every backend;
delete, purge and search answer only from the caller's own data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pulse_ai import InputError
from pulse_ai.errors import PurgeIncompleteError, VectorSpaceError
from pulse_ai.vectors import Layout, VectorPoint, VectorSpace, VectorStore
from pulse_ai.vectors import disk as disk_module
from pulse_ai.vectors.embedded import EmbeddedVectorStore
from pulse_ai.vectors.server import QdrantServerStore
from tests.vectors.conftest import SPACE, vectors

OTHER = VectorSpace("other/model@8/unit", 8)


def points(ids: list[str], **metadata: Any) -> list[VectorPoint]:
    array = vectors(len(ids), seed=len(ids))
    return [VectorPoint(r, array[i], "h", dict(metadata)) for i, r in enumerate(ids)]


def forbid_backend_calls(store: VectorStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a backend call was made for bad input")

    for primitive in ("_query", "_count", "_retrieve", "_delete", "_upsert", "_create_collection", "_list_collections"):
        monkeypatch.setattr(store, primitive, refuse)


@pytest.mark.parametrize("tenant", ["acme\n", "acme-", "acme_", "Acme", "ACME", "acme\n\n", "a\nb"])
async def test_names_are_matched_in_full_and_tenants_are_lower_case(store: VectorStore, tenant: str) -> None:
    with pytest.raises(InputError) as refused:
        await store.upsert(tenant, "issues", SPACE, points(["a"]))
    if tenant.strip().isalpha() and not tenant.islower():
        assert "lower case" in str(refused.value)
    with pytest.raises(InputError):
        await store.upsert("acme", "issues-", SPACE, points(["a"]))
    with pytest.raises(InputError):
        await store.upsert("acme", "issues\n", SPACE, points(["a"]))
    assert await store._list_collections() == []
    await store.upsert("acme", "Issues", SPACE, points(["a"]))  # table names may have capitals


@pytest.mark.parametrize(
    "options",
    [
        {"where": {"n": 2**64}},
        {"where": {"n": -(2**63) - 1}},
        {"where": {"n": [1, 2**63]}},
        {"score_threshold": "0.5"},
        {"score_threshold": float("nan")},
        {"score_threshold": float("inf")},
        {"score_threshold": True},
        {"hnsw_ef": 2**64},
        {"hnsw_ef": 10**6},
        {"hnsw_ef": 0},
        {"hnsw_ef": True},
        {"exact": "yes"},
        {"exact": 1},
        {"exact": None},
        {"limit": 2**64},
    ],
)
async def test_bad_search_options_are_input_errors_before_any_backend_call(
    store: VectorStore, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.upsert("acme", "issues", SPACE, points(["a", "b"], n=1))
    forbid_backend_calls(store, monkeypatch)
    with pytest.raises(InputError):
        await store.search("acme", "issues", SPACE, vectors(1)[0], **options)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize("metadata", [nested(5000), {"n": 2**64}, {"n": [1, -(2**70)]}, {"x": [nested(40)]}])
async def test_bad_metadata_is_an_input_error_before_any_backend_call(
    store: VectorStore, metadata: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_backend_calls(store, monkeypatch)
    with pytest.raises(InputError):
        await store.upsert("acme", "issues", SPACE, [VectorPoint("a", vectors(1)[0], "h", metadata)])


async def test_deep_but_reasonable_metadata_is_kept(store: VectorStore) -> None:
    await store.upsert("acme", "issues", SPACE, [VectorPoint("a", vectors(1)[0], "h", nested(20))])
    assert (await store.search("acme", "issues", SPACE, vectors(1)[0], limit=1))[0].metadata == nested(20)


async def test_delete_refuses_a_single_string_and_none(store: VectorStore) -> None:
    await store.upsert("acme", "issues", SPACE, points(["A", "C", "M", "E", "-", "1", "ACME-1"]))
    for bad in ("ACME-1", None, b"ACME-1", 7):
        with pytest.raises(InputError, match="list of record ids"):
            await store.delete("acme", "issues", SPACE, bad)  # type: ignore[arg-type]
    assert await store.count("acme", "issues", SPACE) == 7
    assert await store.delete("acme", "issues", SPACE, ["ACME-1"]) == 1
    assert await store.count("acme", "issues", SPACE) == 6


async def test_boolean_filters_match_booleans_only(store: VectorStore) -> None:
    array = vectors(4)
    batch = [VectorPoint(f"r{i}", array[i], "h", {"flag": flag}) for i, flag in enumerate([True, False, 1, 0])]
    await store.upsert("acme", "issues", SPACE, batch)

    async def found(value: object) -> set[str]:
        hits = await store.search("acme", "issues", SPACE, array[0], limit=10, where={"flag": value})
        return {h.record_id for h in hits}

    assert await found(True) == {"r0"}
    assert await found(False) == {"r1"}
    assert await found(1) == {"r2"}
    assert await found(0) == {"r3"}
    hit = (await store.search("acme", "issues", SPACE, array[0], limit=1))[0]
    assert hit.metadata["flag"] is True


async def test_no_existence_oracle_between_tenants(store: VectorStore) -> None:
    await store.upsert("acme", "issues", SPACE, points(["a"]))
    with pytest.raises(VectorSpaceError, match="test/model@8/unit"):
        await store.search("acme", "issues", OTHER, vectors(1)[0])
    assert await store.search("initech", "issues", OTHER, vectors(1)[0]) == []
    await store.upsert("globex", "issues", OTHER, points(["g"]))  # another tenant creates that space
    with pytest.raises(VectorSpaceError, match="test/model@8/unit"):  # the same answer as before
        await store.search("acme", "issues", OTHER, vectors(1)[0])
    assert await store.search("initech", "issues", OTHER, vectors(1)[0]) == []


async def test_a_miss_does_not_list_collections_every_time(store: VectorStore) -> None:
    await store.upsert("acme", "issues", SPACE, points(["a"]))
    calls = 0
    listing = store._list_collections

    async def counted() -> list[str]:
        nonlocal calls
        calls += 1
        return await listing()

    store._list_collections = counted  # type: ignore[method-assign]
    for _ in range(5):
        assert await store.search("acme", "tickets", SPACE, vectors(1)[0]) == []
        assert await store.search("globex", "issues", SPACE, vectors(1)[0]) == []
    assert calls <= 1


def on_disk(backend: str, layout: Layout, path: Path) -> VectorStore:
    if backend == "embedded":
        return EmbeddedVectorStore(path, layout=layout)
    return QdrantServerStore(path=str(path), layout=layout)


@pytest.mark.parametrize("backend", ["embedded", "qdrant"])
async def test_purge_removes_the_tenant_from_every_layout_and_reports_it(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "vectors"
    before = on_disk(backend, Layout.PER_TENANT_TABLE, path)
    await before.upsert("acme", "issues", SPACE, points(["a", "b"]))
    await before.upsert("globex", "issues", SPACE, points(["g"]))
    await before.close()
    after = on_disk(backend, Layout.SHARED, path)  # the layout changed; old collections stay
    await after.upsert("acme", "issues", SPACE, points(["c", "d", "e"]))
    await after.upsert("globex", "issues", SPACE, points(["h"]))
    report = await after.purge_tenant("acme")
    assert [name.split("__")[0] for name in report.dropped_collections] == ["client_acme"]
    assert report.points == 3 and list(report.deleted_points) == [n for n in report.deleted_points if "shared" in n]
    assert await after.count("acme", "issues", SPACE) == 0
    assert await after.count("globex", "issues", SPACE) == 1
    await after.close()
    per_tenant = on_disk(backend, Layout.PER_TENANT_TABLE, path)
    assert await per_tenant.count("acme", "issues", SPACE) == 0
    assert await per_tenant.count("globex", "issues", SPACE) == 1
    await per_tenant.close()


def entries_of(path: Path, fragment: str) -> list[str]:
    return [entry.name for entry in path.iterdir() if fragment in entry.name]


async def test_a_purge_that_could_not_remove_everything_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedVectorStore(tmp_path)
    await store.upsert("acme", "issues", SPACE, points(["a"]))
    await store.upsert("acme", "tickets", SPACE, points(["t"]))
    real = disk_module.shutil.rmtree

    def failing(path: Any, onerror: Any = None, **kwargs: Any) -> None:
        if "tickets" in str(path):
            onerror(None, str(path), (PermissionError, PermissionError("denied"), None))
            return
        real(path, onerror=onerror, **kwargs)

    monkeypatch.setattr(disk_module.shutil, "rmtree", failing)
    with pytest.raises(PurgeIncompleteError, match=r"tickets.*denied") as incomplete:
        await store.purge_tenant("acme")
    assert any("issues" in name for name in incomplete.value.removed)
    monkeypatch.setattr(disk_module.shutil, "rmtree", real)
    report = await store.purge_tenant("acme")  # once the cause is gone, a purge finishes the job
    assert entries_of(tmp_path, "client_acme") == []
    assert [name.split("__")[1] for name in report.dropped_collections] == ["tickets"]
    await store.close()


async def test_vectors_of_huge_values_are_input_errors(store: VectorStore) -> None:
    with pytest.raises(InputError):
        await store.upsert("acme", "issues", SPACE, [VectorPoint("a", np.full(8, 1e300), "h")])
