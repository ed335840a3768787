"""The embedded backend: Qdrant's own engine in-process (``qdrant-edge-py``), one shard per collection.

Each collection is a shard directory under ``path`` with a manifest (``disk.py``). One process, and
in it one store object, owns a path (an ``flock``ed lock file naming the owner); ``open_vector_store``
shares that object in-process. Collections are created under a lock with the check repeated inside
it, and a create never deletes anything that holds data.

Engine calls block, so they run on the store's own worker thread, never the default executor; index
builds (``optimize``) run on a second one, in the background, once writes have paused for
``optimize_idle`` seconds (``builds.py``) — a bulk ingestion builds its index once, at the end, and
no write waits for a build. Every engine failure, Rust panics included (they are
``BaseException``s), becomes a ``VectorStoreError`` naming the collection and its directory.

One store object may serve several event loops at once (a second ``asyncio.run``, one PulseAI per
thread on the same path): no asyncio lock, task or executor of one loop is kept. What is shared is
guarded by threading locks taken only in the worker threads, and awaited through
``concurrent.futures`` futures, which any loop can wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import qdrant_edge as edge

from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors import disk
from pulse_ai.vectors.base import CollectionInfo, Found, PurgeLeftovers, QueryOptions, StoredPoint
from pulse_ai.vectors.builds import IndexBuilder
from pulse_ai.vectors.collection import (
    DROPPING,
    Collection,
    build_config,
    create_shard,
    load_shard,
    purge_leftovers,
)
from pulse_ai.vectors.scope import All, Layout, Match, MatchAnyOf
from pulse_ai.vectors.store import VectorStore

__all__ = ["EmbeddedVectorStore"]

T = TypeVar("T")
#: Free space kept in reserve before any write: the engine grows its files 32 MiB at a time.
MIN_FREE_BYTES = 96 * 2**20
_PAYLOAD_ESTIMATE = 1024  # bytes a point's payload may take, WAL and storage together
_DROPPING = DROPPING


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
        self.min_free_bytes = min_free_bytes
        self._lock = disk.StoreLock(self.path, timeout=lock_timeout)
        self._collections: dict[str, Collection] = {}
        #: Guards ``_collections`` and every create, load and drop (held in worker threads only).
        self._state = threading.Lock()
        self._dropping: set[str] = set()
        self._engine = ThreadPoolExecutor(1, thread_name_prefix="pulse-ai-vectors")
        self._builds = IndexBuilder(
            self.path, optimize_after=optimize_after, optimize_idle=optimize_idle, min_free_bytes=min_free_bytes
        )
        self._resumed: Future[None] | None = None
        self._closing = threading.Event()
        self._closed_event = threading.Event()
        self._closer: int | None = None
        #: How many ``open_vector_store`` users share this object; the last ``close`` closes it.
        self.users = 1

    def __repr__(self) -> str:
        return f"EmbeddedVectorStore(path={str(self.path)!r}, layout={self.layout.value!r})"

    @property
    def optimize_after(self) -> int:
        return self._builds.optimize_after

    @property
    def optimize_idle(self) -> float:
        return self._builds.optimize_idle

    def _closed_error(self) -> VectorStoreError:
        return VectorStoreError(
            f"the vector store at {self.path} is closed (its PulseAI was closed: open a new one and take "
            "a new indexer from it)"
        )

    # ---- plumbing --------------------------------------------------------------------------
    async def _thread(self, call: Callable[[], T], *, closing: bool = False) -> T:
        """``call`` on the store's engine thread, awaited from whichever loop is running."""
        if self._closed or (self._closing.is_set() and not closing):
            raise self._closed_error()
        try:
            future = self._engine.submit(call)
        except RuntimeError:  # shut down by a close in another thread meanwhile
            raise self._closed_error() from None
        try:
            return await asyncio.wrap_future(future)
        except OSError as exc:
            raise VectorStoreError(f"the vector store at {self.path}: {type(exc).__name__}: {exc}") from exc

    async def _call(self, collection: Collection, call: Callable[[Any], T]) -> T:
        """An engine call on the store's thread, every failure made a VectorStoreError."""
        return await self._thread(lambda: collection.guarded(call))

    async def _get(self, name: str) -> Collection | None:
        """The open collection, loading its shard on first use; None when it does not exist."""
        if self._resumed is None:
            with contextlib.suppress(RuntimeError):  # closed meanwhile: the caller hears it below
                self._resumed = self._builds.run(self._resume)
        collection = self._collections.get(name)
        if collection is not None:
            return collection
        return await self._thread(lambda: self._load(name))

    def _load(self, name: str) -> Collection | None:  # worker threads
        with self._state:
            if self._closing.is_set():
                raise self._closed_error()
            if name in self._dropping:
                raise VectorStoreError(f"collection {name} is being dropped")
            collection = self._collections.get(name)
            if collection is None:
                directory = self.path / name
                manifest = disk.read_manifest(directory)
                if manifest is None:
                    return None
                shard = load_shard(name, directory, manifest)
                collection = self._collections[name] = Collection(name, directory, shard, manifest)
            return collection

    async def _require(self, name: str) -> Collection:
        collection = await self._get(name)
        if collection is None:
            raise VectorStoreError(f"collection {name} does not exist in {self.path}")
        return collection

    async def _mutating(self, collection: Collection, points: int) -> None:
        """Before a write: enough disk for it, and the manifest saying a build is due (crash-proof)."""
        needed = self.min_free_bytes + points * (collection.manifest.dimensions * 4 * 3 + _PAYLOAD_ESTIMATE)

        def prepare() -> None:
            disk.check_free_space(self.path, needed)
            with collection.guard:
                collection.writes += 1
                if collection.manifest.clean or not collection.manifest.optimize_due:
                    collection.save_manifest(clean=False, optimize_due=True)

        await self._thread(prepare)

    # ---- primitives ------------------------------------------------------------------------
    async def _collection_info(self, name: str) -> CollectionInfo | None:
        collection = self._collections.get(name)
        manifest = (
            collection.manifest if collection else await self._thread(lambda: disk.read_manifest(self.path / name))
        )
        return None if manifest is None else CollectionInfo(manifest.vector_space, manifest.dimensions, manifest.layout)

    async def _create_collection(self, name: str, info: CollectionInfo) -> CollectionInfo:
        def create() -> CollectionInfo:
            with self._state:  # the check is repeated inside the lock: one creator, and never a delete
                if self._closing.is_set():
                    raise self._closed_error()
                held = self._collections.get(name)
                manifest = held.manifest if held else disk.read_manifest(self.path / name)
                if manifest is not None:
                    return CollectionInfo(manifest.vector_space, manifest.dimensions, manifest.layout)
                disk.check_free_space(self.path, self.min_free_bytes)
                config = build_config(info.dimensions, shared=self.layout is Layout.SHARED)
                manifest = disk.Manifest(info.vector_space, info.dimensions, info.layout)
                shard = create_shard(name, self.path / name, config, manifest)
                self._collections[name] = Collection(name, self.path / name, shard, manifest)
                return info

        return await self._thread(create)

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
        await self._thread(lambda: self._builds.written(collection, count))

    async def optimize(self) -> None:
        """Build the indexes of every collection with writes since its last build (by any process)."""
        self.ensure_open()
        for name in await self._list_collections():
            collection = await self._get(name)
            if collection is not None and collection.manifest.optimize_due:
                build = await self._thread(lambda c=collection: self._builds.build_now(c))  # type: ignore[misc]
                if build is not None:
                    await asyncio.wrap_future(build)

    async def idle(self) -> None:
        """Wait until no index build is scheduled or running (for tests and orderly shutdowns)."""
        if self._resumed is not None:
            await asyncio.wrap_future(self._resumed)
        while True:
            waiting = [c.scheduled for c in list(self._collections.values()) if c.scheduled is not None]
            pending = [future for future in waiting if not future.done()]
            if not pending:
                return
            await asyncio.wait([asyncio.wrap_future(future) for future in pending])

    def _resume(self) -> None:
        """At open, on the builder thread: builds that a previous process left due (it was killed,
        or closed before) are scheduled again."""
        for name in self._listing():
            if self._closing.is_set():
                return
            with contextlib.suppress(VectorStoreError, OSError):  # a damaged one is reported when used
                manifest = disk.read_manifest(self.path / name)
                collection = self._load(name) if manifest is not None and manifest.optimize_due else None
                if collection is not None:
                    self._builds.schedule(collection)

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

    def _listing(self) -> list[str]:
        if not self.path.exists():
            return []
        return sorted(
            entry.name
            for entry in self.path.iterdir()
            if not entry.name.startswith(".") and entry.is_dir() and (entry / disk.MANIFEST).exists()
        )

    async def _list_collections(self) -> list[str]:
        return await self._thread(self._listing)

    async def _drop_collection(self, name: str) -> None:
        def detach() -> Collection | None:
            with self._state:
                self._dropping.add(name)  # no load of it until it is gone
                return self._collections.pop(name, None)

        try:
            collection = await self._thread(detach)
            if collection is not None:
                build = await self._thread(lambda: self._builds.retire(collection))
                if build is not None:  # a running build finishes first
                    with contextlib.suppress(Exception):
                        await asyncio.wrap_future(build)
                await self._thread(collection.close)
            # Renamed first (atomic: the collection is gone at once), then removed; what could not be
            # removed stays under a ".dropping-" name that the next purge of the tenant removes.
            trash = self.path / f"{_DROPPING}{name}-{uuid.uuid4().hex[:8]}"
            await self._thread(lambda: (self.path / name).rename(trash))
            await self._thread(lambda: disk.remove_tree(trash))
        finally:
            self._dropping.discard(name)

    async def _purge_leftovers(self, tenant: str) -> PurgeLeftovers:
        return await self._thread(lambda: self._leftovers(tenant))

    def _leftovers(self, tenant: str) -> PurgeLeftovers:
        with self._state:  # no create is half-way meanwhile
            return purge_leftovers(self.path, tenant)

    async def ping(self) -> None:
        if self._closed:
            raise VectorStoreError(f"the vector store at {self.path} is closed")
        await super().ping()

    async def close(self) -> None:
        """Flush and close every shard, record each one's files and points, and release the lock.
        Index builds still due are left due (in the manifests): the next open resumes them."""
        from pulse_ai.vectors import _closed_shared, _release_shared

        if not _release_shared(self):
            return
        self._closer = threading.get_ident()
        self._closing.set()
        failures: list[BaseException] = []
        try:
            builds = await self._thread(self._retire_all, closing=True)
            for future in [self._resumed, *builds]:
                if future is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wrap_future(future)
            await self._thread(lambda: failures.extend(self._close_all()), closing=True)
        finally:
            self._closed = True
            self._forget_all()
            await asyncio.to_thread(self._shutdown)
            _closed_shared(self)
            self._closed_event.set()
        if failures:
            raise failures[0]

    def _retire_all(self) -> list[Future[None] | None]:
        with self._state:  # closing is set: no collection is loaded after this
            return [self._builds.retire(collection) for collection in self._collections.values()]

    def _close_all(self) -> list[BaseException]:
        failures: list[BaseException] = []
        with self._state:
            for collection in self._collections.values():
                try:
                    collection.close_clean()
                except (VectorStoreError, OSError) as error:
                    failures.append(error)
            self._collections.clear()
        return failures

    def _shutdown(self) -> None:
        self._builds.close()
        self._engine.shutdown(wait=True)
        self._lock.release()

    def wait_closed(self, timeout: float) -> None:
        """For a new opener of the path: wait until the close under way in another thread is done."""
        if self._closer == threading.get_ident():
            raise VectorStoreError(f"the vector store at {self.path} is being closed; open it again after close()")
        if not self._closed_event.wait(timeout):
            raise VectorStoreError(f"the vector store at {self.path} is still being closed by another thread")


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
