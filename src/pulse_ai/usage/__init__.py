"""Usage: the ledger (one row per attempt), budgets (reserve / settle / release) and reports.

usage = UsageServices(db)                    # one group-commit writer shared by ledger and budgets
reservation = await usage.budgets.reserve("acme", "summarize", Decimal("0.002"), tokens=900)
...                                   # the call
await usage.ledger.record(rows, settle=[(reservation, Decimal("0.0013"), 610)])
await usage.reports.summary("acme", since=date(2026, 11, 1), by="model")
await usage.close()
"""

from __future__ import annotations

from pulse_ai.db.database import Database
from pulse_ai.usage.budget_types import Budget, BudgetHold, BudgetStatus, Reservation
from pulse_ai.usage.budgets import Budgets
from pulse_ai.usage.ledger import UsageLedger
from pulse_ai.usage.reports import UsageReports, UsageSummaryRow
from pulse_ai.usage.rows import Operation, Outcome, UsageRow, outcome_of
from pulse_ai.usage.writer import GroupCommitWriter

__all__ = [
    "Budget",
    "BudgetHold",
    "BudgetStatus",
    "Budgets",
    "GroupCommitWriter",
    "Operation",
    "Outcome",
    "Reservation",
    "UsageLedger",
    "UsageReports",
    "UsageRow",
    "UsageServices",
    "UsageSummaryRow",
    "outcome_of",
]


class UsageServices:
    """The ledger, budgets and reports over one database, sharing one group-commit writer, so a
    call's settlement and its usage rows commit together and reservations batch with them."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 512,
        max_delay_s: float = 0.0,
        sweep_interval_s: float | None = 30.0,
    ) -> None:
        self.db = db
        self.writer = GroupCommitWriter(
            db, max_batch=max_batch, max_delay_s=max_delay_s, sweep_interval_s=sweep_interval_s
        )
        self.ledger = UsageLedger(db, self.writer)
        self.budgets = Budgets(db, self.writer)
        self.reports = UsageReports(db)

    async def __aenter__(self) -> UsageServices:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit what is queued, then stop the writer. The database stays open (its owner closes it)."""
        await self.writer.close()
