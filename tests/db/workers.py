"""Child processes for the subprocess tests: ``python -m tests.db.workers KIND URL ...``."""

from __future__ import annotations

import asyncio
import sys
import time
from decimal import Decimal

from pulse_ai.db import Database
from pulse_ai.errors import BudgetExceededError
from pulse_ai.usage import UsageRow, UsageServices


async def reserve(url: str, tenant_id: str, count: int, start_at: float) -> None:
    """From ``start_at`` (wall clock, so that processes overlap), try ``count`` reservations of $1, 4
    at a time (so this process's transactions interleave with the others'), settle the ones
    granted, and print how many were."""
    db = await Database.open(url)
    usage = UsageServices(db)
    in_flight = asyncio.Semaphore(4)
    await asyncio.sleep(max(0.0, start_at - time.time()))

    async def one() -> bool:
        async with in_flight:
            try:
                reservation = await usage.budgets.reserve(tenant_id, "summarize", Decimal(1), tokens=10)
            except BudgetExceededError:
                return False
            await usage.budgets.settle(reservation, Decimal(1), 10)
            return True

    granted = sum(await asyncio.gather(*(one() for _ in range(count))))
    await usage.close()
    await db.close()
    print(granted, flush=True)


async def record_forever(url: str, tenant_id: str) -> None:
    """Record usage rows from 32 concurrent callers until killed; print each row id once committed."""
    db = await Database.open(url)
    usage = UsageServices(db)
    out = sys.stdout

    async def caller(number: int) -> None:
        attempt = 0
        while True:
            attempt += 1
            row = UsageRow(
                request_id=f"r{number}-{attempt}",
                attempt=1,
                tenant_id=tenant_id,
                provider="fake",
                model="instant",
                operation="embed",
                input_tokens=3,
                billed_usd=Decimal("0.000001"),
                price_table_version="test",
                latency_ms=0.1,
                outcome="ok",
            )
            await usage.ledger.record([row])
            out.write(row.id + "\n")
            out.flush()

    await asyncio.gather(*(caller(n) for n in range(32)))


if __name__ == "__main__":
    kind, url, tenant = sys.argv[1:4]
    if kind == "reserve":
        asyncio.run(reserve(url, tenant, int(sys.argv[4]), float(sys.argv[5])))
    elif kind == "record":
        asyncio.run(record_forever(url, tenant))
    else:
        raise SystemExit(f"unknown worker {kind!r}")
