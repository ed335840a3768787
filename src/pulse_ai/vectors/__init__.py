"""Vectors: tenant-scoped storage in Qdrant (embedded engine or server) and the indexer on top."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors.base import PurgeReport, SearchHit, StoredState, VectorPoint
from pulse_ai.vectors.indexer import Embedder, Indexer, IndexReport, Record, RecordFailure
from pulse_ai.vectors.scope import Layout, VectorSpace, point_id, validate_name
from pulse_ai.vectors.store import VectorStore

if TYPE_CHECKING:
    from pulse_ai.config import VectorStoreConfig
    from pulse_ai.vectors.embedded import EmbeddedVectorStore

__all__ = [
    "Embedder",
    "IndexReport",
    "Indexer",
    "Layout",
    "PurgeReport",
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

# One embedded store object per directory in this process, shared by every opener (each close
# releases one use; the last closes it). A second *object* on a directory would fail on its lock.
_shared: dict[Path, EmbeddedVectorStore] = {}
# Stores being closed by their last user: a new opener of the path waits for that close to finish.
_closing: dict[Path, EmbeddedVectorStore] = {}
_shared_lock = threading.Lock()
#: How long an opener waits for another thread's close of the same path to finish.
CLOSE_HANDOFF_TIMEOUT = 120.0


def open_vector_store(config: VectorStoreConfig) -> VectorStore:
    """Build the store a ``VectorStoreConfig`` describes (backends are imported only when used).

    Embedded stores are shared per directory in-process: opening the same path twice gives the same
    object (closed when every opener has closed it), from any thread and event loop; a second
    process gets a clear error."""
    layout = Layout(config.layout)
    if config.backend == "embedded":
        from pulse_ai.vectors.embedded import EmbeddedVectorStore

        path = Path(config.path or "./data/vectors").absolute()
        while True:
            with _shared_lock:
                store = _shared.get(path)
                if store is not None:
                    if store.layout is not layout:
                        raise VectorStoreError(
                            f"the vector store at {path} is open in this process with layout {store.layout.value}"
                        )
                    store.users += 1
                    return store
                closing = _closing.get(path)
                if closing is None:
                    store = EmbeddedVectorStore(path, layout=layout, optimize_after=config.optimize_after)
                    _shared[path] = store
                    return store
            closing.wait_closed(CLOSE_HANDOFF_TIMEOUT)
    from pulse_ai.vectors.server import QdrantServerStore

    return QdrantServerStore(
        url=config.url,
        api_key=(config.api_key.get_secret_value() or None) if config.api_key else None,
        prefer_grpc=config.prefer_grpc,
        timeout=config.timeout,
        location=config.location,
        path=config.path,
        layout=layout,
    )


def _release_shared(store: EmbeddedVectorStore) -> bool:
    """One user of ``store`` fewer; True for the last one, who then closes it."""
    with _shared_lock:
        if store.users <= 0:
            return False
        store.users -= 1
        if store.users:
            return False
        if _shared.get(store.path) is store:
            del _shared[store.path]
        _closing[store.path] = store
        return True


def _closed_shared(store: EmbeddedVectorStore) -> None:
    with _shared_lock:
        if _closing.get(store.path) is store:
            del _closing[store.path]
