"""Tenants and their AI settings."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from pulse_ai.catalog import Capability
from pulse_ai.config import NAME_PATTERN
from pulse_ai.db.changes import counts_change
from pulse_ai.db.database import Database
from pulse_ai.db.ids import SYSTEM_TENANT, validate_tenant_id
from pulse_ai.db.models import TenantRow, TenantSettingsRow, TenantStatus
from pulse_ai.db.types import utcnow
from pulse_ai.errors import InputError, NotFoundError, TenantSuspendedError
from pulse_ai.types import check_unicode_fields

__all__ = ["Tenant", "TenantSettings", "Tenants"]

_UNSET: Any = object()


@dataclass(frozen=True)
class Tenant:
    id: str
    display_name: str
    status: TenantStatus
    created_at: datetime
    updated_at: datetime

    @property
    def active(self) -> bool:
        return self.status is TenantStatus.ACTIVE


@dataclass(frozen=True)
class TenantSettings:
    """What a tenant may use. ``allowed_pipelines=None`` allows every configured pipeline."""

    tenant_id: str
    allowed_pipelines: tuple[str, ...] | None = None
    default_embedding_pipeline: str | None = None
    default_generation_pipeline: str | None = None
    provider_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def allows(self, pipeline: str) -> bool:
        return self.allowed_pipelines is None or pipeline in self.allowed_pipelines

    def default_pipeline(self, capability: Capability | str) -> str | None:
        capability = Capability(capability)
        if capability is Capability.EMBEDDING:
            return self.default_embedding_pipeline
        return self.default_generation_pipeline


# a pipeline name, or a `provider/model` ref (allowed lists may name models for direct calls)
_MODEL_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/[^\s/]{1,128}")


def _pipeline_name(value: object, what: str, *, refs: bool = False) -> str:
    if isinstance(value, str) and (
        re.fullmatch(NAME_PATTERN.strip("^$"), value) or (refs and _MODEL_REF.fullmatch(value))
    ):
        return value
    kind = "a pipeline name or a provider/model ref" if refs else "a pipeline name"
    raise InputError(f"{what}: {str(value)[:80]!r} is not {kind}")


@dataclass(frozen=True)
class KnownPipelines:
    """The configuration's pipelines (name -> kind) and ``provider/model`` refs, against which
    tenants' settings and budgets are checked: a name that is not configured is refused when it is
    written, not discovered when a call fails."""

    kinds: Mapping[str, Capability]
    models: frozenset[str] = frozenset()

    @classmethod
    def of(cls, pipelines: Mapping[str, Any], models: Iterable[str] = ()) -> KnownPipelines:
        """From a configuration's ``pipelines`` (each with a ``kind``) and its model refs."""
        return cls({name: Capability(p.kind) for name, p in pipelines.items()}, frozenset(models))

    def check(self, value: str, what: str, *, kind: Capability | None = None, refs: bool = False) -> str:
        if value in self.kinds:
            if kind is not None and self.kinds[value] is not kind:
                raise InputError(
                    f"{what}: pipeline {value!r} is a {self.kinds[value].value} pipeline, not {kind.value}"
                )
            return value
        if refs and value in self.models:
            return value
        names = sorted(n for n, k in self.kinds.items() if kind is None or k is kind)
        known = ", ".join(names) or "none"
        extra = " (or a provider/model ref of the configuration)" if refs else ""
        raise InputError(f"{what}: unknown pipeline {value!r}; known pipelines{extra}: {known}")


