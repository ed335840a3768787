"""The admin API (``Authorization: Bearer $PULSE_AI_ADMIN_KEY``): tenants and their settings, API
keys, budgets, and the usage of every tenant. Thin over ``platform.tenants``, ``platform.api_keys``,
``platform.usage.budgets`` and ``platform.usage.reports``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from pulse_ai.db import ApiKey, Tenant, TenantSettings
from pulse_ai.db.types import utcnow
from pulse_ai.platform import Platform
from pulse_ai.service.routes_tenant import usage_json
from pulse_ai.service.schemas import BudgetIn, KeyCreate, TenantCreate, TenantSettingsIn
from pulse_ai.service.state import Admin, ServiceState
from pulse_ai.usage import BudgetStatus

__all__ = ["router"]

router = APIRouter(prefix="/admin")


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "name": tenant.display_name,
        "status": tenant.status.value,
        "created_at": tenant.created_at.isoformat(),
    }


def settings_json(settings: TenantSettings) -> dict[str, Any]:
    return {
        "tenant": settings.tenant_id,
        "allowed_pipelines": list(settings.allowed_pipelines) if settings.allowed_pipelines is not None else None,
        "default_embedding_pipeline": settings.default_embedding_pipeline,
        "default_generation_pipeline": settings.default_generation_pipeline,
    }


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "prefix": key.prefix,
        "tenant": key.tenant_id,
        "name": key.name,
        "scopes": list(key.scopes),
        "state": key.state(),
        "created_at": key.created_at.isoformat(),
        "expires_at": _when(key.expires_at),
        "last_used_at": _when(key.last_used_at),
    }


def budget_json(status: BudgetStatus) -> dict[str, Any]:
    budget = status.budget
    return {
        "id": budget.id,
        "pipeline": budget.pipeline,
        "period": budget.period.value,
        "mode": budget.mode.value,
        "limit_usd": f"{budget.limit_usd:f}" if budget.limit_usd is not None else None,
        "limit_tokens": budget.limit_tokens,
        "period_start": status.period_start.isoformat(),
        "spent_usd": f"{status.spent_usd:f}",
        "reserved_usd": f"{status.reserved_usd:f}",
        "spent_tokens": status.spent_tokens,
        "reserved_tokens": status.reserved_tokens,
    }


async def _platform(state: ServiceState) -> Platform:
    async with state.deadline("opening the database"):
        return await state.ai.platform()


# ---- tenants -------------------------------------------------------------------------------------
@router.get("/tenants")
async def list_tenants(state: Admin) -> Response:
    platform = await _platform(state)
    async with state.deadline("listing tenants"):
        tenants = await platform.tenants.list()
    return JSONResponse({"object": "list", "data": [tenant_json(t) for t in tenants]})


@router.post("/tenants")
async def create_tenant(body: TenantCreate, state: Admin) -> Response:
    """Create a tenant; one that exists already is returned unchanged."""
    platform = await _platform(state)
    async with state.deadline("creating a tenant"):
        tenant = await platform.tenants.create(body.id, body.name)
    return JSONResponse(tenant_json(tenant), status_code=201)


@router.get("/tenants/{tenant_id}")
async def get_tenant(tenant_id: str, state: Admin) -> Response:
    platform = await _platform(state)
    async with state.deadline("reading a tenant"):
        tenant = await platform.tenants.get(tenant_id)
        settings = await platform.tenants.settings(tenant_id)
    return JSONResponse({**tenant_json(tenant), "settings": settings_json(settings)})


@router.post("/tenants/{tenant_id}/suspend")
async def suspend_tenant(tenant_id: str, state: Admin) -> Response:
    """Suspend: its keys are refused, and its calls are refused before any provider is called."""
    return await _set_status(state, tenant_id, suspend=True)


@router.post("/tenants/{tenant_id}/activate")
async def activate_tenant(tenant_id: str, state: Admin) -> Response:
    return await _set_status(state, tenant_id, suspend=False)


async def _set_status(state: ServiceState, tenant_id: str, *, suspend: bool) -> Response:
    platform = await _platform(state)
    async with state.deadline("changing a tenant's status"):
        tenants = platform.tenants
        tenant = await (tenants.suspend(tenant_id) if suspend else tenants.activate(tenant_id))
    state.keys.forget(tenant_id=tenant.id)  # its keys are verified again, on this replica at once
    return JSONResponse(tenant_json(tenant))


@router.patch("/tenants/{tenant_id}/settings")
async def update_settings(tenant_id: str, body: TenantSettingsIn, state: Admin) -> Response:
    platform = await _platform(state)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    async with state.deadline("changing a tenant's settings"):
        settings = await platform.tenants.update_settings(tenant_id, **changes)
    platform.forget_settings(settings.tenant_id)  # on this replica at once; elsewhere within seconds
    return JSONResponse(settings_json(settings))


# ---- API keys ------------------------------------------------------------------------------------
@router.get("/keys")
async def list_keys(state: Admin, tenant: str | None = None) -> Response:
    platform = await _platform(state)
    async with state.deadline("listing API keys"):
        keys = await platform.api_keys.list(tenant)
    return JSONResponse({"object": "list", "data": [key_json(k) for k in keys]})


@router.post("/tenants/{tenant_id}/keys")
async def create_key(tenant_id: str, body: KeyCreate, state: Admin) -> Response:
    """A new key, shown in this answer only (only its hash is stored)."""
    platform = await _platform(state)
    expires_at = utcnow() + timedelta(days=body.expires_days) if body.expires_days else None
    async with state.deadline("creating an API key"):
        created = await platform.api_keys.create(tenant_id, name=body.name, scopes=body.scopes, expires_at=expires_at)
    return JSONResponse({**key_json(created.info), "key": created.key.get_secret_value()}, status_code=201)


@router.delete("/keys/{key_id_or_prefix}")
async def revoke_key(key_id_or_prefix: str, state: Admin) -> Response:
    platform = await _platform(state)
    async with state.deadline("revoking an API key"):
        key = await platform.api_keys.revoke(key_id_or_prefix)
    state.keys.forget(key_id_or_prefix=key.id)
    return JSONResponse(key_json(key))


# ---- budgets -------------------------------------------------------------------------------------
@router.get("/tenants/{tenant_id}/budgets")
async def list_budgets(tenant_id: str, state: Admin) -> Response:
    platform = await _platform(state)
    async with state.deadline("reading budgets"):
        await platform.tenants.get(tenant_id)
        statuses = await platform.usage.budgets.status(tenant_id)
    return JSONResponse({"object": "list", "data": [budget_json(s) for s in statuses]})


@router.put("/tenants/{tenant_id}/budgets")
async def set_budget(tenant_id: str, body: BudgetIn, state: Admin) -> Response:
    """Create or change the budget for (pipeline or all, period)."""
    platform = await _platform(state)
    async with state.deadline("setting a budget"):
        budget = await platform.usage.budgets.set(
            tenant_id,
            pipeline=body.pipeline,
            period=body.period,
            limit_usd=body.limit_usd,
            limit_tokens=body.limit_tokens,
            mode=body.mode,
        )
        statuses = await platform.usage.budgets.status(tenant_id)
    current = next(s for s in statuses if s.budget.id == budget.id)
    return JSONResponse(budget_json(current))


@router.delete("/tenants/{tenant_id}/budgets")
async def delete_budget(
    tenant_id: str,
    state: Admin,
    pipeline: str | None = None,
    period: Literal["day", "month"] = "month",
) -> Response:
    platform = await _platform(state)
    async with state.deadline("deleting a budget"):
        deleted = await platform.usage.budgets.delete(tenant_id, pipeline=pipeline, period=period)
    return JSONResponse({"deleted": deleted})


# ---- usage ---------------------------------------------------------------------------------------
@router.get("/usage")
async def usage_all_tenants(
    state: Admin,
    since: date | None = None,
    until: date | None = None,
    by: Literal["model", "pipeline", "day", "provider"] = "model",
) -> Response:
    """Every tenant's usage, one group per (tenant, key), [since, until) in UTC days (default: this month)."""
    platform = await _platform(state)
    start = since or datetime.now(UTC).date().replace(day=1)
    async with state.deadline("reading usage"):
        rows = await platform.usage.reports.summary_all_tenants(start, until, by)
    return JSONResponse(
        {
            "object": "list",
            "since": start.isoformat(),
            "by": by,
            "data": [usage_json(r, with_tenant=True) for r in rows],
        }
    )
