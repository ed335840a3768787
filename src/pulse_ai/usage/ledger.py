"""The usage ledger: one row per attempt, committed before ``record`` returns, with group commit."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from pulse_ai.db.database import Database
from pulse_ai.usage.budget_types import Reservation
from pulse_ai.usage.budgets import settle_request
from pulse_ai.usage.rows import UsageRow
from pulse_ai.usage.writer import GroupCommitWriter, Job

__all__ = ["UsageLedger"]


class UsageLedger:
    """``await ledger.record(rows)`` returns once the rows are committed (a killed process loses no
    row whose ``record`` returned); concurrent callers share one transaction."""

    def __init__(self, db: Database, writer: GroupCommitWriter | None = None) -> None:
        self.db = db
        self._owns_writer = writer is None
        self.writer = writer or GroupCommitWriter(db)

    async def record(
        self,
        rows: Sequence[UsageRow],
        *,
        settle: Sequence[tuple[Reservation, Decimal, int]] = (),
    ) -> list[bool]:
        """Commit ``rows`` and, in the same transaction, settle each (reservation, actual cost USD,
        actual tokens). Returns, per settlement, whether it changed anything (False: already
        settled or released). ``InputError`` for an invalid row, before anything is written;
        ``DatabaseError`` when the database fails: nothing of this call was committed then."""
        values = [row.to_values() for row in rows]
        finishes = tuple(
            settle_request(reservation, cost, tokens) for reservation, cost, tokens in settle if reservation.holds
        )
        if not values and not finishes:
            return [True for _ in settle]
        done: list[bool] = await self.writer.submit(Job(rows=values, finishes=finishes))
        results = iter(done)
        return [next(results) if reservation.holds else True for reservation, _, _ in settle]

    async def close(self) -> None:
        """Flush what is queued and stop the writer (when this ledger owns it)."""
        if self._owns_writer:
            await self.writer.close()
