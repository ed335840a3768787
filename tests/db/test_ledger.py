"""The ledger commits before record() returns, groups concurrent callers, and loses nothing on kill -9."""

from __future__ import annotations

import asyncio
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from pulse_ai.db import Database, ReservationStatus
from pulse_ai.db.models import ReservationRow, UsageRecordRow
from pulse_ai.errors import (
    BudgetExceededError,
    DatabaseError,
    InputError,
    ProviderTimeoutError,
    RateLimitedError,
)
from pulse_ai.usage import Outcome, UsageLedger, UsageRow, UsageServices, outcome_of
from tests.db.conftest import unique_tenant_id

ROOT = Path(__file__).resolve().parents[2]


def row(tenant: str, **changes: Any) -> UsageRow:
    values: dict[str, Any] = {
        "request_id": "req-1",
        "attempt": 1,
        "tenant_id": tenant,
        "pipeline": "embedding",
        "provider": "openai",
        "model": "text-embedding-3-small",
        "operation": "embed",
        "input_tokens": 120,
        "billed_usd": Decimal("0.0000024"),
        "price_table_version": "2026-11",
        "latency_ms": 12.5,
        "outcome": "ok",
    }
    values.update(changes)
    return UsageRow(**values)


async def _stored(db: Database, *ids: str) -> dict[str, Any]:
    async with db.read("raw") as connection:
        rows = (await connection.execute(select(UsageRecordRow.__table__).where(UsageRecordRow.id.in_(ids)))).all()
    return {r.id: r for r in rows}


async def test_rows_are_stored_exactly(db: Database, tenant: str) -> None:
    ledger = UsageLedger(db)
    first = row(tenant, billed_usd=Decimal("0.0000000015"))  # 1.5 nano: rounds half up to 2
    second = row(
        tenant,
        attempt=2,
        operation="generate",
        output_tokens=40,
        tokens_estimated=True,
        avoided_usd=Decimal("0.01"),
        cache_level="sqlite",
        outcome="rate_limited",
    )
    await ledger.record([first, second])
    await ledger.close()
    stored = await _stored(db, first.id, second.id)
    assert stored[first.id].billed_nanousd == 2
    assert stored[second.id].avoided_nanousd == 10_000_000 and stored[second.id].output_tokens == 40
    assert stored[second.id].tokens_estimated is True and stored[second.id].outcome == "rate_limited"
    assert stored[second.id].created_at is not None


async def test_64_concurrent_callers_share_a_few_transactions(db: Database, tenant: str) -> None:
    usage = UsageServices(db, sweep_interval_s=None)
    rows = [row(tenant, request_id=f"req-{n}") for n in range(128)]
    await asyncio.gather(*(usage.ledger.record([r]) for r in rows))
    assert usage.writer.jobs == 128 and usage.writer.batches <= 4
    assert len(await _stored(db, *(r.id for r in rows))) == 128
    await usage.close()


async def test_one_bad_row_fails_only_its_caller(db: Database, tenant: str) -> None:
    usage = UsageServices(db, sweep_interval_s=None)
    good = [row(tenant, request_id=f"ok-{n}") for n in range(20)]
    bad = row(unique_tenant_id("nobody"))  # valid id, no such tenant: the foreign key refuses it
    results = await asyncio.gather(*(usage.ledger.record([r]) for r in [*good, bad]), return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results[:-1])
    assert isinstance(results[-1], DatabaseError)
    assert len(await _stored(db, *(r.id for r in good))) == 20 and not await _stored(db, bad.id)
    await usage.close()


