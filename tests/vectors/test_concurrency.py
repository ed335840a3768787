"""Many tenants' first writes at once — tasks, store objects, processes — and one owner per store."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pulse_ai.config import VectorStoreConfig
from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors import Layout, VectorStore, open_vector_store
from pulse_ai.vectors.embedded import EmbeddedVectorStore
from pulse_ai.vectors.server import QdrantServerStore
from tests.vectors._worker import SPACE, tenant_points

ROOT = Path(__file__).resolve().parents[2]
TENANTS = [f"tenant-{i}" for i in range(6)]
LAYOUTS = [Layout.PER_TENANT_TABLE, Layout.SHARED]


def on_disk(backend: str, layout: Layout, path: Path) -> VectorStore:
    if backend == "embedded":
        return EmbeddedVectorStore(path, layout=layout)
    return QdrantServerStore(path=str(path), layout=layout)


async def assert_every_tenant_kept_everything(store: VectorStore, count: int) -> None:
    for tenant in TENANTS:
        assert await store.count(tenant, "issues", SPACE) == count, tenant
        points = tenant_points(tenant, count)
        hits = await store.search(tenant, "issues", SPACE, points[3].vector, limit=count)
        assert hits[0].record_id == f"{tenant}-3"
        assert {h.metadata["owner"] for h in hits} == {tenant} and len(hits) == count


@pytest.mark.parametrize("backend", ["embedded", "qdrant"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay.value for lay in LAYOUTS])
async def test_first_writes_of_many_tenants_at_once_keep_every_record(
    backend: str, layout: Layout, tmp_path: Path
) -> None:
    store = on_disk(backend, layout, tmp_path / "vectors")
    await asyncio.gather(*(store.upsert(t, "issues", SPACE, tenant_points(t, 25)) for t in TENANTS))
    await assert_every_tenant_kept_everything(store, 25)
    await store.close()
    reopened = on_disk(backend, layout, tmp_path / "vectors")
    await assert_every_tenant_kept_everything(reopened, 25)
    await reopened.close()


@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay.value for lay in LAYOUTS])
async def test_store_objects_opened_on_one_path_share_one_store(layout: Layout, tmp_path: Path) -> None:
    config = VectorStoreConfig(path=str(tmp_path / "vectors"), layout=layout.value)
    handles = [open_vector_store(config) for _ in range(3)]
    assert all(handle is handles[0] for handle in handles)
    await asyncio.gather(
        *(handles[i % 3].upsert(t, "issues", SPACE, tenant_points(t, 25)) for i, t in enumerate(TENANTS))
    )
    for handle in handles:
        await handle.close()
    reopened = open_vector_store(config)
    assert reopened is not handles[0]  # the last close closed it; a new open opens it again
    await assert_every_tenant_kept_everything(reopened, 25)
    await reopened.close()


async def test_a_second_store_object_on_a_path_is_refused_naming_the_owner(tmp_path: Path) -> None:
    first = EmbeddedVectorStore(tmp_path)
    with pytest.raises(VectorStoreError) as refused:
        EmbeddedVectorStore(tmp_path)
    assert str(tmp_path) in str(refused.value) and f"pid {os.getpid()}" in str(refused.value)
    assert "open_vector_store" in str(refused.value)
    await first.upsert("acme", "issues", SPACE, tenant_points("acme", 3))
    await first.close()
    second = EmbeddedVectorStore(tmp_path)  # released at close
    assert await second.count("acme", "issues", SPACE) == 3
    await second.close()


def worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.vectors._worker", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


async def test_another_process_is_refused_naming_the_path_and_its_pid(tmp_path: Path) -> None:
    holder = worker("hold", str(tmp_path), "shared")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(VectorStoreError) as refused:
            EmbeddedVectorStore(tmp_path, layout=Layout.SHARED)
        assert str(tmp_path) in str(refused.value) and f"pid {holder.pid}" in str(refused.value)
    finally:
        holder.kill()
        holder.wait()
    store = EmbeddedVectorStore(tmp_path, layout=Layout.SHARED)  # the kernel released the dead owner's lock
    await store.close()


@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay.value for lay in LAYOUTS])
async def test_first_writes_from_separate_processes_keep_every_record(layout: Layout, tmp_path: Path) -> None:
    processes = [worker("write", str(tmp_path), layout.value, tenant, "25") for tenant in TENANTS]
    for process in processes:
        assert process.wait(timeout=300) == 0
    store = EmbeddedVectorStore(tmp_path, layout=layout)
    await assert_every_tenant_kept_everything(store, 25)
    await store.close()


@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay.value for lay in LAYOUTS])
async def test_server_clients_racing_to_create_a_collection_both_succeed(layout: Layout) -> None:
    # Two store objects talking to one Qdrant (one client here): neither knows the collection
    # exists, both create it; "already exists" is success and no record is lost.
    first = QdrantServerStore(location=":memory:", layout=layout)
    second = QdrantServerStore(location=":memory:", layout=layout)
    await second.client.close()
    second.client = first.client
    await asyncio.gather(
        first.upsert("tenant-0", "issues", SPACE, tenant_points("tenant-0", 25)),
        second.upsert("tenant-0", "issues", SPACE, tenant_points("tenant-0", 25)),
        *(second.upsert(t, "issues", SPACE, tenant_points(t, 25)) for t in TENANTS[1:]),
    )
    await assert_every_tenant_kept_everything(first, 25)
    await first.close()


def remove_manifest(path: Path) -> Path:
    (directory,) = [d for d in path.iterdir() if d.is_dir()]
    (directory / "pulse-ai.json").unlink()
    return directory


async def test_a_half_created_collection_is_finished_not_wiped(tmp_path: Path) -> None:
    store = EmbeddedVectorStore(tmp_path, layout=Layout.SHARED)
    await store.upsert("acme", "issues", SPACE, tenant_points("acme", 5))
    await store.close()
    directory = remove_manifest(tmp_path)  # as if killed between the shard and its manifest
    store = EmbeddedVectorStore(tmp_path, layout=Layout.SHARED)
    with pytest.raises(VectorStoreError, match="5 points but no manifest"):
        await store.upsert("globex", "issues", SPACE, tenant_points("globex", 5))
    assert directory.exists()  # reported and left as it was, never deleted
    await store.close()
