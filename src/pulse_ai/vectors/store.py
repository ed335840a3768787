"""The tenant-scoped vector store. Tenant scope is enforced here, once, for every backend.

The public methods validate names and options, derive point ids, add the tenant (and table)
condition to every request with the caller's filter nested under it, and check every returned
point's tenant again: a point of another tenant fails the whole call (``TenantIsolationError``)
instead of leaking. Everything a caller passes is checked before the first backend call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence, Set
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pulse_ai.errors import (
    CacheClearIncompleteError,
    InputError,
    PurgeIncompleteError,
    TenantIsolationError,
    VectorSpaceError,
    VectorStoreError,
)
from pulse_ai.vectors.base import (
    CollectionInfo,
    Found,
    MetadataUpdate,
    PurgeLeftovers,
    PurgeReport,
    SearchHit,
    StoredPoint,
    StoredState,
    VectorBackend,
    VectorPoint,
)
from pulse_ai.vectors.scope import (
    CONTENT_HASH_KEY,
    METADATA_HASH_KEY,
    METADATA_KEY,
    RECORD_KEY,
    SHARED_PREFIX,
    TABLE_KEY,
    TENANT_KEY,
    All,
    MatchAnyOf,
    VectorSpace,
    check_metadata,
    collection_name,
    metadata_filter,
    point_id,
    query_options,
    scope_filter,
    tenant_collection_prefix,
    validate_name,
    validate_record_id,
)

if TYPE_CHECKING:
    from pulse_ai.cache.vectors import TableSpace, VectorCache

__all__ = ["SHARED_PREFIX", "VectorStore"]


class VectorStore(VectorBackend):
    """Tenant-scoped vector storage over one backend and one layout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._known: dict[str, CollectionInfo] = {}
        self._names: set[str] | None = None
        self._names_at = 0.0
        #: Optional cache hooks (``pulse_ai.cache.vectors``): versions bumped and schema kept after
        #: every write, the schema consulted instead of a listing. None: no caching.
        self.cache: VectorCache | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _closed_error(self) -> VectorStoreError:
        return VectorStoreError(
            "the vector store is closed (its PulseAI was closed: open a new one and take a new indexer from it)"
        )

    def ensure_open(self) -> None:
        """A ``VectorStoreError`` ("the vector store is closed") when it was closed."""
        if self._closed:
            raise self._closed_error()

    # ---- writes ----------------------------------------------------------------------------
    async def upsert(self, tenant: str, table: str, space: VectorSpace, points: Sequence[VectorPoint]) -> int:
        """Write points; re-writing a record replaces its point. Everything is checked before the
        first write: names, ids (unique in the batch), metadata, the vectors' dimension and values."""
        self.ensure_open()
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        if not points:
            return 0
        ids = [validate_record_id(point.record_id, i) for i, point in enumerate(points)]
        duplicated = sorted({record for record in ids if ids.count(record) > 1}) if len(set(ids)) < len(ids) else []
        if duplicated:
            raise InputError(f"record ids repeated in one batch: {', '.join(duplicated[:10])}")
        for index, point in enumerate(points):
            check_metadata(point.metadata, index)
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
            await self._cache_written(tenant, table, space, name, points)
        return len(points)

    async def _cache_written(
        self, tenant: str, table: str, space: VectorSpace, name: str, points: Sequence[VectorPoint | MetadataUpdate]
    ) -> None:
        """Tell the cache (also after a failed write: part of it may have landed)."""
        if self.cache is not None:
            fields = {key for point in points for key in point.metadata}
            try:
                count: int | None = await self._count(name, scope_filter(tenant, table))
            except VectorStoreError:
                count = None  # the version is bumped all the same
            await self.cache.written(tenant, table, space.id, count, fields)

    async def _write(self, name: str, batch: list[StoredPoint]) -> None:
        await self._upsert(name, batch)
        await self._written(name, len(batch))

    async def update_metadata(
        self, tenant: str, table: str, space: VectorSpace, points: Sequence[MetadataUpdate]
    ) -> int:
        """Replace records' metadata and hashes without touching their vectors; one request per
        batch, not per record. Returns how many records were updated."""
        self.ensure_open()
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        if not points:
            return 0
        ids = [validate_record_id(point.record_id, i) for i, point in enumerate(points)]
        for index, point in enumerate(points):
            check_metadata(point.metadata, index)
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
        try:
            for start in range(0, len(payloads), self.upsert_batch_size):
                await self._overwrite_payloads(name, payloads[start : start + self.upsert_batch_size])
            await self._written(name, 0)
        finally:
            await self._cache_written(tenant, table, space, name, points)
        return len(payloads)

    async def delete(self, tenant: str, table: str, space: VectorSpace, record_ids: Sequence[str]) -> int:
        """Delete these records of this tenant's table; returns how many existed.

        ``record_ids`` is a list (or other collection) of ids; a single string is refused, never
        read as a sequence of one-letter ids."""
        self.ensure_open()
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        if isinstance(record_ids, (str, bytes)) or not isinstance(record_ids, (Sequence, Set)):
            raise InputError(
                f"record_ids must be a list of record ids, not {type(record_ids).__name__} (for one id: [id])"
            )
        ids = [validate_record_id(r, i, "record_ids") for i, r in enumerate(record_ids)]
        name = await self._collection(tenant, table, space, create=False)
        if name is None or not ids:
            return 0
        existing = await self._retrieve(name, [point_id(tenant, table, r) for r in ids])
        self._check_scope(existing, tenant, table)
        if existing:
            where = All((*scope_filter(tenant, table).conditions, MatchAnyOf(RECORD_KEY, tuple(ids))))
            try:
                await self._delete(name, where)
                await self._written(name, len(existing))
            finally:
                await self._cache_written(tenant, table, space, name, ())
        return len(existing)

    async def purge_tenant(self, tenant: str) -> PurgeReport:
        """Remove every point of ``tenant`` in every table and vector space, in every layout that may
        hold them (data written before a layout change included), and report what was removed.

        Everything is attempted; if anything could not be removed, ``PurgeIncompleteError`` says what
        (with what was removed), so a purge never looks complete when it is not."""
        self.ensure_open()
        tenant = validate_name(tenant, "tenant")
        dropped: list[str] = []
        deleted: dict[str, int] = {}
        failures: list[str] = []
        for name in await self._list_collections():  # fresh, not cached: a purge must see everything
            try:
                if name.startswith(tenant_collection_prefix(tenant)):
                    self._forget(name)
                    await self._drop_collection(name)
                    dropped.append(name)
                elif name.startswith(SHARED_PREFIX):
                    scope = scope_filter(tenant, None)
                    held = await self._count(name, scope)
                    if held:
                        await self._delete(name, scope)
                        await self._written(name, held)
                        left = await self._count(name, scope)
                        if left:
                            failures.append(f"{name}: {left} of {held} points remain")
                        deleted[name] = held - left
            except VectorStoreError as error:
                failures.append(f"{name}: {error}")
        leftovers = PurgeLeftovers()
        try:
            leftovers = await self._purge_leftovers(tenant)
        except VectorStoreError as error:
            failures.append(str(error))
        dropped.extend(leftovers.dropped)
        deleted.update(leftovers.deleted_points)
        failures.extend(leftovers.failures)
        report = PurgeReport(tenant, tuple(dropped), deleted, tuple(leftovers.removed))
        if self.cache is not None:
            try:
                await self.cache.purged(tenant)
            except CacheClearIncompleteError as error:
                failures.extend(f"cache: {failure}" for failure in error.failures)
        if failures:
            raise PurgeIncompleteError(tenant, failures, removed=[*dropped, *deleted, *leftovers.removed])
        return report

    # ---- reads -----------------------------------------------------------------------------
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
        self.ensure_open()
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        options = query_options(limit, score_threshold, hnsw_ef, exact)
        (query,) = self._check_vectors([vector], space).tolist()
        scope = scope_filter(tenant, table, metadata_filter(where))
        name = await self._collection(tenant, table, space, create=False)
        if name is None:
            await self._refuse_other_spaces(tenant, table, space)
            return []
        found = await self._query(name, query, scope, options)
        self._check_scope(found, tenant, table)
        if not found and not await self._count(name, scope_filter(tenant, table)):
            # Whether the collection exists may depend on other tenants (shared layout): the answer
            # must depend only on the caller's own points.
            await self._refuse_other_spaces(tenant, table, space)
        return [
            SearchHit(record_id=f.payload[RECORD_KEY], score=f.score, metadata=f.payload.get(METADATA_KEY) or {})
            for f in found
        ]

    async def count(self, tenant: str, table: str, space: VectorSpace) -> int:
        self.ensure_open()
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        name = await self._collection(tenant, table, space, create=False)
        return 0 if name is None else await self._count(name, scope_filter(tenant, table))

    async def stored_states(
        self, tenant: str, table: str, space: VectorSpace, record_ids: Sequence[str]
    ) -> dict[str, StoredState]:
        """The content and metadata hashes the store holds for those of ``record_ids`` it has."""
        self.ensure_open()
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        if isinstance(record_ids, (str, bytes)):
            raise InputError("record_ids must be a list of record ids, not a single string")
        ids = [validate_record_id(r, i, "record_ids") for i, r in enumerate(record_ids)]
        name = await self._collection(tenant, table, space, create=False)
        if name is None or not ids:
            return {}
        found = await self._retrieve(name, [point_id(tenant, table, r) for r in ids])
        self._check_scope(found, tenant, table)
        return {
            f.payload[RECORD_KEY]: StoredState(
                f.payload.get(CONTENT_HASH_KEY, ""), f.payload.get(METADATA_HASH_KEY, "")
            )
            for f in found
        }

    async def spaces(self, tenant: str, table: str) -> list[str]:
        """The vector spaces this tenant's table has points in."""
        self.ensure_open()
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        if self.cache is not None:  # the schema cache, when it knows this table completely
            known = await self.cache.table_spaces(tenant, table)
            if known is not None:
                return known
        held: dict[str, int] = {}
        for name in sorted(await self._collection_names()):
            mine = name.startswith(SHARED_PREFIX) or name.startswith(f"{tenant_collection_prefix(tenant)}{table}__")
            count = await self._count(name, scope_filter(tenant, table)) if mine else 0
            info = (self._known.get(name) or await self._collection_info(name)) if count else None
            if info is not None:
                held[info.vector_space] = held.get(info.vector_space, 0) + count
        if self.cache is not None:
            await self.cache.listed(tenant, table, held)
        return sorted(held)

    async def tenant_schema(self, tenant: str) -> list[TableSpace] | None:
        """What ``tenant`` has indexed (table, space, count, metadata fields), from the schema cache
        (kept in step with writes through this store); None without a schema cache."""
        tenant = validate_name(tenant, "tenant")
        return None if self.cache is None else await self.cache.tenant_schema(tenant)

    async def _refuse_other_spaces(self, tenant: str, table: str, space: VectorSpace) -> None:
        others = [held for held in await self.spaces(tenant, table) if held != space.id]
        if others:
            raise VectorSpaceError(
                f"this table was indexed in {', '.join(others)}; a search in {space.id} cannot match it "
                "(embed the query with the same model, or re-index)"
            )

    # ---- collections -----------------------------------------------------------------------
    async def _collection(self, tenant: str, table: str, space: VectorSpace, *, create: bool) -> str | None:
        name = collection_name(self.layout, space, tenant, table)
        info = self._known.get(name)
        if info is None:
            # An authoritative listing (the embedded store owns its directory) answers a miss from
            # memory; a server, which other clients also write to, is asked about this one name.
            if self.listing_ttl is not None or name in await self._collection_names():
                info = await self._collection_info(name)
            if info is None:
                if not create:
                    return None
                info = await self._create_collection(
                    name, CollectionInfo(space.id, space.dimensions, self.layout.value)
                )
                if self._names is not None:
                    self._names.add(name)
            self._known[name] = info
        if info.vector_space != space.id or info.dimensions != space.dimensions:
            raise VectorSpaceError(
                f"collection {name} holds {info.vector_space} ({info.dimensions} dimensions), "
                f"not {space.id} ({space.dimensions})"
            )
        return name

    async def _collection_names(self) -> set[str]:
        """The collections there are, listed once and kept (for ``listing_ttl`` seconds)."""
        stale = self.listing_ttl is not None and time.monotonic() - self._names_at > self.listing_ttl
        if self._names is None or stale:
            self._names = set(await self._list_collections())
            self._names_at = time.monotonic()
        return self._names

    def _forget(self, name: str) -> None:
        self._known.pop(name, None)
        if self._names is not None:
            self._names.discard(name)

    def _forget_all(self) -> None:
        self._known.clear()
        self._names = None

    # ---- checks ----------------------------------------------------------------------------
    @staticmethod
    def _check_vectors(vectors: Sequence[npt.ArrayLike], space: VectorSpace) -> npt.NDArray[np.float32]:
        try:
            with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
                array = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):
            raise InputError("vectors must be sequences of numbers of one length") from None
        if array.ndim != 2 or array.shape[1] != space.dimensions:
            got = array.shape[1] if array.ndim == 2 else "mixed or scalar"
            raise VectorSpaceError(f"vectors have {got} dimensions; the space {space.id} has {space.dimensions}")
        if not np.isfinite(array).all():
            bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
            raise InputError(f"vector {bad} holds NaN or infinite values", index=bad)
        if not array.any(axis=1).all():  # cosine similarity with a zero vector means nothing
            bad = int(np.flatnonzero(~array.any(axis=1))[0])
            raise InputError(f"vector {bad} is all zeros: it has no direction to compare by", index=bad)
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
