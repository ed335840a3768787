"""Vectors: tenant-scoped storage in Qdrant (embedded engine or server) and the indexer on top."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pulse_ai.vectors.base import SearchHit, StoredState, VectorPoint, VectorStore
from pulse_ai.vectors.indexer import Indexer, IndexReport, Record, RecordFailure
from pulse_ai.vectors.scope import Layout, VectorSpace, point_id, validate_name

if TYPE_CHECKING:
    from pulse_ai.config import VectorStoreConfig

__all__ = [
    "IndexReport",
    "Indexer",
    "Layout",
    "Record",
    "RecordFailure",
    "SearchHit",
    "StoredState",
    "VectorPoint",
    "VectorSpace",
    "VectorStore",
    "open_vector_store",
    "point_id",
    "validate_name",
]


def open_vector_store(config: VectorStoreConfig) -> VectorStore:
    """Build the store a ``VectorStoreConfig`` describes (backends are imported only when used)."""
    if config.backend == "embedded":
        from pulse_ai.vectors.embedded import EmbeddedVectorStore

        return EmbeddedVectorStore(config.path, layout=config.layout, optimize_after=config.optimize_after)
    from pulse_ai.vectors.server import QdrantServerStore

    return QdrantServerStore(
        url=config.url,
        api_key=(config.api_key.get_secret_value() or None) if config.api_key else None,
        prefer_grpc=config.prefer_grpc,
        timeout=config.timeout,
        location=config.location,
        layout=config.layout,
    )
