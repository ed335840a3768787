"""Budgets: set and read them; reserve a call's worst-case cost before it, settle or release after.

``reserve`` is one atomic step across every budget that applies (the tenant-wide ones and the
pipeline's): all of them take the reservation or none does. A hard budget without room raises
``BudgetExceededError`` before any provider is called; a soft one never blocks, and the
reservation lists it in ``soft_exceeded``. Reservations go through the group-commit writer, so
concurrent calls share transactions.
"""

from __future__ import annotations

import builtins
import re
from datetime import datetime
from decimal import Decimal

from sqlalchemy import delete, select, update

from pulse_ai.config import NAME_PATTERN
from pulse_ai.db.changes import counts_change
from pulse_ai.db.database import Database, load
from pulse_ai.db.ids import new_id, validate_tenant_id
from pulse_ai.db.models import ALL_PIPELINES, BudgetCounterRow, BudgetMode, BudgetPeriod, BudgetRow, TenantRow
from pulse_ai.db.money import nano_to_usd, usd_to_nano
from pulse_ai.db.tenants import KnownPipelines
from pulse_ai.db.types import utcnow
from pulse_ai.errors import InputError, NotFoundError
from pulse_ai.usage.budget_batch import FinishRequest, ReserveRequest
from pulse_ai.usage.budget_types import Budget, BudgetStatus, Reservation, period_start
from pulse_ai.usage.writer import GroupCommitWriter, Job

__all__ = ["Budgets"]

DEFAULT_TTL_S = 600.0
# Amounts one reservation, settlement or limit may hold: far above any real call or budget, and far
# below what the int64 columns hold, so that sums of them (spent + reserved + cost) never overflow.
MAX_NANOS = 10**18 // 1000  # $1,000,000,000
MAX_TOKENS = 10**15


def _scope(pipeline: str | None) -> str:
    if pipeline is None:
        return ALL_PIPELINES
    if not re.match(NAME_PATTERN, pipeline):
        raise InputError(f"pipeline {pipeline[:80]!r} is not a pipeline name (must match {NAME_PATTERN})")
    return pipeline


def _nanos(amount: Decimal | int | str, what: str) -> int:
    if isinstance(amount, float):
        raise InputError(f"{what} must be a Decimal amount of USD, not a float")
    try:
        nanos = usd_to_nano(amount)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: {exc}") from None
    if nanos < 0:
        raise InputError(f"{what} must not be negative")
    if nanos > MAX_NANOS:
        raise InputError(f"{what} is beyond what pulse-ai accounts for (at most ${MAX_NANOS // 10**9:,})")
    return nanos