class Tenants:
    """Create, read, suspend tenants; read and change their AI settings."""

    changes = 0  # writes made through this object (caches of tenants' state watch it)

    def __init__(self, db: Database, *, known: KnownPipelines | None = None) -> None:
        """``known``: the configured pipelines that settings may name (None: any well-formed name)."""
        self.db = db
        self.known = known

    async def create(self, tenant_id: str, display_name: str | None = None) -> Tenant:
        """Create the tenant; one that already exists is returned unchanged ("already exists" is success)."""
        tenant_id = validate_tenant_id(tenant_id, allow_system=False)
        check_unicode_fields(display_name, "the display name")
        now = utcnow()
        values = {
            "id": tenant_id,
            "display_name": (display_name or tenant_id)[:200],
            "status": TenantStatus.ACTIVE.value,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.write("create a tenant") as connection:
            await connection.execute(self.db.insert_ignoring_conflicts(TenantRow, "id"), values)
            row = (await connection.execute(select(TenantRow).where(TenantRow.id == tenant_id))).one()
        return Tenant(row.id, row.display_name, TenantStatus(row.status), row.created_at, row.updated_at)

    async def get(self, tenant_id: str) -> Tenant:
        tenant_id = validate_tenant_id(tenant_id)
        async with self.db.read("read a tenant") as connection:
            row = (await connection.execute(select(TenantRow).where(TenantRow.id == tenant_id))).one_or_none()
        if row is None:
            raise NotFoundError(f"no tenant {tenant_id!r}")
        return Tenant(row.id, row.display_name, TenantStatus(row.status), row.created_at, row.updated_at)

    async def require_active(self, tenant_id: str) -> Tenant:
        """The tenant, if it exists and is active: ``NotFoundError`` or ``TenantSuspendedError`` otherwise."""
        tenant = await self.get(tenant_id)
        if not tenant.active:
            raise TenantSuspendedError(tenant.id)
        return tenant

    async def list(self, *, include_system: bool = False) -> list[Tenant]:
        query = select(TenantRow).order_by(TenantRow.id)
        if not include_system:
            query = query.where(TenantRow.id != SYSTEM_TENANT)
        async with self.db.read("list tenants") as connection:
            rows = (await connection.execute(query)).all()
        return [Tenant(r.id, r.display_name, TenantStatus(r.status), r.created_at, r.updated_at) for r in rows]

    @counts_change
    async def set_status(self, tenant_id: str, status: TenantStatus | str) -> Tenant:
        tenant_id = validate_tenant_id(tenant_id, allow_system=False)
        status = TenantStatus(status)
        async with self.db.write("change a tenant's status") as connection:
            result = await connection.execute(
                update(TenantRow).where(TenantRow.id == tenant_id).values(status=status.value, updated_at=utcnow())
            )
        if result.rowcount == 0:
            raise NotFoundError(f"no tenant {tenant_id!r}")
        return await self.get(tenant_id)

    async def suspend(self, tenant_id: str) -> Tenant:
        return await self.set_status(tenant_id, TenantStatus.SUSPENDED)

    async def activate(self, tenant_id: str) -> Tenant:
        return await self.set_status(tenant_id, TenantStatus.ACTIVE)

    async def settings(self, tenant_id: str) -> TenantSettings:
        tenant_id = validate_tenant_id(tenant_id)
        async with self.db.read("read tenant settings") as connection:
            row = (
                await connection.execute(select(TenantSettingsRow).where(TenantSettingsRow.tenant_id == tenant_id))
            ).one_or_none()
            if row is None:
                exists = await connection.scalar(select(TenantRow.id).where(TenantRow.id == tenant_id))
                if exists is None:
                    raise NotFoundError(f"no tenant {tenant_id!r}")
                return TenantSettings(tenant_id)
        return TenantSettings(
            tenant_id,
            tuple(row.allowed_pipelines) if row.allowed_pipelines is not None else None,
            row.default_embedding_pipeline,
            row.default_generation_pipeline,
            dict(row.provider_overrides or {}),
        )

    def _known(self, value: str, what: str, *, kind: Capability | None = None, refs: bool = False) -> str:
        return value if self.known is None else self.known.check(value, what, kind=kind, refs=refs)

    @counts_change
    async def update_settings(
        self,
        tenant_id: str,
        *,
        allowed_pipelines: Sequence[str] | None = _UNSET,
        default_embedding_pipeline: str | None = _UNSET,
        default_generation_pipeline: str | None = _UNSET,
        provider_overrides: Mapping[str, Mapping[str, Any]] = _UNSET,
    ) -> TenantSettings:
        """Change only the settings given; ``None`` clears one (``allowed_pipelines=None``: all allowed)."""
        current = await self.settings(tenant_id)
        values: dict[str, Any] = {
            "allowed_pipelines": list(current.allowed_pipelines) if current.allowed_pipelines is not None else None,
            "default_embedding_pipeline": current.default_embedding_pipeline,
            "default_generation_pipeline": current.default_generation_pipeline,
            "provider_overrides": {k: dict(v) for k, v in current.provider_overrides.items()},
        }
        if allowed_pipelines is not _UNSET:
            names = None if allowed_pipelines is None else list(allowed_pipelines)
            values["allowed_pipelines"] = names and [
                self._known(
                    _pipeline_name(p, f"allowed_pipelines[{i}]", refs=True), f"allowed_pipelines[{i}]", refs=True
                )
                for i, p in enumerate(names)
            ]
        for key, given, kind in (
            ("default_embedding_pipeline", default_embedding_pipeline, Capability.EMBEDDING),
            ("default_generation_pipeline", default_generation_pipeline, Capability.GENERATION),
        ):
            if given is not _UNSET:
                values[key] = None if given is None else self._known(_pipeline_name(given, key), key, kind=kind)
        if provider_overrides is not _UNSET:
            values["provider_overrides"] = {str(k): dict(v) for k, v in provider_overrides.items()}
        values["updated_at"] = utcnow()
        async with self.db.write("change tenant settings") as connection:
            result = await connection.execute(
                update(TenantSettingsRow).where(TenantSettingsRow.tenant_id == current.tenant_id).values(**values)
            )
            if result.rowcount == 0:
                await connection.execute(
                    self.db.insert_ignoring_conflicts(TenantSettingsRow, "tenant_id"),
                    {"tenant_id": current.tenant_id, **values},
                )
        return await self.settings(tenant_id)
