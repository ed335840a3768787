"""The backend protocol: the few collection-level primitives a vector backend implements.

A backend (``embedded.py``, ``server.py``) knows collections and points, nothing of tenants. The
tenant-scoped API every caller uses is ``store.VectorStore``, which is built on these primitives and
adds the tenant condition, the names, the ids and the checks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from pulse_ai.vectors.scope import All, Layout, QueryOptions

__all__ = [
    "CollectionInfo",
    "Found",
    "MetadataUpdate",
    "PurgeLeftovers",
    "PurgeReport",
    "QueryOptions",
    "SearchHit",
    "StoredPoint",
    "StoredState",
    "VectorBackend",
    "VectorPoint",
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
class PurgeReport:
    """What ``purge_tenant`` removed: whole collections, points counted per shared collection, and
    ``leftovers``: directories that were not complete collections (a create interrupted before its
    manifest, a collection moved aside as unreadable) and held the tenant's data."""

    tenant: str
    dropped_collections: tuple[str, ...] = ()
    deleted_points: Mapping[str, int] = field(default_factory=dict)
    leftovers: tuple[str, ...] = ()

    @property
    def points(self) -> int:
        return sum(self.deleted_points.values())


@dataclass
class PurgeLeftovers:
    """What a backend removed of a tenant beyond its listed collections, and what it could not."""

    dropped: list[str] = field(default_factory=list)  # collections whose earlier drop had not finished
    removed: list[str] = field(default_factory=list)  # directories that were not complete collections
    deleted_points: dict[str, int] = field(default_factory=dict)  # points in unlisted shared ones
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CollectionInfo:
    """What a collection was created for; kept with it (Qdrant collection metadata, or a manifest)."""

    vector_space: str
    dimensions: int
    layout: str

    def as_dict(self) -> dict[str, Any]:
        return {"vector_space": self.vector_space, "dimensions": self.dimensions, "layout": self.layout}


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


class VectorBackend(ABC):
    """Collection-level primitives. Every input reaching them has been validated by the store."""

    #: Points per write request; a backend sets what suits it.
    upsert_batch_size: int = 512
    #: How long a listing of collections may be reused; None: for ever (the backend is the only writer).
    listing_ttl: float | None = 30.0

    def __init__(self, layout: Layout = Layout.PER_TENANT_TABLE) -> None:
        self.layout = Layout(layout)

    @abstractmethod
    async def _collection_info(self, name: str) -> CollectionInfo | None:
        """The info of an existing collection, or None when there is none."""

    @abstractmethod
    async def _create_collection(self, name: str, info: CollectionInfo) -> CollectionInfo:
        """Create the collection with its payload indexes (the tenant index before any data).

        Idempotent: when it exists already (another task, process or server client created it), that
        is success and its info is returned; nothing holding data is ever deleted by a create."""

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
    async def _drop_collection(self, name: str) -> None:
        """Remove the collection; raises ``VectorStoreError`` when anything of it could not be removed."""

    async def _purge_leftovers(self, tenant: str) -> PurgeLeftovers:
        """Remove the tenant's data that no listed collection holds: what an earlier, failed drop
        left behind, collection directories without a manifest, collections moved aside."""
        return PurgeLeftovers()

    async def _written(self, name: str, count: int) -> None:  # noqa: B027 - optional hook
        """Called after each write batch (the embedded backend schedules its index builds)."""

    async def optimize(self) -> None:  # noqa: B027 - optional hook
        """Build indexes for what was written (a Qdrant server does this by itself)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release the backend."""

    async def ping(self) -> None:
        """Health: one cheap call (list the collections); ``VectorStoreError`` when the store cannot
        answer (a server that is down, a closed store)."""
        await self._list_collections()
