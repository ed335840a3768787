"""The platform's records behind a PulseAI: the database and what reads and writes it.

Opened on first use (the SQLite default is migrated then; PostgreSQL must be at the code's schema,
``pulse-ai db upgrade``), once per event loop, and closed by ``PulseAI.aclose``: the ledger's
queued rows are committed first, then the database is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from pydantic import SecretStr

from pulse_ai.config import DatabaseConfig
from pulse_ai.db import (
    ApiKeys,
    Credentials,
    Database,
    IndexRuns,
    KnownPipelines,
    Tenant,
    Tenants,
    TenantSettings,
    new_id,
)
from pulse_ai.db.changes import total
from pulse_ai.db.types import utcnow
from pulse_ai.errors import PulseAIError, TenantSuspendedError
from pulse_ai.usage import Budget, Reservation, UsageRow, UsageServices

__all__ = ["Platform", "PlatformHolder"]

logger = logging.getLogger("pulse_ai.platform")
MAX_UNRECORDED = 10_000
# A tenant's settings and credentials are read at most this often per process (suspension is
# checked on every call by the budget step, in the database).
SETTINGS_TTL_S = 5.0


@dataclass
class Platform:
    """The open database and its modules."""

    db: Database
    usage: UsageServices
    tenants: Tenants
    api_keys: ApiKeys
    index_runs: IndexRuns
    credentials: Credentials
    _settings: dict[str, tuple[float, TenantSettings]] = field(default_factory=dict)
    _credentials: dict[str, tuple[float, dict[str, SecretStr]]] = field(default_factory=dict)
    _gates: dict[str, tuple[float, Tenant, tuple[Budget, ...]]] = field(default_factory=dict)
    _seen_changes: int = 0
    # False after a ledger write failed: calls then check the database before any provider call
    healthy: bool = True
    # usage rows (and settlements) a database outage kept from being written: written first when
    # it answers again, in order; bounded so an endless outage cannot fill the memory
    unrecorded: list[tuple[list[UsageRow], list[tuple[Reservation, Decimal, int]]]] = field(default_factory=list)

    def keep_unrecorded(self, rows: list[UsageRow], settle: list[tuple[Reservation, Decimal, int]]) -> None:
        self.healthy = False
        if len(self.unrecorded) < MAX_UNRECORDED:
            self.unrecorded.append((rows, settle))
        else:
            logger.error("usage rows dropped: %d calls are already waiting for the database", MAX_UNRECORDED)

    async def record_unrecorded(self) -> None:
        """Write what an outage kept back (``DatabaseError`` if the database is still away)."""
        while self.unrecorded:
            rows, settle = self.unrecorded[0]
            await self.usage.ledger.record(rows, settle=settle)
            self.unrecorded.pop(0)

    def _fresh(self) -> None:
        """Drop every cached tenant state when this process changed one since it was cached."""
        changes = total(self.tenants, self.usage.budgets, self.credentials)
        if changes != self._seen_changes:
            self._seen_changes = changes
            self.forget()

    async def reserve(
        self, tenant_id: str, pipeline: str | None, cost_usd: Decimal, tokens: int, *, ttl_s: float = 600.0
    ) -> Reservation:
        """The budget step of a call: refuses an unknown or suspended tenant, and holds the call's
        worst case against every budget that applies (atomically, in the database). A tenant with
        no budget for this pipeline needs no database round trip: its state and budgets are read at
        most every few seconds, so a budget set or a suspension in another process applies within
        that delay (in this process, at once: ``forget`` is called by the setters here)."""
        self._fresh()
        if not self.healthy:
            await self.db.ping()  # still down: DatabaseError, before any provider call
            await self.record_unrecorded()
            self.healthy = True
        now = time.monotonic()
        gate = self._gates.get(tenant_id)
        if gate is None or gate[0] <= now:
            tenant = await self.tenants.get(tenant_id)
            budgets = tuple(await self.usage.budgets.list(tenant_id))
            gate = (now + SETTINGS_TTL_S, tenant, budgets)
            self._gates[tenant_id] = gate
        _, tenant, budgets = gate
        if not tenant.active:
            raise TenantSuspendedError(tenant_id)
        if not any(budget.pipeline is None or budget.pipeline == pipeline for budget in budgets):
            return Reservation(new_id(), tenant_id, pipeline, cost_usd, tokens, utcnow(), holds=())
        return await self.usage.budgets.reserve(tenant_id, pipeline, cost_usd, tokens, ttl_s=ttl_s)

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop what is cached of a tenant (or of all): its next call reads it afresh."""
        for cache in (self._settings, self._credentials, self._gates):
            if tenant_id is None:
                cache.clear()
            else:
                cache.pop(tenant_id, None)

    async def provider_credentials(self, tenant_id: str) -> dict[str, SecretStr]:
        """The tenant's own provider credentials (bring-your-own-key), by provider name; read at most
        every few seconds. Decrypted only here, and only ever held as ``SecretStr``."""
        self._fresh()
        now = time.monotonic()
        cached = self._credentials.get(tenant_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = {
            info.provider: await self.credentials.get(tenant_id, info.provider)
            for info in await self.credentials.list(tenant_id)
        }
        self._credentials[tenant_id] = (now + SETTINGS_TTL_S, found)
        return found

    async def settings(self, tenant_id: str) -> TenantSettings:
        self._fresh()
        now = time.monotonic()
        cached = self._settings.get(tenant_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        settings = await self.tenants.settings(tenant_id)
        self._settings[tenant_id] = (now + SETTINGS_TTL_S, settings)
        return settings

    def forget_settings(self, tenant_id: str) -> None:
        """Drop the cached settings of a tenant (after changing them), so they apply at once here."""
        self._settings.pop(tenant_id, None)

    async def close(self) -> None:
        try:
            if self.unrecorded:
                try:
                    await self.record_unrecorded()
                except PulseAIError:
                    logger.error(
                        "closing with %d calls' usage not recorded (database unavailable)", len(self.unrecorded)
                    )
            await self.usage.close()
        finally:
            await self.db.close()


class PlatformHolder:
    """Opens the platform once per event loop; refuses a second running loop."""

    def __init__(
        self,
        config: DatabaseConfig,
        byok_providers: Sequence[str] | None = None,
        known: KnownPipelines | None = None,
    ) -> None:
        self.config = config
        self.byok_providers = byok_providers
        self.known = known
        self._platform: Platform | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> Platform:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and self._loop.is_running():
                raise PulseAIError("this PulseAI's database is in use by another running event loop")
            # a platform of a closed loop cannot be closed any more; its connections died with it
            self._platform, self._loop, self._lock = None, loop, asyncio.Lock()
        if self._platform is not None:
            return self._platform
        assert self._lock is not None
        async with self._lock:
            if self._platform is None:
                db = await Database.from_config(self.config)
                try:
                    # encrypted credentials with no key to read them: a clear error, at start-up
                    credentials = await Credentials.open(db, providers=self.byok_providers)
                except BaseException:
                    await db.close()
                    raise
                usage = UsageServices(db)
                usage.budgets.known = self.known
                tenants = Tenants(db, known=self.known)
                self._platform = Platform(db, usage, tenants, ApiKeys(db), IndexRuns(db), credentials)
        return self._platform

    @property
    def opened(self) -> bool:
        return self._platform is not None

    async def close(self) -> None:
        platform, self._platform = self._platform, None
        if platform is not None and self._loop is asyncio.get_running_loop():
            await platform.close()
