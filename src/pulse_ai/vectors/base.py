"""The vector store interface. Tenant scope is enforced here, once, for every backend.

A backend implements a handful of collection-level primitives (``_upsert``, ``_query``, ...). The
public methods validate names, derive point ids, add the tenant (and table) condition to every
request with the caller's filter nested under it, and check every returned point's tenant again:
a point of another tenant fails the whole call (``TenantIsolationError``) instead of leaking.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from pulse_ai.errors import InputError, TenantIsolationError, VectorSpaceError
from pulse_ai.vectors.scope import (
    CONTENT_HASH_KEY,
    METADATA_HASH_KEY,
    METADATA_KEY,
    RECORD_KEY,
    TABLE_KEY,
    TENANT_KEY,
    All,
    Layout,
    MatchAnyOf,
    VectorSpace,
    collection_name,
    metadata_filter,
    point_id,
    scope_filter,
    tenant_collection_prefix,
    validate_name,
    validate_record_id,
)

__all__ = [
    "CollectionInfo",
    "Found",
    "MetadataUpdate",
    "QueryOptions",
    "SearchHit",
    "StoredPoint",
    "StoredState",
    "VectorPoint",
    "VectorStore",
]


@dataclass(frozen=True)
class VectorPoint:
    """One record's vector and what to keep with it."""

    record_id: str
    vector: npt.ArrayLike
    content_hash: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    metadata_hash: str = ""


@dataclass(frozen=True)
class MetadataUpdate:
    """A record whose text (so vector) is unchanged but whose metadata changed."""

    record_id: str
    content_hash: str
    metadata: Mapping[str, Any]
    metadata_hash: str


@dataclass(frozen=True)
class SearchHit:
    record_id: str
    score: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class StoredState:
    """What the store holds for a record: enough to tell whether it changed."""

    content_hash: str
    metadata_hash: str


@dataclass(frozen=True)
class CollectionInfo:
    """What a collection was created for; kept with it (Qdrant collection metadata, or a manifest)."""

    vector_space: str
    dimensions: int
    layout: str

    def as_dict(self) -> dict[str, Any]:
        return {"vector_space": self.vector_space, "dimensions": self.dimensions, "layout": self.layout}


@dataclass(frozen=True)
class QueryOptions:
    limit: int
    score_threshold: float | None = None
    hnsw_ef: int | None = None
    exact: bool = False


class StoredPoint(NamedTuple):
    """A point as written: a NamedTuple because upserts make one per point on the hot path."""

    id: str
    vector: npt.NDArray[np.float32]
    payload: dict[str, Any]


@dataclass(frozen=True)
class Found:
    id: str
    score: float
    payload: dict[str, Any]


