"""The vector side: a search cache invalidated by writes, and the schema cache of what tenants indexed.

**Search.** An entry's key holds the table's *version*: a random token per tenant+table, kept in the
level's authoritative tier (SQLite or Redis when configured, so every process sees one token). Every
write through the store (index, metadata update, delete, purge) replaces the token, so each entry
made before the write becomes unreachable at once (it then ages out). A missing token (never set,
evicted, cleared) is replaced by a new random one: entries can be orphaned, never revived. A bump
that cannot be written (the backend is down) is retried before the next search in this process is
cached or served, and searches are not cached while it is pending; another process that reads a
stale token once the backend is back is bounded by the level's TTL.

**Schema.** Per tenant, table and vector space: the point count and the metadata fields seen,
updated after every write through the store. A table's entries are *complete* once the store has
listed them (on a search miss); then they answer "which spaces does this table hold" without a
directory listing, and ``VectorStore.tenant_schema`` answers "what can I search" from them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from pulse_ai.cache.codec import decode_json, encode_json
from pulse_ai.cache.keys import Namespace, schema_key, search_key, version_key
from pulse_ai.cache.level import CacheLevel
from pulse_ai.cache.stats import CacheStats
from pulse_ai.errors import CacheClearIncompleteError
from pulse_ai.vectors.base import SearchHit

__all__ = ["TableSpace", "VectorCache"]

COMPLETE = ""  # the space of a table's marker entry: its spaces were listed from the store


@dataclass(frozen=True)
class TableSpace:
    """What a tenant's table holds in one vector space."""

    table: str
    vector_space: str
    count: int
    metadata_fields: tuple[str, ...]


