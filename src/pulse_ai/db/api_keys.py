"""API keys: only a SHA-256 of each key and a short visible prefix are stored.

A key looks like ``pk_live_1a2b3c4d_<43 random url-safe characters>`` (256 random bits, so a plain
SHA-256 is enough: nothing to brute-force). The first 16 characters are the visible prefix, used
to find the row; the hash is then compared in constant time with ``hmac.compare_digest``. The
full key is returned once, by :meth:`ApiKeys.create`, and never stored or shown again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import SecretStr
from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from pulse_ai.db.database import Database, load
from pulse_ai.db.ids import new_id, validate_tenant_id
from pulse_ai.db.models import ApiKeyRow, TenantRow, TenantStatus
from pulse_ai.db.types import utcnow
from pulse_ai.errors import ApiKeyRefusedError, DatabaseError, InputError, NotFoundError
from pulse_ai.types import check_unicode_fields

MAX_SCOPES = 32

__all__ = ["KEY_PREFIX", "ApiKey", "ApiKeys", "CreatedApiKey", "hash_key"]

KEY_PREFIX = "pk_live_"
_VISIBLE = len(KEY_PREFIX) + 8
_KEY = re.compile(r"^pk_live_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$")
_SCOPE = re.compile(r"^(\*|[a-z0-9][a-z0-9:._-]{0,63})$")
# Refresh last_used_at at most this often, so verifying a busy key is not a write per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A key's facts (never the key): ``prefix`` is the part safe to show."""

    id: str
    tenant_id: str
    prefix: str
    name: str | None
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def allows(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes

    def state(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"


@dataclass(frozen=True)
class CreatedApiKey:
    """A new key: ``key`` is the full secret, to show once; it is not stored anywhere."""

    info: ApiKey
    key: SecretStr = field(repr=False)


def _api_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        row.id,
        row.tenant_id,
        row.prefix,
        row.name,
        tuple(row.scopes or ()),
        row.created_at,
        row.expires_at,
        row.revoked_at,
        row.last_used_at,
    )


class ApiKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        scopes: Sequence[str] = ("*",),
        expires_at: datetime | None = None,
    ) -> CreatedApiKey:
        tenant_id = validate_tenant_id(tenant_id, allow_system=False)
        check_unicode_fields(name, "the key name")
        scopes = list(scopes)
        if not 1 <= len(scopes) <= MAX_SCOPES:
            raise InputError(f"scopes: a key has 1 to {MAX_SCOPES} scopes, not {len(scopes)}")
        for scope in scopes:
            if not isinstance(scope, str) or not _SCOPE.match(scope):
                raise InputError(f"scope {str(scope)[:80]!r} must be '*' or lowercase letters, digits, ':._-'")
        if expires_at is not None and expires_at.tzinfo is None:
            raise InputError("expires_at must be timezone-aware")
        for _ in range(5):  # the 32-bit visible prefix may, rarely, be taken already
            prefix = f"{KEY_PREFIX}{secrets.token_hex(4)}"
            key = f"{prefix}_{secrets.token_urlsafe(32)}"
            row = ApiKeyRow(
                id=new_id(),
                tenant_id=tenant_id,
                prefix=prefix,
                key_hash=hash_key(key),
                name=name,
                scopes=scopes,
                created_at=utcnow(),
                expires_at=expires_at,
            )
            try:
                async with self.db.write("create an API key") as connection:
                    status = await connection.scalar(select(TenantRow.status).where(TenantRow.id == tenant_id))
                    if status is None:
                        raise NotFoundError(f"no tenant {tenant_id!r}")
                    values = {c.key: getattr(row, c.key) for c in ApiKeyRow.__table__.columns}
                    await connection.execute(insert(ApiKeyRow), values)
            except DatabaseError as error:
                if isinstance(error.__cause__, IntegrityError):
                    continue
                raise
            return CreatedApiKey(_api_key(row), SecretStr(key))
        raise DatabaseError("create an API key: no free prefix after 5 tries")

    async def list(self, tenant_id: str | None = None, *, include_revoked: bool = True) -> list[ApiKey]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.tenant_id, ApiKeyRow.created_at)
        if tenant_id is not None:
            query = query.where(ApiKeyRow.tenant_id == validate_tenant_id(tenant_id))
        if not include_revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        async with self.db.read("list API keys") as connection:
            rows = await load(connection, query)
        return [_api_key(row) for row in rows]

    async def revoke(self, key_id_or_prefix: str) -> ApiKey:
        """Revoke by id or visible prefix; revoking a revoked key keeps its first revocation time."""
        match = or_(ApiKeyRow.id == key_id_or_prefix, ApiKeyRow.prefix == key_id_or_prefix)
        async with self.db.write("revoke an API key") as connection:
            await connection.execute(
                update(ApiKeyRow).where(match, ApiKeyRow.revoked_at.is_(None)).values(revoked_at=utcnow())
            )
            rows = await load(connection, select(ApiKeyRow).where(match))
        row = rows[0] if rows else None
        if row is None:
            raise NotFoundError(f"no API key {key_id_or_prefix[:40]!r}")
        return _api_key(row)

    async def verify(self, key: str, *, scope: str | None = None) -> ApiKey:
        """The key's facts if it is valid, active, of an active tenant (and grants ``scope``);
        ``ApiKeyRefusedError`` otherwise. The hash comparison is constant-time."""
        well_formed = isinstance(key, str) and bool(_KEY.match(key))
        prefix = key[:_VISIBLE] if well_formed else ""
        async with self.db.read("verify an API key") as connection:
            rows = await load(connection, select(ApiKeyRow).where(ApiKeyRow.prefix == prefix))
            row = rows[0] if rows else None
            tenant_status = (
                await connection.scalar(select(TenantRow.status).where(TenantRow.id == row.tenant_id)) if row else None
            )
        stored_hash = row.key_hash if row is not None else _DUMMY_HASH
        matches = hmac.compare_digest(stored_hash, hash_key(key if isinstance(key, str) else ""))
        if not well_formed:
            raise ApiKeyRefusedError("malformed")
        if row is None or not matches:
            raise ApiKeyRefusedError("unknown")
        info = _api_key(row)
        now = utcnow()
        state = info.state(now)
        if state != "active":
            raise ApiKeyRefusedError(state)
        if tenant_status != TenantStatus.ACTIVE.value:
            raise ApiKeyRefusedError("tenant suspended")
        if scope is not None and not info.allows(scope):
            raise ApiKeyRefusedError("scope")
        if info.last_used_at is None or now - info.last_used_at >= LAST_USED_RESOLUTION:
            async with self.db.write("note an API key's use") as connection:
                await connection.execute(update(ApiKeyRow).where(ApiKeyRow.id == info.id).values(last_used_at=now))
            info = dataclasses.replace(info, last_used_at=now)
        return info
