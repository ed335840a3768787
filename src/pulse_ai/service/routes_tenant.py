"""The tenant API: the key's tenant's tables, records, searches and usage.

The tenant is the key's and comes from nowhere else: there is no tenant in any path or body. A table
name is looked up in the caller's tenant only, so a key of tenant A asking for a table that only
tenant B has gets the same 404 as for a table nobody has.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from pulse_ai.errors import InputError
from pulse_ai.service.ratelimit import estimate_tokens
from pulse_ai.service.schemas import DeleteRequest, IndexRequest, SearchRequest
from pulse_ai.service.settings import ServiceSettings
from pulse_ai.service.state import IndexCaller, SearchCaller, UsageCaller, service
from pulse_ai.tenancy import TenantTable
from pulse_ai.usage import UsageSummaryRow

__all__ = ["router", "table_json", "usage_json"]

router = APIRouter(prefix="/v1")


def table_json(table: TenantTable) -> dict[str, Any]:
    return {
        "object": "table",
        "name": table.name,
        "count": table.count,
        "runs": table.runs,
        "last_indexed_at": table.last_indexed_at.isoformat(),
    }


def usage_json(row: UsageSummaryRow, *, with_tenant: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key": row.key,
        "requests": row.requests,
        "attempts": row.attempts,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "billed_usd": f"{row.billed_usd:f}",
        "avoided_usd": f"{row.avoided_usd:f}",
        "errors": row.errors,
        "p50_latency_ms": row.p50_latency_ms,
        "p95_latency_ms": row.p95_latency_ms,
    }
    return {"tenant": row.tenant_id, **data} if with_tenant else data


def _limit(count: int, what: str, settings: ServiceSettings) -> None:
    if count > settings.max_inputs:
        raise InputError(f"too many {what}: {count}; at most {settings.max_inputs} per request")


@router.get("/tables")
async def list_tables(request: Request, who: SearchCaller) -> Response:
    state = service(request)
    tables = await state.call(request, who, lambda: who.tenant.indexer().tables(), tokens=0)
    return JSONResponse({"object": "list", "data": [table_json(t) for t in tables]})


@router.get("/tables/{table}")
async def get_table(table: str, request: Request, who: SearchCaller) -> Response:
    state = service(request)
    found = await state.call(request, who, lambda: who.tenant.indexer().table(table), tokens=0)
    return JSONResponse(table_json(found))


@router.post("/tables/{table}/records")
async def index_records(table: str, body: IndexRequest, request: Request, who: IndexCaller) -> Response:
    """Index a batch (idempotent: unchanged records are not embedded again)."""
    state = service(request)
    settings = state.settings
    _limit(len(body.records), "records", settings)
    for index, record in enumerate(body.records):
        if len(record.text) > settings.max_input_chars:
            raise InputError(
                f"records[{index}] has {len(record.text)} characters; at most {settings.max_input_chars}", index=index
            )
    records = [{"id": r.id, "text": r.text, "metadata": r.metadata} for r in body.records]
    tokens = estimate_tokens(sum(len(r.text) for r in body.records))
    report = await state.call(request, who, lambda: who.tenant.indexer().index(table, records), tokens=tokens)
    return JSONResponse(
        {
            "object": "index_report",
            "table": table,
            "new": report.new,
            "updated": report.updated,
            "unchanged": report.unchanged,
            "failed": report.failed,
            "failures": [{"id": f.record_id, "reason": f.reason} for f in report.failures],
        }
    )


@router.post("/tables/{table}/search")
async def search(table: str, body: SearchRequest, request: Request, who: SearchCaller) -> Response:
    state = service(request)
    if (body.query is None) == (body.vector is None):
        raise InputError("give exactly one of query (a text) or vector (a list of numbers)")
    query: Any = body.query if body.query is not None else body.vector
    if isinstance(query, str) and len(query) > state.settings.max_input_chars:
        raise InputError(f"query has {len(query)} characters; at most {state.settings.max_input_chars}")
    indexer = who.tenant.indexer()

    async def run() -> list[Any]:
        await indexer.table(table)  # 404 for a table this tenant never indexed into
        return await indexer.search(
            table,
            query,
            limit=body.limit,
            score_threshold=body.score_threshold,
            where=body.where,
            hnsw_ef=body.hnsw_ef,
            exact=body.exact,
        )

    hits = await state.call(request, who, run, tokens=estimate_tokens(len(body.query or "")))
    data = [{"id": hit.record_id, "score": hit.score, "metadata": hit.metadata} for hit in hits]
    return JSONResponse({"object": "list", "data": data})


@router.post("/tables/{table}/delete")
async def delete_records(table: str, body: DeleteRequest, request: Request, who: IndexCaller) -> Response:
    state = service(request)
    _limit(len(body.ids), "ids", state.settings)
    indexer = who.tenant.indexer()
    ids = [str(i) for i in body.ids]

    async def run() -> int:
        await indexer.table(table)
        return await indexer.delete(table, ids)

    deleted = await state.call(request, who, run, tokens=0)
    return JSONResponse({"object": "delete_report", "table": table, "deleted": deleted})


@router.get("/usage")
async def usage(
    request: Request,
    who: UsageCaller,
    since: date | None = None,
    until: date | None = None,
    by: Literal["model", "pipeline", "day", "provider"] = "model",
) -> Response:
    """This key's tenant's usage from the ledger, [since, until) in UTC days (default: this month)."""
    state = service(request)
    start = since or datetime.now(UTC).date().replace(day=1)
    rows = await state.call(request, who, lambda: who.tenant.usage.summary(start, until, by), tokens=0)
    return JSONResponse({"object": "list", "since": start.isoformat(), "by": by, "data": [usage_json(r) for r in rows]})
