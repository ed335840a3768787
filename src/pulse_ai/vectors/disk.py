"""The embedded store's files: the owner lock, collection manifests, free space and damage checks.

Each collection directory holds the engine's shard and ``pulse-ai.json``, the manifest: the vector
space, whether an index build is due (so it survives a crash), and — written at a clean close — the
point count and a checksum of the shard's files, so that damage is noticed at the next open.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulse_ai.errors import VectorStoreError

__all__ = [
    "LOCK_FILE",
    "MANIFEST",
    "Manifest",
    "StoreLock",
    "check_free_space",
    "damage",
    "fingerprint",
    "fingerprint_sizes",
    "free_bytes",
    "read_manifest",
    "remove_orphans",
    "remove_tree",
    "write_manifest",
]

MANIFEST = "pulse-ai.json"
LOCK_FILE = ".pulse-ai.lock"
#: Files up to this size are read for the checksum (the metadata, id trackers and indexes of usual
#: collections); larger ones — vector and payload pages, mostly preallocated — by size only: cheap.
CHECKSUM_MAX_FILE = 4 * 1024 * 1024
#: Qdrant's largest dense vector.
MAX_DIMENSIONS = 65_536
LAYOUTS = ("per_tenant_table", "shared")
#: Directories of the shard not covered by the fingerprint: the WAL changes on open, temp is scratch.
_UNCHECKED = ("wal", "temp_segments")


class StoreLock:
    """An exclusive ``flock`` on ``<path>/.pulse-ai.lock`` holding the owner's pid.

    The kernel releases it when the owner dies, so a crash leaves no stale lock. Two store objects in
    one process conflict as well (a lock belongs to an open file), which is the point."""

    def __init__(self, directory: Path, *, timeout: float = 0.0) -> None:
        self.path = directory / LOCK_FILE
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise VectorStoreError(f"cannot open the vector store at {directory}: {exc}") from exc
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    owner = self._owner()
                    os.close(self._fd)
                    self._fd = None
                    raise VectorStoreError(f"the vector store at {directory} is in use by {owner}") from None
                time.sleep(0.05)
        os.ftruncate(self._fd, 0)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.pwrite(self._fd, json.dumps(me).encode(), 0)

    def _owner(self) -> str:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
            pid, host, since = int(owner["pid"]), owner.get("host", "?"), owner.get("since", "?")
        except (OSError, ValueError, KeyError, TypeError):
            return "another process (its pid is not recorded yet)"
        if pid == os.getpid() and host == socket.gethostname():
            return (
                f"another store object of this process (pid {pid}, since {since}); "
                "share one with pulse_ai.vectors.open_vector_store()"
            )
        return f"pid {pid} on {host} (since {since})"

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the file releases the flock
            self._fd = None


@dataclass
class Manifest:
    vector_space: str
    dimensions: int
    layout: str
    #: A write or build happened since the last index build: build on the next open if not before.
    optimize_due: bool = False
    #: Written at a clean close: the shard's files and points as they were left.
    clean: bool = False
    points: int | None = None
    files: dict[str, int] | None = None
    checksum: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"format": 1, **self.__dict__}


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest of the collection in ``directory``, or None when there is none."""
    path = directory / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VectorStoreError(f"cannot read the manifest {path}: {exc}") from exc
    try:
        return _manifest_of(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise VectorStoreError(
            f"the manifest {path} is damaged ({type(exc).__name__}: {str(exc)[:200]}); "
            "run `pulse-ai vectors check` to see how to rebuild the collection"
        ) from None


def _manifest_of(data: object) -> Manifest:
    """A manifest from its JSON, every field checked (a damaged or edited file must not reach the
    engine: ``dimensions: 1e309`` or ``-5`` would crash it)."""
    if not isinstance(data, dict):
        raise TypeError(f"a JSON object was expected, not {type(data).__name__}")
    space, dimensions, layout = data["vector_space"], data["dimensions"], data["layout"]
    if not isinstance(space, str) or not space:
        raise ValueError("vector_space is not a non-empty string")
    if not _is_count(dimensions) or not 1 <= dimensions <= MAX_DIMENSIONS:
        raise ValueError(f"dimensions {dimensions!r} is not an integer from 1 to {MAX_DIMENSIONS}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    flags = {key: data.get(key, False) for key in ("optimize_due", "clean")}
    if not all(isinstance(flag, bool) for flag in flags.values()):
        raise ValueError("optimize_due and clean must be true or false")
    points, files, checksum = data.get("points"), data.get("files"), data.get("checksum")
    if points is not None and not _is_count(points):
        raise ValueError(f"points {points!r} is not a count")
    if files is not None and not (
        isinstance(files, dict) and all(isinstance(k, str) and _is_count(v) for k, v in files.items())
    ):
        raise ValueError("files is not a mapping of file name to size")
    if checksum is not None and not isinstance(checksum, str):
        raise ValueError("checksum is not a string")
    return Manifest(space, dimensions, layout, flags["optimize_due"], flags["clean"], points, files, checksum)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Atomically: a reader sees the old manifest or the new one, never half of one."""
    path = directory / MANIFEST
    temporary = directory / f"{MANIFEST}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(manifest.as_dict(), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _shard_files(directory: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(directory):
        relative = Path(root).relative_to(directory)
        if relative == Path("."):
            dirs[:] = [d for d in dirs if d not in _UNCHECKED]
        for name in files:
            if relative == Path(".") and name.startswith(MANIFEST):
                continue
            yield Path(root, name)


def fingerprint_sizes(directory: Path) -> dict[str, int]:
    return {path.relative_to(directory).as_posix(): path.stat().st_size for path in _shard_files(directory)}


def fingerprint(directory: Path) -> tuple[dict[str, int], str]:
    """File sizes, and a CRC-32 over names, sizes and the content of files up to CHECKSUM_MAX_FILE."""
    sizes: dict[str, int] = {}
    crc = 0
    for path in sorted(_shard_files(directory)):
        relative = path.relative_to(directory).as_posix()
        size = path.stat().st_size
        sizes[relative] = size
        crc = zlib.crc32(f"{relative}\0{size}\0".encode(), crc)
        if size <= CHECKSUM_MAX_FILE:
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    crc = zlib.crc32(chunk, crc)
    return sizes, f"crc32:{crc:08x}"


def damage(directory: Path, manifest: Manifest) -> str | None:
    """What differs from the state recorded at the last clean close (None: nothing, or not recorded)."""
    if not manifest.clean or manifest.files is None:
        return None
    sizes, checksum = fingerprint(directory)
    missing = sorted(set(manifest.files) - set(sizes))
    if missing:
        return f"files missing: {', '.join(missing[:5])}"
    changed = sorted(name for name, size in manifest.files.items() if sizes.get(name) != size)
    if changed:
        return f"files truncated or resized: {', '.join(changed[:5])}"
    if checksum != manifest.checksum:
        return "file contents changed since the last clean close (checksum mismatch)"
    return None


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def check_free_space(path: Path, needed: int) -> None:
    """Refuse before the engine writes: on a full disk its memory-mapped files kill the process (SIGBUS)."""
    free = free_bytes(path)
    if free < needed:
        raise VectorStoreError(
            f"not enough free disk space for the vector store at {path}: {free / 2**20:.1f} MiB free, "
            f"{needed / 2**20:.1f} MiB needed; free some space (nothing was written)"
        )


def remove_orphans(directory: Path) -> list[str]:
    """Remove what a killed engine left behind (temporary segments of an interrupted index build)."""
    removed = []
    temp = directory / "temp_segments"
    if temp.is_dir():
        for entry in temp.iterdir():
            remove_tree(entry)
            removed.append(entry.name)
    (directory / f"{MANIFEST}.tmp").unlink(missing_ok=True)
    return removed


def remove_tree(path: Path) -> None:
    """``rmtree`` that fails loudly, naming what it could not remove (never ``ignore_errors``)."""
    failures: list[str] = []

    def record(_function: Any, failed: str, info: Any) -> None:
        failures.append(f"{failed}: {info[1] if isinstance(info, tuple) else info}")

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=record)
    elif path.exists() or path.is_symlink():
        try:
            path.unlink()
        except OSError as exc:
            failures.append(f"{path}: {exc}")
    if failures:
        raise VectorStoreError(f"could not remove {path} entirely: {'; '.join(failures[:5])}")
