"""Budgets hold under concurrency, on both databases."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from pulse_ai.db import Database, ReservationStatus, Tenants
from pulse_ai.db.models import ReservationRow
from pulse_ai.db.types import utcnow
from pulse_ai.errors import BudgetExceededError, InputError, NotFoundError, TenantSuspendedError
from pulse_ai.usage import UsageServices
from pulse_ai.usage.budget_types import period_start
from tests.db.conftest import unique_tenant_id

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def usage(db: Database) -> AsyncIterator[UsageServices]:
    usage = UsageServices(db, sweep_interval_s=None)
    yield usage
    await usage.close()


async def _try(usage: UsageServices, tenant: str, cost: Decimal, pipeline: str | None = "summarize") -> object:
    try:
        return await usage.budgets.reserve(tenant, pipeline, cost, tokens=10)
    except BudgetExceededError as error:
        return error


async def test_200_concurrent_reservations_admit_exactly_what_fits(usage: UsageServices, tenant: str) -> None:
    # $0.37 a call against $18.50: exactly 50 fit.
    await usage.budgets.set(tenant, limit_usd=Decimal("18.50"), period="day")
    cost = Decimal("0.37")
    outcomes = await asyncio.gather(*(_try(usage, tenant, cost) for _ in range(200)))
    granted = [o for o in outcomes if not isinstance(o, BudgetExceededError)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert len(granted) == 50 and len(refused) == 150
    # settle half a bit lower, half exactly: spent never passes the limit
    await asyncio.gather(
        *(
            usage.budgets.settle(r, cost if i % 2 else Decimal("0.30"), 10)  # type: ignore[arg-type]
            for i, r in enumerate(granted)
        )
    )
    (status,) = await usage.budgets.status(tenant)
    assert status.reserved_usd == 0 and status.spent_usd == Decimal("0.37") * 25 + Decimal("0.30") * 25
    assert status.spent_usd <= Decimal("18.50")


async def test_reservations_from_several_processes_share_one_budget(db: Database, db_url: str, tenant: str) -> None:
    usage = UsageServices(db, sweep_interval_s=None)
    await usage.budgets.set(tenant, limit_usd=Decimal(50), period="month")
    await usage.close()
    start_at = str(time.time() + 4)  # after every child has started and imported
    children = [
        await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "tests.db.workers", "reserve", db_url, tenant, "50", start_at],
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    granted = []
    for child in children:
        out, _ = await asyncio.wait_for(child.communicate(), timeout=120)
        assert child.returncode == 0
        granted.append(int(out.decode().strip()))
    assert sum(granted) == 50
    (status,) = await UsageServices(db).budgets.status(tenant)
    assert status.spent_usd == Decimal(50) and status.reserved_usd == 0


async def test_the_refusal_names_tenant_scope_limit_spent_and_period(usage: UsageServices, tenant: str) -> None:
    await usage.budgets.set(tenant, pipeline="summarize", limit_usd=Decimal("1.00"), period="month")
    reservation = await usage.budgets.reserve(tenant, "summarize", Decimal("0.75"))
    await usage.budgets.settle(reservation, Decimal("0.75"))
    with pytest.raises(BudgetExceededError) as caught:
        await usage.budgets.reserve(tenant, "summarize", Decimal("0.50"))
    error = caught.value
    text = str(error)
    assert tenant in text and "summarize" in text and "$1.00" in text and "$0.75" in text and "month" in text
    assert period_start("month", utcnow()).isoformat() in text
    assert (error.tenant_id, error.scope, error.limit_usd, error.spent_usd) == (
        tenant,
        "summarize",
        Decimal(1),
        Decimal("0.75"),
    )
    # another pipeline is not limited by this budget
    await usage.budgets.reserve(tenant, "other", Decimal("5"))


async def test_all_applicable_budgets_move_together_or_not_at_all(usage: UsageServices, tenant: str) -> None:
    await usage.budgets.set(tenant, limit_usd=Decimal(10), period="month")  # tenant-wide: room
    await usage.budgets.set(tenant, pipeline="summarize", limit_usd=Decimal(1), period="day")  # no room
    with pytest.raises(BudgetExceededError, match="summarize"):
        await usage.budgets.reserve(tenant, "summarize", Decimal(2))
    statuses = {s.budget.pipeline: s for s in await usage.budgets.status(tenant)}
    assert statuses[None].reserved_usd == 0 and statuses["summarize"].reserved_usd == 0
    reservation = await usage.budgets.reserve(tenant, "summarize", Decimal("0.5"))
    assert len(reservation.holds) == 2
    statuses = {s.budget.pipeline: s for s in await usage.budgets.status(tenant)}
    assert statuses[None].reserved_usd == Decimal("0.5") == statuses["summarize"].reserved_usd


async def test_token_budgets(usage: UsageServices, tenant: str) -> None:
    await usage.budgets.set(tenant, limit_tokens=1000, period="day")
    first = await usage.budgets.reserve(tenant, None, Decimal(0), tokens=800)
    with pytest.raises(BudgetExceededError, match="1000 tokens"):
        await usage.budgets.reserve(tenant, None, Decimal(0), tokens=300)
    await usage.budgets.settle(first, Decimal(0), 500)
    await usage.budgets.reserve(tenant, None, Decimal(0), tokens=300)


async def test_a_soft_budget_never_blocks_and_says_it_was_crossed(usage: UsageServices, tenant: str) -> None:
    await usage.budgets.set(tenant, limit_usd=Decimal(1), mode="soft")
    reservations = await asyncio.gather(*(usage.budgets.reserve(tenant, None, Decimal("0.3")) for _ in range(10)))
    crossed = [r for r in reservations if r.soft_exceeded]
    assert len(crossed) == 7  # the 4th to the 10th take it past $1
    assert all(r.soft_exceeded[0].budget.limit_usd == Decimal(1) for r in crossed)
    (status,) = await usage.budgets.status(tenant)
    assert status.reserved_usd == Decimal(3)


async def test_settle_may_be_higher_or_lower_and_release_is_idempotent(usage: UsageServices, tenant: str) -> None:
    await usage.budgets.set(tenant, limit_usd=Decimal(10))
    low, high, dropped = [await usage.budgets.reserve(tenant, None, Decimal(1)) for _ in range(3)]
    assert await usage.budgets.settle(low, Decimal("0.25"))
    assert await usage.budgets.settle(high, Decimal("1.5"))
    assert not await usage.budgets.settle(high, Decimal("1.5"))  # settled once only
    assert await usage.budgets.release(dropped)
    assert not await usage.budgets.release(dropped) and not await usage.budgets.release(dropped)
    assert not await usage.budgets.release(low)  # a settled reservation cannot be released
    (status,) = await usage.budgets.status(tenant)
    assert (status.spent_usd, status.reserved_usd) == (Decimal("1.75"), Decimal(0))


async def test_expired_reservations_are_released_by_the_sweep(usage: UsageServices, tenant: str, db: Database) -> None:
    await usage.budgets.set(tenant, limit_usd=Decimal(1))
    abandoned = await usage.budgets.reserve(tenant, None, Decimal("0.9"), ttl_s=0.05)
    with pytest.raises(BudgetExceededError):
        await usage.budgets.reserve(tenant, None, Decimal("0.9"))
    await asyncio.sleep(0.1)
    assert await usage.budgets.sweep_expired() >= 1
    async with db.read("raw") as connection:
        status = await connection.scalar(select(ReservationRow.status).where(ReservationRow.id == abandoned.id))
    assert status == ReservationStatus.EXPIRED
    assert not await usage.budgets.release(abandoned)  # already given back: not twice
    await usage.budgets.reserve(tenant, None, Decimal("0.9"))
    # a late settle of an expired reservation still records what was spent
    assert await usage.budgets.settle(abandoned, Decimal("0.1"))
    (status_row,) = await usage.budgets.status(tenant)
    assert (status_row.spent_usd, status_row.reserved_usd) == (Decimal("0.1"), Decimal("0.9"))


async def test_the_writer_sweeps_on_its_own(db: Database, tenant: str) -> None:
    usage = UsageServices(db, sweep_interval_s=0.05)
    try:
        await usage.budgets.set(tenant, limit_usd=Decimal(1))
        await usage.budgets.reserve(tenant, None, Decimal(1), ttl_s=0.01)
        for _ in range(100):
            await asyncio.sleep(0.05)
            (status,) = await usage.budgets.status(tenant)
            if status.reserved_usd == 0:
                break
        assert status.reserved_usd == 0
    finally:
        await usage.close()


async def test_without_budgets_a_reservation_holds_nothing(usage: UsageServices, tenant: str) -> None:
    reservation = await usage.budgets.reserve(tenant, "summarize", Decimal(100))
    assert reservation.holds == () and reservation.cost_usd == Decimal(100)
    assert await usage.budgets.settle(reservation, Decimal(1)) and not await usage.budgets.release(reservation)


async def test_bad_budget_input_is_refused(usage: UsageServices, tenant: str) -> None:
    with pytest.raises(InputError):
        await usage.budgets.set(tenant)
    with pytest.raises(InputError):
        await usage.budgets.set(tenant, limit_usd=0.5)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        await usage.budgets.set(tenant, limit_usd=Decimal(1), period="week")
    with pytest.raises(InputError):
        await usage.budgets.reserve(tenant, None, Decimal("-1"))
    budget = await usage.budgets.set(tenant, limit_usd=Decimal(2), period="day")
    changed = await usage.budgets.set(tenant, limit_usd=Decimal(3), period="day", mode="soft")
    assert changed.id == budget.id and changed.limit_usd == Decimal(3)
    assert await usage.budgets.delete(tenant, period="day") and await usage.budgets.list(tenant) == []


async def test_a_cancelled_reserver_does_not_keep_the_money(usage: UsageServices, tenant: str) -> None:
    await usage.budgets.set(tenant, limit_usd=Decimal(1))
    task = asyncio.create_task(usage.budgets.reserve(tenant, None, Decimal(1)))
    await asyncio.sleep(0)  # queued, not yet committed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        (status,) = await usage.budgets.status(tenant)
        if status.reserved_usd == 0:
            break
        await asyncio.sleep(0.02)
    assert status.reserved_usd == 0
    await usage.budgets.reserve(tenant, None, Decimal(1))


async def test_unknown_and_suspended_tenants_get_no_reservation(
    usage: UsageServices, db: Database, tenant: str
) -> None:
    with pytest.raises(NotFoundError):
        await usage.budgets.reserve(unique_tenant_id("nobody"), None, Decimal(0))
    await Tenants(db).suspend(tenant)
    with pytest.raises(TenantSuspendedError):
        await usage.budgets.reserve(tenant, None, Decimal(0))
    await Tenants(db).activate(tenant)
    await usage.budgets.reserve(tenant, None, Decimal(0))