class VectorCache:
    """Hooks the vector store and the indexer call; every method degrades to "no cache"."""

    def __init__(self, search: CacheLevel | None, schema: CacheLevel | None, stats: CacheStats) -> None:
        self.search = search
        self.schema = schema
        self.stats = stats
        self._pending_bumps: set[tuple[str, str]] = set()

    # ---- versions ------------------------------------------------------------------------
    async def _version(self, tenant: str, table: str) -> str | None:
        """The table's current token, or None when it cannot be known (do not cache then)."""
        assert self.search is not None
        if not await self._flush_bumps():
            return None
        raw = await self.search.get_back(version_key(tenant, table), tenant)
        if raw is not None:
            return raw.hex()
        token = secrets.token_bytes(16)
        if await self.search.set_back([(version_key(tenant, table), token)], tenant, None):
            return token.hex()
        return None

    async def _bump(self, tenant: str, table: str) -> None:
        if self.search is None:
            return
        self._pending_bumps.add((tenant, table))
        await self._flush_bumps()

    async def _flush_bumps(self) -> bool:
        assert self.search is not None
        for tenant, table in list(self._pending_bumps):
            token = secrets.token_bytes(16)
            if not await self.search.set_back([(version_key(tenant, table), token)], tenant, None):
                return False
            self._pending_bumps.discard((tenant, table))
        return True

    # ---- search results ------------------------------------------------------------------
    async def get_search(
        self,
        tenant: str,
        table: str,
        space: str,
        query: str | npt.ArrayLike,
        where: Mapping[str, object] | None,
        limit: int,
        score_threshold: float | None,
        hnsw_ef: int | None,
        exact: bool,
    ) -> tuple[str | None, list[SearchHit] | None]:
        """(the entry's key, or None when this search must not be cached; the cached hits or None)."""
        if self.search is None:
            return None, None
        version = await self._version(tenant, table)
        if version is None:
            return None, None
        try:
            key = search_key(tenant, table, version, space, query, where, limit, score_threshold, hnsw_ef, exact)
        except (TypeError, ValueError):  # a filter that is not JSON: the store will refuse it
            return None, None
        found = (await self.search.get_many([key], tenant))[0]
        if found is None:
            return key, None
        value = decode_json(found[0])
        hits = _hits(value)
        if hits is None:
            self.stats.corrupt("search", found[1], tenant)
            await self.search.delete_many([key], tenant)
        return key, hits

    async def put_search(self, key: str, tenant: str, hits: list[SearchHit]) -> None:
        if self.search is None:
            return
        value = [[hit.record_id, hit.score, hit.metadata] for hit in hits]
        await self.search.set_many([(key, encode_json(value))], tenant)

    # ---- writes --------------------------------------------------------------------------
    async def written(
        self, tenant: str, table: str, vector_space: str, count: int | None, metadata_fields: Iterable[str] = ()
    ) -> None:
        """After a write: a new version for the table; its count and fields in the schema (the count
        is None when it could not be read: the schema then stays as it was)."""
        await self._bump(tenant, table)
        if self.schema is None or count is None:
            return
        key = schema_key(tenant, table, vector_space)
        previous = _table_space(decode_json(await self.schema.get_back(key, tenant) or b""))
        fields = set(metadata_fields) | set(previous.metadata_fields if previous else ())
        entry = TableSpace(table, vector_space, count, tuple(sorted(fields)))
        await self.schema.set_back([(key, encode_json(_as_json(entry)))], tenant, self.schema.ttl)

    async def purged(self, tenant: str) -> None:
        """The tenant is gone: its search entries, versions and schema with it."""
        failures: list[str] = []
        for level, namespaces in ((self.search, (Namespace.SEARCH, Namespace.VERSION)), (self.schema, ("schema",))):
            if level is None:
                continue
            for namespace in namespaces:
                try:
                    await level.clear(namespace, tenant)
                except CacheClearIncompleteError as error:
                    failures.extend(error.failures)
        self._pending_bumps = {(t, table) for t, table in self._pending_bumps if t != tenant}
        if failures:
            raise CacheClearIncompleteError(tenant, failures)

    # ---- schema --------------------------------------------------------------------------
    async def tenant_schema(self, tenant: str) -> list[TableSpace] | None:
        """What the schema cache knows of ``tenant`` (None when the schema level is off or down)."""
        if self.schema is None:
            return None
        entries = await self.schema.scan_back(Namespace.SCHEMA, tenant)
        if entries is None:
            return None
        found = [_table_space(decode_json(value)) for _, value in entries]
        return sorted((e for e in found if e is not None and e.vector_space != COMPLETE), key=_order)

    async def table_spaces(self, tenant: str, table: str) -> list[str] | None:
        """The spaces ``table`` holds points in, when the schema knows them completely; else None."""
        if self.schema is None:
            return None
        marker = await self.schema.get_back(schema_key(tenant, table, COMPLETE), tenant)
        if marker is None:
            return None
        known = await self.tenant_schema(tenant)
        if known is None:
            return None
        return sorted({e.vector_space for e in known if e.table == table and e.count > 0})

    async def listed(self, tenant: str, table: str, counts: Mapping[str, int]) -> None:
        """The store listed ``table``'s spaces (and counted them): the schema of that table is complete."""
        if self.schema is None:
            return
        items = [(schema_key(tenant, table, COMPLETE), encode_json(_as_json(TableSpace(table, COMPLETE, 0, ()))))]
        for space, count in counts.items():
            key = schema_key(tenant, table, space)
            previous = _table_space(decode_json(await self.schema.get_back(key, tenant) or b""))
            fields = previous.metadata_fields if previous else ()
            items.append((key, encode_json(_as_json(TableSpace(table, space, count, fields)))))
        await self.schema.set_back(items, tenant, self.schema.ttl)


def _order(entry: TableSpace) -> tuple[str, str]:
    return entry.table, entry.vector_space


def _as_json(entry: TableSpace) -> dict[str, Any]:
    return {
        "table": entry.table,
        "space": entry.vector_space,
        "count": entry.count,
        "fields": list(entry.metadata_fields),
    }


def _table_space(value: Any) -> TableSpace | None:
    if not isinstance(value, dict):
        return None
    try:
        return TableSpace(str(value["table"]), str(value["space"]), int(value["count"]), tuple(value["fields"]))
    except (KeyError, TypeError, ValueError):
        return None


def _hits(value: Any) -> list[SearchHit] | None:
    if not isinstance(value, list):
        return None
    hits = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], dict)):
            return None
        hits.append(SearchHit(str(item[0]), float(item[1]), item[2]))
    return hits
