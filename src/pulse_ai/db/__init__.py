"""The platform's data layer: one ``Database`` (SQLite by default, PostgreSQL by URL), typed models,
packaged Alembic migrations, and the modules that read and write them. Nothing else opens the
database. Usage, budgets and reports are in ``pulse_ai.usage``."""

from __future__ import annotations

from pulse_ai.db.api_keys import ApiKey, ApiKeys, CreatedApiKey
from pulse_ai.db.credentials import SECRET_KEYS_ENV, CredentialInfo, Credentials, SecretKeyring
from pulse_ai.db.database import DEFAULT_URL, Database, normalize_url
from pulse_ai.db.ids import SYSTEM_TENANT, new_id, validate_tenant_id
from pulse_ai.db.index_runs import IndexedTable, IndexRun, IndexRuns
from pulse_ai.db.models import BudgetMode, BudgetPeriod, IndexRunStatus, ReservationStatus, TenantStatus
from pulse_ai.db.money import nano_to_usd, usd_to_nano
from pulse_ai.db.tenants import KnownPipelines, Tenant, Tenants, TenantSettings

__all__ = [
    "DEFAULT_URL",
    "SECRET_KEYS_ENV",
    "SYSTEM_TENANT",
    "ApiKey",
    "ApiKeys",
    "BudgetMode",
    "BudgetPeriod",
    "CreatedApiKey",
    "CredentialInfo",
    "Credentials",
    "Database",
    "IndexRun",
    "IndexRunStatus",
    "IndexRuns",
    "IndexedTable",
    "KnownPipelines",
    "ReservationStatus",
    "SecretKeyring",
    "Tenant",
    "TenantSettings",
    "TenantStatus",
    "Tenants",
    "nano_to_usd",
    "new_id",
    "normalize_url",
    "usd_to_nano",
    "validate_tenant_id",
]
