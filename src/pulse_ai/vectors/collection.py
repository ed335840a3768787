"""One embedded collection: its engine shard, manifest and state; creating, loading and closing it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as edge

from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors import disk
from pulse_ai.vectors.base import PurgeLeftovers
from pulse_ai.vectors.scope import RECORD_KEY, SHARED_PREFIX, TABLE_KEY, TENANT_KEY, tenant_collection_prefix

__all__ = [
    "ASIDE",
    "DROPPING",
    "Collection",
    "build_config",
    "count_unlisted",
    "create_shard",
    "holds_no_files",
    "load_shard",
    "purge_leftovers",
    "purge_unlisted",
]

T = TypeVar("T")
#: A dropped collection's directory is renamed ``{DROPPING}{name}-{random}`` before it is removed.
DROPPING = ".dropping-"
#: Where create_shard moves a directory the engine cannot open: ``{name}{ASIDE}{time}``.
ASIDE = ".incomplete-"
REBUILD_HINT = "re-index its records from the source (`pulse-ai vectors check` lists what to rebuild)"


def guarded(name: str, directory: Path, call: Callable[[], T]) -> T:
    """Run an engine call; its failures, Rust panics included (``BaseException``), become VectorStoreError."""
    try:
        return call()
    except VectorStoreError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError):
        raise
    except BaseException as exc:
        raise VectorStoreError(
            f"embedded Qdrant failed on collection {name} ({directory}): {type(exc).__name__}: {exc}"
        ) from exc


@dataclass(eq=False)
class Collection:
    """An open collection. It may be used from several event loops and threads at once: what is
    shared is guarded by threading locks held only in worker threads, never on an event loop."""

    name: str
    directory: Path
    shard: Any
    manifest: disk.Manifest
    #: Points written since the last index build, in this process.
    pending: int = 0
    writes: int = 0
    builds: int = 0
    failed_builds: int = 0
    last_write: float = field(default_factory=time.monotonic)
    #: A build waiting for writes to pause, then running; done when it finished or was given up.
    scheduled: Future[None] | None = None
    #: The timer that starts the scheduled build once writes have paused.
    timer: threading.Timer | None = None
    #: The last build handed to the builder thread (a drop or a close waits for it).
    build: Future[None] | None = None
    #: Set when the collection is dropped or its store closes: no build starts after that.
    retired: bool = False
    #: Guards the manifest (its fields and its file, written from the engine and builder threads)
    #: and the build schedule above.
    guard: threading.RLock = field(default_factory=threading.RLock)

    def save_manifest(self, **changes: Any) -> None:
        """Change manifest fields and write it, atomically with respect to the other threads."""
        with self.guard:
            for key, value in changes.items():
                setattr(self.manifest, key, value)
            disk.write_manifest(self.directory, self.manifest)

    def guarded(self, call: Callable[[Any], T]) -> T:
        return guarded(self.name, self.directory, lambda: call(self.shard))

    def close(self) -> None:
        self.guarded(lambda shard: shard.close())

    def close_clean(self) -> None:
        """Flush, close, and record the files and points as left, so damage shows at the next open."""
        points = self.guarded(lambda shard: (shard.flush(), shard.info().points_count)[1])
        self.close()
        sizes, checksum = disk.fingerprint(self.directory)
        self.save_manifest(clean=True, points=int(points), files=sizes, checksum=checksum)


#: KB of vectors in a segment before a build indexes it. Explicit, and lower than the engine's
#: default: after a build killed half-way the points lie in two smaller segments, each under the
#: default, and no later build would index them.
INDEXING_THRESHOLD_KB = 1000


def build_config(dimensions: int, *, shared: bool) -> Any:
    # The shared layout indexes per tenant (payload_m) instead of one global graph (m=0).
    hnsw = edge.HnswIndexConfig(m=0 if shared else 16, ef_construct=100, full_scan_threshold=10_000, payload_m=16)
    return edge.EdgeConfig(
        vectors=edge.EdgeVectorParams(size=dimensions, distance=edge.Distance.Cosine),
        hnsw_config=hnsw,
        optimizers=edge.EdgeOptimizersConfig(indexing_threshold=INDEXING_THRESHOLD_KB),
    )


def _ensure_indexes(shard: Any) -> None:
    have = set(shard.info().payload_schema)
    if TENANT_KEY not in have:
        shard.update(edge.UpdateOperation.create_field_index(TENANT_KEY, edge.KeywordIndexParams(is_tenant=True)))
    for key in (TABLE_KEY, RECORD_KEY):
        if key not in have:
            shard.update(edge.UpdateOperation.create_field_index(key, edge.PayloadSchemaType.Keyword))


def create_shard(name: str, directory: Path, config: Any, manifest: disk.Manifest) -> Any:
    """Create the shard, its payload indexes (the tenant one before any data), then the manifest.

    The manifest is written last, so its absence means "not complete". A directory without one
    (a crash mid-create) is finished in place when it holds no points; one that holds points is
    reported and left as it is; one the engine cannot open is moved aside, never deleted."""
    if (directory / disk.MANIFEST).exists():
        raise VectorStoreError(f"collection {name} exists already at {directory}")
    shard: Any = None
    if directory.exists() and holds_no_files(directory):
        disk.remove_tree(directory)  # created, then killed before the engine wrote anything: nothing to keep
    if directory.exists():
        try:
            shard = guarded(name, directory, lambda: edge.EdgeShard.load(str(directory)))
        except VectorStoreError:
            aside = directory.with_name(f"{name}{ASIDE}{time.strftime('%Y%m%dT%H%M%S')}")
            directory.rename(aside)
        else:
            points = guarded(name, directory, lambda: shard.info().points_count)
            if points:
                guarded(name, directory, shard.close)
                raise VectorStoreError(
                    f"{directory} holds {points} points but no manifest (an interrupted create?); it was "
                    "left untouched: move it aside and re-index, or restore its manifest"
                )
    if shard is None:
        shard = guarded(name, directory, lambda: edge.EdgeShard.create(str(directory), config))
    guarded(name, directory, lambda: _ensure_indexes(shard))
    disk.write_manifest(directory, manifest)
    return shard


def load_shard(name: str, directory: Path, manifest: disk.Manifest) -> Any:
    """Open an existing shard: orphans removed, files and point count checked against the manifest."""
    disk.remove_orphans(directory)
    problem = disk.damage(directory, manifest)
    if problem:
        raise VectorStoreError(f"collection {name} at {directory} is damaged: {problem}; {REBUILD_HINT}")
    config = build_config(manifest.dimensions, shared=manifest.layout == "shared")
    shard = guarded(name, directory, lambda: edge.EdgeShard.load(str(directory), config))
    if manifest.clean:
        points = guarded(name, directory, lambda: shard.info().points_count)
        if manifest.points is not None and points != manifest.points:
            guarded(name, directory, shard.close)
            raise VectorStoreError(
                f"collection {name} at {directory} is damaged: {points} points where {manifest.points} were "
                f"left at the last clean close; {REBUILD_HINT}"
            )
        # From now on the files may change: a kill before the next clean close must not look like damage.
        manifest.clean = False
        disk.write_manifest(directory, manifest)
    return shard


def holds_no_files(directory: Path) -> bool:
    """True when no file lies anywhere under ``directory`` (a create killed before the engine wrote)."""
    return not any(path.is_file() for path in directory.rglob("*"))


def _tenant_filter(tenant: str) -> Any:
    return edge.Filter(must=[edge.FieldCondition(key=TENANT_KEY, match=edge.MatchValue(tenant))])


def count_unlisted(directory: Path, tenant: str | None = None) -> int:
    """Points (of ``tenant``, or all) in a shard directory that has no manifest; a
    VectorStoreError when the engine cannot open it."""
    name = directory.name
    shard = guarded(name, directory, lambda: edge.EdgeShard.load(str(directory)))
    try:
        if tenant is None:
            return int(guarded(name, directory, lambda: shard.info().points_count))
        request = edge.CountRequest(exact=True, filter=_tenant_filter(tenant))
        return int(guarded(name, directory, lambda: shard.count(request)))
    finally:
        guarded(name, directory, shard.close)


def purge_unlisted(directory: Path, tenant: str) -> int:
    """Delete ``tenant``'s points from a shard directory without a manifest (a shared collection
    whose create was interrupted, or one moved aside); returns how many there were."""
    name = directory.name
    shard = guarded(name, directory, lambda: edge.EdgeShard.load(str(directory)))
    try:
        request = edge.CountRequest(exact=True, filter=_tenant_filter(tenant))
        held = int(guarded(name, directory, lambda: shard.count(request)))
        if held:
            operation = edge.UpdateOperation.delete_points_by_filter(_tenant_filter(tenant))
            guarded(name, directory, lambda: shard.update(operation))
            guarded(name, directory, shard.flush)
            left = int(guarded(name, directory, lambda: shard.count(request)))
            if left:
                raise VectorStoreError(f"{directory}: {left} of {held} points of tenant {tenant!r} remain")
        return held
    finally:
        guarded(name, directory, shard.close)


def purge_leftovers(path: Path, tenant: str) -> PurgeLeftovers:
    """Remove ``tenant``'s data that lies outside complete collections in the store at ``path``:
    what an earlier drop left, its collection directories without a manifest (an interrupted
    create, a collection moved aside), and its points in shared ones without a manifest. The
    caller holds the store's state lock, so that no create is half-way meanwhile."""
    prefix, found = tenant_collection_prefix(tenant), PurgeLeftovers()
    for entry in sorted(path.iterdir()):
        name = entry.name
        try:
            if name.startswith(f"{DROPPING}{prefix}"):
                disk.remove_tree(entry)
                found.dropped.append(name.removeprefix(DROPPING))
            elif not entry.is_dir() or (entry / disk.MANIFEST).exists():
                continue
            elif name.startswith(prefix):  # the tenant's own: removed whole
                disk.remove_tree(entry)
                found.removed.append(name)
            elif name.startswith(SHARED_PREFIX) and not holds_no_files(entry):
                deleted = purge_unlisted(entry, tenant)  # other tenants' points too: only the tenant's go
                if deleted:
                    found.deleted_points[name] = deleted
        except (VectorStoreError, OSError) as error:
            found.failures.append(f"{name}: {error}")
    return found