class VectorStore(ABC):
    """Tenant-scoped vector storage over one backend and one layout."""

    #: Points per write request; a backend sets what suits it.
    upsert_batch_size: int = 512

    def __init__(self, layout: Layout = Layout.PER_TENANT_TABLE) -> None:
        self.layout = Layout(layout)
        self._known: dict[str, CollectionInfo] = {}

    # ---- backend primitives ----------------------------------------------------------------
    @abstractmethod
    async def _collection_info(self, name: str) -> CollectionInfo | None:
        """The info of an existing collection, or None when there is none."""

    @abstractmethod
    async def _create_collection(self, name: str, info: CollectionInfo) -> None:
        """Create the collection with its payload indexes (the tenant index before any data)."""

    @abstractmethod
    async def _upsert(self, name: str, points: list[StoredPoint]) -> None: ...

    @abstractmethod
    async def _query(self, name: str, vector: list[float], where: All, options: QueryOptions) -> list[Found]: ...

    @abstractmethod
    async def _count(self, name: str, where: All) -> int: ...

    @abstractmethod
    async def _retrieve(self, name: str, ids: list[str]) -> list[Found]:
        """Payloads of the points that exist among ``ids`` (score 0)."""

    @abstractmethod
    async def _delete(self, name: str, where: All) -> None: ...

    @abstractmethod
    async def _overwrite_payloads(self, name: str, payloads: list[tuple[str, dict[str, Any]]]) -> None:
        """Replace the payload of each (point id, payload), vectors untouched."""

    @abstractmethod
    async def _list_collections(self) -> list[str]: ...

    @abstractmethod
    async def _drop_collection(self, name: str) -> None: ...

    async def _written(self, name: str, count: int) -> None:  # noqa: B027 - optional hook
        """Called after each write batch (the embedded backend decides when to optimise)."""

    async def optimize(self) -> None:  # noqa: B027 - optional hook
        """Build indexes for what was written (a Qdrant server does this by itself)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release the backend."""

    # ---- public, tenant-scoped -------------------------------------------------------------
    async def upsert(self, tenant: str, table: str, space: VectorSpace, points: Sequence[VectorPoint]) -> int:
        """Write points; re-writing a record replaces its point. Everything is checked before the
        first write: names, ids (unique in the batch), the vectors' dimension and values."""
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        if not points:
            return 0
        ids = [validate_record_id(point.record_id, i) for i, point in enumerate(points)]
        duplicated = sorted({record for record in ids if ids.count(record) > 1}) if len(set(ids)) < len(ids) else []
        if duplicated:
            raise InputError(f"record ids repeated in one batch: {', '.join(duplicated[:10])}")
        vectors = self._check_vectors([point.vector for point in points], space)
        name = await self._collection(tenant, table, space, create=True)
        assert name is not None
        # Batches are prepared while the previous one is being written (one write in flight, in order).
        in_flight: asyncio.Task[None] | None = None
        try:
            for start in range(0, len(points), self.upsert_batch_size):
                end = start + self.upsert_batch_size
                batch = [
                    StoredPoint(
                        id=point_id(tenant, table, record),
                        vector=vector,
                        payload=_payload(tenant, table, record, point),
                    )
                    for record, vector, point in zip(ids[start:end], vectors[start:end], points[start:end], strict=True)
                ]
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.create_task(self._write(name, batch))
            if in_flight is not None:
                await in_flight
                in_flight = None
        finally:
            if in_flight is not None and not in_flight.done():
                in_flight.cancel()
        return len(points)

    async def _write(self, name: str, batch: list[StoredPoint]) -> None:
        await self._upsert(name, batch)
        await self._written(name, len(batch))

    async def search(
        self,
        tenant: str,
        table: str,
        space: VectorSpace,
        vector: npt.ArrayLike,
        *,
        limit: int = 10,
        score_threshold: float | None = None,
        where: Mapping[str, object] | None = None,
        hnsw_ef: int | None = None,
        exact: bool = False,
    ) -> list[SearchHit]:
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
            raise InputError("limit must be an integer from 1 to 10000")
        if hnsw_ef is not None and (not isinstance(hnsw_ef, int) or hnsw_ef < 1):
            raise InputError("hnsw_ef must be a positive integer")
        (query,) = self._check_vectors([vector], space).tolist()
        scope = scope_filter(tenant, table, metadata_filter(where))
        name = await self._collection(tenant, table, space, create=False)
        if name is None:
            await self._refuse_other_spaces(tenant, table, space)
            return []
        found = await self._query(name, query, scope, QueryOptions(limit, score_threshold, hnsw_ef, exact))
        self._check_scope(found, tenant, table)
        return [
            SearchHit(record_id=f.payload[RECORD_KEY], score=f.score, metadata=f.payload.get(METADATA_KEY) or {})
            for f in found
        ]

    async def count(self, tenant: str, table: str, space: VectorSpace) -> int:
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        name = await self._collection(tenant, table, space, create=False)
        return 0 if name is None else await self._count(name, scope_filter(tenant, table))

    async def stored_states(
        self, tenant: str, table: str, space: VectorSpace, record_ids: Sequence[str]
    ) -> dict[str, StoredState]:
        """The content and metadata hashes the store holds for those of ``record_ids`` it has."""
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        name = await self._collection(tenant, table, space, create=False)
        if name is None or not record_ids:
            return {}
        found = await self._retrieve(name, [point_id(tenant, table, r) for r in record_ids])
        self._check_scope(found, tenant, table)
        return {
            f.payload[RECORD_KEY]: StoredState(
                f.payload.get(CONTENT_HASH_KEY, ""), f.payload.get(METADATA_HASH_KEY, "")
            )
            for f in found
        }

    async def update_metadata(
        self, tenant: str, table: str, space: VectorSpace, points: Sequence[MetadataUpdate]
    ) -> int:
        """Replace records' metadata and hashes without touching their vectors; one request per
        batch, not per record. Returns how many records were updated."""
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        if not points:
            return 0
        ids = [validate_record_id(point.record_id, i) for i, point in enumerate(points)]
        name = await self._collection(tenant, table, space, create=False)
        if name is None:
            raise InputError(f"no {table!r} records for this tenant in space {space.id}")
        payloads = [
            (point_id(tenant, table, record), _payload(tenant, table, record, point))
            for record, point in zip(ids, points, strict=True)
        ]
        existing: set[str] = set()
        for start in range(0, len(payloads), self.upsert_batch_size):
            found = await self._retrieve(name, [point for point, _ in payloads[start : start + self.upsert_batch_size]])
            self._check_scope(found, tenant, table)
            existing.update(f.payload[RECORD_KEY] for f in found)
        missing = [record for record in ids if record not in existing]
        if missing:  # checked before the first write: nothing is half-updated
            raise InputError(f"records not stored in {table!r}, so no metadata to update: {', '.join(missing[:10])}")
        for start in range(0, len(payloads), self.upsert_batch_size):
            await self._overwrite_payloads(name, payloads[start : start + self.upsert_batch_size])
        return len(payloads)

    async def delete(self, tenant: str, table: str, space: VectorSpace, record_ids: Sequence[str]) -> int:
        """Delete these records of this tenant's table; returns how many existed."""
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        ids = [validate_record_id(r, i) for i, r in enumerate(record_ids)]
        name = await self._collection(tenant, table, space, create=False)
        if name is None or not ids:
            return 0
        existing = await self._retrieve(name, [point_id(tenant, table, r) for r in ids])
        self._check_scope(existing, tenant, table)
        if existing:
            where = All((*scope_filter(tenant, table).conditions, MatchAnyOf(RECORD_KEY, tuple(ids))))
            await self._delete(name, where)
            await self._written(name, len(existing))
        return len(existing)

    async def purge_tenant(self, tenant: str) -> None:
        """Remove every point of ``tenant``, in every table and vector space."""
        tenant = validate_name(tenant, "tenant")
        for name in await self._list_collections():
            if self.layout is Layout.PER_TENANT_TABLE and name.startswith(tenant_collection_prefix(tenant)):
                self._known.pop(name, None)
                await self._drop_collection(name)
            elif name.startswith("shared__"):
                await self._delete(name, scope_filter(tenant, None))
                await self._written(name, 1)

    async def spaces(self, tenant: str, table: str) -> list[str]:
        """The vector spaces this tenant's table has points in."""
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        held = []
        for name in await self._list_collections():
            if self.layout is Layout.PER_TENANT_TABLE:
                if not name.startswith(f"{tenant_collection_prefix(tenant)}{table}__"):
                    continue
            elif not name.startswith("shared__") or not await self._count(name, scope_filter(tenant, table)):
                continue
            info = self._known.get(name) or await self._collection_info(name)
            if info is not None:
                held.append(info.vector_space)
        return sorted(set(held))

    async def _refuse_other_spaces(self, tenant: str, table: str, space: VectorSpace) -> None:
        others = [held for held in await self.spaces(tenant, table) if held != space.id]
        if others:
            raise VectorSpaceError(
                f"this table was indexed in {', '.join(others)}; a search in {space.id} cannot match it "
                "(embed the query with the same model, or re-index)"
            )

    # ---- helpers ---------------------------------------------------------------------------
    async def _collection(self, tenant: str, table: str, space: VectorSpace, *, create: bool) -> str | None:
        name = collection_name(self.layout, space, tenant, table)
        info = self._known.get(name) or await self._collection_info(name)
        if info is None:
            if not create:
                return None
            info = CollectionInfo(space.id, space.dimensions, self.layout.value)
            await self._create_collection(name, info)
        self._known[name] = info
        if info.vector_space != space.id or info.dimensions != space.dimensions:
            raise VectorSpaceError(
                f"collection {name} holds {info.vector_space} ({info.dimensions} dimensions), "
                f"not {space.id} ({space.dimensions})"
            )
        return name

    @staticmethod
    def _check_vectors(vectors: Sequence[npt.ArrayLike], space: VectorSpace) -> npt.NDArray[np.float32]:
        try:
            array = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError("vectors must be sequences of numbers of one length") from None
        if array.ndim != 2 or array.shape[1] != space.dimensions:
            got = array.shape[1] if array.ndim == 2 else "mixed or scalar"
            raise VectorSpaceError(f"vectors have {got} dimensions; the space {space.id} has {space.dimensions}")
        if not np.isfinite(array).all():
            bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
            raise InputError(f"vector {bad} holds NaN or infinite values", index=bad)
        return array

    @staticmethod
    def _check_scope(found: Sequence[Found], tenant: str, table: str) -> None:
        for point in found:
            if point.payload.get(TENANT_KEY) != tenant or point.payload.get(TABLE_KEY) != table:
                raise TenantIsolationError(
                    "the store returned a point outside the requested tenant and table; the result was refused"
                )


def _payload(tenant: str, table: str, record_id: str, point: VectorPoint | MetadataUpdate) -> dict[str, Any]:
    return {
        TENANT_KEY: tenant,
        TABLE_KEY: table,
        RECORD_KEY: record_id,
        CONTENT_HASH_KEY: point.content_hash,
        METADATA_HASH_KEY: point.metadata_hash,
        METADATA_KEY: dict(point.metadata),
    }
