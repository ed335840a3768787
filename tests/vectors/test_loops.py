"""One store object across event loops and threads (a second ``asyncio.run``, one PulseAI per
thread on one path), and a closed store: a clear VectorStoreError, never a raw RuntimeError."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from pulse_ai import PulseAI
from pulse_ai.config import VectorStoreConfig
from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors import Layout, Record, VectorStore, open_vector_store
from pulse_ai.vectors.embedded import EmbeddedVectorStore
from pulse_ai.vectors.server import QdrantServerStore
from tests.vectors._worker import SPACE, tenant_points

LAYOUTS = [Layout.PER_TENANT_TABLE, Layout.SHARED]
LAYOUT_IDS = [layout.value for layout in LAYOUTS]


def shared_config(path: Path, layout: Layout) -> VectorStoreConfig:
    return VectorStoreConfig(path=str(path), layout=layout.value)


async def first_writes(store: VectorStore, prefix: str, tenants: int = 6, count: int = 20) -> None:
    """Several tenants' first writes at once: every create contends for the store's locks."""
    names = [f"{prefix}-{i}" for i in range(tenants)]
    await asyncio.gather(*(store.upsert(t, "issues", SPACE, tenant_points(t, count)) for t in names))


async def counts(store: VectorStore, prefix: str, tenants: int = 6) -> list[int]:
    return [await store.count(f"{prefix}-{i}", "issues", SPACE) for i in range(tenants)]


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
def test_one_store_serves_a_second_asyncio_run(layout: Layout, tmp_path: Path) -> None:
    store = open_vector_store(shared_config(tmp_path, layout))
    asyncio.run(first_writes(store, "loop-a"))
    asyncio.run(first_writes(store, "loop-b"))  # the same object, another event loop, contended again
    assert asyncio.run(counts(store, "loop-a")) == [20] * 6
    assert asyncio.run(counts(store, "loop-b")) == [20] * 6
    asyncio.run(store.close())


def test_the_qdrant_backend_serves_a_second_asyncio_run() -> None:
    store = QdrantServerStore(location=":memory:", layout=Layout.SHARED)
    asyncio.run(first_writes(store, "loop-a"))
    asyncio.run(first_writes(store, "loop-b"))
    assert asyncio.run(counts(store, "loop-b")) == [20] * 6
    asyncio.run(store.close())


def run_in_threads(*jobs: Callable[[], Coroutine[Any, Any, Any]]) -> list[Any]:
    """Each job in its own thread with its own event loop, all at once; results or exceptions."""
    results: list[Any] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = asyncio.run(jobs[index]())
        except BaseException as error:  # reported to the test
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
def test_one_opener_per_thread_on_one_path_shares_the_store(layout: Layout, tmp_path: Path) -> None:
    def job(prefix: str) -> Callable[[], Coroutine[Any, Any, list[int]]]:
        async def run() -> list[int]:
            store = open_vector_store(shared_config(tmp_path, layout))
            try:
                for round_ in range(3):
                    await first_writes(store, f"{prefix}{round_}", tenants=4)
                return [n for round_ in range(3) for n in await counts(store, f"{prefix}{round_}", tenants=4)]
            finally:
                await store.close()

        return run

    assert run_in_threads(job("a"), job("b"), job("c")) == [[20] * 12] * 3
    store = open_vector_store(shared_config(tmp_path, layout))  # every user closed it: it opens again
    assert asyncio.run(counts(store, "b2", tenants=4)) == [20] * 4
    asyncio.run(store.close())


def test_a_build_made_due_in_one_loop_runs_after_that_loop_ended(tmp_path: Path) -> None:
    store = EmbeddedVectorStore(tmp_path, optimize_after=10, optimize_idle=0.2)
    asyncio.run(store.upsert("acme", "issues", SPACE, tenant_points("acme", 30)))  # the loop ends here
    asyncio.run(store.idle())  # another loop waits for the build the first one scheduled
    (collection,) = store._collections.values()
    assert collection.builds == 1 and collection.manifest.optimize_due is False
    asyncio.run(store.close())


def test_an_opener_during_another_threads_close_gets_a_working_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = shared_config(tmp_path, Layout.PER_TENANT_TABLE)
    first = open_vector_store(config)
    asyncio.run(first.upsert("acme", "issues", SPACE, tenant_points("acme", 5)))
    assert isinstance(first, EmbeddedVectorStore)
    release, closing = threading.Event(), threading.Event()
    close_all = first._close_all

    def slow_close_all() -> list[BaseException]:
        closing.set()
        release.wait()
        return close_all()

    monkeypatch.setattr(first, "_close_all", slow_close_all)
    closer = threading.Thread(target=lambda: asyncio.run(first.close()))
    closer.start()
    closing.wait()  # the close is under way: the store lock is still held
    opened: list[Any] = []
    opener = threading.Thread(target=lambda: opened.append(open_vector_store(config)))
    opener.start()
    release.set()
    closer.join()
    opener.join()
    (second,) = opened
    assert second is not first and first.closed
    assert asyncio.run(second.count("acme", "issues", SPACE)) == 5
    asyncio.run(second.close())


# ---- a closed store ----------------------------------------------------------------------------
def closed_calls(store: VectorStore) -> dict[str, Callable[[], Coroutine[Any, Any, Any]]]:
    vector = tenant_points("acme", 1)[0].vector
    return {
        "count": lambda: store.count("acme", "issues", SPACE),
        "upsert": lambda: store.upsert("acme", "issues", SPACE, tenant_points("acme", 2)),
        "search": lambda: store.search("acme", "issues", SPACE, vector),
        "delete": lambda: store.delete("acme", "issues", SPACE, ["acme-0"]),
        "stored_states": lambda: store.stored_states("acme", "issues", SPACE, ["acme-0"]),
        "purge_tenant": lambda: store.purge_tenant("acme"),
        "spaces": lambda: store.spaces("acme", "issues"),
    }


@pytest.mark.parametrize("backend", ["embedded", "qdrant"])
@pytest.mark.parametrize("call", ["count", "upsert", "search", "delete", "stored_states", "purge_tenant", "spaces"])
def test_a_closed_store_says_so(backend: str, call: str, tmp_path: Path) -> None:
    store: VectorStore = (
        EmbeddedVectorStore(tmp_path) if backend == "embedded" else QdrantServerStore(path=str(tmp_path))
    )
    asyncio.run(store.upsert("acme", "issues", SPACE, tenant_points("acme", 3)))
    asyncio.run(store.close())
    with pytest.raises(VectorStoreError, match=r"the vector store .*is closed"):
        asyncio.run(closed_calls(store)[call]())


def facade_yaml(vectors: Path, database: Path) -> str:
    return f"""
