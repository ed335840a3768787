"""Which collections of an embedded store are damaged, and how to rebuild each one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors import disk
from pulse_ai.vectors.collection import Collection, load_shard

__all__ = ["CollectionCheck", "check_store"]


@dataclass(frozen=True)
class CollectionCheck:
    name: str
    ok: bool
    detail: str
    rebuild: str = ""


def _rebuild_hint(name: str, directory: Path) -> str:
    if name.startswith("client_"):
        tenant, table, _ = name.removeprefix("client_").split("__", 2)
        what = f"tenant {tenant!r}, table {table!r}"
    else:
        what = "every tenant that has records in it (shared layout)"
    return (
        f"{name}: move {directory} aside (or delete it), then re-index {what} from the source; "
        "the indexer writes every record again"
    )


def _check_one(directory: Path) -> CollectionCheck:
    name = directory.name
    try:
        manifest = disk.read_manifest(directory)
        if manifest is None:
            return CollectionCheck(name, False, "no manifest (an interrupted create)", _rebuild_hint(name, directory))
        collection = Collection(name, directory, load_shard(name, directory, manifest), manifest)
        collection.close_clean()  # records the files and points again, as a clean close does
        points = manifest.points
    except VectorStoreError as error:
        return CollectionCheck(name, False, str(error), _rebuild_hint(name, directory))
    due = ", index build due" if manifest.optimize_due else ""
    return CollectionCheck(name, True, f"{points} points{due}")


def check_store(path: Path) -> list[CollectionCheck]:
    """Each collection's state; takes the store's lock (so refuses a store in use), blocking."""
    if not path.is_dir():
        raise VectorStoreError(f"no vector store at {path}")
    lock = disk.StoreLock(path)
    try:
        candidates = sorted(entry for entry in path.iterdir() if entry.is_dir() and not entry.name.startswith("."))
        return [_check_one(directory) for directory in candidates]
    finally:
        lock.release()
