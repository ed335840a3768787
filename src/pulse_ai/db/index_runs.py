"""Index runs: what was indexed for which tenant and table, when, and how it went."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update

from pulse_ai.db.database import Database, load
from pulse_ai.db.ids import new_id, validate_tenant_id
from pulse_ai.db.models import IndexRunRow, IndexRunStatus
from pulse_ai.db.types import utcnow
from pulse_ai.errors import NotFoundError
from pulse_ai.vectors.scope import validate_name

__all__ = ["IndexRun", "IndexRuns", "IndexedTable"]


@dataclass(frozen=True)
class IndexRun:
    id: str
    tenant_id: str
    table: str
    status: IndexRunStatus
    started_at: datetime
    finished_at: datetime | None
    new: int
    updated: int
    unchanged: int
    failed: int
    error: str | None


@dataclass(frozen=True)
class IndexedTable:
    """A table a tenant has indexed into: how many runs, and when the last one started."""

    table: str
    runs: int
    last_indexed_at: datetime


def _run(row: IndexRunRow) -> IndexRun:
    return IndexRun(
        row.id,
        row.tenant_id,
        row.table_name,
        IndexRunStatus(row.status),
        row.started_at,
        row.finished_at,
        row.new_count,
        row.updated_count,
        row.unchanged_count,
        row.failed_count,
        row.error,
    )


class IndexRuns:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def start(self, tenant_id: str, table: str) -> str:
        """Record that indexing of (tenant, table) began; returns the run id for :meth:`finish`."""
        run_id = new_id()
        values = {
            "id": run_id,
            "tenant_id": validate_tenant_id(tenant_id),
            "table_name": validate_name(table, "table"),
            "status": IndexRunStatus.RUNNING.value,
            "started_at": utcnow(),
            "new_count": 0,
            "updated_count": 0,
            "unchanged_count": 0,
            "failed_count": 0,
        }
        async with self.db.write("record an index run") as connection:
            await connection.execute(insert(IndexRunRow), values)
        return run_id

    async def finish(
        self,
        run_id: str,
        *,
        new: int = 0,
        updated: int = 0,
        unchanged: int = 0,
        failed: int = 0,
        error: str | None = None,
    ) -> IndexRun:
        """Close the run with its counts; ``error`` (a message without secrets) marks it failed."""
        status = IndexRunStatus.FAILED if error is not None else IndexRunStatus.SUCCEEDED
        async with self.db.write("finish an index run") as connection:
            result = await connection.execute(
                update(IndexRunRow)
                .where(IndexRunRow.id == run_id)
                .values(
                    status=status.value,
                    finished_at=utcnow(),
                    new_count=new,
                    updated_count=updated,
                    unchanged_count=unchanged,
                    failed_count=failed,
                    error=error[:2000] if error else None,
                )
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no index run {run_id[:40]!r}")
            row = (await load(connection, select(IndexRunRow).where(IndexRunRow.id == run_id)))[0]
        return _run(row)

    async def list(self, tenant_id: str, *, table: str | None = None, limit: int = 50) -> list[IndexRun]:
        """The tenant's most recent runs first (only that tenant's)."""
        query = (
            select(IndexRunRow)
            .where(IndexRunRow.tenant_id == validate_tenant_id(tenant_id))
            .order_by(IndexRunRow.started_at.desc(), IndexRunRow.id.desc())
            .limit(limit)
        )
        if table is not None:
            query = query.where(IndexRunRow.table_name == table)
        async with self.db.read("list index runs") as connection:
            rows = await load(connection, query)
        return [_run(row) for row in rows]

    async def tables(self, tenant_id: str, *, table: str | None = None) -> builtins.list[IndexedTable]:
        """The tables the tenant has indexed into (only that tenant's), by name; ``table`` for one."""
        query = (
            select(IndexRunRow.table_name, func.count(), func.max(IndexRunRow.started_at))
            .where(IndexRunRow.tenant_id == validate_tenant_id(tenant_id))
            .group_by(IndexRunRow.table_name)
            .order_by(IndexRunRow.table_name)
        )
        if table is not None:
            query = query.where(IndexRunRow.table_name == table)
        async with self.db.read("list indexed tables") as connection:
            rows = (await connection.execute(query)).all()
        return [IndexedTable(name, int(runs), last) for name, runs, last in rows]
