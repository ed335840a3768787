"""The server backend: a Qdrant server or cluster through ``qdrant-client`` (AsyncQdrantClient).

The collection's vector space is kept in Qdrant's collection metadata. ``url`` is a server;
``path`` (a directory) and ``location=":memory:"`` are qdrant-client's local mode, which speaks the
same client API (the tests use it). Several clients may create a collection at once: "already
exists" is success, and the existing collection's space is checked like any other.
"""

from __future__ import annotations

import warnings
from typing import Any, cast

from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm

from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors.base import CollectionInfo, Found, QueryOptions, StoredPoint
from pulse_ai.vectors.scope import RECORD_KEY, TABLE_KEY, TENANT_KEY, All, Layout, Match, MatchAnyOf
from pulse_ai.vectors.store import VectorStore

__all__ = ["QdrantServerStore"]

_METADATA_KEY = "pulse_ai"


class QdrantServerStore(VectorStore):
    upsert_batch_size = 256

    def __init__(
        self,
        *,
        url: str | None = None,
        api_key: str | None = None,
        prefer_grpc: bool = False,
        timeout: int = 10,
        location: str | None = None,
        path: str | None = None,
        layout: Layout = Layout.PER_TENANT_TABLE,
    ) -> None:
        super().__init__(layout)
        if sum(value is not None for value in (url, location, path)) != 1:
            raise VectorStoreError('give exactly one of url (a server), path (local mode) or location=":memory:"')
        self._where = url or path or location or "?"
        try:
            self.client = AsyncQdrantClient(
                url=url, api_key=api_key, prefer_grpc=prefer_grpc, timeout=timeout, location=location, path=path
            )
        except Exception as exc:  # local mode on a directory another client holds
            raise VectorStoreError(f"cannot open Qdrant at {self._where}: {exc}") from exc

    def __repr__(self) -> str:
        return f"QdrantServerStore(location={self._where!r}, layout={self.layout.value!r})"

    async def _collection_info(self, name: str) -> CollectionInfo | None:
        try:
            if not await self.client.collection_exists(name):
                return None
            description = await self.client.get_collection(name)
        except Exception as exc:
            raise VectorStoreError(f"Qdrant: cannot read collection {name}: {type(exc).__name__}") from exc
        metadata = (description.config.metadata or {}).get(_METADATA_KEY)
        if not isinstance(metadata, dict):
            raise VectorStoreError(f"collection {name} was not created by pulse-ai (no vector-space metadata)")
        return CollectionInfo(metadata["vector_space"], int(metadata["dimensions"]), metadata["layout"])

    async def _create_collection(self, name: str, info: CollectionInfo) -> CollectionInfo:
        shared = self.layout is Layout.SHARED
        try:
            await self.client.create_collection(
                name,
                vectors_config=qm.VectorParams(size=info.dimensions, distance=qm.Distance.COSINE),
                hnsw_config=qm.HnswConfigDiff(m=0 if shared else 16, payload_m=16),
                metadata={_METADATA_KEY: info.as_dict()},
            )
        except Exception as exc:
            # Another client created it first (a server answers 409, local mode a ValueError): success,
            # provided it is there now; its space is then checked by the store like any other's.
            existing = await self._collection_info(name)
            if existing is None:
                raise VectorStoreError(f"Qdrant: cannot create collection {name}: {exc}") from exc
            return existing
        try:
            with warnings.catch_warnings():
                # local mode says payload indexes have no effect there; a server builds them
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                tenant_index = qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True)
                await self.client.create_payload_index(name, TENANT_KEY, tenant_index)
                await self.client.create_payload_index(name, TABLE_KEY, qm.PayloadSchemaType.KEYWORD)
                await self.client.create_payload_index(name, RECORD_KEY, qm.PayloadSchemaType.KEYWORD)
        except Exception as exc:
            raise VectorStoreError(f"Qdrant: cannot create the payload indexes of {name}: {exc}") from exc
        return info

    async def _upsert(self, name: str, points: list[StoredPoint]) -> None:
        structs = [qm.PointStruct(id=p.id, vector=p.vector.tolist(), payload=p.payload) for p in points]
        await self._call(self.client.upsert(name, points=structs, wait=True))

    async def _query(self, name: str, vector: list[float], where: All, options: QueryOptions) -> list[Found]:
        tuned = options.hnsw_ef is not None or options.exact
        response = await self._call(
            self.client.query_points(
                name,
                query=vector,
                query_filter=_filter(where),
                limit=options.limit,
                score_threshold=options.score_threshold,
                search_params=qm.SearchParams(hnsw_ef=options.hnsw_ef, exact=options.exact) if tuned else None,
                with_payload=True,
            )
        )
        return [Found(str(p.id), float(p.score), p.payload or {}) for p in response.points]

    async def _count(self, name: str, where: All) -> int:
        result = await self._call(self.client.count(name, count_filter=_filter(where), exact=True))
        return int(result.count)

    async def _retrieve(self, name: str, ids: list[str]) -> list[Found]:
        records = await self._call(self.client.retrieve(name, ids=ids, with_payload=True, with_vectors=False))
        return [Found(str(r.id), 0.0, r.payload or {}) for r in records]

    async def _delete(self, name: str, where: All) -> None:
        await self._call(self.client.delete(name, points_selector=qm.FilterSelector(filter=_filter(where)), wait=True))

    async def _overwrite_payloads(self, name: str, payloads: list[tuple[str, dict[str, Any]]]) -> None:
        operations = [
            qm.OverwritePayloadOperation(overwrite_payload=qm.SetPayload(payload=payload, points=[point]))
            for point, payload in payloads
        ]
        await self._call(self.client.batch_update_points(name, update_operations=operations, wait=True))

    async def _list_collections(self) -> list[str]:
        response = await self._call(self.client.get_collections())
        return sorted(c.name for c in response.collections)

    async def _drop_collection(self, name: str) -> None:
        if not await self._call(self.client.delete_collection(name)):
            raise VectorStoreError(f"Qdrant did not delete the collection {name}")

    async def close(self) -> None:
        self._closed = True
        self._forget_all()
        await self.client.close()

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        try:
            return await awaitable
        except Exception as exc:
            raise VectorStoreError(f"Qdrant: {type(exc).__name__}: {exc}") from exc


def _filter(where: All) -> qm.Filter:
    return qm.Filter(must=[_condition(c) for c in where.conditions])


def _condition(condition: Match | MatchAnyOf | All) -> qm.FieldCondition | qm.Filter:
    if isinstance(condition, All):
        return _filter(condition)
    if isinstance(condition, Match):
        return qm.FieldCondition(key=condition.key, match=qm.MatchValue(value=condition.value))
    return qm.FieldCondition(
        key=condition.key, match=qm.MatchAny(any=cast("list[str] | list[int]", list(condition.values)))
    )