async def test_rows_and_settlement_commit_together(db: Database, tenant: str) -> None:
    usage = UsageServices(db, sweep_interval_s=None)
    await usage.budgets.set(tenant, limit_usd=Decimal(1))
    reservation = await usage.budgets.reserve(tenant, "embedding", Decimal("0.5"), tokens=100)
    # a failing row rolls the settlement back with it
    with pytest.raises(DatabaseError):
        await usage.ledger.record([row(unique_tenant_id("nobody"))], settle=[(reservation, Decimal("0.4"), 90)])
    async with db.read("raw") as connection:
        status = await connection.scalar(select(ReservationRow.status).where(ReservationRow.id == reservation.id))
    assert status == ReservationStatus.ACTIVE
    done = await usage.ledger.record([row(tenant)], settle=[(reservation, Decimal("0.4"), 90)])
    assert done == [True]
    assert await usage.ledger.record([row(tenant)], settle=[(reservation, Decimal("0.4"), 90)]) == [False]
    (budget,) = await usage.budgets.status(tenant)
    assert (budget.spent_usd, budget.reserved_usd, budget.spent_tokens) == (Decimal("0.4"), Decimal(0), 90)
    await usage.close()


@pytest.mark.parametrize(
    "changes",
    [
        {"billed_usd": 0.1},
        {"attempt": 0},
        {"outcome": "exploded"},
        {"operation": "dance"},
        {"input_tokens": -1},
        {"tenant_id": "Not A Slug"},
        {"billed_usd": Decimal("-0.01")},
    ],
)
async def test_invalid_rows_are_refused_before_anything_is_written(
    db: Database, tenant: str, changes: dict[str, Any]
) -> None:
    ledger = UsageLedger(db)
    good = row(tenant)
    with pytest.raises(InputError):
        await ledger.record([good, row(tenant, **changes)])
    await ledger.close()
    assert not await _stored(db, good.id)


async def test_an_outage_is_a_database_error() -> None:
    engine = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none", hide_parameters=True)
    usage = UsageServices(Database(engine))
    with pytest.raises(DatabaseError, match="commit"):
        await usage.ledger.record([row("acme")])
    with pytest.raises(DatabaseError):  # budgets fail closed: no reservation, no call
        await usage.budgets.reserve("acme", None, Decimal(1))
    await usage.close()
    await engine.dispose()


async def test_close_flushes_what_is_queued(db: Database, tenant: str) -> None:
    ledger = UsageLedger(db)
    rows = [row(tenant, request_id=f"q-{n}") for n in range(50)]
    tasks = [asyncio.create_task(ledger.record([r])) for r in rows]
    await asyncio.sleep(0)
    await ledger.close()
    await asyncio.gather(*tasks)
    assert len(await _stored(db, *(r.id for r in rows))) == 50
    with pytest.raises(DatabaseError, match="closed"):
        await ledger.record([row(tenant)])


def test_outcomes_follow_the_error_types() -> None:
    assert outcome_of(None) is Outcome.OK
    assert outcome_of(RateLimitedError("slow down")) is Outcome.RATE_LIMITED
    assert outcome_of(ProviderTimeoutError("late")) is Outcome.TIMEOUT
    assert outcome_of(asyncio.CancelledError()) is Outcome.CANCELLED
    assert outcome_of(ValueError("?")) is Outcome.ERROR
    error = BudgetExceededError(tenant_id="a", scope="all", period="day", period_start="2026-11-27")
    assert outcome_of(error) is Outcome.BUDGET_EXCEEDED and Outcome.BUDGET_EXCEEDED.is_error
    assert not Outcome.ABANDONED.is_error


async def test_kill_9_loses_no_acknowledged_row(db: Database, db_url: str, tenant: str) -> None:
    child = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tests.db.workers", "record", db_url, tenant],
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    acknowledged: list[str] = []
    try:
        while len(acknowledged) < 400:
            line = await asyncio.wait_for(child.stdout.readline(), timeout=60)
            assert line, "the child stopped before it was killed"
            acknowledged.append(line.decode().strip())
    finally:
        child.send_signal(signal.SIGKILL)
    rest, _ = await child.communicate()
    # a last line may be cut by the kill: only whole lines were acknowledged
    acknowledged += [line for line in rest.decode().split("\n")[:-1] if line]
    assert child.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 400
    stored = await _stored(db, *acknowledged)
    missing = set(acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged rows lost"
    async with db.read("raw") as connection:
        total = await connection.scalar(
            select(func.count()).select_from(UsageRecordRow).where(UsageRecordRow.tenant_id == tenant)
        )
    assert total >= len(acknowledged)
