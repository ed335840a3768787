"""Incremental indexing and semantic search of tenants' records.

``index`` embeds only records that are new or whose text changed (by content hash), rewrites only
the metadata of records whose metadata alone changed, and upserts in batches. Point ids derive from
(tenant, table, record id), so running an ingestion again, or again after a crash, ends in the same
state with no duplicates. A batch the provider fails is reported (record ids and why), never written
as zero vectors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy.typing as npt

from pulse_ai.errors import AllProvidersFailed, InputError, ProviderError, VectorSpaceError
from pulse_ai.types import EmbeddingResult
from pulse_ai.vectors.base import MetadataUpdate, PurgeReport, SearchHit, StoredState, VectorPoint
from pulse_ai.vectors.scope import (
    VectorSpace,
    check_metadata,
    check_text,
    content_hash,
    metadata_filter,
    metadata_hash,
    query_options,
    validate_name,
    validate_record_id,
)
from pulse_ai.vectors.store import VectorStore

__all__ = ["Embedder", "IndexReport", "Indexer", "Record", "RecordFailure"]

STATE_LOOKUP_CHUNK = 1000


class RunRecorder(Protocol):
    """Where ``index`` runs are recorded (the platform's ``index_runs``)."""

    async def start(self, tenant_id: str, table: str) -> str: ...

    async def finish(
        self, run_id: str, *, new: int, updated: int, unchanged: int, failed: int, error: str | None = None
    ) -> object: ...


class Embedder(Protocol):
    """What the indexer needs: something that embeds texts into one vector space."""

    vector_space: VectorSpace  # the space every vector it returns belongs to

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult: ...


@dataclass(frozen=True)
class Record:
    record_id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordFailure:
    record_id: str
    reason: str


@dataclass
class IndexReport:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    failures: list[RecordFailure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def total(self) -> int:
        return self.new + self.updated + self.unchanged + self.failed


@dataclass(frozen=True)
class _Prepared:
    record: Record
    content_hash: str
    metadata_hash: str

    def point(self, vector: npt.ArrayLike) -> VectorPoint:
        record = self.record
        return VectorPoint(record.record_id, vector, self.content_hash, record.metadata, self.metadata_hash)


class Indexer:
    """Indexes and searches records with one embedder and one vector store."""

    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        *,
        embed_batch_size: int = 256,
        embedder_for: Callable[[str], Embedder] | None = None,
        runs: Callable[[], Awaitable[RunRecorder]] | None = None,
    ) -> None:
        """``embedder_for(tenant)``, when given, is the embedder used for that tenant's records and
        queries (so that what they cost is that tenant's); it must produce ``embedder``'s space."""
        self.embedder = embedder
        self.store = store
        self.space = embedder.vector_space
        self.embed_batch_size = embed_batch_size
        self._embedder_for = embedder_for
        self._runs = runs

    def embedder_of(self, tenant: str) -> Embedder:
        return self._embedder_for(tenant) if self._embedder_for is not None else self.embedder

    async def index(self, tenant: str, table: str, records: Iterable[Record | Mapping[str, Any]]) -> IndexReport:
        """Index ``records`` (checked before anything is embedded or written); when runs are
        recorded, one run per call, finished with its counts or its error."""
        tenant, table = validate_name(tenant, "tenant"), validate_name(table, "table")
        prepared = _prepare(records)
        self.store.ensure_open()  # before a run is recorded for work that cannot happen
        if self._runs is None:
            return await self._index(tenant, table, prepared)
        runs = await self._runs()
        run_id = await runs.start(tenant, table)
        try:
            report = await self._index(tenant, table, prepared)
        except BaseException as error:
            await runs.finish(
                run_id, new=0, updated=0, unchanged=0, failed=0, error=f"{type(error).__name__}: {error}"[:500]
            )
            raise
        await runs.finish(
            run_id, new=report.new, updated=report.updated, unchanged=report.unchanged, failed=report.failed
        )
        return report

    async def _index(self, tenant: str, table: str, prepared: list[_Prepared]) -> IndexReport:
        report = IndexReport()
        stored: dict[str, StoredState] = {}
        ids = [p.record.record_id for p in prepared]
        for start in range(0, len(ids), STATE_LOOKUP_CHUNK):
            chunk = ids[start : start + STATE_LOOKUP_CHUNK]
            stored.update(await self.store.stored_states(tenant, table, self.space, chunk))

        to_embed: list[_Prepared] = []
        metadata_only: list[_Prepared] = []
        for item in prepared:
            state = stored.get(item.record.record_id)
            if state is None or state.content_hash != item.content_hash:
                to_embed.append(item)
            elif state.metadata_hash != item.metadata_hash:
                metadata_only.append(item)
            else:
                report.unchanged += 1

        for start in range(0, len(to_embed), self.embed_batch_size):
            batch = to_embed[start : start + self.embed_batch_size]
            written = await self._embed_and_write(tenant, table, batch, report)
            for item in written:
                if item.record.record_id in stored:
                    report.updated += 1
                else:
                    report.new += 1

        updates = [
            MetadataUpdate(item.record.record_id, item.content_hash, item.record.metadata, item.metadata_hash)
            for item in metadata_only
        ]
        report.updated += await self.store.update_metadata(tenant, table, self.space, updates)
        return report

    async def _embed_and_write(
        self, tenant: str, table: str, batch: list[_Prepared], report: IndexReport
    ) -> list[_Prepared]:
        pending = list(batch)
        while pending:
            try:
                result = await self.embedder_of(tenant).embed([item.record.text for item in pending])
            except InputError as error:
                if error.index is None:
                    raise
                # One text the provider cannot take (too long for it): report it, embed the rest.
                bad = pending.pop(error.index)
                report.failures.append(RecordFailure(bad.record.record_id, str(error)))
                continue
            except (ProviderError, AllProvidersFailed) as error:
                # What the providers did answer is written (it was paid for); the rest is reported.
                reason = f"{type(error).__name__}: {error}"
                partial = error.partial
                served_at = sorted(int(i) for i in partial.indices) if partial is not None else []
                if partial is not None and served_at:
                    rows = {int(i): vector for i, vector in zip(partial.indices, partial.vectors, strict=True)}
                    served = [pending[i] for i in served_at]
                    points = [pending[i].point(rows[i]) for i in served_at]
                    await self.store.upsert(tenant, table, self.space, points)
                else:
                    served = []
                answered = set(served_at)
                report.failures.extend(
                    RecordFailure(item.record.record_id, reason)
                    for index, item in enumerate(pending)
                    if index not in answered
                )
                return served
            if result.vector_space != self.space.id:
                raise VectorSpaceError(f"the pipeline produced {result.vector_space}, not {self.space.id}")
            points = [item.point(vector) for item, vector in zip(pending, result.vectors, strict=True)]
            await self.store.upsert(tenant, table, self.space, points)
            return pending
        return []

    async def search(
        self,
        tenant: str,
        table: str,
        query: str | npt.ArrayLike,
        *,
        limit: int = 10,
        score_threshold: float | None = None,
        where: Mapping[str, object] | None = None,
        hnsw_ef: int | None = None,
        exact: bool = False,
    ) -> list[SearchHit]:
        """Search by text (embedded with the pipeline) or by a vector of this indexer's space.

        With a search cache on the store (``store.cache``), a repeated search (same query text or
        vector, filter, options) is answered from it until the table is written to."""
        # Everything is checked before the query is embedded (and paid for).
        validate_name(tenant, "tenant")
        validate_name(table, "table")
        query_options(limit, score_threshold, hnsw_ef, exact)
        metadata_filter(where)
        if isinstance(query, str):
            check_text(query, "query")
        self.store.ensure_open()
        cache = self.store.cache
        key: str | None = None
        if cache is not None:
            options = (where, limit, score_threshold, hnsw_ef, exact)
            key, cached = await cache.get_search(tenant, table, self.space.id, query, *options)
            if cached is not None:
                return cached
        hits = await self._search(tenant, table, query, limit, score_threshold, where, hnsw_ef, exact)
        if cache is not None and key is not None:
            await cache.put_search(key, tenant, hits)
        return hits

    async def _search(
        self,
        tenant: str,
        table: str,
        query: str | npt.ArrayLike,
        limit: int,
        score_threshold: float | None,
        where: Mapping[str, object] | None,
        hnsw_ef: int | None,
        exact: bool,
    ) -> list[SearchHit]:
        if isinstance(query, str):
            check_text(query, "query")
            result = await self.embedder_of(tenant).embed([query])
            if result.vector_space != self.space.id:
                raise VectorSpaceError(f"the embedder produced {result.vector_space}, not {self.space.id}")
            vector: npt.ArrayLike = result.vectors[0]
        else:
            vector = query
        return await self.store.search(
            tenant,
            table,
            self.space,
            vector,
            limit=limit,
            score_threshold=score_threshold,
            where=where,
            hnsw_ef=hnsw_ef,
            exact=exact,
        )

    async def delete(self, tenant: str, table: str, record_ids: Sequence[str]) -> int:
        return await self.store.delete(tenant, table, self.space, record_ids)

    async def purge_tenant(self, tenant: str) -> PurgeReport:
        return await self.store.purge_tenant(tenant)

    async def count(self, tenant: str, table: str) -> int:
        return await self.store.count(tenant, table, self.space)


def _prepare(records: Iterable[Record | Mapping[str, Any]]) -> list[_Prepared]:
    """Check every record before anything is embedded or written."""
    if isinstance(records, (str, bytes, Mapping, Record)):
        raise InputError(
            f"records must be a sequence of records, not a single {type(records).__name__} (for one record: [record])"
        )
    try:
        iterator = iter(records)
    except TypeError:
        raise InputError(f"records must be a sequence of records, not {type(records).__name__}") from None
    prepared: list[_Prepared] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(iterator):
        record_id: object
        text: object
        metadata: object
        if isinstance(raw, Record):
            record_id, text, metadata = raw.record_id, raw.text, raw.metadata
        elif isinstance(raw, Mapping):
            record_id = raw.get("record_id", raw.get("id"))
            text, metadata = raw.get("text"), raw.get("metadata")
            unknown = set(raw) - {"record_id", "id", "text", "metadata"}
            if unknown:
                raise InputError(
                    f"records[{index}] has unknown keys: {', '.join(sorted(map(str, unknown)))}", index=index
                )
        else:
            raise InputError(f"records[{index}] is {type(raw).__name__}, not a Record or a mapping", index=index)
        if record_id is None:
            raise InputError(f"records[{index}] has no id", index=index)
        record_id = validate_record_id(record_id, index)
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"records[{index}] ({record_id!r}) has no text to embed", index=index)
        check_text(text, f"records[{index}].text ({record_id!r})", index)
        checked_metadata = check_metadata(metadata, index)
        if record_id in seen:
            raise InputError(
                f"records[{index}] repeats the id {record_id!r} of records[{seen[record_id]}]", index=index
            )
        seen[record_id] = index
        prepared.append(
            _Prepared(Record(record_id, text, checked_metadata), content_hash(text), metadata_hash(checked_metadata))
        )
    return prepared
