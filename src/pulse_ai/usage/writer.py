"""Group commit: one writer task commits every waiting caller's work in one transaction.

Callers (``UsageLedger.record``, ``Budgets.reserve``/``settle``/``release``) put a job on a queue
and wait for its future. The writer takes the first job, then everything queued behind it (up to
``max_batch``; optionally waiting ``max_delay_s`` for more), applies them all in one write
transaction, commits, and only then resolves the futures: a caller returns only once its work is
durable, and 64 concurrent callers cost a handful of transactions, not 64. While a transaction
runs, the next batch gathers in the queue, so batching needs no timer.

If a batch's transaction fails, each of its jobs is retried alone, so one bad job (a usage row
naming an unknown tenant, say) fails only its own caller. A database outage fails every caller
with ``DatabaseError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from pulse_ai.db.database import Database
from pulse_ai.db.models import ReservationRow, ReservationStatus, UsageRecordRow
from pulse_ai.db.types import utcnow
from pulse_ai.errors import DatabaseError
from pulse_ai.usage.budget_batch import FinishRequest, ReserveRequest, apply_budget_changes
from pulse_ai.usage.budget_types import Reservation

__all__ = ["GroupCommitWriter", "Job"]

log = logging.getLogger(__name__)
SWEEP_LIMIT = 500


@dataclass(eq=False)
class Job:
    """One caller's work: a reservation, reservations to finish, usage rows, or an expiry sweep."""

    reserve: ReserveRequest | None = None
    finishes: Sequence[FinishRequest] = ()
    rows: Sequence[dict[str, Any]] = ()
    sweep: bool = False
    future: asyncio.Future[Any] | None = field(default=None, repr=False)


_STOP = Job()


class GroupCommitWriter:
    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 512,
        max_delay_s: float = 0.0,
        sweep_interval_s: float | None = 30.0,
    ) -> None:
        self.db = db
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.sweep_interval_s = sweep_interval_s
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0  # transactions committed, for tests and benchmarks
        self.jobs = 0

    async def submit(self, job: Job) -> Any:
        """Queue ``job`` and wait until it is committed; its result, or its error."""
        if self._closed:
            raise DatabaseError("the usage writer is closed")
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._run(), name="pulse-ai usage writer")
        job.future = loop.create_future()
        self._queue.put_nowait(job)
        return await job.future

    async def close(self) -> None:
        """Commit everything queued, then stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._queue.put_nowait(_STOP)
            await asyncio.shield(self._task)

    async def _next(self) -> Job:
        if self.sweep_interval_s is None or not self._queue.empty():
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), self.sweep_interval_s)
        except TimeoutError:
            return Job(sweep=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + (self.sweep_interval_s or 0.0)
        stopping = False
        while not stopping:
            first = await self._next()
            if first is _STOP:
                break
            batch = [first]
            deadline = loop.time() + self.max_delay_s
            while len(batch) < self.max_batch:
                if self._queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    job = self._queue.get_nowait()
                if job is _STOP:
                    stopping = True
                    break
                batch.append(job)
            if self.sweep_interval_s is not None and loop.time() >= next_sweep:
                next_sweep = loop.time() + self.sweep_interval_s
                if not any(job.sweep for job in batch):
                    batch.append(Job(sweep=True))
            await self._commit(batch)

    async def _commit(self, batch: list[Job]) -> None:
        try:
            results = await self._apply(batch)
        except Exception as error:
            # One job's failure must not fail the others: retry each alone; a job that fails
            # alone fails only its own caller (a bug shows as itself, not as everyone's error).
            if len(batch) == 1:
                if not isinstance(error, DatabaseError):
                    log.exception("the usage writer failed on a job")
                self._resolve(batch, [error])
                return
            log.warning("a group commit of %d jobs failed (%s); retrying each alone", len(batch), type(error).__name__)
            for job in batch:
                await self._commit([job])
            return
        self.batches += 1
        self.jobs += len(batch)
        self._resolve(batch, results)

    def _resolve(self, batch: Sequence[Job], results: Sequence[Any]) -> None:
        for job, result in zip(batch, results, strict=True):
            future = job.future
            if future is None or future.done():
                # The caller gave up (cancelled) after queueing a reservation: give the money back.
                if isinstance(result, Reservation) and result.holds and not self._closed:
                    self._queue.put_nowait(Job(finishes=(FinishRequest(result.id, "release"),)))
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _apply(self, batch: Sequence[Job]) -> list[Any]:
        now = utcnow()
        return await self.db.run_write(
            f"commit {len(batch)} usage and budget changes", lambda connection: _apply(self.db, connection, batch, now)
        )


def _apply(db: Database, connection: Connection, batch: Sequence[Job], now: datetime) -> list[Any]:
    """The batch's statements, in its transaction (synchronous: see ``Database.run_write``)."""
    finishes: list[FinishRequest] = [f for job in batch for f in job.finishes]
    swept: list[FinishRequest] = []
    if any(job.sweep for job in batch):
        expired = connection.scalars(
            select(ReservationRow.id)
            .where(ReservationRow.status == ReservationStatus.ACTIVE.value, ReservationRow.expires_at <= now)
            .order_by(ReservationRow.id)
            .limit(SWEEP_LIMIT)
        )
        swept = [FinishRequest(reservation_id, "expire") for reservation_id in expired]
    reserves = [job.reserve for job in batch if job.reserve is not None]
    reserved, finished = apply_budget_changes(db, connection, reserves, finishes + swept, now)
    rows = [row for job in batch for row in job.rows]
    if rows:
        connection.execute(insert(UsageRecordRow), rows)
    reserved_iter, finished_iter = iter(reserved), iter(finished)
    results: list[Any] = []
    for job in batch:
        if job.reserve is not None:
            results.append(next(reserved_iter))
        else:
            results.append([next(finished_iter) for _ in job.finishes])
    swept_count = sum(1 for done in finished_iter if done)
    for index, job in enumerate(batch):
        if job.sweep:
            results[index] = swept_count
    return results
