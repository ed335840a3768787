"""A cache in a SQLite file (beside the database by default), shared by every process that opens it.

WAL mode lets readers run while one process writes; ``busy_timeout`` makes a second writer wait its
turn instead of failing. Every statement runs on one worker thread that owns the connection, so the
event loop never blocks on disk. Expiry times are wall-clock (``time.time``) because other processes
read them too; expired rows read as missing and are deleted from time to time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from pulse_ai.cache.backend import CacheBackend, StoredUsage
from pulse_ai.cache.keys import parse_key

__all__ = ["SqliteBackend"]

T = TypeVar("T")
CHUNK = 500  # keys per statement (well under SQLite's bound on host parameters)
SWEEP_EVERY = 2000  # rows written between two deletions of expired rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    key TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    scope TEXT NOT NULL,
    value BLOB NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cache_entries_scope ON cache_entries (namespace, scope);
CREATE TABLE IF NOT EXISTS cache_counters (name TEXT PRIMARY KEY, value REAL NOT NULL) WITHOUT ROWID;
"""


class SqliteBackend(CacheBackend):
    tier = "sqlite"

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pulse-ai-cache-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._written = 0

    def __repr__(self) -> str:
        return f"SqliteBackend({str(self.path)!r})"

    # ---- the worker thread ---------------------------------------------------------------
    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_thread, work)

    def _in_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=5000")
            connection.executescript(_SCHEMA)
            self._connection = connection
        return work(self._connection)

    # ---- the backend ---------------------------------------------------------------------
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        wanted = list(keys)

        def work(db: sqlite3.Connection) -> list[bytes | None]:
            now = self._clock()
            found: dict[str, bytes] = {}
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, value, expires_at FROM cache_entries WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
                for key, value, expires in rows:
                    if expires is None or expires > now:
                        found[key] = bytes(value)
            return [found.get(key) for key in wanted]

        return await self._run(work)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        rows = list(items)
        if not rows:
            return

        def work(db: sqlite3.Connection) -> None:
            expires = None if ttl is None else self._clock() + ttl
            values = [(key, *parse_key(key), value, expires) for key, value in rows]
            with _transaction(db):
                db.executemany("INSERT OR REPLACE INTO cache_entries VALUES (?, ?, ?, ?, ?)", values)
                self._written += len(values)
                if self._written >= SWEEP_EVERY:
                    self._written = 0
                    db.execute("DELETE FROM cache_entries WHERE expires_at <= ?", (self._clock(),))

        await self._run(work)

    async def delete_many(self, keys: Sequence[str]) -> None:
        doomed = [(key,) for key in keys]

        def work(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.executemany("DELETE FROM cache_entries WHERE key = ?", doomed)

        await self._run(work)

    async def scan(self, namespace: str, scope: str) -> list[tuple[str, bytes]]:
        def work(db: sqlite3.Connection) -> list[tuple[str, bytes]]:
            rows = db.execute(
                "SELECT key, value FROM cache_entries WHERE namespace = ? AND scope = ? "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (namespace, scope, self._clock()),
            ).fetchall()
            return [(key, bytes(value)) for key, value in rows]

        return await self._run(work)

    async def clear(self, namespace: str | None = None, scope: str | None = None) -> int:
        conditions = [(column, value) for column, value in (("namespace", namespace), ("scope", scope)) if value]
        where = " AND ".join(f"{column} = ?" for column, _ in conditions) or "1"

        def work(db: sqlite3.Connection) -> int:
            with _transaction(db):
                cursor = db.execute(f"DELETE FROM cache_entries WHERE {where}", [v for _, v in conditions])
            return cursor.rowcount

        return await self._run(work)

    async def usage(self) -> list[StoredUsage]:
        def work(db: sqlite3.Connection) -> list[StoredUsage]:
            rows = db.execute(
                "SELECT namespace, scope, COUNT(*), SUM(LENGTH(key) + LENGTH(value)) FROM cache_entries "
                "WHERE expires_at IS NULL OR expires_at > ? GROUP BY namespace, scope ORDER BY namespace, scope",
                (self._clock(),),
            ).fetchall()
            return [StoredUsage(ns, scope, int(count), int(size or 0)) for ns, scope, count, size in rows]

        return await self._run(work)

    async def add_counters(self, increments: Mapping[str, float]) -> None:
        rows = list(increments.items())

        def work(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.executemany(
                    "INSERT INTO cache_counters VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                    rows,
                )

        await self._run(work)

    async def read_counters(self) -> dict[str, float]:
        def work(db: sqlite3.Connection) -> dict[str, float]:
            return {name: float(value) for name, value in db.execute("SELECT name, value FROM cache_counters")}

        return await self._run(work)

    async def clear_counters(self, match: Callable[[str], bool]) -> None:
        def work(db: sqlite3.Connection) -> None:
            names = [(name,) for (name,) in db.execute("SELECT name FROM cache_counters") if match(name)]
            with _transaction(db):
                db.executemany("DELETE FROM cache_counters WHERE name = ?", names)

        await self._run(work)

    async def aclose(self) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.close()

        if self._connection is not None:
            await self._run(work)
            self._connection = None
        self._executor.shutdown(wait=False)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): a writer takes the lock up front, so two
    processes queue on ``busy_timeout`` instead of failing on a lock upgrade."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
