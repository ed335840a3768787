"""What the usage ledger and budgets add to a call, on SQLite and PostgreSQL.

Each simulated call is a fake instant operation (one event-loop turn). With accounting on, a call
reserves its worst-case cost against two hard budgets (the tenant's and the pipeline's), runs the
operation, then records its usage row and settles the reservation in one group-committed
transaction; it returns only after that commit. The same calls without accounting, in the same
run, give the baseline. ``p50_added_ms``/``p99_added_ms`` are the differences between the two runs'
per-call latency percentiles at the given concurrency (so they include queueing behind the writer);
``serial`` repeats the measurement one call at a time, which is the cost of one call alone. Then
the ledger and budgets are checked: one row per call, and spent equal to the sum of the calls.

PostgreSQL runs in a database created for the run and dropped after it (``--postgres-url``, default
``$PULSE_AI_TEST_POSTGRES_URL``; skipped when neither is set). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pulse_ai.db import Database, Tenants  # noqa: E402
from pulse_ai.db.models import UsageRecordRow  # noqa: E402
from pulse_ai.usage import UsageRow, UsageServices  # noqa: E402
from pulse_ai.usage.reports import nearest_rank  # noqa: E402

COST = Decimal("0.0000123")
TOKENS = 615


def percentile(values: list[float], fraction: float) -> float:
    return nearest_rank(sorted(values), fraction)


async def drive(calls: int, concurrency: int, call: Callable[[int], Awaitable[None]]) -> tuple[float, list[float]]:
    """Run ``calls`` calls from ``concurrency`` workers; the elapsed seconds and each call's latency (ms)."""
    latencies: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        for number in counter:
            started = time.perf_counter()
            await call(number)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


OPERATION_S = 0.0  # --operation-ms: how long the fake provider takes (default: it answers at once)


async def operation() -> None:
    await asyncio.sleep(OPERATION_S)


async def measure(url: str, calls: int, concurrency: int, serial_calls: int, max_delay_ms: float) -> dict[str, Any]:
    db = await Database.open(url, upgrade=True)
    tenant = (await Tenants(db).create(f"bench-{secrets.token_hex(4)}")).id
    usage = UsageServices(db, max_delay_s=max_delay_ms / 1000, sweep_interval_s=None)
    await usage.budgets.set(tenant, limit_usd=Decimal(1_000_000), period="month")
    await usage.budgets.set(tenant, pipeline="embedding", limit_usd=Decimal(1_000_000), period="day")

    async def bare(number: int) -> None:
        await operation()

    async def accounted(number: int) -> None:
        reservation = await usage.budgets.reserve(tenant, "embedding", COST, TOKENS)
        started = time.perf_counter()
        await operation()
        row = UsageRow(
            request_id=f"bench-{number}",
            attempt=1,
            tenant_id=tenant,
            pipeline="embedding",
            provider="fake",
            model="instant",
            operation="embed",
            input_tokens=TOKENS,
            billed_usd=COST,
            price_table_version="bench",
            latency_ms=(time.perf_counter() - started) * 1000,
            outcome="ok",
        )
        await usage.ledger.record([row], settle=[(reservation, COST, TOKENS)])

    await drive(200, concurrency, accounted)  # warm up: connections, statement caches
    # A long-lived service freezes what it built at start-up (SQLAlchemy's metadata, compiled
    # statements) so the cyclic GC stops rescanning it: unfrozen, a full collection pauses the
    # loop for ~60 ms here, which is most of the p99.
    gc.collect()
    gc.freeze()
    base_elapsed, base = await drive(calls, concurrency, bare)
    batches_before, jobs_before = usage.writer.batches, usage.writer.jobs
    elapsed, with_ledger = await drive(calls, concurrency, accounted)
    batches, jobs = usage.writer.batches - batches_before, usage.writer.jobs - jobs_before
    _, serial_base = await drive(serial_calls, 1, bare)
    _, serial = await drive(serial_calls, 1, accounted)
    await usage.close()

    async with db.read("check the ledger") as connection:
        rows = await connection.scalar(
            select(func.count()).select_from(UsageRecordRow).where(UsageRecordRow.tenant_id == tenant)
        )
    statuses = await UsageServices(db).budgets.status(tenant)
    await db.close()
    expected_calls = 200 + calls + serial_calls
    verified = rows == expected_calls and all(
        s.spent_usd == COST * expected_calls and s.reserved_usd == 0 for s in statuses
    )
    return {
        "calls": calls,
        "concurrency": concurrency,
        "calls_per_s": round(calls / elapsed, 1),
        "p50_added_ms": round(percentile(with_ledger, 0.50) - percentile(base, 0.50), 3),
        "p99_added_ms": round(percentile(with_ledger, 0.99) - percentile(base, 0.99), 3),
        "p50_ms": round(percentile(with_ledger, 0.50), 3),
        "p99_ms": round(percentile(with_ledger, 0.99), 3),
        "baseline_calls_per_s": round(calls / base_elapsed, 1),
        "transactions": batches,
        "jobs_per_transaction": round(jobs / batches, 1) if batches else 0.0,
        "serial": {
            "calls": serial_calls,
            "p50_added_ms": round(percentile(serial, 0.5) - percentile(serial_base, 0.5), 3),
            "p99_added_ms": round(percentile(serial, 0.99) - percentile(serial_base, 0.99), 3),
        },
        "verified": verified,
        "operation_ms": OPERATION_S * 1000,
        "gc_frozen_after_warm_up": True,
    }


