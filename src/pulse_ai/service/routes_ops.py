"""Operations: liveness, readiness that tells the truth, and Prometheus metrics.

``/readyz`` checks, each within ``READY_CHECK_S``: the database answers (``db.ping``), the vector
store answers (``store.ping``: open, and a server reachable), and each pipeline has a candidate
whose circuit breaker is not open. Any failure is a 503 listing the reasons.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from pulse_ai.errors import PulseAIError
from pulse_ai.routing import BreakerState
from pulse_ai.service.metrics import CONTENT_TYPE
from pulse_ai.service.state import Admin, ServiceState, service

__all__ = ["READY_CHECK_S", "readiness", "router"]

router = APIRouter()
READY_CHECK_S = 2.0


@router.get("/healthz")
async def healthz() -> Response:
    """The process is alive and its event loop answers."""
    return JSONResponse({"status": "ok"})


async def _check(what: str, probe: Awaitable[None]) -> str | None:
    try:
        async with asyncio.timeout(READY_CHECK_S):
            await probe
    except TimeoutError:
        return f"{what}: no answer within {READY_CHECK_S:g} s"
    except PulseAIError as error:
        return f"{what}: {error}"
    return None


async def readiness(state: ServiceState) -> list[str]:
    """Why the service is not ready (empty when it is)."""
    ai = state.ai
    reasons: list[str] = []
    platform = await ai.platform()
    problem = await _check("database", platform.db.ping())
    if problem:
        reasons.append(problem)

    async def store() -> None:
        await ai.vector_store().ping()

    problem = await _check("vector store", store())
    if problem:
        reasons.append(problem)
    for name in ai.loaded.config.pipelines:
        candidates = ai.router(name).candidates
        if all(c.breaker.state is BreakerState.OPEN for c in candidates):
            refs = ", ".join(c.ref for c in candidates)
            reasons.append(f"pipeline {name}: the circuit breaker of every candidate is open ({refs})")
    return reasons


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    try:
        reasons = await readiness(service(request))
    except PulseAIError as error:  # the database could not even be opened
        reasons = [f"database: {error}"]
    if reasons:
        return JSONResponse({"status": "not ready", "reasons": reasons}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(state: Admin) -> Response:
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE)