providers:
  f: {{type: fake, models: [{{name: text-embedding-3-small, dimensions: 64}}]}}
pipelines:
  embedding: {{kind: embedding, candidates: [f/text-embedding-3-small]}}
vector_store: {{backend: embedded, path: '{vectors}'}}
database: {{url: 'sqlite+aiosqlite:///{database}'}}
"""


async def with_tenants(ai: PulseAI, *tenants: str) -> None:
    platform = await ai.platform()
    for tenant in tenants:
        await platform.tenants.create(tenant)


def test_an_indexer_held_after_aclose_raises_a_clear_error(tmp_path: Path) -> None:
    ai = PulseAI.from_yaml(facade_yaml(tmp_path / "vectors", tmp_path / "db.sqlite"))
    indexer = ai.indexer()

    async def first() -> int:
        await with_tenants(ai, "acme")
        await indexer.index("acme", "issues", [Record("r1", "checkout is slow")])
        return await indexer.count("acme", "issues")

    assert asyncio.run(first()) == 1
    asyncio.run(ai.aclose())
    calls: list[Callable[[], Coroutine[Any, Any, Any]]] = [
        lambda: indexer.count("acme", "issues"),
        lambda: indexer.index("acme", "issues", [Record("r2", "another text")]),
        lambda: indexer.search("acme", "issues", "slow checkout"),
        lambda: indexer.delete("acme", "issues", ["r1"]),
        lambda: indexer.purge_tenant("acme"),
    ]
    for call in calls:
        with pytest.raises(VectorStoreError, match=r"the vector store at .* is closed"):
            asyncio.run(call())


def test_one_pulseai_per_thread_on_one_vector_path(tmp_path: Path) -> None:
    vectors, database = tmp_path / "vectors", tmp_path / "db.sqlite"
    tenants = {name: [f"{name}{round_}x{i}" for round_ in range(3) for i in range(3)] for name in ("a", "b")}
    asyncio.run(_create_tenants(facade_yaml(vectors, database), [t for group in tenants.values() for t in group]))

    def job(name: str) -> Callable[[], Coroutine[Any, Any, list[int]]]:
        async def run() -> list[int]:
            async with PulseAI.from_yaml(facade_yaml(vectors, database)) as ai:
                indexer = ai.indexer()
                for round_ in range(3):
                    batch = [Record(f"r{j}", f"text {j}") for j in range(10)]
                    group = [f"{name}{round_}x{i}" for i in range(3)]
                    await asyncio.gather(*(indexer.index(t, "docs", batch) for t in group))
                return [await indexer.count(t, "docs") for t in tenants[name]]

        return run

    assert run_in_threads(job("a"), job("b")) == [[10] * 9, [10] * 9]


async def _create_tenants(yaml: str, tenants: list[str]) -> None:
    async with PulseAI.from_yaml(yaml) as ai:
        await with_tenants(ai, *tenants)


def test_the_same_pulseai_in_a_second_asyncio_run(tmp_path: Path) -> None:
    ai = PulseAI.from_yaml(facade_yaml(tmp_path / "vectors", tmp_path / "db.sqlite"))
    indexer = ai.indexer()

    async def index(prefix: str) -> list[int]:
        group = [f"{prefix}-{i}" for i in range(6)]
        await with_tenants(ai, *group)
        await asyncio.gather(*(indexer.index(t, "docs", [Record("r", "some text")]) for t in group))
        return [await indexer.count(t, "docs") for t in group]

    assert asyncio.run(index("first")) == [1] * 6
    assert asyncio.run(index("second")) == [1] * 6
    asyncio.run(ai.aclose())
