"""Reports: correct sums and percentiles per group, and never another tenant's rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from pulse_ai.db import Database, Tenants
from pulse_ai.errors import InputError
from pulse_ai.usage import UsageRow, UsageServices
from pulse_ai.usage.reports import nearest_rank
from tests.db.conftest import unique_tenant_id

DAY1 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
DAY2 = datetime(2026, 11, 3, 23, 59, tzinfo=UTC)


def _row(tenant: str, request: str, attempt: int, **changes: object) -> UsageRow:
    values: dict[str, object] = {
        "request_id": request,
        "attempt": attempt,
        "tenant_id": tenant,
        "pipeline": "summarize",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "operation": "generate",
        "input_tokens": 100,
        "output_tokens": 10,
        "billed_usd": Decimal("0.001"),
        "price_table_version": "2026-11",
        "latency_ms": 10.0,
        "outcome": "ok",
        "created_at": DAY1,
    }
    values.update(changes)
    return UsageRow(**values)  # type: ignore[arg-type]


async def _seed(db: Database) -> tuple[str, str]:
    tenants = Tenants(db)
    mine, theirs = (await tenants.create(unique_tenant_id("mine"))).id, (await tenants.create(unique_tenant_id())).id
    rows = [
        # request a: a rate-limited attempt on openai, then a fallback to the gateway
        _row(mine, "a", 1, outcome="rate_limited", billed_usd=Decimal(0), output_tokens=0, latency_ms=5.0),
        _row(mine, "a", 2, provider="gateway", model="llama", billed_usd=Decimal("0.002"), latency_ms=40.0),
        # request b: a cache hit (nothing billed, cost avoided), the next day
        _row(mine, "b", 1, billed_usd=Decimal(0), avoided_usd=Decimal("0.001"), cache_level="memory", created_at=DAY2),
        # request c: an embedding
        _row(mine, "c", 1, pipeline=None, operation="embed", model="text-embedding-3-small", latency_ms=20.0),
        # an abandoned stream is not an error
        _row(mine, "d", 1, operation="stream", outcome="abandoned", latency_ms=30.0),
    ]
    rows += [_row(theirs, f"x{n}", 1, billed_usd=Decimal(5), latency_ms=999.0) for n in range(5)]
    usage = UsageServices(db, sweep_interval_s=None)
    await usage.ledger.record(rows)
    await usage.close()
    return mine, theirs


async def test_a_report_by_model_adds_up(db: Database) -> None:
    mine, _ = await _seed(db)
    report = {r.key: r for r in await UsageServices(db).reports.summary(mine, since=date(2026, 11, 1), by="model")}
    assert set(report) == {"openai/gpt-4o-mini", "gateway/llama", "openai/text-embedding-3-small"}
    gpt = report["openai/gpt-4o-mini"]
    assert (gpt.requests, gpt.attempts, gpt.errors) == (3, 3, 1)  # a, b, d; the 429 is an error
    assert gpt.billed_usd == Decimal("0.001") and gpt.avoided_usd == Decimal("0.001")
    assert (gpt.input_tokens, gpt.output_tokens) == (300, 20)
    assert (gpt.p50_latency_ms, gpt.p95_latency_ms) == (10.0, 30.0)
    assert all(r.tenant_id == mine for r in report.values())
    assert sum((r.billed_usd for r in report.values()), Decimal(0)) == Decimal("0.004")


async def test_other_groupings(db: Database) -> None:
    mine, _ = await _seed(db)
    reports = UsageServices(db).reports
    by_day = {r.key: r.attempts for r in await reports.summary(mine, since=date(2026, 11, 1), by="day")}
    assert by_day == {"2026-11-02": 4, "2026-11-03": 1}
    by_pipeline = {r.key: r.requests for r in await reports.summary(mine, date(2026, 11, 1), by="pipeline")}
    assert by_pipeline == {"summarize": 3, "-": 1}
    by_provider = {r.key: r.attempts for r in await reports.summary(mine, date(2026, 11, 1), by="provider")}
    assert by_provider == {"openai": 4, "gateway": 1}
    window = await reports.summary(mine, since=DAY2 - timedelta(hours=1), until=DAY2 + timedelta(hours=1))
    assert [(r.key, r.attempts) for r in window] == [("openai/gpt-4o-mini", 1)]
    with pytest.raises(InputError):
        await reports.summary(mine, date(2026, 11, 1), by="colour")  # type: ignore[arg-type]


async def test_a_tenant_report_never_holds_another_tenants_rows(db: Database) -> None:
    mine, theirs = await _seed(db)
    reports = UsageServices(db).reports
    for by in ("model", "pipeline", "day", "provider"):
        rows = await reports.summary(mine, since=date(2026, 11, 1), by=by)  # type: ignore[arg-type]
        assert rows and all(r.tenant_id == mine for r in rows)
        assert sum(r.attempts for r in rows) == 5 and max(r.p95_latency_ms for r in rows) < 999.0
        assert sum((r.billed_usd for r in rows), Decimal(0)) == Decimal("0.004")
    theirs_report = await reports.summary(theirs, since=date(2026, 11, 1))
    assert [(r.attempts, r.billed_usd) for r in theirs_report] == [(5, Decimal(25))]
    admin = [r for r in await reports.summary_all_tenants(since=date(2026, 11, 1)) if r.tenant_id in (mine, theirs)]
    assert {r.tenant_id for r in admin} == {mine, theirs}
    assert sum(r.attempts for r in admin) == 10


def test_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (nearest_rank(values, 0.5), nearest_rank(values, 0.95), nearest_rank([], 0.5)) == (50.0, 95.0, 0.0)
    assert nearest_rank([7.0], 0.95) == 7.0
