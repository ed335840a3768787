"""Index builds of the embedded store's collections: on one builder thread, once writes pause.

Nothing here belongs to an event loop: the wait for writes to pause is a ``threading.Timer``, a
build is a ``concurrent.futures.Future`` on the builder thread, and the schedule is guarded by each
collection's lock, taken only in worker threads. So a store shared by several event loops (a second
``asyncio.run``, one loop per thread) schedules, runs and waits for its builds the same way, and a
loop that ends does not cancel a build another loop's writes made due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors import disk
from pulse_ai.vectors.collection import Collection

__all__ = ["IndexBuilder"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class IndexBuilder:
    def __init__(self, path: Path, *, optimize_after: int, optimize_idle: float, min_free_bytes: int) -> None:
        self.path = path
        self.optimize_after = optimize_after
        self.optimize_idle = optimize_idle
        self.min_free_bytes = min_free_bytes
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="pulse-ai-vectors-optimize")
        self._closing = threading.Event()

    def run(self, call: Callable[[], T]) -> Future[T]:
        """Other background work on the builder thread (after the builds queued before it)."""
        return self._executor.submit(call)

    # ---- worker threads only (they take collection.guard) -------------------------------------
    def written(self, collection: Collection, count: int) -> None:
        """After a write batch: a build is scheduled once ``optimize_after`` points were written."""
        with collection.guard:
            collection.pending += count
            collection.last_write = time.monotonic()
            if collection.pending >= self.optimize_after:
                self.schedule(collection)

    def schedule(self, collection: Collection) -> None:
        """Build once writes to the collection have paused for ``optimize_idle`` seconds."""
        with collection.guard:
            if collection.scheduled is not None or collection.retired or self._closing.is_set():
                return
            collection.scheduled = Future()
            self._arm(collection, self.optimize_idle)

    def build_now(self, collection: Collection) -> Future[None] | None:
        """An explicit build on the builder thread; its failure is the caller's (None: retired)."""
        with collection.guard:
            if collection.retired or self._closing.is_set():
                return None
            collection.build = self._executor.submit(self._build, collection)
            return collection.build

    def retire(self, collection: Collection) -> Future[None] | None:
        """No build of ``collection`` starts any more; returns the one handed to the builder
        thread, which may still be running (a drop or a close waits for it)."""
        with collection.guard:
            collection.retired = True
            waiting = collection.timer  # a timer still waiting has handed nothing to the builder
            if waiting is not None:
                waiting.cancel()
            build = collection.build
            if waiting is not None or build is None or build.done():
                self._unschedule(collection)
            return build

    def close(self) -> None:
        """Stop scheduling and wait for the builder thread (call after retiring every collection)."""
        self._closing.set()
        self._executor.shutdown(wait=True)

    # ---- the schedule ------------------------------------------------------------------------
    def _arm(self, collection: Collection, delay: float) -> None:
        timer = threading.Timer(max(delay, 0.0), self._when_idle, (collection,))
        timer.daemon = True
        timer.name = f"pulse-ai-vectors-idle-{collection.name}"[:60]
        collection.timer = timer
        timer.start()

    def _when_idle(self, collection: Collection) -> None:  # a timer thread
        with collection.guard:
            if collection.retired or self._closing.is_set():
                self._unschedule(collection)
                return
            wait = collection.last_write + self.optimize_idle - time.monotonic()
            if wait > 0:  # written meanwhile: wait for the pause again
                self._arm(collection, wait)
                return
            collection.timer = None
            try:
                collection.build = self._executor.submit(self._scheduled_build, collection)
            except RuntimeError:  # the builder was shut down: the build stays due in the manifest
                self._unschedule(collection)

    def _scheduled_build(self, collection: Collection) -> None:
        try:
            self._build(collection)
        except (VectorStoreError, OSError) as error:  # the build stays due (in the manifest): tried again later
            collection.failed_builds += 1
            log.warning("index build of %s failed (it stays due): %s", collection.name, error)
        finally:
            with collection.guard:
                self._unschedule(collection)

    @staticmethod
    def _unschedule(collection: Collection) -> None:
        scheduled, collection.scheduled, collection.timer = collection.scheduled, None, None
        if scheduled is not None and not scheduled.done():
            scheduled.set_result(None)

    # ---- the build ---------------------------------------------------------------------------
    def _build(self, collection: Collection) -> None:
        """On the builder thread (one build at a time); searches and writes go on meanwhile."""
        if collection.retired or self._closing.is_set() or not collection.manifest.optimize_due:
            return
        size = sum(disk.fingerprint_sizes(collection.directory).values())
        disk.check_free_space(self.path, self.min_free_bytes + size)
        with collection.guard:
            writes_before = collection.writes
            collection.save_manifest(clean=False)
        collection.guarded(lambda engine: engine.optimize())
        collection.builds += 1
        with collection.guard:
            if collection.writes == writes_before:  # nothing was written meanwhile: not due any more
                collection.pending = 0
                collection.save_manifest(optimize_due=False)
