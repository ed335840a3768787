"""Budgets, their per-period state, and reservations, as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pulse_ai.db.models import ALL_PIPELINES, BudgetMode, BudgetPeriod, BudgetRow
from pulse_ai.db.money import nano_to_usd

__all__ = ["Budget", "BudgetHold", "BudgetStatus", "Reservation", "period_start"]


def period_start(period: BudgetPeriod | str, now: datetime) -> date:
    """The UTC day or month that ``now`` falls in, as its first day."""
    day = now.astimezone(UTC).date()
    return day if BudgetPeriod(period) is BudgetPeriod.DAY else day.replace(day=1)


@dataclass(frozen=True)
class Budget:
    """A limit per UTC ``period`` on a tenant's spending, for one pipeline or all (``pipeline=None``)."""

    id: str
    tenant_id: str
    pipeline: str | None
    period: BudgetPeriod
    limit_usd: Decimal | None
    limit_tokens: int | None
    mode: BudgetMode

    @property
    def scope(self) -> str:
        return f"pipeline {self.pipeline!r}" if self.pipeline else "all pipelines"

    @classmethod
    def from_row(cls, row: BudgetRow | Any) -> Budget:
        """From a model instance or a row of the budgets table's columns."""
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            pipeline=None if row.scope == ALL_PIPELINES else row.scope,
            period=BudgetPeriod(row.period),
            limit_usd=None if row.limit_nanousd is None else nano_to_usd(row.limit_nanousd),
            limit_tokens=row.limit_tokens,
            mode=BudgetMode(row.mode),
        )


@dataclass(frozen=True)
class BudgetStatus:
    """A budget in one period: what is spent, and what running calls hold reserved."""

    budget: Budget
    period_start: date
    spent_usd: Decimal
    reserved_usd: Decimal
    spent_tokens: int
    reserved_tokens: int


@dataclass(frozen=True)
class BudgetHold:
    budget_id: str
    period_start: date


@dataclass(frozen=True)
class Reservation:
    """A call's worst-case cost held against every budget that applies to it (``holds``).

    ``soft_exceeded`` lists the soft budgets this reservation took past their limit (warn about
    them). A reservation with no holds (no budget applies) costs nothing to settle or release."""

    id: str
    tenant_id: str
    pipeline: str | None
    cost_usd: Decimal
    tokens: int
    expires_at: datetime
    holds: tuple[BudgetHold, ...] = ()
    soft_exceeded: tuple[BudgetStatus, ...] = ()
