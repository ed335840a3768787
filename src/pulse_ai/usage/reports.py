"""Usage reports from the ledger: per tenant (never another tenant's rows), or all tenants (admin)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import ColumnElement, case, func, literal, select
from sqlalchemy.orm import QueryableAttribute

from pulse_ai.db.database import Database
from pulse_ai.db.ids import validate_tenant_id
from pulse_ai.db.models import UsageRecordRow
from pulse_ai.db.money import nano_to_usd
from pulse_ai.db.types import utcnow
from pulse_ai.errors import InputError
from pulse_ai.usage.rows import Outcome

__all__ = ["GroupBy", "UsageReports", "UsageSummaryRow"]

GroupBy = Literal["model", "pipeline", "day", "provider"]
_NOT_ERRORS = tuple(outcome.value for outcome in Outcome if not outcome.is_error)


@dataclass(frozen=True)
class UsageSummaryRow:
    """One group of a report. ``requests`` counts distinct request ids, ``attempts`` ledger rows;
    ``errors`` the attempts that failed (abandoned and cancelled streams are not errors);
    latency percentiles are nearest-rank over attempts."""

    tenant_id: str
    key: str
    requests: int
    attempts: int
    input_tokens: int
    output_tokens: int
    billed_usd: Decimal
    avoided_usd: Decimal
    errors: int
    p50_latency_ms: float
    p95_latency_ms: float


def _moment(value: datetime | date, what: str) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    raise InputError(f"{what} must be a date or a datetime")


def nearest_rank(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


class UsageReports:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _key(self, by: str) -> ColumnElement[Any] | QueryableAttribute[Any]:
        if by == "model":
            return UsageRecordRow.provider + literal("/") + UsageRecordRow.model
        if by == "provider":
            return UsageRecordRow.provider
        if by == "pipeline":
            return func.coalesce(UsageRecordRow.pipeline, literal("-"))
        if by == "day":
            if self.db.dialect == "postgresql":
                return func.to_char(func.timezone("UTC", UsageRecordRow.created_at), "YYYY-MM-DD")
            return func.substr(UsageRecordRow.created_at, 1, 10)  # stored as naive UTC 'YYYY-MM-DD HH:MM:SS...'
        raise InputError(f"by must be one of model, pipeline, day, provider; not {by!r}")

    async def summary(
        self, tenant_id: str, since: datetime | date, until: datetime | date | None = None, by: GroupBy = "model"
    ) -> list[UsageSummaryRow]:
        """The tenant's usage in [since, until) grouped ``by``; only that tenant's rows are read."""
        return await self._summary(validate_tenant_id(tenant_id), since, until, by)

    async def summary_all_tenants(
        self, since: datetime | date, until: datetime | date | None = None, by: GroupBy = "model"
    ) -> list[UsageSummaryRow]:
        """Admin: every tenant's usage, one group per (tenant, key)."""
        return await self._summary(None, since, until, by)

    async def _summary(
        self, tenant_id: str | None, since: datetime | date, until: datetime | date | None, by: str
    ) -> list[UsageSummaryRow]:
        key = self._key(by).label("key")
        start, end = _moment(since, "since"), _moment(until, "until") if until is not None else utcnow()
        conditions = [UsageRecordRow.created_at >= start, UsageRecordRow.created_at < end]
        if tenant_id is not None:
            conditions.insert(0, UsageRecordRow.tenant_id == tenant_id)
        totals = (
            select(
                UsageRecordRow.tenant_id,
                key,
                func.count(func.distinct(UsageRecordRow.request_id)).label("requests"),
                func.count().label("attempts"),
                func.coalesce(func.sum(UsageRecordRow.input_tokens), 0).label("input_tokens"),
                func.coalesce(func.sum(UsageRecordRow.output_tokens), 0).label("output_tokens"),
                func.coalesce(func.sum(UsageRecordRow.billed_nanousd), 0).label("billed"),
                func.coalesce(func.sum(UsageRecordRow.avoided_nanousd), 0).label("avoided"),
                func.coalesce(func.sum(case((UsageRecordRow.outcome.in_(_NOT_ERRORS), 0), else_=1)), 0).label("errors"),
            )
            .where(*conditions)
            .group_by(UsageRecordRow.tenant_id, key)
            .order_by(UsageRecordRow.tenant_id, key)
        )
        latencies_query = (
            select(UsageRecordRow.tenant_id, key, UsageRecordRow.latency_ms)
            .where(*conditions)
            .order_by(UsageRecordRow.latency_ms)
        )
        latencies: dict[tuple[str, str], list[float]] = defaultdict(list)
        async with self.db.read("read a usage report") as connection:
            groups = (await connection.execute(totals)).all()
            async for row in await connection.stream(latencies_query):
                latencies[(row.tenant_id, row.key)].append(float(row.latency_ms))
        report = []
        for group in groups:
            values = latencies[(group.tenant_id, group.key)]
            report.append(
                UsageSummaryRow(
                    tenant_id=group.tenant_id,
                    key=str(group.key),
                    requests=int(group.requests),
                    attempts=int(group.attempts),
                    input_tokens=int(group.input_tokens),
                    output_tokens=int(group.output_tokens),
                    billed_usd=nano_to_usd(int(group.billed)),
                    avoided_usd=nano_to_usd(int(group.avoided)),
                    errors=int(group.errors),
                    p50_latency_ms=nearest_rank(values, 0.50),
                    p95_latency_ms=nearest_rank(values, 0.95),
                )
            )
        return report
