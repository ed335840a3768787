"""Caching: embeddings per text, search results and generation answers, and tenants' schema; in
memory, SQLite or Redis (or memory in front of either). See ``layer.CachingRouter`` for the layer of
``TenantAI(context) -> Budget -> Cache -> Router -> Provider``, ``caches.Caches`` for the levels built
from the ``cache:`` configuration, and ``vectors.VectorCache`` for the vector store's hooks.
"""

from pulse_ai.cache.backend import CacheBackend, MemoryBackend, StoredUsage
from pulse_ai.cache.caches import LEVELS, TIERS, Caches, default_sqlite_path
from pulse_ai.cache.keys import SHARED_SCOPE, EmbeddingKeyer, generation_key, search_key
from pulse_ai.cache.layer import CachingRouter
from pulse_ai.cache.level import CacheLevel, Tier
from pulse_ai.cache.stats import CacheStats, Counts, StatKey
from pulse_ai.cache.vectors import TableSpace, VectorCache

__all__ = [
    "LEVELS",
    "SHARED_SCOPE",
    "TIERS",
    "CacheBackend",
    "CacheLevel",
    "CacheStats",
    "Caches",
    "CachingRouter",
    "Counts",
    "EmbeddingKeyer",
    "MemoryBackend",
    "StatKey",
    "StoredUsage",
    "TableSpace",
    "Tier",
    "VectorCache",
    "default_sqlite_path",
    "generation_key",
    "search_key",
]
