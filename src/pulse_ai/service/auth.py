"""Who is calling: a tenant's API key (the tenant comes from it and from nothing else), or the admin key.

Tenant keys are verified by the data layer (``platform.api_keys.verify``: SHA-256 compared in
constant time, revoked/expired/suspended refused). A verified key is then trusted for
``key_cache_s`` seconds: a later request with it is matched by its visible prefix and its hash is
compared in constant time again, without a database round trip. A revocation or a suspension made
through this replica's admin API applies at once; one made elsewhere, within ``key_cache_s``.

Scopes: a key's scopes name what it may do (``*``: everything): ``embed`` (/v1/embeddings),
``generate`` (/v1/chat/completions), ``index`` (write and delete records), ``search`` (search,
count, list tables), ``usage`` (its usage report). Listing models needs only a valid key.

The admin key comes from ``PULSE_AI_ADMIN_KEY``; both sides are hashed and compared with
``hmac.compare_digest``, so neither the content nor the length of the key leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from fastapi import Request
from pydantic import SecretStr

from pulse_ai.client import PulseAI
from pulse_ai.db import ApiKey
from pulse_ai.db.api_keys import KEY_PREFIX, hash_key
from pulse_ai.errors import ApiKeyRefusedError
from pulse_ai.service.errors import HTTPProblem
from pulse_ai.tenancy import TenantAI

__all__ = ["SCOPES", "AdminGuard", "Caller", "KeyVerifier", "bearer_token"]

SCOPES = ("embed", "generate", "index", "search", "usage")
_VISIBLE = len(KEY_PREFIX) + 8


@dataclass(frozen=True)
class Caller:
    """The verified key and its tenant's view of the facade (the call context carries the key id)."""

    key: ApiKey
    tenant: TenantAI

    @property
    def tenant_id(self) -> str:
        return self.key.tenant_id


@dataclass
class _Verified:
    key_hash: str
    key: ApiKey
    until: float


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise HTTPProblem.of(
            401,
            "missing API key: send the header 'Authorization: Bearer <key>'",
            "authentication_error",
            "missing_api_key",
        )
    return token


class KeyVerifier:
    """Verifies tenant keys through the platform and keeps verified ones for ``ttl_s`` seconds."""

    def __init__(self, ai: PulseAI, ttl_s: float) -> None:
        self.ai = ai
        self.ttl_s = ttl_s
        self._verified: dict[str, _Verified] = {}

    async def verify(self, raw_key: str, scope: str | None) -> ApiKey:
        key = self._cached(raw_key) or await self._from_database(raw_key)
        if scope is not None and not key.allows(scope):
            raise HTTPProblem.of(
                403, f"this API key does not have the {scope!r} scope", "permission_error", "insufficient_scope"
            )
        return key

    def _cached(self, raw_key: str) -> ApiKey | None:
        entry = self._verified.get(raw_key[:_VISIBLE])
        if entry is None:
            return None
        matches = hmac.compare_digest(entry.key_hash, hash_key(raw_key))
        if not matches or entry.until < time.monotonic() or entry.key.state() != "active":
            return None
        return entry.key

    async def _from_database(self, raw_key: str) -> ApiKey:
        platform = await self.ai.platform()
        key = await platform.api_keys.verify(raw_key)
        if self.ttl_s > 0:
            if len(self._verified) > 100_000:
                self._verified.clear()
            self._verified[key.prefix] = _Verified(hash_key(raw_key), key, time.monotonic() + self.ttl_s)
        return key

    def forget(self, *, key_id_or_prefix: str | None = None, tenant_id: str | None = None) -> None:
        """Drop cached verifications (after a revocation, a suspension or a settings change)."""
        for prefix, entry in list(self._verified.items()):
            key = entry.key
            if key_id_or_prefix in (key.id, key.prefix) or (tenant_id is not None and key.tenant_id == tenant_id):
                del self._verified[prefix]


class AdminGuard:
    """Checks the admin key; with none configured, the admin API is off."""

    def __init__(self, admin_key: SecretStr | None) -> None:
        self._digest = hashlib.sha256(admin_key.get_secret_value().encode()).digest() if admin_key else None

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    def check(self, request: Request) -> None:
        if self._digest is None:
            raise HTTPProblem.of(
                403,
                "the admin API is off: start the service with PULSE_AI_ADMIN_KEY set",
                "permission_error",
                "admin_disabled",
            )
        token = bearer_token(request)
        if not hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._digest):
            raise ApiKeyRefusedError("not the admin key")