async def measure_facade(url: str, calls: int, concurrency: int) -> dict[str, Any]:
    """The real call path: ``ai.tenant(t).embed([text])`` (tenant check, budget reservation against
    two hard budgets, the router, an in-process fake provider that answers at once, one ledger row,
    settlement) versus the same router called directly (no accounting), in one run."""
    from pulse_ai import PulseAI

    config = (
        "providers:\n  fake: {type: fake, models: [{name: text-embedding-3-small}]}\n"
        "pipelines:\n  embedding: {kind: embedding, candidates: [fake/text-embedding-3-small]}\n"
        f"database: {{url: '{url}'}}\n"
        "cache: {enabled: false}\n"  # the ledger and budgets are measured here, not the caches
    )
    async with PulseAI.from_yaml(config) as ai:
        platform = await ai.platform()
        tenant = (await platform.tenants.create(f"bench-{secrets.token_hex(4)}")).id
        await platform.usage.budgets.set(tenant, limit_usd=Decimal(1_000_000), period="month")
        await platform.usage.budgets.set(tenant, pipeline="embedding", limit_usd=Decimal(1_000_000), period="day")
        acme = ai.tenant(tenant)
        router = ai.router("embedding")

        async def bare(number: int) -> None:
            await router.embed([f"text {number}"])

        async def accounted(number: int) -> None:
            await acme.embed([f"text {number}"])

        await drive(200, concurrency, accounted)
        gc.collect()
        gc.freeze()
        base_elapsed, base = await drive(calls, concurrency, bare)
        elapsed, with_ledger = await drive(calls, concurrency, accounted)
        _, serial_base = await drive(500, 1, bare)
        _, serial = await drive(500, 1, accounted)
        summary = await acme.usage.summary(since=datetime.now(UTC) - timedelta(hours=1))
    return {
        "calls": calls,
        "concurrency": concurrency,
        "calls_per_s": round(calls / elapsed, 1),
        "baseline_calls_per_s": round(calls / base_elapsed, 1),
        "p50_added_ms": round(percentile(with_ledger, 0.50) - percentile(base, 0.50), 3),
        "p99_added_ms": round(percentile(with_ledger, 0.99) - percentile(base, 0.99), 3),
        "serial": {
            "p50_added_ms": round(percentile(serial, 0.5) - percentile(serial_base, 0.5), 3),
            "p99_added_ms": round(percentile(serial, 0.99) - percentile(serial_base, 0.99), 3),
        },
        "verified": sum(row.requests for row in summary) == 200 + calls + 500,
    }


async def with_postgres_database(admin_url: str, work: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    admin = make_url(admin_url).set(drivername="postgresql")
    name = f"pulse_ai_bench_{os.getpid()}_{secrets.token_hex(3)}"
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    await connection.execute(f'CREATE DATABASE "{name}"')
    try:
        return await work(admin.set(database=name).render_as_string(hide_password=False))
    finally:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--serial-calls", type=int, default=500)
    parser.add_argument("--max-delay-ms", type=float, default=0.0, help="the writer's wait for more jobs")
    parser.add_argument("--operation-ms", type=float, default=0.0, help="the fake operation's duration")
    parser.add_argument("--postgres-url", default=os.environ.get("PULSE_AI_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    global OPERATION_S
    OPERATION_S = args.operation_ms / 1000
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        report["sqlite"] = await measure(url, args.calls, args.concurrency, args.serial_calls, args.max_delay_ms)
        facade_url = f"sqlite:///{Path(directory) / 'facade.db'}"
        report["sqlite"]["through_facade"] = await measure_facade(facade_url, args.calls, args.concurrency)
    if args.postgres_url:

        async def run(url: str) -> dict[str, Any]:
            result = await measure(url, args.calls, args.concurrency, args.serial_calls, args.max_delay_ms)
            result["through_facade"] = await measure_facade(url, args.calls, args.concurrency)
            return result

        report["postgres"] = await with_postgres_database(args.postgres_url, run)
    else:
        report["postgres"] = {"skipped": "no --postgres-url and PULSE_AI_TEST_POSTGRES_URL is unset"}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
