"""The platform's records behind a PulseAI: the database and what reads and writes it.

Opened on first use (the SQLite default is migrated then; PostgreSQL must be at the code's schema,
``pulse-ai db upgrade``), once per event loop, and closed by ``PulseAI.aclose``: the ledger's
queued rows are committed first, then the database is closed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from pulse_ai.config import DatabaseConfig
from pulse_ai.db import ApiKeys, Database, IndexRuns, Tenants, TenantSettings
from pulse_ai.errors import PulseAIError
from pulse_ai.usage import UsageServices

__all__ = ["Platform", "PlatformHolder"]

# A tenant's settings are read at most this often per process (suspension is checked on every
# call by the budget step, in the database).
SETTINGS_TTL_S = 5.0


@dataclass
class Platform:
    """The open database and its modules."""

    db: Database
    usage: UsageServices
    tenants: Tenants
    api_keys: ApiKeys
    index_runs: IndexRuns
    _settings: dict[str, tuple[float, TenantSettings]] = field(default_factory=dict)

    @property
    def budgets(self) -> object:
        return self.usage.budgets

    async def settings(self, tenant_id: str) -> TenantSettings:
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
            await self.usage.close()
        finally:
            await self.db.close()


class PlatformHolder:
    """Opens the platform once per event loop; refuses a second running loop."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
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
                self._platform = Platform(db, UsageServices(db), Tenants(db), ApiKeys(db), IndexRuns(db))
        return self._platform

    @property
    def opened(self) -> bool:
        return self._platform is not None

    async def close(self) -> None:
        platform, self._platform = self._platform, None
        if platform is not None and self._loop is asyncio.get_running_loop():
            await platform.close()
