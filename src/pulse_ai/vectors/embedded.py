"""The embedded backend: Qdrant's own engine in-process (``qdrant-edge-py``), one shard per collection.

Each collection is a shard directory under ``path`` with a ``pulse-ai.json`` manifest saying which
vector space it holds. The engine's calls are blocking, so they run in worker threads, one at a time
per shard. New segments are searched as they are; ``optimize()`` builds their indexes, and runs
after every ``optimize_after`` written points and on ``close()``, never per write.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import qdrant_edge as edge

from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors.base import CollectionInfo, Found, QueryOptions, StoredPoint, VectorStore
from pulse_ai.vectors.scope import RECORD_KEY, TABLE_KEY, TENANT_KEY, All, Layout, Match, MatchAnyOf

__all__ = ["EmbeddedVectorStore"]

T = TypeVar("T")
MANIFEST = "pulse-ai.json"


class _Shard:
    def __init__(self, shard: Any) -> None:
        self.shard = shard
        self.lock = threading.Lock()
        self.unoptimized = 0


class EmbeddedVectorStore(VectorStore):
    upsert_batch_size = 2048

    def __init__(
        self, path: str | Path, layout: Layout = Layout.PER_TENANT_TABLE, optimize_after: int = 20_000
    ) -> None:
        super().__init__(layout)
        self.path = Path(path)
        self.optimize_after = optimize_after
        self._shards: dict[str, _Shard] = {}
        self._open_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"EmbeddedVectorStore(path={str(self.path)!r}, layout={self.layout.value!r})"

    # ---- plumbing --------------------------------------------------------------------------
    async def _run(self, shard: _Shard, call: Callable[[Any], T]) -> T:
        def locked() -> T:
            with shard.lock:
                return call(shard.shard)

        try:
            return await asyncio.to_thread(locked)
        except VectorStoreError:
            raise
        except Exception as exc:  # the engine raises plain Exceptions with its message
            raise VectorStoreError(f"embedded Qdrant: {exc}") from exc

    async def _shard(self, name: str) -> _Shard | None:
        if name in self._shards:
            return self._shards[name]
        async with self._open_lock:
            if name not in self._shards:
                directory = self.path / name
                if not (directory / MANIFEST).exists():
                    return None
                try:
                    shard = await asyncio.to_thread(edge.EdgeShard.load, str(directory))
                except Exception as exc:
                    raise VectorStoreError(f"cannot open the collection {name}: {exc}") from exc
                self._shards[name] = _Shard(shard)
        return self._shards[name]

    async def _require(self, name: str) -> _Shard:
        shard = await self._shard(name)
        if shard is None:
            raise VectorStoreError(f"collection {name} does not exist")
        return shard

    # ---- primitives ------------------------------------------------------------------------
    async def _collection_info(self, name: str) -> CollectionInfo | None:
        manifest = self.path / name / MANIFEST
        if not manifest.exists():
            return None
        data = json.loads(manifest.read_text(encoding="utf-8"))
        return CollectionInfo(data["vector_space"], int(data["dimensions"]), data["layout"])

    async def _create_collection(self, name: str, info: CollectionInfo) -> None:
        directory = self.path / name
        shared = self.layout is Layout.SHARED
        # The shared layout indexes per tenant (payload_m) instead of one global graph (m=0).
        hnsw = edge.HnswIndexConfig(m=0 if shared else 16, ef_construct=100, full_scan_threshold=10_000, payload_m=16)
        config = edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=info.dimensions, distance=edge.Distance.Cosine),
            hnsw_config=hnsw,
        )

        def create() -> Any:
            if directory.exists():  # a crash between creating the shard and writing the manifest
                shutil.rmtree(directory)
            shard = edge.EdgeShard.create(str(directory), config)
            shard.update(edge.UpdateOperation.create_field_index(TENANT_KEY, edge.KeywordIndexParams(is_tenant=True)))
            shard.update(edge.UpdateOperation.create_field_index(TABLE_KEY, edge.PayloadSchemaType.Keyword))
            shard.update(edge.UpdateOperation.create_field_index(RECORD_KEY, edge.PayloadSchemaType.Keyword))
            temporary = directory / f"{MANIFEST}.tmp"
            temporary.write_text(json.dumps(info.as_dict()), encoding="utf-8")
            os.replace(temporary, directory / MANIFEST)  # the manifest last: its presence means "complete"
            return shard

        async with self._open_lock:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                self._shards[name] = _Shard(await asyncio.to_thread(create))
            except Exception as exc:
                raise VectorStoreError(f"cannot create the collection {name}: {exc}") from exc

    async def _upsert(self, name: str, points: list[StoredPoint]) -> None:
        shard = await self._require(name)

        def write(engine: Any) -> None:
            # The engine reads float32 rows as they are (its stub says list[float]); a .tolist() per
            # vector would cost more than the write itself.
            batch = [edge.Point(p.id, cast(Any, p.vector), p.payload) for p in points]
            engine.update(edge.UpdateOperation.upsert_points(batch))

        await self._run(shard, write)

    async def _written(self, name: str, count: int) -> None:
        shard = await self._require(name)
        shard.unoptimized += count
        if shard.unoptimized >= self.optimize_after:
            await self._optimize(shard)

    async def _optimize(self, shard: _Shard) -> None:
        shard.unoptimized = 0
        await self._run(shard, lambda s: s.optimize())

    async def optimize(self) -> None:
        """Build the indexes of every collection with writes since its last optimisation."""
        for shard in list(self._shards.values()):
            if shard.unoptimized:
                await self._optimize(shard)

    async def _query(self, name: str, vector: list[float], where: All, options: QueryOptions) -> list[Found]:
        shard = await self._require(name)
        request = edge.QueryRequest(
            limit=options.limit,
            query=edge.Query.Nearest(vector),
            filter=_filter(where),
            with_payload=True,
            score_threshold=options.score_threshold,
            params=edge.SearchParams(hnsw_ef=options.hnsw_ef, exact=options.exact),
        )
        points = await self._run(shard, lambda s: s.query(request))
        return [Found(str(p.id), float(p.score), p.payload or {}) for p in points]

    async def _count(self, name: str, where: All) -> int:
        shard = await self._require(name)
        request = edge.CountRequest(exact=True, filter=_filter(where))
        return int(await self._run(shard, lambda s: s.count(request)))

    async def _retrieve(self, name: str, ids: list[str]) -> list[Found]:
        shard = await self._require(name)
        records = await self._run(shard, lambda s: s.retrieve(ids, with_payload=True, with_vector=False))
        return [Found(str(r.id), 0.0, r.payload or {}) for r in records]

    async def _delete(self, name: str, where: All) -> None:
        shard = await self._require(name)
        operation = edge.UpdateOperation.delete_points_by_filter(_filter(where))
        await self._run(shard, lambda s: s.update(operation))

    async def _overwrite_payloads(self, name: str, payloads: list[tuple[str, dict[str, Any]]]) -> None:
        shard = await self._require(name)

        def write(engine: Any) -> None:  # one worker-thread trip for the whole batch
            for point, payload in payloads:
                engine.update(edge.UpdateOperation.overwrite_payload([point], payload))

        await self._run(shard, write)

    async def _list_collections(self) -> list[str]:
        if not self.path.exists():
            return []
        return sorted(entry.name for entry in self.path.iterdir() if (entry / MANIFEST).exists())

    async def _drop_collection(self, name: str) -> None:
        async with self._open_lock:
            shard = self._shards.pop(name, None)
            if shard is not None:
                await asyncio.to_thread(shard.shard.close)
            directory = self.path / name
            # The manifest goes first, so a crash mid-way leaves no half collection that looks whole.
            (directory / MANIFEST).unlink(missing_ok=True)
            await asyncio.to_thread(shutil.rmtree, directory, True)

    async def close(self) -> None:
        await self.optimize()
        async with self._open_lock:
            for shard in self._shards.values():
                await asyncio.to_thread(shard.shard.close)
            self._shards.clear()
            self._known.clear()


def _filter(where: All) -> Any:
    return edge.Filter(must=[_condition(c) for c in where.conditions])


def _condition(condition: Match | MatchAnyOf | All) -> Any:
    if isinstance(condition, All):
        return _filter(condition)
    if isinstance(condition, Match):
        return edge.FieldCondition(key=condition.key, match=edge.MatchValue(condition.value))
    return edge.FieldCondition(
        key=condition.key, match=edge.MatchAny(any=cast("list[str] | list[int]", list(condition.values)))
    )
