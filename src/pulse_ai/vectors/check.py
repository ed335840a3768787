"""Which collections of an embedded store are damaged, and how to rebuild each one.

Every directory of the store gets one line: ``ok``; ``pending`` (an interrupted create the store
finishes by itself at its next open: no problem); or a problem: ``DAMAGED`` (with how to rebuild),
``ASIDE`` (a collection the engine could not open, moved aside: its records need re-indexing) or
``STRAY`` (not a collection of this store). Nothing a directory holds makes the check itself fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors import disk
from pulse_ai.vectors.collection import ASIDE, Collection, count_unlisted, holds_no_files, load_shard
from pulse_ai.vectors.scope import parse_collection_name

__all__ = ["CollectionCheck", "check_store"]

#: Directories a filesystem or an operator keeps at the top of a store's directory: not ours.
IGNORED = frozenset({"lost+found"})
_LABELS = {"ok": "ok", "pending": "pending", "damaged": "DAMAGED", "aside": "ASIDE", "stray": "STRAY"}


@dataclass(frozen=True)
class CollectionCheck:
    name: str
    status: str  # ok | pending | damaged | aside | stray
    detail: str
    rebuild: str = ""

    @property
    def ok(self) -> bool:
        """Nothing to do: sound, or finished by the store itself at its next open."""
        return self.status in ("ok", "pending")

    @property
    def label(self) -> str:
        return _LABELS[self.status]


def _rebuild_hint(name: str, directory: Path) -> str:
    parsed = parse_collection_name(name)
    if parsed is None:
        what = "the records it held"
    elif parsed[0] is None:
        what = "every tenant that has records in it (shared layout)"
    else:
        what = f"tenant {parsed[0]!r}, table {parsed[1]!r}"
    return (
        f"{name}: move {directory} aside (or delete it), then re-index {what} from the source; "
        "the indexer writes every record again"
    )


def _without_manifest(directory: Path) -> CollectionCheck:
    name = directory.name
    base, aside, _ = name.partition(ASIDE)
    if parse_collection_name(base) is None:
        return CollectionCheck(name, "stray", f"not a collection of this store; move it out of {directory.parent}")
    if aside:
        return CollectionCheck(
            name,
            "aside",
            "moved aside: the engine could not open it, and a new, empty collection took its place",
            _rebuild_hint(base, directory),
        )
    if holds_no_files(directory):
        return CollectionCheck(name, "pending", "an interrupted create (empty): it will be finished on next open")
    try:
        points = count_unlisted(directory)
    except VectorStoreError as error:
        detail = f"no manifest, and the engine cannot open it ({error}); the next open moves it aside"
        return CollectionCheck(name, "damaged", detail, _rebuild_hint(name, directory))
    if points:
        detail = f"no manifest, but {points} points: an interrupted create that was written to"
        return CollectionCheck(name, "damaged", detail, _rebuild_hint(name, directory))
    return CollectionCheck(name, "pending", "an interrupted create (no points): it will be finished on next open")


def _check_one(directory: Path) -> CollectionCheck:
    name = directory.name
    try:
        manifest = disk.read_manifest(directory)
        if manifest is None:
            return _without_manifest(directory)
        collection = Collection(name, directory, load_shard(name, directory, manifest), manifest)
        collection.close_clean()  # records the files and points again, as a clean close does
    except (VectorStoreError, OSError) as error:
        return CollectionCheck(name, "damaged", str(error), _rebuild_hint(name, directory))
    except Exception as error:  # whatever a directory holds, the check reports it and goes on
        detail = f"could not be checked: {type(error).__name__}: {error}"
        return CollectionCheck(name, "damaged", detail, _rebuild_hint(name, directory))
    due = ", index build due" if manifest.optimize_due else ""
    return CollectionCheck(name, "ok", f"{manifest.points} points{due}")


def check_store(path: Path) -> list[CollectionCheck]:
    """Each collection's state; takes the store's lock (so refuses a store in use), blocking."""
    if not path.is_dir():
        raise VectorStoreError(f"no vector store at {path}")
    lock = disk.StoreLock(path)
    try:
        try:
            candidates = sorted(
                entry
                for entry in path.iterdir()
                if entry.is_dir() and not entry.name.startswith(".") and entry.name not in IGNORED
            )
        except OSError as exc:
            raise VectorStoreError(f"cannot list the vector store at {path}: {exc}") from exc
        return [_check_one(directory) for directory in candidates]
    finally:
        lock.release()