def _tokens(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{what} must be a non-negative int")
    if value > MAX_TOKENS:
        raise InputError(f"{what} is beyond what pulse-ai accounts for (at most {MAX_TOKENS:,} tokens)")
    return value


class Budgets:
    changes = 0  # writes made through this object (caches of tenants' state watch it)

    def __init__(
        self, db: Database, writer: GroupCommitWriter | None = None, *, known: KnownPipelines | None = None
    ) -> None:
        """``known``: the configured pipelines a budget may be scoped to (None: any well-formed name)."""
        self.db = db
        self.known = known
        self._owns_writer = writer is None
        self.writer = writer or GroupCommitWriter(db)

    async def close(self) -> None:
        if self._owns_writer:
            await self.writer.close()

    # -- administration ---------------------------------------------------------------------

    @counts_change
    async def set(
        self,
        tenant_id: str,
        *,
        pipeline: str | None = None,
        period: BudgetPeriod | str = BudgetPeriod.MONTH,
        limit_usd: Decimal | int | str | None = None,
        limit_tokens: int | None = None,
        mode: BudgetMode | str = BudgetMode.HARD,
    ) -> Budget:
        """Create or change the tenant's budget for (pipeline or all, period). What is already spent
        in the current period still counts against the new limit."""
        tenant_id = validate_tenant_id(tenant_id)
        scope = _scope(pipeline)
        if pipeline is not None and self.known is not None:
            self.known.check(pipeline, "pipeline")
        try:
            period, mode = BudgetPeriod(period), BudgetMode(mode)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if limit_usd is None and limit_tokens is None:
            raise InputError("a budget needs limit_usd, limit_tokens or both")
        values = {
            "limit_nanousd": None if limit_usd is None else _nanos(limit_usd, "limit_usd"),
            "limit_tokens": None if limit_tokens is None else _tokens(limit_tokens, "limit_tokens"),
            "mode": mode.value,
            "updated_at": utcnow(),
        }
        match = (BudgetRow.tenant_id == tenant_id, BudgetRow.scope == scope, BudgetRow.period == period.value)
        async with self.db.write("set a budget") as connection:
            if await connection.scalar(select(TenantRow.id).where(TenantRow.id == tenant_id)) is None:
                raise NotFoundError(f"no tenant {tenant_id!r}")
            result = await connection.execute(update(BudgetRow).where(*match).values(**values))
            if result.rowcount == 0:
                await connection.execute(
                    self.db.insert_ignoring_conflicts(BudgetRow),
                    {
                        "id": new_id(),
                        "tenant_id": tenant_id,
                        "scope": scope,
                        "period": period.value,
                        "created_at": values["updated_at"],
                        **values,
                    },
                )
            row = (await load(connection, select(BudgetRow).where(*match)))[0]
        return Budget.from_row(row)

    async def list(self, tenant_id: str) -> list[Budget]:
        async with self.db.read("list budgets") as connection:
            rows = await load(
                connection,
                select(BudgetRow)
                .where(BudgetRow.tenant_id == validate_tenant_id(tenant_id))
                .order_by(BudgetRow.scope, BudgetRow.period),
            )
            return [Budget.from_row(row) for row in rows]

    async def status(self, tenant_id: str, *, now: datetime | None = None) -> builtins.list[BudgetStatus]:
        """Each of the tenant's budgets in its current period: spent and reserved."""
        now = now or utcnow()
        budgets = await self.list(tenant_id)
        if not budgets:
            return []
        async with self.db.read("read budget counters") as connection:
            rows = await connection.execute(
                select(BudgetCounterRow).where(BudgetCounterRow.budget_id.in_([b.id for b in budgets]))
            )
            counters = {(r.budget_id, r.period_start): r for r in rows}
        statuses = []
        for budget in budgets:
            start = period_start(budget.period, now)
            row = counters.get((budget.id, start))
            statuses.append(
                BudgetStatus(
                    budget,
                    start,
                    nano_to_usd(row.spent_nanousd if row else 0),
                    nano_to_usd(row.reserved_nanousd if row else 0),
                    row.spent_tokens if row else 0,
                    row.reserved_tokens if row else 0,
                )
            )
        return statuses

    @counts_change
    async def delete(
        self, tenant_id: str, *, pipeline: str | None = None, period: BudgetPeriod | str = BudgetPeriod.MONTH
    ) -> bool:
        async with self.db.write("delete a budget") as connection:
            result = await connection.execute(
                delete(BudgetRow).where(
                    BudgetRow.tenant_id == validate_tenant_id(tenant_id),
                    BudgetRow.scope == _scope(pipeline),
                    BudgetRow.period == BudgetPeriod(period).value,
                )
            )
        return bool(result.rowcount)

    # -- the call path ----------------------------------------------------------------------

    async def reserve(
        self,
        tenant_id: str,
        pipeline: str | None,
        cost_usd: Decimal,
        tokens: int = 0,
        *,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> Reservation:
        """Hold ``cost_usd`` (and ``tokens``) against every budget that applies, atomically; raises
        ``BudgetExceededError`` when a hard one has no room, ``TenantSuspendedError`` or
        ``NotFoundError`` when the tenant cannot make calls. Unsettled, it expires after ``ttl_s``."""
        request = ReserveRequest(
            validate_tenant_id(tenant_id),
            None if pipeline is None else _scope(pipeline),
            _nanos(cost_usd, "cost_usd"),
            _tokens(tokens, "tokens"),
            float(ttl_s),
        )
        if not request.ttl_s > 0:
            raise InputError("ttl_s must be positive")
        result: Reservation = await self.writer.submit(Job(reserve=request))
        return result

    async def settle(self, reservation: Reservation, actual_cost_usd: Decimal, actual_tokens: int = 0) -> bool:
        """Turn the reservation into what the call really cost (lower or higher than reserved).
        False when it was already settled or released. Use ``UsageLedger.record(..., settle=...)`` to
        settle in the same transaction as the call's usage rows."""
        if not reservation.holds:
            return True
        finish = settle_request(reservation, actual_cost_usd, actual_tokens)
        done: list[bool] = await self.writer.submit(Job(finishes=(finish,)))
        return done[0]

    async def release(self, reservation: Reservation) -> bool:
        """Give the reservation back (the call never ran). Safe to repeat: False after the first time."""
        if not reservation.holds:
            return False
        done: list[bool] = await self.writer.submit(Job(finishes=(FinishRequest(reservation.id, "release"),)))
        return done[0]

    async def sweep_expired(self) -> int:
        """Release every reservation past its expiry (a crashed caller's); returns how many. The writer
        also does this on its own every ``sweep_interval_s``."""
        count: int = await self.writer.submit(Job(sweep=True))
        return count


def settle_request(reservation: Reservation, actual_cost_usd: Decimal, actual_tokens: int) -> FinishRequest:
    return FinishRequest(
        reservation.id,
        "settle",
        _nanos(actual_cost_usd, "actual_cost_usd"),
        _tokens(actual_tokens, "actual_tokens"),
    )
