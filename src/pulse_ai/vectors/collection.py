"""One embedded collection: its engine shard, manifest and state; creating, loading and closing it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as edge

from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors import disk
from pulse_ai.vectors.scope import RECORD_KEY, TABLE_KEY, TENANT_KEY

__all__ = ["Collection", "build_config", "create_shard", "load_shard"]

T = TypeVar("T")
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
    builder: asyncio.Task[None] | None = None
    building: asyncio.Lock = field(default_factory=asyncio.Lock)

    def guarded(self, call: Callable[[Any], T]) -> T:
        return guarded(self.name, self.directory, lambda: call(self.shard))

    def close(self) -> None:
        self.guarded(lambda shard: shard.close())

    def close_clean(self) -> None:
        """Flush, close, and record the files and points as left, so damage shows at the next open."""
        points = self.guarded(lambda shard: (shard.flush(), shard.info().points_count)[1])
        self.close()
        sizes, checksum = disk.fingerprint(self.directory)
        self.manifest.clean, self.manifest.points = True, int(points)
        self.manifest.files, self.manifest.checksum = sizes, checksum
        disk.write_manifest(self.directory, self.manifest)


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
    if directory.exists():
        try:
            shard = guarded(name, directory, lambda: edge.EdgeShard.load(str(directory)))
        except VectorStoreError:
            aside = directory.with_name(f"{name}.incomplete-{time.strftime('%Y%m%dT%H%M%S')}")
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
