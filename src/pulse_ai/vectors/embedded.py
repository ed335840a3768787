"""The embedded backend: Qdrant's own engine in-process (``qdrant-edge-py``), one shard per collection.

Each collection is a shard directory under ``path`` with a manifest (``disk.py``). One process, and
in it one store object, owns a path (an ``flock``ed lock file naming the owner); ``open_vector_store``
shares that object in-process. Collections are created under a per-collection lock with the check
repeated inside it, and a create never deletes anything that holds data.

Engine calls block, so they run on the store's own worker thread, never the default executor; index
builds (``optimize``) run on a second one, in the background, once writes have paused for
``optimize_idle`` seconds — a bulk ingestion builds its index once, at the end, and no write waits
for a build. Every engine failure, Rust panics included (they are ``BaseException``s), becomes a
``VectorStoreError`` naming the collection and its directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import qdrant_edge as edge

from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors import disk
from pulse_ai.vectors.base import CollectionInfo, Found, QueryOptions, StoredPoint
from pulse_ai.vectors.collection import Collection, build_config, create_shard, load_shard
from pulse_ai.vectors.scope import All, Layout, Match, MatchAnyOf
from pulse_ai.vectors.store import VectorStore

__all__ = ["EmbeddedVectorStore"]

T = TypeVar("T")
#: Free space kept in reserve before any write: the engine grows its files 32 MiB at a time.
MIN_FREE_BYTES = 96 * 2**20
_PAYLOAD_ESTIMATE = 1024  # bytes a point's payload may take, WAL and storage together
_DROPPING = ".dropping-"


class EmbeddedVectorStore(VectorStore):
    upsert_batch_size = 2048
    listing_ttl = None  # the only writer of its directory: a listing stays true

    def __init__(
        self,
        path: str | Path,
        layout: Layout = Layout.PER_TENANT_TABLE,
        optimize_after: int = 20_000,
        *,
        optimize_idle: float = 2.0,
        lock_timeout: float = 0.0,
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> None:
        super().__init__(layout)
        self.path = Path(path).absolute()
        self.optimize_after = optimize_after
        self.optimize_idle = optimize_idle
        self.min_free_bytes = min_free_bytes
        self._lock = disk.StoreLock(self.path, timeout=lock_timeout)
        self._collections: dict[str, Collection] = {}
        self._creating: dict[str, asyncio.Lock] = {}
        self._open_lock = asyncio.Lock()
        self._engine = ThreadPoolExecutor(1, thread_name_prefix="pulse-ai-vectors")
        self._builder = ThreadPoolExecutor(1, thread_name_prefix="pulse-ai-vectors-optimize")
        self._resumed = False
        self._closed = False
        #: How many ``open_vector_store`` users share this object; the last ``close`` closes it.
        self.users = 1

    def __repr__(self) -> str:
        return f"EmbeddedVectorStore(path={str(self.path)!r}, layout={self.layout.value!r})"

    # ---- plumbing --------------------------------------------------------------------------
    async def _thread(self, call: Callable[[], T], executor: ThreadPoolExecutor | None = None) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor or self._engine, call)

    async def _call(self, collection: Collection, call: Callable[[Any], T], *, build: bool = False) -> T:
        """An engine call on the store's thread (or the builder's), every failure made a VectorStoreError."""
        if self._closed:
            raise VectorStoreError(f"the vector store at {self.path} is closed")
        return await self._thread(lambda: collection.guarded(call), self._builder if build else None)

    async def _get(self, name: str) -> Collection | None:
        """The open collection, loading its shard on first use; None when it does not exist."""
        if not self._resumed:
            self._resumed = True
            asyncio.get_running_loop().create_task(self._resume())
        collection = self._collections.get(name)
        if collection is not None:
            return collection
        async with self._open_lock:
            if name not in self._collections:
                directory = self.path / name
                manifest = await self._thread(lambda: disk.read_manifest(directory))
                if manifest is None:
                    return None
                shard = await self._thread(lambda: load_shard(name, directory, manifest))
                self._collections[name] = Collection(name, directory, shard, manifest)
        return self._collections[name]

    async def _require(self, name: str) -> Collection:
        collection = await self._get(name)
        if collection is None:
            raise VectorStoreError(f"collection {name} does not exist in {self.path}")
        return collection

    async def _mutating(self, collection: Collection, points: int) -> None:
        """Before a write: enough disk for it, and the manifest saying a build is due (crash-proof)."""
        dims = collection.manifest.dimensions
        needed = self.min_free_bytes + points * (dims * 4 * 3 + _PAYLOAD_ESTIMATE)
        await self._thread(lambda: disk.check_free_space(self.path, needed))
        collection.writes += 1
        if collection.manifest.clean or not collection.manifest.optimize_due:
            collection.manifest.clean = False
            collection.manifest.optimize_due = True
            await self._thread(lambda: disk.write_manifest(collection.directory, collection.manifest))

    # ---- primitives ------------------------------------------------------------------------
    async def _collection_info(self, name: str) -> CollectionInfo | None:
        collection = self._collections.get(name)
        manifest = (
            collection.manifest if collection else await self._thread(lambda: disk.read_manifest(self.path / name))
        )
        return None if manifest is None else CollectionInfo(manifest.vector_space, manifest.dimensions, manifest.layout)

    async def _create_collection(self, name: str, info: CollectionInfo) -> CollectionInfo:
        lock = self._creating.setdefault(name, asyncio.Lock())
        async with lock:  # the check is repeated inside the lock: one creator, and never a delete
            existing = await self._collection_info(name)
            if existing is not None:
                return existing
            await self._thread(lambda: disk.check_free_space(self.path, self.min_free_bytes))
            config = build_config(info.dimensions, shared=self.layout is Layout.SHARED)
            manifest = disk.Manifest(info.vector_space, info.dimensions, info.layout)
            async with self._open_lock:
                shard = await self._thread(lambda: create_shard(name, self.path / name, config, manifest))
                self._collections[name] = Collection(name, self.path / name, shard, manifest)
        return info

    async def _upsert(self, name: str, points: list[StoredPoint]) -> None:
        collection = await self._require(name)
        await self._mutating(collection, len(points))

        def write(engine: Any) -> None:
            # The engine reads float32 rows as they are (its stub says list[float]); a .tolist() per
            # vector would cost more than the write itself.
            batch = [edge.Point(p.id, cast(Any, p.vector), p.payload) for p in points]
            engine.update(edge.UpdateOperation.upsert_points(batch))

        await self._call(collection, write)

    async def _written(self, name: str, count: int) -> None:
        collection = await self._require(name)
        collection.pending += count
        collection.last_write = time.monotonic()
        if collection.pending >= self.optimize_after:
            self._schedule(collection)

    def _schedule(self, collection: Collection) -> None:
        if collection.builder is None or collection.builder.done():
            collection.builder = asyncio.get_running_loop().create_task(self._build_when_idle(collection))

    async def _build_when_idle(self, collection: Collection) -> None:
        """Wait until writes pause for ``optimize_idle`` seconds, then build in the background."""
        while True:
            wait = collection.last_write + self.optimize_idle - time.monotonic()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        try:
            await self._build(collection)
        except VectorStoreError:  # the build stays due (in the manifest) and is tried again later
            collection.failed_builds += 1

    async def _build(self, collection: Collection) -> None:
        async with collection.building:
            if not collection.manifest.optimize_due or self._closed:
                return
            size = await self._thread(lambda: sum(disk.fingerprint_sizes(collection.directory).values()))
            await self._thread(lambda: disk.check_free_space(self.path, self.min_free_bytes + size))
            writes_before = collection.writes
            collection.manifest.clean = False
            await self._thread(lambda: disk.write_manifest(collection.directory, collection.manifest))
            await self._call(collection, lambda engine: engine.optimize(), build=True)
            collection.builds += 1
            if collection.writes == writes_before:  # nothing was written meanwhile: not due any more
                collection.pending = 0
                collection.manifest.optimize_due = False
                await self._thread(lambda: disk.write_manifest(collection.directory, collection.manifest))

    async def optimize(self) -> None:
        """Build the indexes of every collection with writes since its last build (by any process)."""
        for name in await self._list_collections():
            collection = await self._get(name)
            if collection is not None and collection.manifest.optimize_due:
                await self._build(collection)

    async def idle(self) -> None:
        """Wait until no index build is scheduled or running (for tests and orderly shutdowns)."""
        while True:
            tasks = [c.builder for c in self._collections.values() if c.builder and not c.builder.done()]
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _resume(self) -> None:
        """At open: builds that a previous process left due (it was killed, or closed before) resume."""
        with contextlib.suppress(VectorStoreError):
            for name in await self._list_collections():
                manifest = await self._thread(lambda name=name: disk.read_manifest(self.path / name))  # type: ignore[misc]
                if manifest is not None and manifest.optimize_due:
                    collection = await self._get(name)
                    if collection is not None:
                        self._schedule(collection)

    async def _query(self, name: str, vector: list[float], where: All, options: QueryOptions) -> list[Found]:
        collection = await self._require(name)
        request = edge.QueryRequest(
            limit=options.limit,
            query=edge.Query.Nearest(vector),
            filter=_filter(where),
            with_payload=True,
            score_threshold=options.score_threshold,
            params=edge.SearchParams(hnsw_ef=options.hnsw_ef, exact=options.exact),
        )
        points = await self._call(collection, lambda s: s.query(request))
        return [Found(str(p.id), float(p.score), p.payload or {}) for p in points]

    async def _count(self, name: str, where: All) -> int:
        collection = await self._require(name)
        request = edge.CountRequest(exact=True, filter=_filter(where))
        return int(await self._call(collection, lambda s: s.count(request)))

    async def _retrieve(self, name: str, ids: list[str]) -> list[Found]:
        collection = await self._require(name)
        records = await self._call(collection, lambda s: s.retrieve(ids, with_payload=True, with_vector=False))
        return [Found(str(r.id), 0.0, r.payload or {}) for r in records]

    async def _delete(self, name: str, where: All) -> None:
        collection = await self._require(name)
        await self._mutating(collection, 0)
        operation = edge.UpdateOperation.delete_points_by_filter(_filter(where))
        await self._call(collection, lambda s: s.update(operation))

    async def _overwrite_payloads(self, name: str, payloads: list[tuple[str, dict[str, Any]]]) -> None:
        collection = await self._require(name)
        await self._mutating(collection, len(payloads))

        def write(engine: Any) -> None:  # one worker-thread trip for the whole batch
            for point, payload in payloads:
                engine.update(edge.UpdateOperation.overwrite_payload([point], payload))

        await self._call(collection, write)

    async def _list_collections(self) -> list[str]:
        def listing() -> list[str]:
            if not self.path.exists():
                return []
            return sorted(e.name for e in self.path.iterdir() if e.is_dir() and (e / disk.MANIFEST).exists())

        return await self._thread(listing)

    async def _drop_collection(self, name: str) -> None:
        async with self._open_lock:
            collection = self._collections.pop(name, None)
            if collection is not None:
                if collection.builder is not None:
                    collection.builder.cancel()
                async with collection.building:  # a running build finishes first
                    await self._thread(collection.close)
            # Renamed first (atomic: the collection is gone at once), then removed; what could not be
            # removed stays under a ".dropping-" name that the next purge of the tenant removes.
            trash = self.path / f"{_DROPPING}{name}-{uuid.uuid4().hex[:8]}"
            await self._thread(lambda: (self.path / name).rename(trash))
            await self._thread(lambda: disk.remove_tree(trash))

    async def _remove_leftovers(self, prefix: str) -> list[str]:
        def remove() -> list[str]:
            left = [e for e in self.path.iterdir() if e.name.startswith(f"{_DROPPING}{prefix}")]
            for entry in left:
                disk.remove_tree(entry)
            return [entry.name.removeprefix(_DROPPING) for entry in left]

        return await self._thread(remove)

    async def ping(self) -> None:
        if self._closed:
            raise VectorStoreError(f"the vector store at {self.path} is closed")
        await super().ping()

    async def close(self) -> None:
        """Flush and close every shard, record each one's files and points, and release the lock.
        Index builds still due are left due (in the manifests): the next open resumes them."""
        self.users -= 1
        if self.users > 0 or self._closed:
            return
        from pulse_ai.vectors import _release_shared

        _release_shared(self)
        for collection in self._collections.values():
            if collection.builder is not None and not collection.builder.done():
                collection.builder.cancel()
        async with self._open_lock:
            for collection in self._collections.values():
                async with collection.building:
                    await self._thread(collection.close_clean)
            self._closed = True
            self._collections.clear()
            self._forget_all()
        self._engine.shutdown(wait=True)
        self._builder.shutdown(wait=True)
        self._lock.release()


def _filter(where: All) -> Any:
    return edge.Filter(must=[_condition(c) for c in where.conditions])


def _condition(condition: Match | MatchAnyOf | All) -> Any:
    if isinstance(condition, All):
        return _filter(condition)
    if isinstance(condition, Match):
        value = condition.value
        # The engine reads a Python bool as the integer 1 or 0 (bool is an int); numpy's bool it
        # reads as a boolean, so `flag: True` matches booleans only, as on a Qdrant server.
        match = edge.MatchValue(cast(Any, np.bool_(value)) if isinstance(value, bool) else value)
        return edge.FieldCondition(key=condition.key, match=match)
    return edge.FieldCondition(
        key=condition.key, match=edge.MatchAny(any=cast("list[str] | list[int]", list(condition.values)))
    )
