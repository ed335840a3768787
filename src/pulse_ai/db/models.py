"""The platform's tables, as typed SQLAlchemy models. Migrations live in ``migrations/versions``;
``tests/db/test_migrations.py`` proves the two agree on SQLite and PostgreSQL.

Money columns are integer nano-dollars (``*_nanousd``, BigInteger); times are aware UTC.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pulse_ai.db.types import UTCDateTime, utcnow

__all__ = [
    "ALL_PIPELINES",
    "ApiKeyRow",
    "Base",
    "BudgetCounterRow",
    "BudgetMode",
    "BudgetPeriod",
    "BudgetRow",
    "IndexRunRow",
    "IndexRunStatus",
    "ProviderCredentialRow",
    "ReservationHoldRow",
    "ReservationRow",
    "ReservationStatus",
    "TenantRow",
    "TenantSettingsRow",
    "TenantStatus",
    "UsageRecordRow",
]

# A budget's scope column: a pipeline name, or this for "every pipeline" (no pipeline name can be it).
ALL_PIPELINES = "*"

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class BudgetPeriod(StrEnum):
    DAY = "day"
    MONTH = "month"


class BudgetMode(StrEnum):
    HARD = "hard"
    SOFT = "soft"


class ReservationStatus(StrEnum):
    ACTIVE = "active"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"


class IndexRunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def _one_of(column: str, values: type[StrEnum]) -> CheckConstraint:
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_valid")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class TenantRow(Base):
    __tablename__ = "tenants"
    __table_args__ = (_one_of("status", TenantStatus),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=TenantStatus.ACTIVE.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class TenantSettingsRow(Base):
    """A tenant's AI settings. ``allowed_pipelines`` NULL means every configured pipeline."""

    __tablename__ = "tenant_settings"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    allowed_pipelines: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    default_embedding_pipeline: Mapped[str | None] = mapped_column(String(64))
    default_generation_pipeline: Mapped[str | None] = mapped_column(String(64))
    # provider name -> non-secret overrides (e.g. base_url); secrets go to provider_credentials
    provider_overrides: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ProviderCredentialRow(Base):
    """A tenant's own key for a provider (bring-your-own-key), Fernet-encrypted."""

    __tablename__ = "provider_credentials"
    __table_args__ = (UniqueConstraint("tenant_id", "provider"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(64))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ApiKeyRow(Base):
    """An API key: only its SHA-256 and a short visible prefix are stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BudgetRow(Base):
    """A limit on a tenant's spending per UTC day or month, for one pipeline or all (``scope='*'``)."""

    __tablename__ = "budgets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "scope", "period"),
        _one_of("period", BudgetPeriod),
        _one_of("mode", BudgetMode),
        CheckConstraint("limit_nanousd IS NOT NULL OR limit_tokens IS NOT NULL", name="has_limit"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(8))
    limit_nanousd: Mapped[int | None] = mapped_column(BigInteger)
    limit_tokens: Mapped[int | None] = mapped_column(BigInteger)
    mode: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class BudgetCounterRow(Base):
    """What one budget has spent and holds reserved in one period (a UTC day or month)."""

    __tablename__ = "budget_counters"

    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True)
    period_start: Mapped[date] = mapped_column(Date, primary_key=True)
    spent_nanousd: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_nanousd: Mapped[int] = mapped_column(BigInteger, default=0)
    spent_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class ReservationRow(Base):
    """A call's worst-case cost, held against its budgets until settled, released or expired."""

    __tablename__ = "reservations"
    __table_args__ = (_one_of("status", ReservationStatus), Index(None, "status", "expires_at"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    pipeline: Mapped[str | None] = mapped_column(String(64))
    cost_nanousd: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    settled_nanousd: Mapped[int | None] = mapped_column(BigInteger)
    settled_tokens: Mapped[int | None] = mapped_column(BigInteger)


class ReservationHoldRow(Base):
    """Which budget counter a reservation holds money in (one row per applicable budget)."""

    __tablename__ = "reservation_holds"

    reservation_id: Mapped[str] = mapped_column(ForeignKey("reservations.id", ondelete="CASCADE"), primary_key=True)
    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True)
    period_start: Mapped[date] = mapped_column(Date)


class UsageRecordRow(Base):
    """The ledger: one row per provider attempt, cache hit or failure."""

    __tablename__ = "usage_records"
    __table_args__ = (Index(None, "tenant_id", "created_at"), Index(None, "request_id"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"))
    pipeline: Mapped[str | None] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    operation: Mapped[str] = mapped_column(String(16))
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    tokens_estimated: Mapped[bool] = mapped_column(Boolean)
    billed_nanousd: Mapped[int] = mapped_column(BigInteger)
    avoided_nanousd: Mapped[int] = mapped_column(BigInteger)
    cache_level: Mapped[str | None] = mapped_column(String(32))
    price_table_version: Mapped[str] = mapped_column(String(64))
    latency_ms: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IndexRunRow(Base):
    """One indexing run of a tenant's table, so the ETL side can see what was indexed when."""

    __tablename__ = "index_runs"
    __table_args__ = (_one_of("status", IndexRunStatus), Index(None, "tenant_id", "started_at"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    table_name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    new_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_count: Mapped[int] = mapped_column(Integer, default=0)
    unchanged_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
